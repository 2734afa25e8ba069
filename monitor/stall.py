"""Kafka calls that may block past their own timeout, run with a hard limit.

In librdkafka 2.16.0, send_offsets_to_transaction() can wait forever
after a broker restart. Its TxnOffsetCommit request waits for the cached
group coordinator to come up, and when that broker object was
decommissioned on re-bootstrap no state change ever wakes the request.
The request's timeout is stored but never checked (rdkafka_coord.c). A
call cannot be cancelled, so it runs in a thread of its own, and the
caller gives up on it, and on the client it blocks, after a limit.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CallStalled(Exception):
    """A call ran past its limit; `thread` is still blocked in it."""

    def __init__(self, name: str, limit_s: float, thread: threading.Thread) -> None:
        super().__init__(f"{name} did not return within {limit_s:.0f} s")
        self.thread = thread


def call_with_limit(call: Callable[[], T], name: str, limit_s: float) -> T:
    """Run `call` in a daemon thread and return its result or raise its error.

    Raises:
        CallStalled: the call did not return within `limit_s`. It goes on
            in its thread, which ends when the call returns.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as err:
            failure.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=run, name=f"kafka-{name}", daemon=True)
    thread.start()
    if not done.wait(limit_s):
        raise CallStalled(name, limit_s, thread)
    if failure:
        raise failure[0]
    return outcome[0]
