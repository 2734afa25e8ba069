"""The pause in judging while the monitor has lost contact with the brokers."""

import logging

import orjson

from hbmon.logs import RateLimitedLog
from monitor.contact import BrokerContact
from monitor.metrics import MonitorMetrics
from monitor.partition import PartitionState
from monitor.pool import OutagePool

logger = logging.getLogger(__name__)


class ContactWatch:
    """Whether contact with the partition leaders is lost, and its effect on judging.

    It owns the BrokerContact that the consumer's statistics update, the
    lost state with its metrics and log lines, and the pause and resume of
    judging in every owned partition of `pool`.
    """

    def __init__(
        self,
        topic: str,
        created_ms: int,
        timeout_ms: int,
        metrics: MonitorMetrics,
        pool: OutagePool,
    ) -> None:
        self.broker = BrokerContact(topic, created_ms)
        self.timeout_ms = timeout_ms
        self.metrics = metrics
        self.pool = pool
        self.lost = False
        # The time the leaders were last heard from as the last loss ended, else 0.
        self.regained_ms = 0
        self._checked_ms = 0
        self._log_limit = RateLimitedLog()

    @property
    def heard_ms(self) -> int:
        """The wall-clock ms when every leader last responded, 0 before a report."""
        return self.broker.heard_ms

    def follow_consumer(self, created_ms: int) -> None:
        """Start over with the statistics of a consumer created at `created_ms`."""
        self.broker = BrokerContact(self.broker.topic, created_ms)

    def on_stats(self, stats_json: str) -> None:
        """Apply one statistics report. The consumer calls this as its `stats_cb`."""
        # Called from consume(), so on the thread that runs step().
        try:
            stats = orjson.loads(stats_json)
            self.broker.update(stats)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
            if self._log_limit.allow("stats") is not None:
                logger.warning(
                    "Consumer statistics could not be read: %s; partition clocks "
                    "wait for the next report",
                    err,
                )

    def check(self, wall_ms: int) -> None:
        """Pause judging while no leader was heard from for the contact timeout.

        The clocks already stop at the last contact. Pausing also makes each
        device silent since before the loss wait one full timeout after
        contact returns, because its heartbeats may never have been appended.
        Runs at the start of every step and before each batch is applied. A
        loop that did not run for the contact timeout (a commit retried while
        the broker was down, a long restore) counts as lost contact too,
        because the statistics that would have shown the loss were not read
        meanwhile.
        """
        stalled_ms = 0
        if self._checked_ms:
            stalled_ms = wall_ms - self._checked_ms
        self._checked_ms = wall_ms
        silent_ms = self.broker.silent_ms(wall_ms)
        lost = silent_ms is not None and silent_ms > self.timeout_ms
        if not self.lost and (lost or stalled_ms > self.timeout_ms):
            self._lose(silent_ms, stalled_ms)
        if self.lost and not lost:
            self._regain()

    def pause_if_lost(self, states: list[PartitionState]) -> None:
        """Pause new partitions while contact is lost, or give them its grace.

        A partition assigned after contact returned gets the same grace as
        the partitions owned then. A group often finishes rebalancing only
        after the brokers respond again, and the restored deadlines of
        devices that kept sending into the outage must not pass at once.
        A grace from an old loss changes nothing, since its timeout is over.
        """
        for state in states:
            if self.lost:
                state.lose_contact()
            elif self.regained_ms:
                state.lose_contact()
                state.regain_contact(self.regained_ms)

    def _lose(self, silent_ms: int | None, stalled_ms: int) -> None:
        self.lost = True
        self.metrics.broker_contact_lost.set(1)
        self.metrics.broker_contact_losses.inc()
        owned = sorted(self.pool.partitions)
        if silent_ms is None:
            last_response = "no statistics report yet"
        else:
            last_response = f"last response {silent_ms} ms ago"
        if owned:
            logger.warning(
                "Lost contact with the brokers leading partitions %s (%s, "
                "previous check %d ms ago); judging no deadline until they "
                "respond again",
                owned,
                last_response,
                stalled_ms,
            )
        else:
            logger.warning(
                "Lost contact with the brokers (%s, previous check %d ms ago) "
                "while this monitor owns no partition; partitions assigned "
                "from now on judge devices silent since before one full "
                "timeout after the brokers respond again",
                last_response,
                stalled_ms,
            )
        for state in self.pool.partitions.values():
            state.lose_contact()

    def _regain(self) -> None:
        self.lost = False
        self.regained_ms = self.broker.heard_ms
        self.metrics.broker_contact_lost.set(0)
        logger.info(
            "Brokers respond again; devices silent since before are judged one "
            "full timeout from %d",
            self.broker.heard_ms,
        )
        for state in self.pool.partitions.values():
            state.regain_contact(self.broker.heard_ms)
