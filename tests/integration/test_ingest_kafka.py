"""The ingest app against the real broker: what lands on the heartbeat topic.

The app runs in-process over ASGI. Leaving its lifespan flushes the
producer, so afterwards the topic's high watermarks count every record that
ingest published.
"""

import asyncio
import dataclasses
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from starlette.applications import Starlette

from hbmon.events import HeartbeatRecord, decode_heartbeat, decode_heartbeats
from hbmon.kafka import KafkaSettings, partition_for
from ingest.app import create_app
from ingest.settings import IngestSettings
from tests.integration.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SETTINGS = IngestSettings(batch_max_items=10, flush_timeout_s=30)
JSON = {"content-type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class serve:
    """Run the app's lifespan around an httpx client that calls it over ASGI."""

    def __init__(self, app: Starlette) -> None:
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


@pytest.fixture
async def client(kafka_settings: KafkaSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(SETTINGS, kafka_settings)) as http:
        yield http


def read_topic(settings: KafkaSettings) -> list[Message]:
    """Return every record on the heartbeat topic, up to its high watermarks."""
    topic = settings.heartbeat_topic
    consumer = Consumer(
        settings.client_config(
            group_id=f"ingest-test-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        expected = 0
        assignment = []
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            low, high = watermarks(consumer, tp)
            expected += high - low
            assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        messages: list[Message] = []
        deadline = time.monotonic() + 60
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


# Errors of a topic created moments ago whose partition leaders the broker
# is still electing.
_LEADER_PENDING = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """Return the low and high watermarks of `tp`, waiting up to 30 s for a leader."""
    deadline = time.monotonic() + 30
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            return low, high
        except KafkaException as err:
            code = err.args[0].code()
            if code not in _LEADER_PENDING or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


async def test_post_lands_keyed_by_device(kafka_settings: KafkaSettings) -> None:
    before_ms = time.time_ns() // 1_000_000
    async with serve(create_app(SETTINGS, kafka_settings)) as http:
        body = {"device_id": "site-a/pump-1", "seq": 7, "ts": "garbage", "x": 1}
        response = await http.post(
            "/v1/heartbeats", content=orjson.dumps(body), headers=JSON
        )
        assert response.status_code == 202
    after_ms = time.time_ns() // 1_000_000

    messages = await asyncio.to_thread(read_topic, kafka_settings)
    assert len(messages) == 1
    message = messages[0]
    assert message.key() == b"site-a/pump-1"
    record = decode_heartbeat(message.value())
    assert record.device_id == "site-a/pump-1"
    assert before_ms <= record.received_ms <= after_ms
    assert record.seq == 7
    assert record.device_ts == "garbage"
    assert message.headers() == [("device_ts_flag", b"unparseable")]
    assert message.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME


async def test_invalid_posts_reach_nothing(kafka_settings: KafkaSettings) -> None:
    invalid = [
        (b"nope", JSON, 400),
        (b"{}", JSON, 400),
        (b'{"device_id": ""}', JSON, 400),
        (b'{"device_id": "d", "seq": -1}', JSON, 400),
        (b'{"device_id": "d"}', {"content-type": "text/plain"}, 415),
        (b'{"device_id": "' + b"d" * 9000 + b'"}', JSON, 413),
    ]
    async with serve(create_app(SETTINGS, kafka_settings)) as http:
        for body, headers, status in invalid:
            response = await http.post("/v1/heartbeats", content=body, headers=headers)
            assert response.status_code == status

    assert await asyncio.to_thread(read_topic, kafka_settings) == []


async def test_batch_publishes_good_items(kafka_settings: KafkaSettings) -> None:
    items = [
        {"device_id": "gw-1/a"},
        {"device_id": "bad id"},
        {"device_id": "gw-1/b", "timeout_s": 30},
        "junk",
    ]
    ndjson = b'{"device_id": "gw-1/c"}\n{broken\n'
    async with serve(create_app(SETTINGS, kafka_settings)) as http:
        response = await http.post(
            "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
        )
        assert response.status_code == 202
        assert response.json()["accepted"] == 2
        response = await http.post(
            "/v1/heartbeats/batch",
            content=ndjson,
            headers={"content-type": "application/x-ndjson"},
        )
        assert response.status_code == 202
        assert response.json()["accepted"] == 1

    messages = await asyncio.to_thread(read_topic, kafka_settings)
    assert sorted(message.key() or b"" for message in messages) == [
        b"gw-1/a",
        b"gw-1/b",
        b"gw-1/c",
    ]


async def test_same_device_same_partition(kafka_settings: KafkaSettings) -> None:
    async with serve(create_app(SETTINGS, kafka_settings)) as http:
        for seq in range(5):
            body = orjson.dumps({"device_id": "dev-9", "seq": seq})
            response = await http.post("/v1/heartbeats", content=body, headers=JSON)
            assert response.status_code == 202

    messages = await asyncio.to_thread(read_topic, kafka_settings)
    assert len({message.partition() for message in messages}) == 1
    # A post after the first statistics report goes out in a bundle.
    records = [r for m in messages for r in decode_heartbeats(m.value())]
    assert [r.seq for r in records if isinstance(r, HeartbeatRecord)] == [
        0,
        1,
        2,
        3,
        4,
    ]


async def test_readyz_200_once_broker_reached(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    response = await client.get("/readyz")
    while response.status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_batch_bundles_land_where_each_device_would(
    kafka_settings: KafkaSettings,
) -> None:
    devices = [f"gw-2/dev-{n}" for n in range(60)]
    # librdkafka's default partitioner puts each keyed record on the
    # partition that partition_for returns.
    producer = Producer(kafka_settings.client_config())
    for device in devices:
        producer.produce(kafka_settings.heartbeat_topic, b"{}", device.encode())
    assert producer.flush(30) == 0
    keyed = await asyncio.to_thread(read_topic, kafka_settings)
    assert len(keyed) == len(devices)
    for message in keyed:
        assert message.partition() == partition_for(
            message.key(), kafka_settings.heartbeat_partitions
        )

    app = create_app(dataclasses.replace(SETTINGS, batch_max_items=100), kafka_settings)
    async with serve(app) as http:
        publisher = app.state.publisher
        deadline = time.monotonic() + 30
        while not publisher.partitions and time.monotonic() < deadline:
            await http.get("/readyz")
            await asyncio.sleep(0.1)
        assert publisher.partitions == kafka_settings.heartbeat_partitions
        # Single heartbeats wait for the poll loop and go out in bundles.
        for device in devices:
            body = orjson.dumps({"device_id": device, "seq": 0})
            response = await http.post("/v1/heartbeats", content=body, headers=JSON)
            assert response.status_code == 202
        items: list[object] = [{"device_id": device, "seq": 1} for device in devices]
        items[3] = {"device_id": devices[3], "seq": 1, "ts": "garbage"}
        items.append({"device_id": "bad id"})
        response = await http.post(
            "/v1/heartbeats/batch", content=orjson.dumps(items), headers=JSON
        )
        assert response.status_code == 202
        assert response.json()["accepted"] == 60
        assert [r["index"] for r in response.json()["rejected"]] == [60]

    messages = await asyncio.to_thread(read_topic, kafka_settings)
    bundles = [m for m in messages if m.key() is None]
    assert bundles
    bundled: dict[str, list[HeartbeatRecord]] = {device: [] for device in devices}
    for message in bundles:
        for record in decode_heartbeats(message.value()):
            assert isinstance(record, HeartbeatRecord)
            assert message.partition() == partition_for(
                record.device_id.encode(), kafka_settings.heartbeat_partitions
            )
            bundled[record.device_id].append(record)
    # Each device's single heartbeat, then its batch item, in that order.
    assert all([r.seq for r in bundled[device]] == [0, 1] for device in devices)
    assert bundled[devices[3]][1].device_ts_flag == "unparseable"
    assert bundled[devices[4]][1].device_ts_flag is None


async def test_frozen_broker_503_then_recovers(
    kafka_settings: KafkaSettings, restartable_broker: LocalBroker
) -> None:
    # A stopped process keeps its connections open, so only the unanswered
    # requests show that the broker is gone.
    settings = dataclasses.replace(SETTINGS, unreachable_s=3, stats_interval_ms=500)
    accepted = 0
    async with serve(create_app(settings, kafka_settings)) as http:

        async def post(seq: int) -> httpx.Response:
            nonlocal accepted
            body = orjson.dumps({"device_id": "frozen-1", "seq": seq})
            response = await http.post("/v1/heartbeats", content=body, headers=JSON)
            accepted += response.status_code == 202
            return response

        async def post_until(status: int, seq: int) -> tuple[httpx.Response, int]:
            deadline = time.monotonic() + 60
            while True:
                response = await post(seq)
                seq += 1
                if response.status_code == status or time.monotonic() > deadline:
                    return response, seq
                await asyncio.sleep(0.2)

        response, seq = await post_until(202, 0)
        assert response.status_code == 202
        # Ready means delivered once: the broker is known to respond.
        deadline = time.monotonic() + 60
        while (await http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "ingest never became ready"
            await asyncio.sleep(0.2)
        pid = restartable_broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            response, seq = await post_until(503, seq)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "unreachable" in response.json()["error"]

        response, seq = await post_until(202, seq)
        assert response.status_code == 202

    messages = await asyncio.to_thread(read_topic, kafka_settings)
    records = [r for m in messages for r in decode_heartbeats(m.value())]
    assert len(records) == accepted
