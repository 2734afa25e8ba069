"""The Prometheus endpoint of the monitor and the alerter."""

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from hbmon.env import SettingError

logger = logging.getLogger(__name__)


def start_metrics_server(
    host: str, port: int, registry: CollectorRegistry, port_variable: str
) -> WSGIServer | None:
    """Serve `registry` at http://host:port/metrics in a thread; port 0 serves nothing.

    Raises:
        SettingError: the address cannot be bound; the message names
            `port_variable`, the setting to change.
    """
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise SettingError(
            f"{port_variable}={port}: cannot listen on {host}:{port} ({err.strerror}); "
            "choose a free port, or 0 to turn the metrics endpoint off"
        ) from err
    logger.info("Serving metrics on http://%s:%d/metrics", host, port)
    return server
