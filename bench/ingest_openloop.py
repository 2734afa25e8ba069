"""An open-loop HTTP client: single heartbeats at a fixed rate, with latencies.

Usage: python bench/ingest_openloop.py --url http://127.0.0.1:8080/v1/heartbeats
       --rate 5000 --duration 20 [--connections 50] [--json PATH]

Request i is due at start + i / rate whether or not earlier responses have
arrived, as in wrk2 (which Debian does not package). Like wrk2, the client
opens all --connections keep-alive connections before the first request and
takes them in turn, so each stays in use. A request that finds no
connection free waits for one; a connection that the server closed is
opened again when a request needs it. Latency is measured from the time a
request was due, so the time it waited for a connection counts and a slow
server cannot hide its delay by slowing the client down ("coordinated
omission"). The service time, measured from the moment the request was
written, is reported too.

The ceiling bench gives it the connections of its wrk phase (50), so the
latency at 70% of the peak comes from the connections that set the peak.
An earlier version opened 16 connections first and up to 512 on demand.
After a stall of the machine, the requests due during the stall opened
hundreds of connections at once, and the server spent its spare capacity
accepting them instead of clearing the backlog (BENCHMARKS.md has the
figures).

The event loop's timers tick in whole milliseconds, so a request may be
written up to about 1 ms after it was due. That delay is part of the
latency and is reported apart as the dispatch lag.
"""

import argparse
import asyncio
import json
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop
from ingest_payloads import PAYLOADS, heartbeat_body

PREBUILT_REQUESTS = 8192
# uvloop keeps timers in whole milliseconds (a 0.5 ms sleep returns at once),
# so a shorter tick would make the client spin on its core.
TICK_S = 0.001
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


@dataclass(frozen=True)
class OpenLoopResult:
    """Counts and latencies (in milliseconds) of one open-loop run."""

    rate_per_s: float
    duration_s: float
    sent: int
    completed: int
    statuses: dict[int, int]
    errors: int
    unanswered: int
    connections: int
    latency_ms: dict[str, float]
    service_ms: dict[str, float]
    dispatch_lag_ms: dict[str, float]

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "rate_per_s": self.rate_per_s,
            "duration_s": round(self.duration_s, 3),
            "sent": self.sent,
            "completed": self.completed,
            "achieved_per_s": round(self.completed / self.duration_s, 1),
            "statuses": {str(code): n for code, n in self.statuses.items()},
            "errors": self.errors,
            "unanswered": self.unanswered,
            "connections": self.connections,
            "latency_ms": self.latency_ms,
            "service_ms": self.service_ms,
            "dispatch_lag_ms": self.dispatch_lag_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "OpenLoopResult":
        statuses = data["statuses"]
        assert isinstance(statuses, dict)
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        fields["statuses"] = {int(code): n for code, n in statuses.items()}
        return cls(**fields)  # type: ignore[arg-type]


def percentiles_ms(samples_s: array) -> dict[str, float]:
    """Return nearest-rank percentiles and the maximum of `samples_s`, in ms."""
    ordered = sorted(samples_s)
    if not ordered:
        return {name: float("nan") for name in [*PERCENTILES, "max"]}
    result = {}
    for name, percent in PERCENTILES.items():
        rank = max(1, -(-len(ordered) * percent // 100))  # ceiling
        result[name] = round(ordered[int(rank) - 1] * 1000, 3)
    result["max"] = round(ordered[-1] * 1000, 3)
    return result


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self, client: "OpenLoopClient") -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.due_at = 0.0
        self.written_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.client.connected(self)

    def send(self, request: bytes, due_at: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due_at = due_at
        self.written_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.failed(self)

    def on_message_complete(self) -> None:
        self.busy = False
        self.client.completed(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class OpenLoopClient:
    """Send `requests` in turn to host:port at `rate_per_s` for `duration_s`."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        *,
        rate_per_s: float,
        duration_s: float,
        max_connections: int,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.requests = requests
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.max_connections = max_connections
        self.drain_timeout_s = drain_timeout_s
        self.latency_s = array("d")
        self.service_s = array("d")
        self.dispatch_lag_s = array("d")
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self._next_request = 0
        # Free connections, oldest first: taking them in turn keeps each in use.
        self._idle: deque[_Connection] = deque()
        self._connections: set[_Connection] = set()
        self._waiting: deque[float] = deque()
        self._open = 0  # connections open or being opened
        self._peak_open = 0
        self._outstanding = 0
        self._connecting: set[asyncio.Task[object]] = set()

    async def run(self) -> OpenLoopResult:
        # Open every connection first, so that connecting is not measured.
        await asyncio.gather(*(self._connect() for _ in range(self.max_connections)))

        # Dispatch every request that is due, then sleep until the next tick.
        total = int(self.rate_per_s * self.duration_s)
        start = time.perf_counter() + 0.01
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * self.rate_per_s) + 1)
            while sent < due:
                due_at = start + sent / self.rate_per_s
                self.dispatch_lag_s.append(now - due_at)
                self._dispatch(due_at)
                sent += 1
            await asyncio.sleep(TICK_S)
        send_window_s = time.perf_counter() - start

        # Wait for the responses still on their way, for a bounded time.
        deadline = time.perf_counter() + self.drain_timeout_s
        while self._outstanding and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        unanswered = self._outstanding
        for task in self._connecting:
            task.cancel()
        for connection in list(self._connections):
            assert connection.transport is not None
            connection.transport.close()
        return OpenLoopResult(
            rate_per_s=self.rate_per_s,
            duration_s=send_window_s,
            sent=sent,
            completed=sum(self.statuses.values()),
            statuses=dict(sorted(self.statuses.items())),
            errors=self.errors,
            unanswered=unanswered,
            connections=self._peak_open,
            latency_ms=percentiles_ms(self.latency_s),
            service_ms=percentiles_ms(self.service_s),
            dispatch_lag_ms=percentiles_ms(self.dispatch_lag_s),
        )

    def _dispatch(self, due_at: float) -> None:
        self._outstanding += 1
        if self._idle:
            self._send(self._idle.popleft(), due_at)
            return
        self._waiting.append(due_at)
        if self._open < self.max_connections:
            task = asyncio.ensure_future(self._connect())
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def _send(self, connection: _Connection, due_at: float) -> None:
        request = self.requests[self._next_request]
        self._next_request = (self._next_request + 1) % len(self.requests)
        connection.send(request, due_at)

    def _connect(self) -> Awaitable[None]:
        """Count a new connection as open at once, then open it."""
        self._open += 1
        self._peak_open = max(self._peak_open, self._open)
        return self._open_connection()

    async def _open_connection(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self._open -= 1
            self.errors += 1

    def connected(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._take_next(connection)

    def completed(self, connection: _Connection, status: int) -> None:
        now = time.perf_counter()
        self.latency_s.append(now - connection.due_at)
        self.service_s.append(now - connection.written_at)
        self.statuses[status] += 1
        self._outstanding -= 1
        self._take_next(connection)

    def failed(self, connection: _Connection) -> None:
        assert connection.transport is not None
        connection.transport.close()

    def lost(self, connection: _Connection) -> None:
        self._open -= 1
        self._connections.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        if connection.busy:
            connection.busy = False
            self.errors += 1
            self._outstanding -= 1

    def _take_next(self, connection: _Connection) -> None:
        if self._waiting:
            self._send(connection, self._waiting.popleft())
        else:
            self._idle.append(connection)


def build_requests(url: str, devices: int, payload: str) -> list[bytes]:
    """Return raw HTTP/1.1 POST requests of single heartbeats to `url`."""
    parts = urlsplit(url)
    ts = int(time.time())
    requests = []
    for index in range(PREBUILT_REQUESTS):
        body = heartbeat_body(index % devices, index, payload, ts)
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post single heartbeats at a fixed rate and report latencies."
    )
    parser.add_argument("--url", required=True, help="http://host:port/path to post to")
    parser.add_argument(
        "--rate", type=float, required=True, help="requests per second to send"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of sending"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        help="keep-alive connections, all opened before the first request",
    )
    parser.add_argument(
        "--devices", type=int, default=100_000, help="distinct device ids to cycle"
    )
    parser.add_argument(
        "--payload", choices=PAYLOADS, default="basic", help="heartbeat fields sent"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("--rate and --duration must be above 0, --connections at least 1")
    if urlsplit(args.url).scheme != "http":
        parser.error(f"--url={args.url} must start with http://")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = urlsplit(args.url)
    client = OpenLoopClient(
        parts.hostname or "127.0.0.1",
        parts.port or 80,
        build_requests(args.url, args.devices, args.payload),
        rate_per_s=args.rate,
        duration_s=args.duration,
        max_connections=args.connections,
    )
    result = uvloop.run(client.run())
    data = result.to_json()
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return 0 if result.unanswered == 0 and result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
