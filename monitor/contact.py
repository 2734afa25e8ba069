"""Contact with the brokers that lead the heartbeat partitions.

The consumer's cached high watermark shows whether a partition is caught up,
but while the broker is unreachable that watermark stays as it was. So the
monitor also tracks when it last heard from the leaders, from librdkafka's
statistics (`statistics.interval.ms`). For each broker they give the
connection `state` and `rxidle`, the microseconds since the last byte was
received from it. A consumer keeps a fetch request open with each leader,
and the broker answers it within `fetch.wait.max.ms` (500 ms by default)
even when no record arrives, so a reachable leader is heard from at least
that often. A stopped broker closes the connection, and a frozen or cut-off
one stops answering: in both cases `rxidle` grows.
"""

from typing import Any

# How often librdkafka emits statistics. Together with fetch.wait.max.ms it
# sets how far the last contact lags the wall clock while all is well.
STATS_INTERVAL_MS = 500


class BrokerContact:
    """When the consumer last heard from every broker that leads a watched partition.

    `heard_ms` is that time in wall-clock ms, 0 until the first statistics
    report. It only moves forward, and only when every leader is connected.
    A report's time is the client's creation time plus the report's `age`,
    so a report served late by a busy loop does not look newer than it is.
    """

    def __init__(self, topic: str, created_ms: int) -> None:
        self.topic = topic
        self.created_ms = created_ms
        self.heard_ms = 0

    def update(self, stats: dict[str, Any]) -> None:
        """Apply one statistics report (the decoded JSON of librdkafka's stats)."""
        reported_ms = self.created_ms + int(stats.get("age", 0)) // 1000
        heard: list[int] = []
        for broker in stats.get("brokers", {}).values():
            if not self._leads_topic(broker):
                continue
            rxidle_us = int(broker.get("rxidle", -1))
            if broker.get("state") != "UP" or rxidle_us < 0:
                return
            heard.append(reported_ms - rxidle_us // 1000)
        # No leader at all: the partitions wait for one, so nothing was heard.
        if heard:
            self.heard_ms = max(self.heard_ms, min(heard))

    def silent_ms(self, wall_ms: int) -> int | None:
        """Return how long no leader was heard from, or None before the first report."""
        if self.heard_ms == 0:
            return None
        return max(0, wall_ms - self.heard_ms)

    def _leads_topic(self, broker: dict[str, Any]) -> bool:
        # Logical handles (bootstrap, group coordinator) have node id -1.
        if int(broker.get("nodeid", -1)) < 0:
            return False
        toppars = broker.get("toppars") or {}
        return any(tp.get("topic") == self.topic for tp in toppars.values())
