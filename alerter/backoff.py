"""Exponential backoff with jitter for retrying deliveries."""

import random


class Backoff:
    """Wait times that double per failure up to a cap, with equal jitter.

    Failure n waits a random time between half and all of
    min(max_s, initial_s * 2 ** (n - 1)), so workers that fail together
    spread out their retries yet always pause for a while.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay_s(self, failures: int) -> float:
        """Return the wait in seconds after `failures` consecutive failures (>= 1)."""
        exponent = min(max(failures, 1) - 1, 32)
        ceiling_s = min(self.max_s, self.initial_s * 2**exponent)
        return ceiling_s / 2 + self._rng.uniform(0, ceiling_s / 2)
