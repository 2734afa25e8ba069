"""Backoff between delivery attempts and the bounded set of recently mailed ids."""

import random

import pytest

from alerter.backoff import Backoff
from alerter.dedup import RecentIds


@pytest.mark.parametrize("failures", range(1, 12))
def test_backoff_stays_within_half_and_full_ceiling(failures: int) -> None:
    backoff = Backoff(initial_s=0.5, max_s=5.0, rng=random.Random(failures))
    ceiling_s = min(5.0, 0.5 * 2 ** (failures - 1))

    delays = [backoff.delay_s(failures) for _ in range(200)]

    assert min(delays) >= ceiling_s / 2
    assert max(delays) <= ceiling_s


def test_backoff_never_exceeds_max_after_many_failures() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0)

    assert backoff.delay_s(10_000) <= 3.0


def test_backoff_treats_zero_failures_as_first() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)

    assert 0.5 <= backoff.delay_s(0) <= 1.0


def test_backoff_jitter_spreads_delays() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, rng=random.Random(7))

    delays = {round(backoff.delay_s(4), 6) for _ in range(20)}

    assert len(delays) > 1


def test_recent_ids_contains_added_id() -> None:
    recent = RecentIds(capacity=3)

    recent.add("a")

    assert "a" in recent
    assert "b" not in recent


def test_recent_ids_evicts_oldest_beyond_capacity() -> None:
    recent = RecentIds(capacity=3)

    for event_id in ("a", "b", "c", "d"):
        recent.add(event_id)

    assert "a" not in recent
    assert "d" in recent
    assert len(recent) == 3


def test_recent_ids_re_adding_makes_id_newest() -> None:
    recent = RecentIds(capacity=2)
    recent.add("a")
    recent.add("b")

    recent.add("a")
    recent.add("c")

    assert "a" in recent
    assert "b" not in recent
