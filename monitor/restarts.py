"""Replacing the transactional producer when it fails or stalls."""

import logging
from collections.abc import Callable

from hbmon.logs import RateLimitedLog
from monitor.errors import MonitorError
from monitor.metrics import MonitorMetrics
from monitor.pool import OutagePool
from monitor.producer import PlainProducer, TransactionalProducer, transaction_error
from monitor.stall import CallStalled

logger = logging.getLogger(__name__)

# Commits and aborts in a row that may fail with a retriable error before
# the transactional producer is replaced.
RESTART_AFTER_FAILURES = 6
# Producer replacements in a row, with no commit in between, before the
# monitor gives up and exits.
MAX_RESTARTS = 3


class ProducerRestarts:
    """When to replace the transactional producer, and the replacement itself.

    It owns the count of retriable failures in a row, the pending restart
    with its reason (a metric label), and the count of replacements since
    the last commit. Scheduling a restart calls `discard_transaction`,
    which drops the open transaction so that the worker restores its
    partitions from the state topic. `pool` lists the owned partitions for
    the log line.
    """

    def __init__(
        self,
        metrics: MonitorMetrics,
        pool: OutagePool,
        discard_transaction: Callable[[], None],
    ) -> None:
        self.metrics = metrics
        self.pool = pool
        self.discard_transaction = discard_transaction
        # While the producer must be replaced: the reason and, once
        # replaced, whether the new client still must start.
        self.reason: str | None = None
        self._starting = False
        self._restarts_in_a_row = 0
        self._retriable_failures = 0
        self._log_limit = RateLimitedLog()

    @property
    def pending(self) -> bool:
        return self.reason is not None

    def note_success(self, committed: bool) -> None:
        """Clear the failures in a row, and the replacements too after a commit."""
        self._retriable_failures = 0
        if committed:
            self._restarts_in_a_row = 0

    def note_retriable_failure(
        self, err: MonitorError, producer: TransactionalProducer | PlainProducer
    ) -> bool:
        """Count a retriable failure; return whether it scheduled a restart."""
        self._retriable_failures += 1
        if self._retriable_failures < RESTART_AFTER_FAILURES:
            return False
        if not isinstance(producer, TransactionalProducer):
            return False
        self.schedule(
            err,
            "repeated_timeouts",
            f"{self._retriable_failures} calls in a row failed, the last: {err}",
        )
        return True

    def check(self, producer: TransactionalProducer | PlainProducer) -> None:
        """Schedule a restart when the producer reported a fatal error.

        Raises:
            MonitorError: the producer was fenced by another one.
        """
        if not isinstance(producer, TransactionalProducer):
            return
        if producer.fatal_error is None or self.reason is not None:
            return
        err = transaction_error(
            "the producer", producer.transactional_id, producer.fatal_error
        )
        if err.fatal:
            logger.error("%s. Exiting.", err)
            raise err
        self.schedule(err)

    def schedule(self, err: MonitorError, reason: str = "", why: str = "") -> None:
        """Replace the producer and restore the partitions at the next step.

        Raises:
            MonitorError: fatal, after MAX_RESTARTS replacements in a row
                without a commit in between.
        """
        if self._restarts_in_a_row >= MAX_RESTARTS:
            logger.error(
                "Transactional producer failed again after %d replacements "
                "without a commit: %s. Exiting.",
                self._restarts_in_a_row,
                err,
            )
            raise MonitorError(
                f"transactional producer replaced {self._restarts_in_a_row} times "
                f"in a row without a commit; the last error: {err}"
            ) from err
        self._restarts_in_a_row += 1
        if not reason:
            stalled = isinstance(err.__cause__, CallStalled)
            reason = "stalled_call" if stalled else "fatal_error"
        self.reason = reason
        self._starting = False
        self._retriable_failures = 0
        self.discard_transaction()
        self.metrics.producer_restarts.labels(reason).inc()
        logger.warning(
            "Transactional producer failed (%s): %s; replacing it with a new one "
            "of the same transactional id, which aborts the open transaction, "
            "then restoring partitions %s from the state topic",
            reason,
            why or err,
            sorted(self.pool.partitions),
        )

    def restart(self, producer: TransactionalProducer | PlainProducer) -> bool:
        """Replace the producer and start the new one; return whether it started.

        Raises:
            MonitorError: a fatal error, such as the producer being fenced.
        """
        assert isinstance(producer, TransactionalProducer)
        if not self._starting:
            producer.restart()
            self._starting = True
        try:
            producer.start()
        except MonitorError as err:
            if err.restart_required:
                self.schedule(err)
                return False
            if not err.retriable:
                logger.error("Starting the new producer failed: %s. Exiting.", err)
                raise
            if self._log_limit.allow("restart") is not None:
                logger.warning("Starting the new producer failed: %s; will retry", err)
            return False
        self.reason = None
        self._starting = False
        logger.info(
            "New producer of transactional id %s started", producer.transactional_id
        )
        return True
