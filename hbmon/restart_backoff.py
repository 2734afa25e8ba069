"""When the local stack starts an exited service again, and when it gives up."""

import random
from dataclasses import dataclass

# Restarts in a row, each after a run shorter than STABLE_RUN_S, before the
# stack gives up on a service and stops. With the delays below, and a
# monitor that exits about 11 s after it starts with the broker down, the
# stack rides out a broker outage of about 3.5 minutes (an estimate).
MAX_RESTARTS = 8
# A service that ran this long before it exited gets a clean slate: its
# earlier failures no longer count.
STABLE_RUN_S = 60.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


@dataclass
class RestartBackoff:
    """Failures in a row of one service, and the delay before its next start.

    The delay doubles with each failure in a row, from `first_delay_s` up to
    `max_delay_s`, with up to 10 % jitter so that services that failed
    together do not start again in step.
    """

    max_restarts: int = MAX_RESTARTS
    stable_run_s: float = STABLE_RUN_S
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    failures: int = 0

    def next_delay_s(self, ran_s: float) -> float | None:
        """Count an exit after `ran_s` seconds of running.

        Returns the seconds to wait before the next start, or None when the
        service failed more than `max_restarts` times in a row.
        """
        if ran_s >= self.stable_run_s:
            self.failures = 0
        if self.failures >= self.max_restarts:
            return None
        self.failures += 1
        delay_s = min(self.max_delay_s, self.first_delay_s * 2 ** (self.failures - 1))
        return delay_s * random.uniform(0.9, 1.0)
