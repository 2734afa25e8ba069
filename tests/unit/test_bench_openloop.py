"""The open-loop client: request count, status counting and percentiles."""

import asyncio
import importlib
import sys
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_openloop = importlib.import_module("ingest_openloop")

RESPONSE = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
    b"content-length: 21\r\n\r\n"
    b'{"status":"accepted"}'
)


class AcceptingServer(asyncio.Protocol):
    """Respond with 202 to every request body that arrives (each ends with "}").

    `requests` counts the requests each connection carried, in order of
    connection.
    """

    requests: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.index = len(AcceptingServer.requests)
        AcceptingServer.requests.append(0)

    def data_received(self, data: bytes) -> None:
        AcceptingServer.requests[self.index] += data.count(b"}")
        for _ in range(data.count(b"}")):
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def run_against_local_server(rate_per_s: float, duration_s: float):  # type: ignore[no-untyped-def]
    AcceptingServer.requests = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AcceptingServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/heartbeats"
    client = ingest_openloop.OpenLoopClient(
        "127.0.0.1",
        port,
        ingest_openloop.build_requests(url, devices=10, payload="basic"),
        rate_per_s=rate_per_s,
        duration_s=duration_s,
        max_connections=4,
    )
    try:
        return await client.run()
    finally:
        server.close()
        await server.wait_closed()


def test_open_loop_client_sends_rate_times_duration() -> None:
    result = asyncio.run(run_against_local_server(rate_per_s=200, duration_s=0.25))

    assert result.sent == 50
    assert result.completed == 50
    assert result.statuses == {202: 50}
    assert result.unanswered == 0
    assert result.errors == 0


def test_open_loop_client_takes_its_connections_in_turn() -> None:
    # 200 requests/s leave each response time to arrive before the next is
    # due, so a client that reused its last free connection would use one.
    result = asyncio.run(run_against_local_server(rate_per_s=200, duration_s=0.25))

    assert result.connections == 4
    assert sorted(AcceptingServer.requests) == [12, 12, 13, 13]


def test_open_loop_result_survives_json_round_trip() -> None:
    result = asyncio.run(run_against_local_server(rate_per_s=100, duration_s=0.1))

    copy = ingest_openloop.OpenLoopResult.from_json(result.to_json())

    assert copy.statuses == result.statuses
    assert copy.latency_ms == result.latency_ms


def test_percentiles_ms_uses_nearest_rank() -> None:
    samples = array("d", [i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms

    percentiles = ingest_openloop.percentiles_ms(samples)

    assert percentiles["p50"] == 50.0
    assert percentiles["p99"] == 99.0
    assert percentiles["p99_9"] == 100.0
    assert percentiles["max"] == 100.0


def test_build_requests_frames_each_body_with_its_length() -> None:
    requests = ingest_openloop.build_requests(
        "http://127.0.0.1:8080/v1/heartbeats", devices=3, payload="basic"
    )

    head, _, body = requests[4].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/heartbeats HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'"device_id":"bench-0000001"' in body
