"""Kafka settings, client configuration and topic creation shared by the services."""

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from hbmon.env import SettingError, env_int, env_str
from hbmon.logs import LibrdkafkaLog

logger = logging.getLogger(__name__)
# Shared by every client of the process, so that an outage seen by several
# clients still logs each kind of librdkafka line only a few times a minute.
LIBRDKAFKA_LOG = LibrdkafkaLog(logging.getLogger("hbmon.librdkafka"))


def partition_for(key: bytes, partitions: int) -> int:
    """Return the partition of a record with `key` among `partitions`.

    It is the choice of librdkafka's `consistent_random` partitioner, its
    default, for a non-empty key: the CRC-32 of the key modulo the
    partition count. Ingest sets that partitioner, so a bundle record sent
    to this partition lands where each of its devices' own records would.
    """
    return zlib.crc32(key) % partitions


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Broker address, credentials and topic names."""

    bootstrap_servers: str = "127.0.0.1:9092"
    heartbeat_topic: str = "iot-data"
    alert_topic: str = "device-alerts"
    # Empty means "<heartbeat_topic>-state", as state_topic_name returns.
    state_topic: str = ""
    heartbeat_partitions: int = 6
    alert_partitions: int = 3
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls) -> "KafkaSettings":
        defaults = cls()
        return cls(
            bootstrap_servers=env_str(
                "HBMON_KAFKA_BOOTSTRAP", defaults.bootstrap_servers
            ),
            heartbeat_topic=env_str("HBMON_HEARTBEAT_TOPIC", defaults.heartbeat_topic),
            alert_topic=env_str("HBMON_ALERT_TOPIC", defaults.alert_topic),
            state_topic=env_str("HBMON_STATE_TOPIC", defaults.state_topic),
            heartbeat_partitions=env_int(
                "HBMON_HEARTBEAT_PARTITIONS", defaults.heartbeat_partitions, minimum=1
            ),
            alert_partitions=env_int(
                "HBMON_ALERT_PARTITIONS", defaults.alert_partitions, minimum=1
            ),
            replication_factor=env_int(
                "HBMON_REPLICATION_FACTOR", defaults.replication_factor, minimum=1
            ),
            security_protocol=_security_protocol(defaults.security_protocol),
            sasl_mechanism=env_str("HBMON_KAFKA_SASL_MECHANISM", ""),
            sasl_username=env_str("HBMON_KAFKA_SASL_USERNAME", ""),
            sasl_password=env_str("HBMON_KAFKA_SASL_PASSWORD", ""),
        )

    @property
    def state_topic_name(self) -> str:
        """The monitor's compacted changelog topic, co-partitioned with heartbeats."""
        return self.state_topic or f"{self.heartbeat_topic}-state"

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """Return a confluent-kafka configuration with these settings and `extra`.

        Keyword names use underscores for dots: `linger_ms=5` sets `linger.ms`.
        librdkafka's own log lines go to the logger "hbmon.librdkafka",
        rate-limited, instead of straight to stderr.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "logger": LIBRDKAFKA_LOG,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        for key, value in extra.items():
            config[key.replace("_", ".")] = value
        return config


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _security_protocol(default: str) -> str:
    value = env_str("HBMON_KAFKA_SECURITY_PROTOCOL", default).upper()
    if value not in SECURITY_PROTOCOLS:
        raise SettingError(
            f"HBMON_KAFKA_SECURITY_PROTOCOL={value!r} is not supported; use one "
            f"of {', '.join(SECURITY_PROTOCOLS)}"
        )
    return value


# Compaction keeps the newest record per device. Small segments let the
# cleaner reach records soon, so a restore reads little beyond the live state.
STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.5",
}


def ensure_topics(settings: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the heartbeat, alert and state topics unless they exist.

    Returns the names of the topics created. The heartbeat topic uses broker
    append time as the record timestamp, so liveness never depends on a
    device clock or on the ingest host's clock. The monitor's state topic is
    compacted and gets as many partitions as the heartbeat topic has, even
    when that topic existed before with another count.

    Raises:
        KafkaException: the broker rejected a topic or did not respond in time.
    """
    admin = AdminClient(settings.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    heartbeat = existing.get(settings.heartbeat_topic)
    heartbeat_partitions = (
        len(heartbeat.partitions)
        if heartbeat is not None and heartbeat.partitions
        else settings.heartbeat_partitions
    )
    wanted = [
        NewTopic(
            settings.heartbeat_topic,
            num_partitions=settings.heartbeat_partitions,
            replication_factor=settings.replication_factor,
            config={"message.timestamp.type": "LogAppendTime"},
        ),
        NewTopic(
            settings.alert_topic,
            num_partitions=settings.alert_partitions,
            replication_factor=settings.replication_factor,
        ),
        NewTopic(
            settings.state_topic_name,
            num_partitions=heartbeat_partitions,
            replication_factor=settings.replication_factor,
            config=STATE_TOPIC_CONFIG,
        ),
    ]
    return create_missing_topics(admin, wanted, timeout_s, existing=set(existing))


def create_missing_topics(
    admin: AdminClient,
    wanted: list[NewTopic],
    timeout_s: float,
    existing: set[str] | None = None,
) -> list[str]:
    """Create the topics of `wanted` that do not exist; return the names created.

    Waits until every partition of a created topic has a leader. A topic
    that another process creates at the same time counts as existing.

    Raises:
        KafkaException: the broker rejected a topic, or a topic has no
            leader after `timeout_s`.
    """
    if existing is None:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [topic for topic in wanted if topic.topic not in existing]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as err:
            if err.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
            continue
        logger.info("Created topic %s", name)
        created.append(name)
    _wait_for_leaders(admin, [topic.topic for topic in missing], timeout_s)
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    """Wait until every partition of `topics` has a leader.

    A topic is usable only then; before, produce and offset requests fail
    with NOT_LEADER_FOR_PARTITION.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        ready = all(
            name in metadata
            and metadata[name].error is None
            and metadata[name].partitions
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
            for name in topics
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise KafkaException(f"topics {topics} have no leaders after {timeout_s} s")
        time.sleep(0.1)
