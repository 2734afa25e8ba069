"""Locust scenarios for the ingest service: fleet, flood and gateway.

Run them through bench/ingest_locust.py, which starts what they need, or
with Locust itself against a running ingest:

    locust -f bench/locustfile.py --host http://127.0.0.1:8080 FleetUser

- FleetUser ("fleet"): a fleet of --fleet-devices devices, each posting one
  heartbeat every --fleet-interval-s seconds, give or take about
  --fleet-jitter of that interval (see ingest_fleet.cycle_order). Every
  user posts for its own share of the devices, so the fleet sends
  devices / interval heartbeats per second whatever the number of users,
  as long as ingest keeps up.
- FloodUser ("flood"): single heartbeats as fast as each user can send them.
- GatewayUser ("gateway"): batches of --gateway-batch-size heartbeats, every
  --gateway-interval-s seconds per user, or as fast as possible with 0.

Each custom option also reads an environment variable, e.g.
LOCUST_FLEET_DEVICES. A response other than 202 counts as a failure.
"""

import itertools
import random
import time

from ingest_fleet import Pacer, cycle_order, global_slot
from ingest_payloads import PAYLOADS, batch_body, heartbeat_body
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

SINGLE_PATH = "/v1/heartbeats"
BATCH_PATH = "/v1/heartbeats/batch"
JSON_HEADERS = {"Content-Type": "application/json"}


@events.init_command_line_parser.add_listener
def add_arguments(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("hbmon ingest scenarios")
    group.add_argument(
        "--fleet-devices",
        type=int,
        default=10_000,
        env_var="LOCUST_FLEET_DEVICES",
        help="fleet: devices in the fleet",
    )
    group.add_argument(
        "--fleet-interval-s",
        type=float,
        default=10.0,
        env_var="LOCUST_FLEET_INTERVAL_S",
        help="fleet: seconds between two heartbeats of one device",
    )
    group.add_argument(
        "--fleet-jitter",
        type=float,
        default=0.2,
        env_var="LOCUST_FLEET_JITTER",
        help="fleet: spread of one device's interval, as a share of it (0 to 1)",
    )
    group.add_argument(
        "--fleet-users",
        type=int,
        default=0,
        env_var="LOCUST_FLEET_USERS",
        help="fleet: users that share the devices; 0 takes --users",
    )
    group.add_argument(
        "--flood-devices",
        type=int,
        default=100_000,
        env_var="LOCUST_FLOOD_DEVICES",
        help="flood and gateway: distinct device ids to cycle through",
    )
    group.add_argument(
        "--gateway-batch-size",
        type=int,
        default=100,
        env_var="LOCUST_GATEWAY_BATCH_SIZE",
        help="gateway: heartbeats per batch request",
    )
    group.add_argument(
        "--gateway-interval-s",
        type=float,
        default=0.0,
        env_var="LOCUST_GATEWAY_INTERVAL_S",
        help="gateway: seconds between two batches of one user; 0 = no wait",
    )
    group.add_argument(
        "--payload",
        choices=PAYLOADS,
        default="basic",
        env_var="LOCUST_PAYLOAD",
        help="heartbeat fields: basic = device_id, seq, ts; full adds "
        "interval_s and attrs",
    )


@events.init.add_listener
def share_user_count(environment: Environment, **kwargs: object) -> None:
    """Pass the user count to the workers, which need it to split the fleet.

    Workers get the master's custom options, but not --users, so the master
    stores it in --fleet-users when that is not set.
    """
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    if not options.fleet_users:
        options.fleet_users = options.num_users or 1


class HeartbeatUser(FastHttpUser):
    """Base of the scenarios: posts JSON and counts any status but 202 as failed."""

    abstract = True

    def post(self, path: str, body: bytes) -> None:
        # FastHttpSession sends bytes unchanged, though its type hints expect str.
        with self.client.post(
            path,
            data=body,  # type: ignore[arg-type]
            headers=JSON_HEADERS,
            catch_response=True,
        ) as response:
            if response.status_code != 202:
                response.failure(f"status {response.status_code}: {response.text}")


_local_slots = itertools.count()


class FleetUser(HeartbeatUser):
    """A share of the fleet: the devices whose index is this user's slot mod users."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        users = max(1, options.fleet_users or options.num_users or 1)
        slot = self._global_slot(next(_local_slots)) % users
        self.devices = range(slot, options.fleet_devices, users)
        self.jitter = options.fleet_jitter
        self.payload = options.payload
        self.rng = random.Random()
        self.order = cycle_order(self.devices, self.jitter, self.rng)
        self.position = 0
        self.seq = 0
        spacing_s = options.fleet_interval_s / max(1, len(self.devices))
        start = time.monotonic() + self.rng.uniform(0, spacing_s)
        self.pacer = Pacer(spacing_s, options.fleet_interval_s, start)
        time.sleep(max(0.0, start - time.monotonic()))

    def _global_slot(self, local_slot: int) -> int:
        runner = self.environment.runner
        if not isinstance(runner, WorkerRunner):
            return local_slot
        workers = self.environment.parsed_options.expect_workers or 1
        return global_slot(local_slot, workers, runner.worker_index)

    def wait_time(self) -> float:
        return self.pacer.wait_s(time.monotonic())

    @task
    def heartbeat(self) -> None:
        if not self.order:
            raise StopUser()  # more users than devices: this one has none
        if self.position == len(self.order):
            self.order = cycle_order(self.devices, self.jitter, self.rng)
            self.position = 0
            self.seq += 1
        device = self.order[self.position]
        self.position += 1
        body = heartbeat_body(device, self.seq, self.payload, int(time.time()))
        self.post(SINGLE_PATH, body)


class FloodUser(HeartbeatUser):
    """Single heartbeats, each as soon as the previous response arrives."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.devices = options.flood_devices
        self.payload = options.payload
        self.next_device = random.randrange(self.devices)
        self.seq = 0

    def wait_time(self) -> float:
        return 0.0

    @task
    def heartbeat(self) -> None:
        body = heartbeat_body(
            self.next_device, self.seq, self.payload, int(time.time())
        )
        self.next_device = (self.next_device + 1) % self.devices
        self.seq += 1
        self.post(SINGLE_PATH, body)


class GatewayUser(HeartbeatUser):
    """A gateway that forwards batches of heartbeats for consecutive devices."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.devices = options.flood_devices
        self.batch_size = options.gateway_batch_size
        self.payload = options.payload
        self.next_device = random.randrange(self.devices)
        self.seq = 0
        interval_s = options.gateway_interval_s
        self.pacer = Pacer(interval_s, max(interval_s, 1.0), time.monotonic())

    def wait_time(self) -> float:
        if self.pacer.interval_s <= 0:
            return 0.0
        return self.pacer.wait_s(time.monotonic())

    @task
    def batch(self) -> None:
        body = batch_body(
            self.next_device,
            self.batch_size,
            self.devices,
            self.seq,
            self.payload,
            int(time.time()),
        )
        self.next_device = (self.next_device + self.batch_size) % self.devices
        self.seq += 1
        self.post(BATCH_PATH, body)
