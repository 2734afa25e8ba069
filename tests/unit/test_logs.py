"""Logging setup: no secret in what other libraries log."""

import logging

import httpx

from hbmon.logs import configure_logging


class KeepLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_request_urls_stay_out_of_log() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("DEBUG")
    captured = KeepLines()
    root.addHandler(captured)
    try:
        transport = httpx.MockTransport(lambda request: httpx.Response(200))
        with httpx.Client(transport=transport) as client:
            client.post("http://127.0.0.1:9/services/T000/B000/secret-token")
        logging.getLogger("hbmon.test").debug("after the request")
    finally:
        root.removeHandler(captured)
        root.handlers[:] = handlers
        root.setLevel(level)

    assert captured.lines[-1] == "after the request"
    assert [line for line in captured.lines if "secret-token" in line] == []
