"""A no-op ASGI app: the baseline that ingest's throughput is compared with.

Usage: python bench/noop_app.py [--host 127.0.0.1] [--port 8099]

It reads the whole request body of any request and responds with
``202 {"status": "accepted"}`` and the same headers as ingest, and does
nothing else: no routing, no parsing, no producer. It runs on the uvicorn
settings that ``hbmon ingest`` uses with one worker (uvloop, httptools with
ingest's half-close handling, no access log, no server header, no proxy
headers), so the throughput ratio of ingest to this app isolates the cost
of ingest's own code.
"""

import argparse
import logging

import uvicorn

from ingest.http import HalfCloseHttpProtocol

ACCEPTED = b'{"status":"accepted"}'
RESPONSE_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(ACCEPTED)).encode()),
    ],
}
RESPONSE_BODY = {"type": "http.response.body", "body": ACCEPTED}


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Respond to every HTTP request with 202 once its body is read."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    if message["type"] == "http.disconnect":
        return
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)


async def serve_lifespan(receive, send) -> None:  # type: ignore[no-untyped-def]
    """Acknowledge startup and shutdown, so uvicorn runs with lifespan="on"."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8099, help="TCP port")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    # The same settings as ingest.cli.run with one worker.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http=HalfCloseHttpProtocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
