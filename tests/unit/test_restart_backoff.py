"""The stack's delays between restarts of a service that keeps exiting."""

import pytest

from hbmon.restart_backoff import RestartBackoff


def test_delay_doubles_up_to_max():
    backoff = RestartBackoff(max_restarts=10, first_delay_s=1.0, max_delay_s=10.0)

    delays = [backoff.next_delay_s(ran_s=2.0) for _ in range(6)]

    expected = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    for delay, full in zip(delays, expected, strict=True):
        assert delay is not None
        assert 0.9 * full <= delay <= full


def test_gives_up_after_max_restarts():
    backoff = RestartBackoff(max_restarts=3)

    delays = [backoff.next_delay_s(ran_s=1.0) for _ in range(4)]

    assert None not in delays[:3]
    assert delays[3] is None


def test_long_run_forgets_earlier_failures():
    backoff = RestartBackoff(max_restarts=3, stable_run_s=60.0, first_delay_s=1.0)
    for _ in range(3):
        backoff.next_delay_s(ran_s=5.0)

    delay = backoff.next_delay_s(ran_s=61.0)

    assert backoff.failures == 1
    assert delay == pytest.approx(1.0, rel=0.1)
