"""Schedules of the simulated fleet in the Locust scenarios (bench/locustfile.py).

Kept apart from the locustfile, which imports Locust and with it gevent's
monkey patching, so that tests can import these without it.
"""

import random
from collections.abc import Sequence


def cycle_order(devices: Sequence[int], jitter: float, rng: random.Random) -> list[int]:
    """Return the order in which one fleet cycle posts for `devices`.

    Each device's key is its position in `devices`, as a share of the cycle,
    plus a random shift of up to +-jitter / 2; posts go out in key order,
    evenly spaced. A device's slot thus moves by about jitter / 2 of a cycle
    (never more than jitter), and the time between two of its posts varies
    around one cycle by about +-jitter of it. Costs O(n log n).
    """
    count = len(devices)
    half = jitter / 2
    keyed = sorted(
        (position / count + rng.uniform(-half, half), device)
        for position, device in enumerate(devices)
    )
    return [device for _, device in keyed]


class Pacer:
    """A schedule of events `interval_s` apart on average that catches up when late.

    When it falls more than `max_lag_s` behind, it drops the backlog, as a
    device would send its next heartbeat rather than all it missed.
    """

    def __init__(self, interval_s: float, max_lag_s: float, start: float) -> None:
        self.interval_s = interval_s
        self.max_lag_s = max_lag_s
        self.next_at = start

    def wait_s(self, now: float) -> float:
        """Return the seconds to wait for the next event, and schedule it."""
        if now - self.next_at > self.max_lag_s:
            self.next_at = now
        self.next_at += self.interval_s
        return max(0.0, self.next_at - now)


def global_slot(local_slot: int, workers: int, worker_index: int) -> int:
    """Return a user's slot across Locust workers: local slot * workers + index.

    Locust spreads users evenly over its workers, so the slots of all
    workers together cover 0 .. users - 1 when the users divide evenly
    among them.
    """
    return local_slot * max(1, workers) + max(0, worker_index)
