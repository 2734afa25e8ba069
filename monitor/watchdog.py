"""A watchdog that ends the process when a Kafka call blocks for too long."""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

logger = logging.getLogger(__name__)


class StallWatchdog:
    """Exit the process with status 1 when a guarded call runs past a limit.

    The transactional calls have limits of their own (monitor.stall), so
    this is the last resort for any other call that never returns. A
    monitor stuck in one judges nothing and raises no alarm. Exiting lets
    the orchestrator start a new process, which restores from the last
    commit.
    """

    def __init__(self, limit_s: float, check_every_s: float = 1.0) -> None:
        self.limit_s = limit_s
        self.check_every_s = check_every_s
        self._call = ""
        self._started = 0.0
        self._thread = threading.Thread(
            target=self._watch, name="stall-watchdog", daemon=True
        )
        self._thread.start()

    @contextlib.contextmanager
    def guard(self, call: str) -> Iterator[None]:
        """Watch the block inside the `with` statement; `call` names it in the log."""
        self._call = call
        self._started = time.monotonic()
        try:
            yield
        finally:
            self._started = 0.0

    def _watch(self) -> None:
        while True:
            time.sleep(self.check_every_s)
            started = self._started
            if started and time.monotonic() - started > self.limit_s:
                logger.critical(
                    "%s has blocked for more than %.0f s; exiting with status 1 "
                    "so that a new process restores from the last commit",
                    self._call,
                    self.limit_s,
                )
                logging.shutdown()
                os._exit(1)
