"""Fixtures of the integration tests that stop and start the test broker."""

from collections.abc import Iterator

import pytest

from tests.integration.broker import LocalBroker, find_broker


@pytest.fixture
def restartable_broker(kafka_bootstrap: str) -> Iterator[LocalBroker]:
    """Return the tests' broker; make sure it runs again after the test."""
    broker = find_broker(kafka_bootstrap)
    if broker is None:
        pytest.skip(
            f"the broker at {kafka_bootstrap} is not one these tests started or "
            "can find: set HBMON_TEST_KAFKA_DIR to its deploy/kafka.sh data dir"
        )
    try:
        yield broker
    finally:
        broker.start()
