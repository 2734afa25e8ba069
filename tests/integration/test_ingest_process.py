"""`hbmon ingest` as a real process: uvicorn, SIGTERM, flush and 503s."""

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from hbmon.events import HeartbeatRecord, decode_heartbeats
from hbmon.kafka import KafkaSettings
from tests.integration.services import Service, free_port, kafka_env, wait_for
from tests.integration.test_ingest_kafka import read_topic

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


def serving(base_url: str, service: Service) -> bool:
    assert service.process is not None
    assert service.process.poll() is None, service.log()
    try:
        httpx.get(f"{base_url}/healthz", timeout=1)
    except httpx.TransportError:
        return False
    return True


Starter = Callable[[dict[str, str]], tuple[Service, str]]


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Starter]:
    """Start `hbmon ingest` on a free port; return it and its base URL."""
    started: list[Service] = []

    def start(env: dict[str, str]) -> tuple[Service, str]:
        port = free_port()
        service = Service("ingest", {**env, "HBMON_INGEST_PORT": str(port)}, tmp_path)
        started.append(service.start())
        base_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: serving(base_url, service), 60, "ingest to serve")
        return service, base_url

    yield start
    for service in started:
        service.stop()


def test_sigterm_flushes_every_record(
    kafka_settings: KafkaSettings, start_ingest: Starter
) -> None:
    ingest, base_url = start_ingest(kafka_env(kafka_settings))
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for seq in range(20):
            body = orjson.dumps({"device_id": f"dev-{seq % 4}", "seq": seq})
            response = http.post("/v1/heartbeats", content=body, headers=JSON)
            assert response.status_code == 202
    status = ingest.stop()

    log = ingest.log()
    assert status in (0, -signal.SIGTERM), log
    assert "every queued heartbeat record was delivered" in log
    assert len(read_topic(kafka_settings)) == 20


def post_and_half_close(port: int, request: bytes) -> bytes:
    """Send `request`, shut down the sending side, and read until the server closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_half_closed_requests_get_answers(
    kafka_settings: KafkaSettings, start_ingest: Starter
) -> None:
    ingest, base_url = start_ingest(kafka_env(kafka_settings))
    port = int(base_url.rsplit(":", 1)[1])
    head = (
        "POST /v1/heartbeats HTTP/1.1\r\nHost: ingest\r\n"
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    )
    for seq in range(10):
        body = orjson.dumps({"device_id": "half-close", "seq": seq})
        response = post_and_half_close(port, head.format(len(body)).encode() + body)

        assert response.startswith(b"HTTP/1.1 202"), response

    # A body cut short gets no response, and the connection closes at once.
    cut_short = post_and_half_close(port, head.format(100).encode() + b'{"device')
    assert cut_short == b""

    ingest.stop()
    seqs = sorted(
        record.seq
        for message in read_topic(kafka_settings)
        for record in decode_heartbeats(message.value())
        if isinstance(record, HeartbeatRecord)
    )
    assert seqs == list(range(10))


def test_unreachable_broker_503(start_ingest: Starter) -> None:
    env = {
        **kafka_env(KafkaSettings(bootstrap_servers="127.0.0.1:1")),
        "HBMON_INGEST_UNREACHABLE_S": "0.5",
        "HBMON_INGEST_RETRY_AFTER_S": "2",
        "HBMON_INGEST_FLUSH_TIMEOUT_S": "1",
    }
    ingest, base_url = start_ingest(env)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        body = orjson.dumps({"device_id": "dev-1"})
        deadline = time.monotonic() + 60
        response = http.post("/v1/heartbeats", content=body, headers=JSON)
        while response.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.1)
            response = http.post("/v1/heartbeats", content=body, headers=JSON)
        ready = http.get("/readyz")
    status = ingest.stop()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "unreachable" in response.json()["error"]
    assert ready.status_code == 503
    assert status in (0, -signal.SIGTERM), ingest.log()
    assert "heartbeats unsent, which are lost" in ingest.log()


def test_workers_metrics_count_every_heartbeat(
    kafka_settings: KafkaSettings, start_ingest: Starter
) -> None:
    env = {**kafka_env(kafka_settings), "HBMON_INGEST_WORKERS": "2"}
    ingest, base_url = start_ingest(env)
    wait_for(lambda: readyz_ok(base_url), 60, "ingest workers to reach Kafka")

    # A new connection per request, so that both workers are likely to get some.
    for seq in range(30):
        body = orjson.dumps({"device_id": f"dev-{seq % 5}", "seq": seq, "ts": "bad"})
        response = httpx.post(
            f"{base_url}/v1/heartbeats", content=body, headers=JSON, timeout=30
        )
        assert response.status_code == 202
    for first in range(0, 20, 10):
        batch = [{"device_id": f"gw-{first + i}"} for i in range(10)]
        response = httpx.post(
            f"{base_url}/v1/heartbeats/batch",
            content=orjson.dumps(batch),
            headers=JSON,
            timeout=30,
        )
        assert response.status_code == 202
    expected = {
        'hbmon_ingest_heartbeats_accepted_total{endpoint="single"}': 30.0,
        'hbmon_ingest_heartbeats_accepted_total{endpoint="batch"}': 20.0,
        'hbmon_ingest_device_ts_flagged_total{flag="unparseable"}': 30.0,
    }

    # A scrape reaches one worker, which sums every worker's files. Each
    # worker writes its counts there every 5 ms (its poll interval), so after
    # a pause the first scrape, whichever worker it reaches, has every count.
    time.sleep(2)
    samples = scrape(base_url)
    for name, value in expected.items():
        assert samples.get(name) == value, name
    ingest.stop()


def readyz_ok(base_url: str) -> bool:
    return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200


def scrape(base_url: str) -> dict[str, float]:
    """Return every sample on the /metrics page, by name with labels."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
