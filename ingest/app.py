"""The ingest ASGI application: routes, lifespan and the operational endpoints."""

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hbmon.kafka import KafkaSettings
from hbmon.logs import RateLimitedLog, configure_logging
from hbmon.routing_errors import use_json_routing_errors
from ingest.auth import Authenticator
from ingest.endpoints import (
    JSON,
    NDJSON,
    BatchEndpoint,
    HeartbeatEndpoint,
    RequestReader,
)
from ingest.heartbeat import HeartbeatParser
from ingest.metrics import IngestMetrics
from ingest.openapi import build_openapi
from ingest.publisher import Publisher
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SINGLE_PATH = "/v1/heartbeats"
BATCH_PATH = "/v1/heartbeats/batch"
# The young generation's GC threshold while serving (Python's default: 700).
# At 700, a backlog kept the collector busy about 200 times a second with the
# queued requests' objects. BENCHMARKS.md (GC threshold runs) has the p99s.
YOUNG_GC_THRESHOLD = 50_000


class IngestApp(Starlette):
    """The Starlette app, with a shortcut for the two heartbeat POST endpoints.

    Starlette's middleware stack and router took about 4 to 5 of the 11 to
    16 µs that one heartbeat POST cost (Starlette 1.10, measured in-process
    on a 2-core AMD EPYC VM). So a POST to a heartbeat path goes straight
    to its endpoint, which catches its own errors and sends its own
    response. An unexpected exception reaches uvicorn, which responds with
    a 500 as Starlette's error middleware would. Any other request, another
    method on those paths (405), a path with a trailing slash (404) and the
    lifespan go through Starlette as before. The shortcut compares `path`
    exactly, so a request with a `root_path` goes through Starlette too.
    """

    def __init__(self, *, post_endpoints: dict[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._post_endpoints = post_endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._post_endpoints.get(scope["path"])
            if endpoint is not None and not scope.get("root_path"):
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: IngestSettings,
    kafka_settings: KafkaSettings,
    registry: CollectorRegistry | None = None,
) -> IngestApp:
    """Build the ingest app, whose lifespan starts and stops the producer.

    Metrics go to `registry`, or to a new registry of the app's own.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    publisher = Publisher(settings, kafka_settings, metrics)
    authenticator = Authenticator(settings.tokens)
    parser = HeartbeatParser(
        attrs_max_bytes=settings.attrs_max_bytes,
        attrs_max_depth=settings.attrs_max_depth,
        ts_max_ahead_s=settings.ts_max_ahead_s,
        ts_max_age_s=settings.ts_max_age_s,
    )
    single = HeartbeatEndpoint(
        RequestReader(
            authenticator=authenticator,
            publisher=publisher,
            media_types=(JSON,),
            max_bytes=settings.max_body_bytes,
        ),
        parser,
        publisher,
        metrics,
    )
    batch = BatchEndpoint(
        RequestReader(
            authenticator=authenticator,
            publisher=publisher,
            media_types=(JSON, NDJSON),
            max_bytes=settings.batch_max_bytes,
        ),
        parser,
        publisher,
        metrics,
        max_items=settings.batch_max_items,
    )
    app = IngestApp(
        post_endpoints={SINGLE_PATH: single, BATCH_PATH: batch},
        routes=[
            # Reached only for other methods, which get a 405.
            Route(SINGLE_PATH, single, methods=["POST"]),
            Route(BATCH_PATH, batch, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    use_json_routing_errors(app, "see /openapi.json")
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.open = authenticator.open
    app.state.openapi = orjson.dumps(build_openapi(settings))
    return app


def create_app_from_env() -> IngestApp:
    """Build the app from environment variables, as each uvicorn worker does.

    Raises:
        SettingError: an environment variable is invalid.
    """
    configure_logging()
    registry = None
    if not os.environ.get(_MULTIPROC_ENV):
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return create_app(IngestSettings.from_env(), KafkaSettings.from_env(), registry)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the producer and its poll loop, and flush the producer at shutdown."""
    settings: IngestSettings = app.state.settings
    publisher: Publisher = app.state.publisher
    if app.state.open:
        logger.warning(
            "No bearer tokens configured (HBMON_INGEST_TOKENS, "
            "HBMON_INGEST_TOKENS_FILE); accepting heartbeats from any client"
        )
    publisher.start()
    # Objects that live as long as the process (modules, the app, settings)
    # leave the collector's view: under load, a full collection scanned them
    # all in about 15 ms, a pause that every request in flight waited out.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *thresholds[1:])
    poller = asyncio.create_task(
        poll_forever(publisher, app.state.metrics, settings.poll_interval_ms / 1000)
    )
    # Bundling starts once the partition count is known. The statistics give
    # it only after a first record went out, so ask the broker now as well.
    counter = asyncio.create_task(learn_partitions(publisher))
    try:
        yield
    finally:
        for task in (counter, poller):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await flush(publisher, settings.flush_timeout_s)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        app.state.metrics.sync()
        if os.environ.get(_MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())


async def poll_forever(
    publisher: Publisher, metrics: IngestMetrics, interval_s: float
) -> None:
    """Hand waiting bundles to the producer and serve its callbacks every `interval_s`.

    Each poll serves every callback already queued, and a bundle record has
    one delivery report for all its heartbeats, so the loop waits the full
    interval between polls. A callback that raises is logged and the loop
    goes on, so one bad report never stops delivery reports for the rest.
    Every `interval_s` the loop also sets the queue length gauge and syncs
    the metrics' plain counts into their counters, which is what other
    workers read in multiprocess mode.
    """
    log = RateLimitedLog()
    synced_at = time.monotonic()
    while True:
        try:
            publisher.poll()
        except Exception:  # noqa: BLE001 - any callback error must not end polling
            if log.allow("poll") is not None:
                logger.exception("Producer callback failed; polling goes on")
        now = time.monotonic()
        if now - synced_at >= interval_s:
            synced_at = now
            metrics.queue_length.set(publisher.queue_length())
            metrics.sync()
        await asyncio.sleep(interval_s)


async def learn_partitions(publisher: Publisher) -> None:
    """Set the partition count from the broker's metadata once it is reached.

    The request waits for the first contact, so the broker responds at once
    in the usual case, and its worker thread can delay shutdown by at most its
    2 s timeout.
    """
    while not publisher.partitions:
        if publisher.reached():
            publisher.use_partitions(
                await asyncio.to_thread(publisher.partition_count, 2.0)
            )
        await asyncio.sleep(0.1 if not publisher.reached() else 1.0)


async def flush(publisher: Publisher, timeout_s: float) -> None:
    """Flush the producer for up to `timeout_s` and log what was left unsent."""
    publisher.poll()
    logger.info(
        "Flushing the producer: %d heartbeats not yet acknowledged by Kafka "
        "and %d not yet bundled (up to %s s)",
        publisher.unacknowledged,
        publisher.waiting(),
        timeout_s,
    )
    records, in_records, waiting = await asyncio.to_thread(publisher.close, timeout_s)
    if records or waiting:
        logger.error(
            "Flush timed out after %s s with %d heartbeats unsent, which are "
            "lost: %d in %d records the producer held and %d not yet bundled",
            timeout_s,
            in_records + waiting,
            in_records,
            records,
            waiting,
        )
        return
    logger.info("Producer flushed; every queued heartbeat record was delivered")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    publisher: Publisher = request.app.state.publisher
    reason = publisher.readiness(time.monotonic())
    if reason is None:
        return Response(b'{"status":"ready"}', media_type="application/json")
    retry_after = str(request.app.state.settings.retry_after_s)
    return Response(
        orjson.dumps({"error": reason}),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": retry_after},
    )


async def metrics_text(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry
    if os.environ.get(_MULTIPROC_ENV):
        # This worker's files get its latest counts; other workers sync theirs
        # in their poll loops.
        request.app.state.metrics.sync()
        # Each worker writes its own files; sum them over all workers.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")
