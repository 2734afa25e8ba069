"""Kafka settings, client configuration and topic creation shared by the services."""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from hbmon.env import env_int, env_str

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where the broker is and what the topics are called."""

    bootstrap_servers: str = "127.0.0.1:9092"
    heartbeat_topic: str = "iot-data"
    alert_topic: str = "device-alerts"
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
            heartbeat_partitions=env_int(
                "HBMON_HEARTBEAT_PARTITIONS", defaults.heartbeat_partitions, minimum=1
            ),
            alert_partitions=env_int(
                "HBMON_ALERT_PARTITIONS", defaults.alert_partitions, minimum=1
            ),
            replication_factor=env_int(
                "HBMON_REPLICATION_FACTOR", defaults.replication_factor, minimum=1
            ),
            security_protocol=env_str(
                "HBMON_KAFKA_SECURITY_PROTOCOL", defaults.security_protocol
            ),
            sasl_mechanism=env_str("HBMON_KAFKA_SASL_MECHANISM", ""),
            sasl_username=env_str("HBMON_KAFKA_SASL_USERNAME", ""),
            sasl_password=env_str("HBMON_KAFKA_SASL_PASSWORD", ""),
        )

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """Return a confluent-kafka configuration with these settings and `extra`.

        Keyword names use underscores for dots: `linger_ms=5` sets `linger.ms`.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        for key, value in extra.items():
            config[key.replace("_", ".")] = value
        return config


def ensure_topics(settings: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the heartbeat and alert topics unless they exist; return those created.

    The heartbeat topic uses broker append time as the record timestamp, so
    liveness never depends on a device clock or on the ingest host's clock.

    Raises:
        KafkaException: the broker rejected a topic or did not answer in time.
    """
    admin = AdminClient(settings.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
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
    ]
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
