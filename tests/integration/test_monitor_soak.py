"""Randomized soak: monitors killed at random while devices come and go.

Devices fall silent at random, either briefly (well under the timeout) or
for two to three timeouts. Meanwhile monitor processes are killed with
SIGKILL and restarted at random. At the end, the heartbeat topic itself
gives the truth. Every gap between two heartbeats of a device that exceeds
the timeout by a margin must have produced exactly one DOWN, and no gap
under the timeout may produce one. Per device, DOWN and RECOVERED alternate.

HBMON_SOAK_S sets the length of the chaos phase (default 60 s in CI).
HBMON_SOAK_SEED fixes the random choices to replay a failure.
"""

import os
import random
import time
import uuid

import pytest

from hbmon.events import DEVICE_DOWN, DEVICE_RECOVERED
from tests.integration.monitor_harness import (
    INTERVAL_S,
    TIMEOUT_S,
    AlertLog,
    Fleet,
    heartbeat_times,
    monitor_env,
    print_logs,
    start_monitor,
)
from tests.integration.services import Service, wait_for

pytestmark = pytest.mark.integration

SOAK_S = float(os.environ.get("HBMON_SOAK_S", "60"))
MEMBERS = 2
DEVICES = 30
# At most this many devices are silent at once, so no partition looks like
# a pipeline outage.
MAX_SILENT = 3
# Gaps within this margin over the timeout may or may not give a DOWN,
# depending on which record the monitor reads first.
MARGIN_MS = 1000


def expected_downs(times: list[int]) -> tuple[int, int]:
    """Return the least and most DOWN events that these heartbeat gaps allow."""
    timeout_ms = int(TIMEOUT_S * 1000)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    certain = sum(1 for gap in gaps if gap > timeout_ms + MARGIN_MS)
    possible = sum(1 for gap in gaps if gap > timeout_ms)
    return certain, possible


class Chaos:
    """Random silences of devices and kills of monitor members."""

    def __init__(
        self, fleet: Fleet, env: dict[str, str], id_prefix: str, tmp_path, rng
    ) -> None:
        self.fleet = fleet
        self.env = env
        # Each slot restarts with its transactional id, which fences the
        # killed process's open transaction at once.
        self.id_prefix = id_prefix
        self.tmp_path = tmp_path
        self.rng = rng
        self.members: list[Service | None] = [None] * MEMBERS
        self.all_started: list[Service] = []
        self.silent_until: dict[str, float] = {}
        self.kills = 0

    def start_member(self, slot: int) -> None:
        env = {
            **self.env,
            "HBMON_MONITOR_TRANSACTIONAL_ID": self.env["slot"] + str(slot),
        }
        member = start_monitor(env, self.tmp_path)
        self.members[slot] = member
        self.all_started.append(member)

    def step(self, now: float) -> None:
        # Devices: revive those whose silence is over, silence a few more.
        for device_id, until in list(self.silent_until.items()):
            if now >= until:
                self.fleet.revive(device_id)
                del self.silent_until[device_id]
        if len(self.silent_until) < MAX_SILENT and self.rng.random() < 0.5:
            device_id = self.rng.choice(self.fleet.devices)
            if device_id not in self.silent_until:
                if self.rng.random() < 0.5:
                    silence_s = self.rng.uniform(0.2, 0.5) * TIMEOUT_S
                else:
                    silence_s = self.rng.uniform(2.0, 3.0) * TIMEOUT_S
                self.fleet.silence(device_id)
                self.silent_until[device_id] = now + silence_s

        # Members: kill one now and then, restart a dead one now and then.
        slot = self.rng.randrange(MEMBERS)
        member = self.members[slot]
        if member is not None and self.rng.random() < 0.04:
            member.kill()
            self.members[slot] = None
            self.kills += 1
        elif member is None and self.rng.random() < 0.15:
            self.start_member(slot)

    def calm(self) -> None:
        for device_id in list(self.silent_until):
            self.fleet.revive(device_id)
        self.silent_until.clear()
        for slot, member in enumerate(self.members):
            if member is None:
                self.start_member(slot)


def test_soak_random_kills_keep_alerts_exact(kafka_settings, tmp_path):
    seed = int(os.environ.get("HBMON_SOAK_SEED", str(random.randrange(2**32))))
    print(f"soak seed {seed} (set HBMON_SOAK_SEED to replay)")
    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    env = {
        **monitor_env(kafka_settings, f"monitor-{suffix}"),
        "slot": f"soak-{suffix}-",
    }
    fleet = Fleet(kafka_settings, [f"dev-{i}" for i in range(DEVICES)], INTERVAL_S)
    alerts = AlertLog(kafka_settings)
    chaos = Chaos(fleet, env, f"soak-{suffix}-", tmp_path, rng)
    for slot in range(MEMBERS):
        chaos.start_member(slot)
    fleet.start()
    try:
        # 1. Chaos for SOAK_S seconds.
        ends = time.monotonic() + SOAK_S
        while time.monotonic() < ends:
            chaos.step(time.monotonic())
            alerts.poll(0.5)

        # 2. Calm: all devices talk, all members run, until every episode ends.
        chaos.calm()
        time.sleep(3 * TIMEOUT_S)

        def episodes_closed() -> bool:
            alerts.poll(0.5)
            downs = len(alerts.of(DEVICE_DOWN))
            return downs == len(alerts.of(DEVICE_RECOVERED))

        wait_for(episodes_closed, 120, "a RECOVERED for every DOWN")
        alerts.settle(quiet_s=3 * TIMEOUT_S)
    finally:
        for member in chaos.members:
            if member is not None:
                member.stop()
        fleet.stop()
        alerts.close()
        print_logs(chaos.all_started)

    truth = heartbeat_times(kafka_settings)
    print(f"soak: {chaos.kills} kills, {len(alerts.events)} events")
    assert alerts.duplicate_ids() == []
    for device_id in fleet.devices:
        kinds = [e.type for e in alerts.device_events() if e.device_id == device_id]
        assert kinds == [DEVICE_DOWN, DEVICE_RECOVERED] * (len(kinds) // 2), device_id
        least, most = expected_downs(sorted(truth[device_id]))
        assert least <= kinds.count(DEVICE_DOWN) <= most, (device_id, kinds)
