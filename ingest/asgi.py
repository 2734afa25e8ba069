"""Raw ASGI helpers for the POST endpoints: headers, body reading, JSON responses.

The heartbeat endpoints skip Starlette's Request and Response objects,
which would cost more than the rest of a small request's handling.
"""

import orjson
from starlette.types import Message, Receive, Send

from ingest.errors import Headers, IngestError

_JSON = (b"content-type", b"application/json")


def media_type(content_type: bytes) -> bytes:
    """Return the media type of a Content-Type value, without parameters."""
    return content_type.split(b";", 1)[0].strip().lower()


def json_response(status: int, body: bytes) -> tuple[Message, Message]:
    """Return the two ASGI messages of a response with a JSON body.

    uvicorn only reads the messages it is sent, so a constant response can
    be built once and sent as often as needed.
    """
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


def check_content_length(content_length: bytes, max_bytes: int) -> None:
    """Raise a 413 IngestError if a declared Content-Length exceeds `max_bytes`."""
    if not content_length:
        return
    try:
        declared = int(content_length)
    except ValueError as err:
        raise IngestError(
            400, "Content-Length", "Content-Length must be an integer"
        ) from err
    if declared > max_bytes:
        raise _too_large(max_bytes, declared)


def whole_body(message: Message, max_bytes: int) -> bytes | None:
    """Return the body when `message`, the first one received, contains all of it.

    Returns None when more body follows or the client disconnected, which
    `read_body` handles.

    Raises:
        IngestError: 413 when the body exceeds `max_bytes`.
    """
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    body: bytes = message.get("body", b"")
    if len(body) > max_bytes:
        raise _too_large(max_bytes, len(body))
    return body


async def read_body(message: Message, receive: Receive, max_bytes: int) -> bytes | None:
    """Read the whole request body from its first `message` on.

    Returns None if the client disconnected.

    Raises:
        IngestError: 413 as soon as the bytes received exceed `max_bytes`,
            whatever the Content-Length header declared.
    """
    body = whole_body(message, max_bytes)
    if body is not None or message["type"] != "http.request":
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes, None)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] != "http.request":
            return None


def load_json(body: bytes, field: str) -> object:
    """Decode JSON, raising a 400 IngestError that names `field`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise json_error(field, err) from err


def json_error(field: str, err: orjson.JSONDecodeError) -> IngestError:
    """Return the 400 IngestError for `field` that orjson could not decode."""
    return IngestError(400, field, f"{field} is not valid JSON: {err}")


async def send_json(
    send: Send, status: int, body: bytes, headers: Headers | None = None
) -> None:
    """Send a complete response with a JSON body."""
    response_headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        response_headers.extend(headers)
    await send(
        {"type": "http.response.start", "status": status, "headers": response_headers}
    )
    await send({"type": "http.response.body", "body": body})


def error_body(err: IngestError) -> bytes:
    """Return the JSON error body: the message, and the field when one is at fault."""
    if err.field:
        return orjson.dumps({"error": err.message, "field": err.field})
    return orjson.dumps({"error": err.message})


def _too_large(max_bytes: int, size: int | None) -> IngestError:
    if size is None:
        return IngestError(
            413, "body", f"request body exceeds the limit of {max_bytes} bytes"
        )
    return IngestError(
        413, "body", f"request body is {size} bytes; the limit is {max_bytes} bytes"
    )
