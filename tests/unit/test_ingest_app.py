"""The ingest app over ASGI, with a real producer and no broker.

The producer points at 127.0.0.1:1, where nothing listens, so records stay
in its local queue. The unreachable bound is an hour unless a test sets it,
so requests are accepted as they would be while the broker is briefly away.
"""

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from hbmon.kafka import KafkaSettings
from ingest.app import YOUNG_GC_THRESHOLD, create_app
from ingest.auth import Authenticator, parse_tokens
from ingest.endpoints import RequestReader
from ingest.errors import IngestError
from ingest.metrics import IngestMetrics
from ingest.publisher import BUNDLE_MAX_BYTES, Publisher, bundle_values, unanswered_s
from ingest.settings import IngestSettings

pytestmark = pytest.mark.anyio

NO_BROKER = KafkaSettings(bootstrap_servers="127.0.0.1:1", heartbeat_topic="hb")
SETTINGS = IngestSettings(
    max_body_bytes=512,
    batch_max_bytes=4096,
    batch_max_items=5,
    attrs_max_bytes=64,
    unreachable_s=3600,
    flush_timeout_s=0.2,
)
JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
FLEET = "fleet-token-0123456789"
SITE_A = "site-a-token-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def settings() -> IngestSettings:
    return SETTINGS


@pytest.fixture
async def client(
    settings: IngestSettings, registry: CollectorRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, NO_BROKER, registry)
    async with serve(app) as http:
        yield http


class serve:
    """Run the app's lifespan around an httpx client that calls it over ASGI."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.lifespan = app.router.lifespan_context(app)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        )

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.lifespan.__aenter__()
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.lifespan.__aexit__(None, None, None)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def post(
    client: httpx.AsyncClient,
    body: object,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST one heartbeat; `body` is sent as is if bytes, else encoded as JSON."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(
        "/v1/heartbeats", content=content, headers=JSON if headers is None else headers
    )


# Single heartbeat


async def test_post_valid_heartbeat_202(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    response = await post(client, {"device_id": "dev-1", "seq": 1})
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    assert (
        sample(registry, "hbmon_ingest_heartbeats_accepted_total", endpoint="single")
        == 1
    )
    assert sample(registry, "hbmon_ingest_producer_queue_length") >= 0


async def test_concurrent_posts_queue_before_202(
    settings: IngestSettings, registry: CollectorRegistry
) -> None:
    """A 202 goes out once every request started with it has queued its heartbeat."""
    app = create_app(settings, NO_BROKER, registry)
    metrics: IngestMetrics = app.state.metrics
    accepted_at_response: list[tuple[int, int]] = []

    async def call(device_id: str) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/heartbeats",
            "headers": [(b"content-type", b"application/json")],
        }
        body = orjson.dumps({"device_id": device_id})

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                assert isinstance(status, int)
                accepted_at_response.append((status, metrics.accepted_single))

        await app(scope, receive, send)

    async with serve(app):
        await asyncio.gather(*(call(f"dev-{n}") for n in range(3)))
    assert accepted_at_response == [(202, 3)] * 3


async def test_post_content_type_with_charset(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    response = await post(client, {"device_id": "d"}, headers=headers)
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"", "body"),
        (b'{"device_id": "d"', "body"),
        (b"\xff\xfe", "body"),
        (b"[]", "body"),
        (b'"dev-1"', "body"),
        (b"{}", "device_id"),
        (b'{"device_id": ""}', "device_id"),
        (b'{"device_id": 7}', "device_id"),
        (b'{"device_id": "a b"}', "device_id"),
        (b'{"device_id": "d", "seq": -1}', "seq"),
        (b'{"device_id": "d", "seq": "1"}', "seq"),
        (b'{"device_id": "d", "interval_s": 0}', "interval_s"),
        (b'{"device_id": "d", "timeout_s": "30"}', "timeout_s"),
        (b'{"device_id": "d", "ts": true}', "ts"),
        (b'{"device_id": "d", "attrs": []}', "attrs"),
        (b'{"device_id": "d", "attrs": {"a": {"b": {"c": 1}}}}', "attrs"),
        (b'{"device_id": "d", "attrs": {"k": "' + b"v" * 80 + b'"}}', "attrs"),
        (b'{"device_id": "d", "seq": 1e400}', "body"),
    ],
)
async def test_post_invalid_400_names_field(
    client: httpx.AsyncClient, registry: CollectorRegistry, body: bytes, field: str
) -> None:
    response = await post(client, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert field in response.json()["error"]
    assert (
        sample(
            registry,
            "hbmon_ingest_heartbeats_rejected_total",
            reason="invalid",
            field=field,
        )
        == 1
    )
    assert (
        sample(registry, "hbmon_ingest_heartbeats_accepted_total", endpoint="single")
        == 0
    )


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-ndjson"])
async def test_post_wrong_content_type_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await post(client, {"device_id": "d"}, headers=headers)
    assert response.status_code == 415
    assert response.json()["field"] == "Content-Type"
    assert "application/json" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v1/heartbeats", "/v1/heartbeats/batch"])
@pytest.mark.parametrize(
    "first", ["text/plain", "", "application/json"], ids=["other", "empty", "same"]
)
async def test_post_repeated_content_type_400(
    client: httpx.AsyncClient, path: str, first: str
) -> None:
    headers = [("content-type", first), ("content-type", "application/json")]
    response = await client.post(path, content=b'{"device_id": "d"}', headers=headers)
    assert response.status_code == 400
    assert response.json() == {
        "error": "Content-Type must appear once",
        "field": "Content-Type",
    }


async def test_post_over_content_length_413(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"device_id": "d", "pad": "x" * 600})
    response = await post(client, body)
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert "512 bytes" in response.json()["error"]


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        (b"99", None),
        (b"512", None),
        (b"0000512", None),
        (b"513", 413),
        (b"0000513", 413),
        (b"99999999999999999999", 413),
        (b"12a", 400),
        (b"-1", None),
    ],
)
def test_declared_content_length(declared: bytes, status: int | None) -> None:
    # The reader skips int() for short all-digit values; every other value
    # gets the full check, so the result is the same either way.
    publisher = Publisher(SETTINGS, NO_BROKER, IngestMetrics(CollectorRegistry()))
    reader = RequestReader(
        authenticator=Authenticator(()),
        publisher=publisher,
        media_types=(b"application/json",),
        max_bytes=SETTINGS.max_body_bytes,
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", declared)]
    if status is None:
        assert reader.check({"headers": headers}) == (b"application/json", "")
        return
    with pytest.raises(IngestError) as raised:
        reader.check({"headers": headers})
    assert (raised.value.status, raised.value.field) == (
        status,
        "Content-Length" if status == 400 else "body",
    )


async def test_post_over_size_chunked_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"device_id": "d", "pad": "'
        for _ in range(10):
            yield b"x" * 100
        yield b'"}'

    response = await client.post("/v1/heartbeats", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert "512 bytes" in response.json()["error"]


async def test_post_chunked_within_limit_202(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"device_id":'
        yield b' "d"}'

    response = await client.post("/v1/heartbeats", content=chunks(), headers=JSON)
    assert response.status_code == 202


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_heartbeats_wrong_method_405(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, "/v1/heartbeats")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["field"] == "method"


async def test_post_trailing_slash_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/heartbeats/",
        content=b'{"device_id": "d"}',
        headers={**JSON, "host": "elsewhere.invalid"},
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json() == {
        "error": "no endpoint at /v1/heartbeats/; see /openapi.json"
    }


@pytest.mark.parametrize("path", ["/v1/heartbeats", "/api/v1/heartbeats"])
async def test_post_under_root_path_202(path: str) -> None:
    app = create_app(SETTINGS, NO_BROKER, CollectorRegistry())
    async with serve(app):
        transport = httpx.ASGITransport(app=app, root_path="/api")
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ingest"
        ) as http:
            response = await http.post(
                path, content=b'{"device_id": "d"}', headers=JSON
            )
    assert response.status_code == 202


async def test_unknown_path_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert "/v2/nothing" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [b"null", b"0", b"1e308", b'{"device_id": null}', b'{"": ""}', b"[" * 500],
)
async def test_post_odd_json_never_5xx(client: httpx.AsyncClient, body: bytes) -> None:
    response = await post(client, body)
    assert response.status_code == 400


# Device timestamps


async def test_post_untrusted_ts_kept_and_counted(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    for ts in ("soon", 4102444800, 1):
        response = await post(client, {"device_id": "d", "ts": ts})
        assert response.status_code == 202
    flagged = "hbmon_ingest_device_ts_flagged_total"
    assert sample(registry, flagged, flag="unparseable") == 1
    assert sample(registry, flagged, flag="future") == 1
    assert sample(registry, flagged, flag="past") == 1


# Batch


async def test_batch_json_partial_accept(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    items = [{"device_id": "a"}, {"device_id": ""}, 5, {"device_id": "b", "seq": -2}]
    response = await client.post(
        "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [item["index"] for item in body["rejected"]] == [1, 2, 3]
    assert [item["field"] for item in body["rejected"]] == ["device_id", "item", "seq"]
    assert (
        sample(registry, "hbmon_ingest_heartbeats_accepted_total", endpoint="batch")
        == 1
    )


@pytest.mark.parametrize(
    ("content", "accepted", "rejected"),
    [
        # Blank lines are skipped and not counted.
        (
            b'{"device_id": "a"}\r\n\n  \n{oops\n{"device_id": "b"}\n',
            2,
            [(1, "item")],
        ),
        # VT and FF are not JSON whitespace, so such a line is an invalid item.
        (
            b'{"device_id": "a"}\n\x0b\x0c\n \t\r\n{"device_id": "b"}\n',
            2,
            [(1, "item")],
        ),
        # A CR alone is JSON whitespace, not a line end, so "a" is item 0.
        (b'{"device_id":\r"a"}\n{"device_id": 7}\n', 1, [(1, "device_id")]),
    ],
    ids=["blank_lines", "vt_ff_line", "bare_cr"],
)
async def test_batch_ndjson_line_rules(
    client: httpx.AsyncClient,
    content: bytes,
    accepted: int,
    rejected: list[tuple[int, str]],
) -> None:
    response = await client.post(
        "/v1/heartbeats/batch", content=content, headers=NDJSON
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == accepted
    assert [(item["index"], item["field"]) for item in body["rejected"]] == rejected


async def test_batch_empty_array_accepts_none(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/heartbeats/batch", content=b"[]", headers=JSON)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 0, "rejected": []}


@pytest.mark.parametrize("body", [b"{}", b'{"device_id": "a"}', b"nope"])
async def test_batch_json_not_array_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/heartbeats/batch", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["field"] == "body"


@pytest.mark.parametrize("headers", [JSON, NDJSON])
async def test_batch_over_item_limit_413(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    items = [{"device_id": f"d{i}"} for i in range(6)]
    if headers is NDJSON:
        content = b"\n".join(orjson.dumps(item) for item in items)
    else:
        content = orjson.dumps(items)
    response = await client.post(
        "/v1/heartbeats/batch", content=content, headers=headers
    )
    assert response.status_code == 413
    assert "limit is 5" in response.json()["error"]


async def test_batch_over_byte_limit_413(client: httpx.AsyncClient) -> None:
    content = orjson.dumps([{"device_id": "d", "pad": "x" * 5000}])
    response = await client.post("/v1/heartbeats/batch", content=content, headers=JSON)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]


async def test_batch_item_past_parser_depth_rejected(
    client: httpx.AsyncClient,
) -> None:
    deep = b'{"device_id": "deep", "attrs": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    content = b'[{"device_id": "a"}, ' + deep + b"]"
    response = await client.post("/v1/heartbeats/batch", content=content, headers=JSON)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert [item["index"] for item in body["rejected"]] == [1]
    assert body["rejected"][0]["field"] == "item"
    assert "depth" in body["rejected"][0]["error"]


async def test_batch_lone_surrogate_item_rejected(client: httpx.AsyncClient) -> None:
    # orjson rejects a lone surrogate, so the array as a whole does not decode.
    content = (
        b'[{"device_id": "a"}, {"device_id": "b", "attrs": {"x": "\\ud800"}},'
        b' {"device_id": "c"}]'
    )
    response = await client.post("/v1/heartbeats/batch", content=content, headers=JSON)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [item["index"] for item in body["rejected"]] == [1]
    assert "surrogate" in body["rejected"][0]["error"]


@pytest.mark.parametrize(
    "content",
    [
        b'[{"device_id": "a"}',
        b'[{"device_id": "a"}] x',
        b"[" * 1500,
        b"[}",
        b"[{]}",
        # A missing or extra comma would shift the index of every later item.
        b'[{"device_id": "s-0"} {"device_id": "s-1"}, {"device_id": "s 2"}]',
        b'[, {"device_id": "a"}]',
        b'[{"device_id": "a"},, {"device_id": "b"}]',
        b'[{"device_id": "a"}, 1 2]',
        # Bytes between items that are not JSON whitespace.
        b'[{"device_id": "a"},\x0b{"device_id": "b"}]',
        b'[{"device_id": "a"},\x00{"device_id": "b"}]',
    ],
)
async def test_batch_unbalanced_array_400(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post("/v1/heartbeats/batch", content=content, headers=JSON)
    assert response.status_code == 400
    assert response.json()["field"] == "body"
    assert "not valid JSON" in response.json()["error"]


async def test_batch_wrong_content_type_415(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "text/csv"}
    response = await client.post("/v1/heartbeats/batch", content=b"a", headers=headers)
    assert response.status_code == 415
    assert "application/x-ndjson" in response.json()["error"]


# Backpressure


@pytest.mark.parametrize("settings", [replace(SETTINGS, queue_max_messages=2)])
async def test_post_queue_full_503(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    for device_id in ("a", "b"):
        assert (await post(client, {"device_id": device_id})).status_code == 202
    response = await post(client, {"device_id": "c"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "queue is full" in response.json()["error"]
    assert (
        sample(
            registry, "hbmon_ingest_unavailable_responses_total", reason="queue_full"
        )
        == 1
    )


async def test_unavailable_reasons_start_at_zero(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    # A rate over 503 responses needs every reason's series before the first.
    for reason in ("queue_full", "broker_unreachable", "producer_error"):
        value = registry.get_sample_value(
            "hbmon_ingest_unavailable_responses_total", {"reason": reason}
        )
        assert value == 0.0, reason


@pytest.mark.parametrize("settings", [replace(SETTINGS, queue_max_messages=3)])
async def test_batch_without_room_503(client: httpx.AsyncClient) -> None:
    items = [{"device_id": f"d{i}"} for i in range(4)]
    response = await client.post(
        "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "settings", [replace(SETTINGS, queue_max_kbytes=1, batch_max_items=10)]
)
async def test_batch_queue_full_partway_503(
    client: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    # Each good record's value is about 200 bytes, so the producer queue of
    # 1 KiB fills partway through the good items (after five with
    # confluent-kafka 2.16.1), before the second bad item.
    good = {"device_id": "d" * 128, "ts": "not a time"}
    bad = {"device_id": ""}
    items = [good, bad, good, good, good, good, good, good, bad, good]
    bad_indexes = [1, 8]
    good_indexes = [i for i in range(len(items)) if i not in bad_indexes]
    response = await client.post(
        "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert "queue is full" in error
    queued = int(error.split(" of 10 heartbeats were queued")[0].split()[-1])
    assert 1 <= queued < len(good_indexes)

    # Metrics count only what came before the item that could not be queued.
    failed_index = good_indexes[queued]
    rejected_before = sum(1 for i in bad_indexes if i < failed_index)
    accepted = "hbmon_ingest_heartbeats_accepted_total"
    assert sample(registry, accepted, endpoint="batch") == queued
    flagged = "hbmon_ingest_device_ts_flagged_total"
    assert sample(registry, flagged, flag="unparseable") == queued
    rejected = "hbmon_ingest_heartbeats_rejected_total"
    assert (
        sample(registry, rejected, reason="invalid", field="device_id")
        == rejected_before
    )


# Bundles. Without a broker the partition count never comes from
# librdkafka's statistics, so these tests set it.


@pytest.fixture
async def bundling(
    settings: IngestSettings, registry: CollectorRegistry
) -> AsyncIterator[tuple[httpx.AsyncClient, Publisher]]:
    app = create_app(settings, NO_BROKER, registry)
    async with serve(app) as http:
        publisher: Publisher = app.state.publisher
        publisher.use_partitions(6)
        yield http, publisher


@pytest.mark.parametrize("settings", [replace(SETTINGS, queue_max_messages=3)])
async def test_bundled_posts_503_when_full(
    bundling: tuple[httpx.AsyncClient, Publisher], registry: CollectorRegistry
) -> None:
    http, _ = bundling
    # Each heartbeat gets a poll of its own, so it goes out as a bundle of
    # one. Without a broker, the producer keeps three and rejects the
    # fourth, which waits, and from then on posts get a 503.
    statuses = []
    for n in range(10):
        statuses.append((await post(http, {"device_id": f"d{n}"})).status_code)
        await asyncio.sleep(0.05)
    assert 503 in statuses
    first_refused = statuses.index(503)
    assert statuses[:first_refused] == [202] * first_refused
    assert first_refused == 4
    accepted = "hbmon_ingest_heartbeats_accepted_total"
    assert sample(registry, accepted, endpoint="single") == first_refused


@pytest.mark.parametrize(
    "settings", [replace(SETTINGS, queue_max_kbytes=1, batch_max_items=10)]
)
async def test_full_producer_blocks_posts(
    bundling: tuple[httpx.AsyncClient, Publisher],
) -> None:
    http, publisher = bundling
    # Records of about 200 bytes, so 1 KiB of producer queue takes a few
    # bundles and the rest wait for room.
    items = [{"device_id": f"{n}" + "d" * 120, "ts": "x"} for n in range(10)]
    response = await http.post(
        "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 10
    assert 0 < publisher.waiting() < 10
    response = await post(http, {"device_id": "late"})
    assert response.status_code == 503
    assert "queue is full" in response.json()["error"]


async def test_shutdown_sends_waiting_bundles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.app")
    app = create_app(SETTINGS, NO_BROKER)
    async with serve(app) as http:
        app.state.publisher.use_partitions(6)
        for device_id in ("a", "b", "c"):
            assert (await post(http, {"device_id": device_id})).status_code == 202
    # Bundles went to the producer, which had no broker to deliver them to.
    assert re.search(
        r"3 heartbeats unsent, which are lost: 3 in \d records the producer held "
        r"and 0 not yet bundled",
        caplog.text,
    )


def test_bundle_values_split_at_the_byte_limit() -> None:
    records: list[dict[str, object]] = [
        {"device_id": str(n), "pad": "x" * 1000} for n in range(600)
    ]
    bundles = list(bundle_values(records))
    assert len(bundles) > 1
    assert all(len(bundle) <= BUNDLE_MAX_BYTES for bundle, _ in bundles)
    assert sum(count for _, count in bundles) == len(records)
    items = [item for bundle, _ in bundles for item in orjson.loads(bundle)]
    assert items == records
    big: dict[str, object] = {"device_id": "big", "pad": "x" * BUNDLE_MAX_BYTES}
    assert list(bundle_values([big])) == [(orjson.dumps([big]), 1)]


def test_bundle_values_fit_in_one_bundle() -> None:
    records: list[dict[str, object]] = [{"device_id": f"d{n}"} for n in range(3)]
    assert list(bundle_values(records)) == [(orjson.dumps(records), 3)]


@pytest.mark.parametrize(
    "settings", [replace(SETTINGS, unreachable_s=0.1, retry_after_s=3)]
)
async def test_post_broker_unreachable_503(client: httpx.AsyncClient) -> None:
    # The broker counts as lost from startup; wait, without timing
    # assertions, until the bound has passed.
    for _ in range(3000):
        response = await post(client, {"device_id": "d"})
        if response.status_code != 202:
            break
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "unreachable" in response.json()["error"]


# Authentication


AUTH_SETTINGS = replace(
    SETTINGS, tokens=parse_tokens(f"{FLEET},{SITE_A}:site-a/", "test")
)


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
@pytest.mark.parametrize("authorization", [None, "Bearer nope-nope-nope-nope", FLEET])
async def test_post_without_valid_token_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = dict(JSON)
    if authorization is not None:
        headers["authorization"] = authorization
    response = await post(client, {"device_id": "d"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["field"] == "Authorization"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
async def test_repeated_content_type_checked_after_token(
    client: httpx.AsyncClient,
) -> None:
    # The token comes first in the order of checks, as for every 4xx.
    headers = [("content-type", "application/json")] * 2
    response = await client.post(
        "/v1/heartbeats", content=b'{"device_id": "d"}', headers=headers
    )
    assert response.status_code == 401
    assert response.json()["field"] == "Authorization"


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
async def test_post_repeated_authorization_401(client: httpx.AsyncClient) -> None:
    # A scoped token, then one for the whole fleet: neither may decide.
    headers = [
        ("content-type", "application/json"),
        ("authorization", f"Bearer {SITE_A}"),
        ("authorization", f"Bearer {FLEET}"),
    ]
    response = await client.post(
        "/v1/heartbeats", content=b'{"device_id": "site-b/1"}', headers=headers
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "Authorization header must appear once",
        "field": "Authorization",
    }


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
async def test_post_token_scope(client: httpx.AsyncClient) -> None:
    site_a = {**JSON, "authorization": f"Bearer {SITE_A}"}
    fleet = {**JSON, "authorization": f"Bearer {FLEET}"}
    inside = await post(client, {"device_id": "site-a/1"}, headers=site_a)
    outside = await post(client, {"device_id": "site-b/1"}, headers=site_a)
    anywhere = await post(client, {"device_id": "site-b/1"}, headers=fleet)
    assert inside.status_code == 202
    assert outside.status_code == 403
    assert outside.json()["field"] == "device_id"
    assert anywhere.status_code == 202


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
async def test_batch_items_outside_scope_rejected(client: httpx.AsyncClient) -> None:
    headers = {**JSON, "authorization": f"Bearer {SITE_A}"}
    items = [{"device_id": "site-a/1"}, {"device_id": "site-b/1"}]
    response = await client.post(
        "/v1/heartbeats/batch", content=orjson.dumps(items), headers=headers
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["index"] == 1
    assert "scope" in response.json()["rejected"][0]["error"]


@pytest.mark.parametrize("settings", [AUTH_SETTINGS])
async def test_ops_endpoints_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200


async def test_open_mode_warns_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.app")
    async with serve(create_app(SETTINGS, NO_BROKER)):
        pass
    assert "No bearer tokens configured" in caplog.text


async def test_tokens_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(create_app(AUTH_SETTINGS, NO_BROKER)) as http:
        headers = {**JSON, "authorization": f"Bearer {SITE_A}"}
        await post(http, {"device_id": "site-b/1"}, headers=headers)
    assert SITE_A not in caplog.text
    assert FLEET not in caplog.text


# Operational endpoints and lifespan


async def test_healthz_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_503_without_broker(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "127.0.0.1:1" in response.json()["error"]
    assert response.headers["retry-after"] == "1"


async def test_young_gc_threshold_raised_while_serving() -> None:
    before = gc.get_threshold()
    async with serve(create_app(SETTINGS, NO_BROKER)):
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before


async def test_metrics_prometheus_text(client: httpx.AsyncClient) -> None:
    await post(client, {"device_id": "d"})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'hbmon_ingest_heartbeats_accepted_total{endpoint="single"} 1.0' in response.text
    )
    assert "hbmon_ingest_producer_queue_length" in response.text


async def test_openapi_states_limits(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    batch = document["paths"]["/v1/heartbeats/batch"]["post"]
    schema = batch["requestBody"]["content"]["application/json"]["schema"]
    assert document["openapi"].startswith("3.1")
    assert schema["maxItems"] == 5
    assert "security" not in batch


async def test_shutdown_logs_unsent_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ingest.app")
    async with serve(create_app(SETTINGS, NO_BROKER)) as http:
        for device_id in ("a", "b", "c"):
            await post(http, {"device_id": device_id})
    assert "Flushing the producer: 3 heartbeats not yet acknowledged" in caplog.text
    assert (
        "3 heartbeats unsent, which are lost: 3 in 3 records the producer held "
        "and 0 not yet bundled"
    ) in caplog.text


@pytest.fixture(autouse=True)
def _quiet_librdkafka() -> Iterator[None]:
    # Connection failures to 127.0.0.1:1 are expected here.
    librdkafka = logging.getLogger("hbmon.librdkafka")
    level = librdkafka.level
    librdkafka.setLevel(logging.CRITICAL)
    yield
    librdkafka.setLevel(level)


def broker(state: str, nodeid: int, waiting: int, rxidle_us: int) -> dict[str, object]:
    return {
        "state": state,
        "nodeid": nodeid,
        "waitresp_cnt": waiting,
        "rxidle": rxidle_us,
    }


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [
        ({}, None),
        # The bootstrap entry and connections that are not up do not count.
        ({"b": broker("UP", -1, 3, 60_000_000)}, None),
        ({"1": broker("DOWN", 1, 3, 60_000_000)}, None),
        # An idle connection proves nothing either way.
        ({"1": broker("UP", 1, 0, 60_000_000)}, None),
        ({"1": broker("UP", 1, 2, 12_500_000)}, 12.5),
        # One broker that still sends responses, or has nothing waiting, is contact.
        (
            {"1": broker("UP", 1, 2, 30_000_000), "2": broker("UP", 2, 1, 2_000_000)},
            2.0,
        ),
        (
            {"1": broker("UP", 1, 2, 30_000_000), "2": broker("UP", 2, 0, 9_000_000)},
            None,
        ),
    ],
)
def test_unanswered_requests_from_statistics(
    brokers: dict[str, object], expected: float | None
) -> None:
    assert unanswered_s(brokers) == expected
