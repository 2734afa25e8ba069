"""The silences HTTP API: create, list and expire silences.

    GET    /silences        list every silence, newest start first
    POST   /silences        create one (JSON body, see parse_request)
    GET    /silences/{id}   one silence
    DELETE /silences/{id}   expire it now; it stays listed as expired
    GET    /healthz         200 while the server runs

Silences created here are written to the silence topic before the reply,
so they survive restarts. With a token set, every request except
/healthz needs `Authorization: Bearer <token>`.
"""

import hmac
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import uvicorn
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerter.matchers import MATCHER_KEYS, MatcherError, parse_matcher
from alerter.message import format_utc, printable
from alerter.silences import (
    MAX_TIME_MS,
    TIME_RANGE,
    Silence,
    SilenceStore,
    check_time_ms,
    epoch_ms,
    new_silence_id,
)
from alerter.tables import TopicWriter
from hbmon.events import InvalidRecord
from hbmon.routing_errors import use_json_routing_errors

logger = logging.getLogger(__name__)

REQUEST_KEYS = ("starts_at", "ends_at", "duration_s", "comment", "created_by")
_MAX_BODY_BYTES = 64 * 1024
_WRITE_TIMEOUT_S = 10.0
# About ten years. A longer silence is better written with an explicit ends_at.
MAX_DURATION_S = 10 * 365 * 86_400


class RequestError(ValueError):
    """A silence request breaks a rule; `field` names the key."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field


def parse_request(data: object, now_ms: int, created_by_default: str = "") -> Silence:
    """Build a silence from a POST body.

    Keys: `device_prefix`, `device_glob`, `attrs` (at least one), `ends_at`
    (ISO 8601 with offset) or `duration_s` (at most MAX_DURATION_S),
    optional `starts_at` (default now), and `comment` and `created_by`, both
    required. Times must lie in TIME_RANGE.

    Raises:
        RequestError: a key is missing, unknown or invalid.
    """
    if not isinstance(data, dict):
        raise RequestError("body", "must be a JSON object")
    for key in data:
        if key not in (*MATCHER_KEYS, *REQUEST_KEYS):
            allowed = ", ".join((*MATCHER_KEYS, *REQUEST_KEYS))
            raise RequestError(key, f"unknown key; allowed: {allowed}")
    try:
        matcher = parse_matcher(data)
    except MatcherError as err:
        raise RequestError(err.key, err.rule) from err
    if matcher.is_empty:
        raise RequestError(
            "device_prefix",
            "give device_prefix, device_glob or attrs; a silence must not hold "
            "back every alert",
        )
    starts_ms = _time(data, "starts_at") if "starts_at" in data else now_ms
    ends_ms = _ends(data, starts_ms)
    if ends_ms <= max(starts_ms, now_ms):
        raise RequestError("ends_at", "must be later than starts_at and than now")
    texts = {}
    for key in ("comment", "created_by"):
        value = data.get(key, created_by_default if key == "created_by" else "")
        if not isinstance(value, str) or not value.strip():
            raise RequestError(
                key, "is missing; say why the silence exists and who set it"
            )
        texts[key] = value.strip()[:500]
    return Silence(
        silence_id=new_silence_id(),
        matcher=matcher,
        starts_ms=starts_ms,
        ends_ms=ends_ms,
        comment=texts["comment"],
        created_by=texts["created_by"],
        created_ms=now_ms,
        source="api",
    )


def silence_json(silence: Silence, now_ms: int) -> dict[str, Any]:
    """Return the API form of a silence, times in ISO 8601 UTC."""
    return {
        "id": silence.silence_id,
        "state": silence.state(now_ms),
        **silence.matcher.to_json(),
        "starts_at": format_utc(silence.starts_ms, "starts_ms"),
        "ends_at": format_utc(silence.ends_ms, "ends_ms"),
        "comment": silence.comment,
        "created_by": silence.created_by,
        "created_at": format_utc(silence.created_ms, "created_ms"),
        "source": silence.source,
    }


def create_app(
    store: SilenceStore,
    writer: TopicWriter | None,
    token: str = "",
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    invalid_silences: Counter | None = None,
) -> Starlette:
    """Create the Starlette app of the silences API.

    A stored silence whose times cannot be shown is left out of every reply,
    logged once and counted in `invalid_silences`, so it cannot break the
    listing of the others.
    """
    skipped = _SkippedSilences(invalid_silences)

    async def list_silences(request: Request) -> Response:
        now_ms = clock_ms()
        silences = sorted(store.all(), key=lambda s: s.starts_ms, reverse=True)
        rendered = [skipped.render(silence, now_ms) for silence in silences]
        return JSONResponse({"silences": [s for s in rendered if s is not None]})

    async def get_silence(request: Request) -> Response:
        silence = store.get(request.path_params["silence_id"])
        rendered = None if silence is None else skipped.render(silence, clock_ms())
        if rendered is None:
            return _error(404, "silence_id", "no valid silence has this id")
        return JSONResponse(rendered)

    async def create_silence(request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_BODY_BYTES:
            return _error(413, "body", f"must be at most {_MAX_BODY_BYTES} bytes")
        try:
            data = _json(body)
            silence = parse_request(data, clock_ms())
        except RequestError as err:
            return _error(400, err.field, str(err).split(": ", 1)[1])
        if not await run_in_threadpool(_save, writer, silence):
            return _error(
                503, "broker", "the silence topic did not acknowledge the write; retry"
            )
        store.put(silence)
        logger.info(
            "Silence %s created by %s until %s: %s",
            silence.silence_id,
            silence.created_by,
            format_utc(silence.ends_ms, "ends_ms"),
            silence.comment,
        )
        return JSONResponse(silence_json(silence, clock_ms()), status_code=201)

    async def expire_silence(request: Request) -> Response:
        silence_id = request.path_params["silence_id"]
        current = store.get(silence_id)
        if current is None:
            return _error(404, "silence_id", "no silence has this id")
        if current.source == "config":
            return _error(
                409, "silence_id", "is set in the routes file; edit the file instead"
            )
        now_ms = clock_ms()
        expired = store.expire(silence_id, now_ms)
        if expired is None:
            return _error(404, "silence_id", "no silence has this id")
        if not await run_in_threadpool(_save, writer, expired):
            return _error(
                503, "broker", "the silence topic did not acknowledge the write; retry"
            )
        logger.info("Silence %s expired through the API", silence_id)
        return JSONResponse(silence_json(expired, now_ms))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # One route per path, so that a 405 lists every method the path takes.
    async def silences(request: Request) -> Response:
        if request.method == "POST":
            return await create_silence(request)
        return await list_silences(request)

    async def one_silence(request: Request) -> Response:
        if request.method == "DELETE":
            return await expire_silence(request)
        return await get_silence(request)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/silences", silences, methods=["GET", "POST"]),
            Route("/silences/{silence_id}", one_silence, methods=["GET", "DELETE"]),
        ],
    )
    use_json_routing_errors(app, "the API serves /healthz and /silences")
    if token:
        app.add_middleware(_BearerToken, token=token)
    return app


class ApiServer:
    """Runs the API app under uvicorn in a background thread."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._socket = socket.create_server((host, port))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        logger.info("Silences API listening on http://%s:%d", self.host, self.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()


class _SkippedSilences:
    """Renderer of silences for API replies that logs and counts invalid ones."""

    def __init__(self, counter: Counter | None) -> None:
        self.counter = counter
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def render(self, silence: Silence, now_ms: int) -> dict[str, Any] | None:
        """Return the API form of `silence`, or None when its times are invalid."""
        try:
            return silence_json(silence, now_ms)
        except InvalidRecord as err:
            self._skip(silence.silence_id, err)
            return None

    def _skip(self, silence_id: str, err: InvalidRecord) -> None:
        with self._lock:
            if silence_id in self._logged:
                return
            self._logged.add(silence_id)
        if self.counter is not None:
            self.counter.inc()
        logger.warning(
            "Skipping invalid silence %s in API replies: %s; expire it with "
            "DELETE /silences/%s",
            printable(silence_id),
            err,
            printable(silence_id),
        )


class _BearerToken:
    """ASGI middleware that returns 401 unless the request carries the token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(authorization, self.expected):
            response = _error(
                401,
                "authorization",
                "missing or wrong; send Authorization: Bearer <token>",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _save(writer: TopicWriter | None, silence: Silence) -> bool:
    if writer is None:
        return True
    writer.write(silence.silence_id, silence.encode())
    return writer.flush(_WRITE_TIMEOUT_S)


def _json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError("body", f"is not valid JSON ({err})") from err


def _time(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, str):
        raise RequestError(
            key, "must be an ISO 8601 time with offset, such as 2025-06-01T20:00:00Z"
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise RequestError(key, f"is not an ISO 8601 time ({err})") from err
    if moment.tzinfo is None:
        raise RequestError(key, "needs an offset such as Z or +02:00")
    moment_ms = epoch_ms(moment)
    try:
        check_time_ms(key, moment_ms)
    except ValueError as err:
        raise RequestError(key, str(err).split(": ", 1)[1]) from err
    return moment_ms


def _ends(data: dict[str, Any], starts_ms: int) -> int:
    if "ends_at" in data and "duration_s" in data:
        raise RequestError("ends_at", "give ends_at or duration_s, not both")
    if "ends_at" in data:
        return _time(data, "ends_at")
    duration = data.get("duration_s")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or not 0 < duration <= MAX_DURATION_S
    ):
        raise RequestError(
            "duration_s",
            f"give ends_at, or duration_s as a number of seconds above 0 and at "
            f"most {MAX_DURATION_S:,}",
        )
    ends_ms = starts_ms + int(duration * 1000)
    if ends_ms > MAX_TIME_MS:
        raise RequestError(
            "duration_s",
            f"starts_at plus duration_s must end within {TIME_RANGE}",
        )
    return ends_ms


def _error(status: int, field: str, rule: str) -> JSONResponse:
    return JSONResponse(
        {"error": f"{field}: {rule}", "field": field}, status_code=status
    )
