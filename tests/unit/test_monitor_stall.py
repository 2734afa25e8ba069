"""A Kafka call run with a limit returns, raises, or is given up on."""

import threading

import pytest

from monitor.stall import CallStalled, call_with_limit


def test_call_with_limit_returns_result():
    assert call_with_limit(lambda: 42, "answer", limit_s=5) == 42


def test_call_with_limit_raises_call_error():
    def fail() -> None:
        raise ValueError("bad offset")

    with pytest.raises(ValueError, match="bad offset"):
        call_with_limit(fail, "failing call", limit_s=5)


def test_call_with_limit_gives_up_on_blocked_call():
    release = threading.Event()

    with pytest.raises(CallStalled, match="blocked call did not return within 0 s"):
        call_with_limit(release.wait, "blocked call", limit_s=0.2)

    release.set()


def test_stalled_call_goes_on_in_its_thread():
    release = threading.Event()
    with pytest.raises(CallStalled) as stalled:
        call_with_limit(release.wait, "blocked call", limit_s=0.2)

    assert stalled.value.thread.is_alive()
    release.set()
    stalled.value.thread.join(5)
    assert not stalled.value.thread.is_alive()
