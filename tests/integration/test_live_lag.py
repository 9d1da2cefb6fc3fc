"""Lag of a running consumer after a known back-log, into ListenerStats, on the real broker."""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from igwn_alert._lag import live_lag
from igwn_alert._stats import ListenerStats

WAIT = 30.0


def test_lag_after_a_known_backlog(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_broker.plaintext})
    for i in range(10):
        producer.produce(topic.full, json.dumps({"n": i}).encode(), partition=0)
    for i in range(3):
        producer.produce(topic.full, json.dumps({"n": i}).encode(), partition=1)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.plaintext,
            "group.id": "live-lag-test",
            "enable.auto.commit": False,
        }
    )
    try:
        assert live_lag(consumer, topic.group) == {}  # nothing held yet
        consumer.assign([TopicPartition(topic.full, 0, OFFSET_BEGINNING)])
        taken = 0
        deadline = time.monotonic() + WAIT
        while taken < 4 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                taken += 1
        assert taken == 4
        lag = live_lag(consumer, topic.group)
        assert lag == {("superevent", 0): (4, 10)}
        stats = ListenerStats()
        stats.set_lag(lag)
        snap = stats.snapshot()["lag"]
        assert snap["total"] == 6
        assert snap["partitions"] == [
            {"topic": "superevent", "partition": 0, "position": 4, "end": 10, "lag": 6}
        ]
        # a second partition joins the assignment; once read to the end, lag 0 on both
        consumer.incremental_assign([TopicPartition(topic.full, 1, OFFSET_BEGINNING)])
        lag = live_lag(consumer, topic.group)
        assert lag[("superevent", 0)] == (4, 10)
        while taken < 10 + 3 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                taken += 1
        assert live_lag(consumer, topic.group) == {
            ("superevent", 0): (10, 10),
            ("superevent", 1): (3, 3),
        }
    finally:
        consumer.close()
