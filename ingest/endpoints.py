"""The POST endpoints: one heartbeat, and a batch of heartbeats from a gateway.

Both are plain ASGI apps behind Starlette's router. Every request passes the
same checks in this order: bearer token (401), media type (415), declared
size (413), broker availability (503), actual size (413). Then the body is
decoded (400), each heartbeat validated (400) and checked against the
token's device-id prefix (403), and its record queued to the producer
(503 when that fails). A 202 is sent only after the record is queued.
"""

import re
import time
import types
from collections.abc import Generator

import orjson
from starlette.types import Receive, Scope, Send

from ingest.asgi import (
    check_content_length,
    error_body,
    json_error,
    json_response,
    load_json,
    media_type,
    read_body,
    send_json,
)
from ingest.auth import Authenticator, check_scope, unauthorized
from ingest.errors import IngestError, invalid
from ingest.heartbeat import HeartbeatParser
from ingest.metrics import IngestMetrics
from ingest.publisher import Publisher

JSON = b"application/json"
# JSON's whitespace. bytes.isspace() also counts VT and FF, which JSON does not.
_JSON_SPACE = b" \t\r\n"
NDJSON = b"application/x-ndjson"
_REPEATED_CONTENT_TYPE = "Content-Type must appear once"
_REPEATED_AUTHORIZATION = "Authorization header must appear once"
_ACCEPTED_START, _ACCEPTED_BODY = json_response(
    202, orjson.dumps({"status": "accepted"})
)


@types.coroutine
def yield_to_loop() -> Generator[None, None, None]:
    """Let every other ready task run once before the caller resumes.

    asyncio.sleep(0) does the same with one more function call.
    """
    yield


class RequestReader:
    """Run the checks that come before the body is read."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        publisher: Publisher,
        media_types: tuple[bytes, ...],
        max_bytes: int,
    ) -> None:
        # None when no tokens are configured, which skips a call per request.
        self._authenticate = None if authenticator.open else authenticator.authenticate
        self._publisher = publisher
        self._media_types = media_types
        self.max_bytes = max_bytes
        self._max_digits = len(str(max_bytes))
        names = " or ".join(media.decode() for media in media_types)
        self._media_error = f"Content-Type must be {names}"

    def check(self, scope: Scope) -> tuple[bytes, str]:
        """Return the request's media type and the token's device-id prefix.

        The caller reads the body next. Endpoints await it themselves, and
        the common cases of reading headers and checking Content-Length run
        here rather than in calls of their own (see HeartbeatEndpoint).

        Raises:
            IngestError: 401, 415, 413 or 503, in that order of checking.
        """
        # ASGI servers send header names in lower case. A missing header
        # reads as b"".
        content_type = content_length = authorization = b""
        content_types = authorizations = 0
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_types += 1
                content_type = value
            elif name == b"content-length":
                content_length = value
            elif name == b"authorization":
                authorizations += 1
                authorization = value
        prefix = ""
        if self._authenticate:
            if authorizations > 1:
                # Two tokens may carry different scopes, so neither is accepted.
                raise unauthorized(_REPEATED_AUTHORIZATION)
            prefix = self._authenticate(authorization)
        if content_types > 1:
            raise IngestError(400, "Content-Type", _REPEATED_CONTENT_TYPE)
        media = content_type
        if media not in self._media_types:
            # Not the exact media type: drop parameters and letter case.
            media = media_type(content_type)
        if media not in self._media_types:
            raise IngestError(415, "Content-Type", self._media_error)
        # Digits only, and fewer of them than the limit has, are below it.
        if content_length and (
            len(content_length) >= self._max_digits or not content_length.isdigit()
        ):
            check_content_length(content_length, self.max_bytes)
        publisher = self._publisher
        if not publisher.healthy:
            publisher.check_available(time.monotonic())
        return media, prefix


class HeartbeatEndpoint:
    """POST /v1/heartbeats: one heartbeat as a JSON object."""

    def __init__(
        self,
        reader: RequestReader,
        parser: HeartbeatParser,
        publisher: Publisher,
        metrics: IngestMetrics,
    ) -> None:
        self._reader = reader
        self._parser = parser
        self._publisher = publisher
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The common case of read_body and load_json runs inline, as do
        # steps of RequestReader.check: under load, a call on this path costs
        # several times what it costs in a loop. Five fewer calls per request
        # gained about 0.01 of the no-op app's heartbeats per CPU-second
        # (0.801 against 0.793, median of 5 rounds of 8 s, 2-core AMD EPYC VM).
        try:
            reader = self._reader
            _, prefix = reader.check(scope)
            message = await receive()
            body = message.get("body", b"")
            if (
                message["type"] != "http.request"
                or message.get("more_body")
                or len(body) > reader.max_bytes
            ):
                # read_body raises the 413, or reads the rest of the body.
                body = await read_body(message, receive, reader.max_bytes)
                if body is None:
                    return
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                raise json_error("body", err) from err
            received_ms = time.time_ns() // 1_000_000
            device_id, record, ts_flag = self._parser.parse(data, received_ms)
            if prefix:
                check_scope(prefix, device_id)
            self._publisher.publish(device_id, record, ts_flag)
        except IngestError as err:
            count_error(self._metrics, err)
            await send_json(send, err.status, error_body(err), err.headers)
            return
        metrics = self._metrics
        metrics.accepted_single += 1
        if ts_flag is not None:
            metrics.ts_flagged[ts_flag] += 1
        # Under load, uvicorn starts the requests of one pass over the ready
        # sockets together. Yielding lets all of them queue their heartbeats
        # first, so their 202s go out back to back. A client on this machine
        # then reads several responses per wake-up: wrk switched context 0.4
        # times per request instead of about once (the no-op app: 0.3 to
        # 0.6). BENCHMARKS.md ("202s written together") has the runs, and
        # ingest/http.py keeps a half-closed connection open for the 202.
        await yield_to_loop()
        await send(_ACCEPTED_START)
        await send(_ACCEPTED_BODY)


class BatchEndpoint:
    """POST /v1/heartbeats/batch: a JSON array or NDJSON lines of heartbeats.

    Each item is validated on its own. Good items are queued even when
    others are rejected, and the 202 response lists the index, field and
    error of each rejected item. The index is 0-based. In NDJSON, blank
    lines are skipped and not counted.
    """

    def __init__(
        self,
        reader: RequestReader,
        parser: HeartbeatParser,
        publisher: Publisher,
        metrics: IngestMetrics,
        *,
        max_items: int,
    ) -> None:
        self._reader = reader
        self._parser = parser
        self._publisher = publisher
        self._metrics = metrics
        self._max_items = max_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            media, prefix = self._reader.check(scope)
            body = await read_body(await receive(), receive, self._reader.max_bytes)
            if body is None:
                return
            items = self._split(body, media)
            self._publisher.check_room(len(items))
            accepted, rejected = self._publish(items, prefix)
        except IngestError as err:
            count_error(self._metrics, err)
            await send_json(send, err.status, error_body(err), err.headers)
            return
        response = {"status": "accepted", "accepted": accepted, "rejected": rejected}
        await send_json(send, 202, orjson.dumps(response))

    def _split(self, body: bytes, media: bytes) -> list[object]:
        """Return the batch items: decoded for JSON, raw lines for NDJSON.

        Raises:
            IngestError: 400 when a JSON body is not an array, 413 when the
                batch has more items than allowed.
        """
        items: list[object]
        if media == NDJSON:
            # Lines end at LF (or CRLF) only: bytes.splitlines() would also
            # split at a bare CR, which is JSON whitespace inside a line, and
            # shift the index of every later item.
            items = [line for line in body.split(b"\n") if line.strip(_JSON_SPACE)]
        else:
            try:
                decoded = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                # One item that orjson cannot decode, such as a lone surrogate
                # or nesting past its depth limit, must not cost the others, so
                # each item's bytes are then decoded on their own.
                split = split_array(body)
                if split is None:
                    raise invalid("body", f"body is not valid JSON: {err}") from err
                decoded = split
            if type(decoded) is not list:
                raise invalid("body", "batch body must be a JSON array of heartbeats")
            items = decoded
        if len(items) > self._max_items:
            raise IngestError(
                413,
                "body",
                f"batch has {len(items)} heartbeats; the limit is "
                f"{self._max_items} per request",
            )
        return items

    def _publish(
        self, items: list[object], prefix: str
    ) -> tuple[int, list[dict[str, object]]]:
        """Queue every valid item; return the count queued and the rejections.

        Items that are bytes are NDJSON lines, still to be decoded; JSON
        decoding never yields bytes.

        Raises:
            IngestError: 503 when the producer stops taking records partway;
                the message states how many were queued before that.
        """
        received_ms = time.time_ns() // 1_000_000
        parse = self._parser.parse
        publisher = self._publisher
        publish = publisher.publish
        metrics = self._metrics
        ts_flagged = metrics.ts_flagged
        rejected: list[dict[str, object]] = []
        accepted = 0
        for index, item in enumerate(items):
            try:
                data = load_json(item, "item") if type(item) is bytes else item
                if type(data) is not dict:
                    raise invalid("item", "item must be a JSON object with device_id")
                device_id, record, ts_flag = parse(data, received_ms)
                if prefix:
                    check_scope(prefix, device_id)
                publish(device_id, record, ts_flag)
            except IngestError as err:
                if err.retriable:
                    metrics.accepted_batch += accepted
                    raise IngestError(
                        err.status,
                        err.field,
                        f"{err.message}; {accepted} of {len(items)} heartbeats "
                        "were queued before this, and resending the batch "
                        "publishes them again",
                        retriable=True,
                        reason=err.reason,
                        headers=err.headers,
                    ) from err
                metrics.count_rejected(err.reason, err.field)
                rejected.append(
                    {"index": index, "field": err.field, "error": err.message}
                )
                continue
            accepted += 1
            if ts_flag is not None:
                ts_flagged[ts_flag] += 1
        metrics.accepted_batch += accepted
        # The batch's bundles go out now rather than at the next poll.
        publisher.send_pending()
        return accepted, rejected


# The tokens that give a JSON array its items: strings, whose brackets and
# commas do not count, the brackets and commas outside them, and runs of
# anything else (numbers, true, false, null, or stray bytes). Only JSON's
# own whitespace separates tokens; a vertical tab is a stray byte.
_ARRAY_TOKENS = re.compile(
    rb'"(?:[^"\\]|\\.)*"|[\[\]{},]|[^ \t\r\n"\[\]{},]+', re.DOTALL
)
_OPENERS = (b"[", b"{")
_CLOSERS = (b"]", b"}")


def split_array(body: bytes) -> list[object] | None:
    """Return the bytes of each item of the JSON array `body`, or None.

    Only the array's structure is read, so an item that orjson rejects
    still has its place, and its own decoding reports the error. None
    means that `body` is not one array of balanced items with one value
    between each two commas (a missing or extra comma, say): then no item
    has a reliable index.
    """
    text = body.strip(_JSON_SPACE)
    if text[:1] != b"[":
        return None
    items: list[object] = []
    depth = 0
    start = 0
    end = -1
    values = 0  # values begun in the current item
    for token in _ARRAY_TOKENS.finditer(text):
        mark = token.group()
        if depth == 1 and mark != b"," and mark not in _CLOSERS:
            values += 1
            if values > 1:
                return None
        if mark in _OPENERS:
            depth += 1
            if depth == 1:
                start = token.end()
        elif mark in _CLOSERS:
            depth -= 1
            if depth == 0:
                if mark != b"]" or (items and not values):
                    return None
                end = token.end()
                if values:
                    items.append(text[start : token.start()])
                break
        elif mark == b"," and depth == 1:
            if not values:
                return None
            items.append(text[start : token.start()])
            start = token.end()
            values = 0
    if end != len(text):
        return None
    return items


def count_error(metrics: IngestMetrics, err: IngestError) -> None:
    if err.status == 503:
        metrics.count_unavailable(err.reason)
    else:
        metrics.count_rejected(err.reason, err.field)
