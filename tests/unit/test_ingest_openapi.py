"""Property-based HTTP fuzzing of the ingest API against its own OpenAPI document.

Schemathesis generates requests that fit the document and requests that
break it, and sends them to a real uvicorn server (uvloop, httptools) on
127.0.0.1. Every response must be free of 5xx and have a status, body,
content type and headers that the document lists. The producer points at
127.0.0.1:1, where nothing listens, so records stay in its local queue.
"""

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hbmon.kafka import KafkaSettings
from ingest.app import create_app
from ingest.openapi import build_openapi
from ingest.settings import IngestSettings

SETTINGS = IngestSettings(
    batch_max_items=20,
    attrs_max_bytes=4096,
    max_body_bytes=65_536,
    batch_max_bytes=65_536,
    unreachable_s=3600,
    flush_timeout_s=0.5,
)
NO_BROKER = KafkaSettings(bootstrap_servers="127.0.0.1:1", heartbeat_topic="hb")

# Statuses that count as rejecting a request that breaks the document: the
# library's defaults less 5xx, plus 413, which ingest returns for a batch over
# its item limit.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
# The document gives NDJSON bodies as strings, so send them as plain text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# Without a broker /readyz returns 503 by design; test_ingest_app covers it.
schema = schemathesis.openapi.from_dict(build_openapi(SETTINGS), config=CONFIG).exclude(
    path="/readyz"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    logging.getLogger("hbmon.librdkafka").setLevel(logging.CRITICAL)
    port = free_port()
    config = uvicorn.Config(
        create_app(SETTINGS, NO_BROKER),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ingest-under-test")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield url
    server.should_exit = True
    thread.join(timeout=60)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_openapi(case: schemathesis.Case, base_url: str) -> None:
    # Attribute byte caps cannot be written in JSON Schema, so a request that
    # fits the document may still get a 400; every other check stays on.
    case.call_and_validate(
        base_url=base_url, excluded_checks=[positive_data_acceptance]
    )
