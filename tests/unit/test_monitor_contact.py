"""Contact with the partition leaders, read from librdkafka statistics.

The reports below keep only the fields that BrokerContact reads, in the
shape that librdkafka 2.x emits (checked against confluent-kafka 2.16.1).
"""

from prometheus_client import CollectorRegistry

from hbmon.kafka import KafkaSettings
from monitor.contact import BrokerContact
from monitor.metrics import MonitorMetrics
from monitor.settings import MonitorSettings
from monitor.worker import MonitorWorker

TOPIC = "iot-data"
CREATED_MS = 1_000_000


def report(age_ms: int, *brokers: dict) -> dict:
    return {"age": age_ms * 1000, "brokers": {b["name"]: b for b in brokers}}


def leader(
    name: str = "127.0.0.1:9092/1",
    state: str = "UP",
    rxidle_ms: int = 200,
    topic: str = TOPIC,
) -> dict:
    return {
        "name": name,
        "nodeid": 1,
        "state": state,
        "rxidle": rxidle_ms * 1000 if rxidle_ms >= 0 else -1,
        "toppars": {f"{topic}-0": {"topic": topic, "partition": 0}},
    }


COORDINATOR = {
    "name": "GroupCoordinator",
    "nodeid": -1,
    "state": "UP",
    "rxidle": 0,
    "toppars": {},
}


def test_contact_is_report_time_minus_rxidle():
    contact = BrokerContact(TOPIC, CREATED_MS)

    contact.update(report(5000, leader(rxidle_ms=300), COORDINATOR))

    assert contact.heard_ms == CREATED_MS + 5000 - 300


def test_contact_unknown_before_first_report():
    contact = BrokerContact(TOPIC, CREATED_MS)

    assert contact.heard_ms == 0
    assert contact.silent_ms(CREATED_MS + 60_000) is None


def test_contact_waits_for_every_leader():
    contact = BrokerContact(TOPIC, CREATED_MS)

    contact.update(
        report(
            2000,
            leader(rxidle_ms=100),
            leader(name="127.0.0.1:9094/2", rxidle_ms=1500),
        )
    )

    assert contact.heard_ms == CREATED_MS + 500


def test_leader_not_up_stops_contact():
    contact = BrokerContact(TOPIC, CREATED_MS)
    contact.update(report(1000, leader(rxidle_ms=100)))

    contact.update(report(9000, leader(state="CONNECT", rxidle_ms=10)))

    assert contact.heard_ms == CREATED_MS + 900
    assert contact.silent_ms(CREATED_MS + 9000) == 8100


def test_leader_never_heard_stops_contact():
    contact = BrokerContact(TOPIC, CREATED_MS)

    contact.update(report(1000, leader(rxidle_ms=-1)))

    assert contact.heard_ms == 0


def test_no_leader_stops_contact():
    contact = BrokerContact(TOPIC, CREATED_MS)
    contact.update(report(1000, leader(rxidle_ms=100)))

    # A report in which no broker leads a partition of the topic.
    contact.update(report(9000, COORDINATOR))

    assert contact.heard_ms == CREATED_MS + 900


def test_leader_of_other_topic_is_ignored():
    contact = BrokerContact(TOPIC, CREATED_MS)

    contact.update(report(1000, leader(topic="other", rxidle_ms=10)))

    assert contact.heard_ms == 0


def test_contact_never_moves_back():
    contact = BrokerContact(TOPIC, CREATED_MS)
    contact.update(report(5000, leader(rxidle_ms=100)))

    contact.update(report(5500, leader(rxidle_ms=3000)))

    assert contact.heard_ms == CREATED_MS + 4900


def new_worker() -> MonitorWorker:
    """Return a worker that owns partition 0, has no Kafka client, and heard a leader.

    The leader was last heard at CREATED_MS + 900, and checked at CREATED_MS + 1000.
    """
    kafka = KafkaSettings(heartbeat_topic=TOPIC)
    worker = MonitorWorker(
        kafka,
        MonitorSettings(contact_timeout_ms=5000),
        MonitorMetrics(CollectorRegistry()),
    )
    worker._contact.follow_consumer(CREATED_MS)
    worker.partitions[0] = worker.new_state(0)
    worker._contact.broker.update(report(1000, leader(rxidle_ms=100)))
    worker._contact.check(CREATED_MS + 1000)
    return worker


def sample(worker: MonitorWorker, name: str) -> float | None:
    return worker.metrics.registry.get_sample_value(name)


def test_worker_pauses_judging_on_silent_leader():
    worker = new_worker()

    worker._contact.check(CREATED_MS + 7000)

    assert worker.partitions[0].contact_lost
    assert sample(worker, "hbmon_monitor_broker_contact_lost") == 1


def test_worker_resumes_judging_one_timeout_later():
    worker = new_worker()
    worker._contact.check(CREATED_MS + 7000)

    worker._contact.broker.update(report(20_000, leader(rxidle_ms=100)))
    worker._contact.check(CREATED_MS + 20_000)

    state = worker.partitions[0]
    assert not state.contact_lost
    assert state.restored_ms == CREATED_MS + 19_900


def test_worker_stalled_loop_counts_as_lost_contact():
    worker = new_worker()

    # The loop ran again only after 30 s, and the statistics it read then
    # show a leader that responds.
    worker._contact.broker.update(report(31_000, leader(rxidle_ms=100)))
    worker._contact.check(CREATED_MS + 31_000)

    state = worker.partitions[0]
    assert not state.contact_lost
    assert state.restored_ms == CREATED_MS + 30_900
    assert sample(worker, "hbmon_monitor_broker_contact_losses_total") == 1


def test_worker_short_silence_keeps_judging():
    worker = new_worker()

    worker._contact.check(CREATED_MS + 4000)

    assert not worker.partitions[0].contact_lost
    assert worker.partitions[0].restored_ms == 0


def test_loss_log_without_partitions_or_report(caplog):
    worker = MonitorWorker(
        KafkaSettings(heartbeat_topic=TOPIC),
        MonitorSettings(contact_timeout_ms=5000),
        MonitorMetrics(CollectorRegistry()),
    )
    worker._contact.follow_consumer(CREATED_MS)
    worker._contact.check(CREATED_MS)

    # The loop ran again only after 30 s, before any statistics report.
    with caplog.at_level("WARNING", logger="monitor.contact_watch"):
        worker._contact.check(CREATED_MS + 30_000)

    assert "no statistics report yet" in caplog.text
    assert "owns no partition" in caplog.text
    assert "None" not in caplog.text


def test_partition_assigned_after_regain_gets_grace():
    worker = new_worker()
    worker._drop([0])
    worker._contact.check(CREATED_MS + 7000)
    worker._contact.broker.update(report(20_000, leader(rxidle_ms=100)))
    worker._contact.check(CREATED_MS + 20_000)

    # The group assigns the partition only after contact returned.
    state = worker.new_state(0)
    worker._contact.pause_if_lost([state])

    assert not state.contact_lost
    assert state.restored_ms == CREATED_MS + 19_900


def test_assignment_without_loss_no_grace():
    worker = new_worker()
    worker._drop([0])

    state = worker.new_state(0)
    worker._contact.pause_if_lost([state])

    assert not state.contact_lost
    assert state.restored_ms == 0
