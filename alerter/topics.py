"""The alerter's own topics: dead letters, sent log, device state and silences.

They are created at startup when missing, next to the alert topic that
the monitor writes. The sent log keeps entries for `sent_retention_s` and
is compacted; device state and silences are compacted and kept forever
(deleted entries are tombstoned).
"""

import logging

from confluent_kafka.admin import AdminClient, NewTopic

from alerter.settings import AlerterSettings
from hbmon.kafka import KafkaSettings, create_missing_topics

logger = logging.getLogger(__name__)


def alerter_topics(kafka: KafkaSettings, settings: AlerterSettings) -> list[NewTopic]:
    """Return the topics the alerter writes, with their partitions and configs."""
    replication = kafka.replication_factor
    partitions = kafka.alert_partitions
    compacted = {"cleanup.policy": "compact"}
    return [
        NewTopic(
            settings.dead_letter_topic,
            num_partitions=partitions,
            replication_factor=replication,
        ),
        NewTopic(
            settings.sent_topic,
            num_partitions=partitions,
            replication_factor=replication,
            config={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(int(settings.sent_retention_s * 1000)),
            },
        ),
        NewTopic(
            settings.state_topic,
            num_partitions=partitions,
            replication_factor=replication,
            config=compacted,
        ),
        NewTopic(
            settings.silence_topic,
            num_partitions=1,
            replication_factor=replication,
            config=compacted,
        ),
    ]


def ensure_alerter_topics(
    kafka: KafkaSettings, settings: AlerterSettings, timeout_s: float = 30.0
) -> list[str]:
    """Create the alerter's topics unless they exist; return the names created.

    Raises:
        KafkaException: the broker rejected a topic, or a topic has no
            leader after `timeout_s`.
    """
    admin = AdminClient(kafka.client_config())
    return create_missing_topics(admin, alerter_topics(kafka, settings), timeout_s)
