"""client.stats() against known traffic on the real broker (issue 13)."""

from __future__ import annotations

import json
import time
from typing import Any

from _helpers import plain_client, produce, wait_for
from _shared import Run
from confluent_kafka import Consumer, TopicPartition


def _produce(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    produce(bootstrap, topic, [{"n": i} for i in range(start, start + count)])


def test_counts_partitions_latency_and_states(kafka_broker, make_topic):
    a, b = make_topic("superevent"), None
    b = make_topic("cbc_gstlal", group=a.group)
    c = plain_client(kafka_broker.plaintext, a.group)
    assert c.stats()["listener"]["state"] == "stopped"
    run = Run(c, lambda topic, payload: None, [a.short, b.short])
    assert c.listening.wait(15)
    _produce(kafka_broker.plaintext, a.full, 5)
    _produce(kafka_broker.plaintext, b.full, 3)
    assert wait_for(lambda: c.stats()["listener"]["alerts_total"] == 8, 20)
    assert wait_for(lambda: len(c.stats()["listener"]["partitions"]) == 2, 20)
    snap = c.stats()["listener"]
    run.stop()
    print(f"\nstats after 5+3 alerts: {json.dumps(snap)[:400]}")
    assert snap["state"] == "listening"
    assert {t: v["delivered"] for t, v in snap["topics"].items()} == {a.short: 5, b.short: 3}
    assert snap["latency_s"]["count"] == 8 and snap["latency_s"]["p99"] is not None
    assert snap["callback_s"]["count"] == 8
    assert snap["last_alert"]["topic"] in (a.short, b.short)
    assert sorted((p["topic"], p["partition"]) for p in snap["partitions"]) == sorted(
        [(a.short, 0), (b.short, 0)]
    )
    assert c.stats()["listener"]["state"] == "stopped"
    assert snap["transitions"].get("listening") == 1


def test_lag_after_a_known_backlog_goes_back_to_zero(kafka_broker, make_topic):
    topic = make_topic()
    group = f"lag-{topic.short}"
    _produce(kafka_broker.plaintext, topic.full, 40)
    plain = Consumer({"bootstrap.servers": kafka_broker.plaintext, "group.id": group})
    plain.commit(offsets=[TopicPartition(topic.full, 0, 0)], asynchronous=False)
    plain.close()

    def slow(topic: str, payload: Any) -> None:
        time.sleep(0.1)

    c = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run = Run(c, slow, topic.short)
    seen: list[Any] = []

    def sample() -> bool:
        total = c.stats()["listener"]["lag"]["total"]
        seen.append(total)
        return c.stats()["listener"]["alerts_total"] == 40 and total == 0

    assert wait_for(sample, 40), seen[-5:]
    run.stop()
    peak = max(t for t in seen if t is not None)
    print(f"\nlag: peak {peak}, then {seen[-1]} ({len(seen)} samples)")
    assert peak >= 20  # a back-log of 40 alerts at 0.1 s each, sampled once a second


def test_states_across_a_broker_restart(kafka_private_broker):
    broker = kafka_private_broker
    broker.create_topics(["gracedb.superevent"], 1, 1, None)
    c = plain_client(broker.plaintext, "gracedb")
    got: list[Any] = []
    run = Run(c, lambda topic, payload: got.append(payload), "superevent")
    assert c.listening.wait(20)
    _produce(broker.plaintext, "gracedb.superevent", 1)
    assert wait_for(lambda: len(got) == 1, 20)
    broker.kill()
    assert wait_for(lambda: c.stats()["listener"]["state"] == "reconnecting", 30)
    broker.start()
    _produce(broker.plaintext, "gracedb.superevent", 1, start=1)
    assert wait_for(lambda: len(got) == 2, 60), got
    snap = c.stats()["listener"]
    run.stop()
    print(f"\ntransitions across a restart: {snap['transitions']} errors: {snap['errors']}")
    assert snap["state"] == "listening"
    assert snap["transitions"]["reconnecting"] >= 1
    assert snap["errors"].get("outage", 0) >= 1
    assert run.error is None
