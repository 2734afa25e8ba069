"""Reading an alerter topic to its end, against the test broker."""

import threading

from confluent_kafka import Producer

from alerter.tables import TopicReader
from hbmon.kafka import KafkaSettings, ensure_topics


def test_catch_up_reads_or_stops(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings)
    topic = kafka_settings.alert_topic
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    for n in range(5):
        producer.produce(topic, key=f"d-{n}".encode(), value=b"{}")
    assert producer.flush(30) == 0
    applied: list[str] = []
    reader = TopicReader(kafka_settings, topic, lambda key, _: applied.append(key))
    reader.start(30.0)
    stop = threading.Event()
    stop.set()

    try:
        stopped = reader.catch_up(30.0, stop)
        read = reader.catch_up(30.0)
    finally:
        reader.close()

    assert stopped is None
    assert read == 5
    assert sorted(applied) == [f"d-{n}" for n in range(5)]
