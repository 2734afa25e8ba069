"""Schedules of the Locust fleet scenario: order per cycle, pacing, user slots."""

import importlib
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest_fleet = importlib.import_module("ingest_fleet")


def test_cycle_order_posts_every_device_once() -> None:
    devices = range(3, 1000, 7)

    order = ingest_fleet.cycle_order(devices, 0.2, random.Random(1))

    assert sorted(order) == list(devices)


def test_cycle_order_without_jitter_keeps_order() -> None:
    devices = range(50)

    order = ingest_fleet.cycle_order(devices, 0.0, random.Random(1))

    assert order == list(devices)


@pytest.mark.parametrize("jitter", [0.1, 0.5])
def test_cycle_order_moves_devices_by_at_most_jitter(jitter: float) -> None:
    count = 1000
    order = ingest_fleet.cycle_order(range(count), jitter, random.Random(2))

    moves = [abs(position - device) / count for position, device in enumerate(order)]
    assert max(moves) <= jitter
    assert max(moves) >= jitter / 4


def test_pacer_spaces_events_by_interval() -> None:
    pacer = ingest_fleet.Pacer(interval_s=0.5, max_lag_s=10.0, start=100.0)

    assert pacer.wait_s(now=100.0) == 0.5
    assert pacer.wait_s(now=100.2) == pytest.approx(0.8)


def test_pacer_catches_up_when_late() -> None:
    pacer = ingest_fleet.Pacer(interval_s=1.0, max_lag_s=10.0, start=100.0)

    assert pacer.wait_s(now=105.0) == 0.0
    assert pacer.next_at == 101.0


def test_pacer_drops_backlog_beyond_max_lag() -> None:
    pacer = ingest_fleet.Pacer(interval_s=1.0, max_lag_s=10.0, start=100.0)

    assert pacer.wait_s(now=200.0) == 1.0


def test_global_slot_covers_users_once_across_workers() -> None:
    workers, per_worker = 3, 4
    slots = [
        ingest_fleet.global_slot(local, workers, worker)
        for worker in range(workers)
        for local in range(per_worker)
    ]

    assert sorted(slots) == list(range(workers * per_worker))
