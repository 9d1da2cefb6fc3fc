"""A long-lived publisher survives a broker crash and a transient credential failure (issue 10).

On a broker of this test's own (``kafka_private_broker``: SIGKILL, then started again on the
same ports with the same data), one client, as GraceDB keeps it, publishes over SCRAM while

1. the broker is killed with SIGKILL and started again, and
2. the user's SCRAM credential is missing when the producer reconnects (so the broker
   refuses it for a while), then restored.

Every ``publish()`` call returns normally once its alert is delivered, every alert arrives
exactly once, and nothing reports a stale error afterwards (``publish_to_topic``,
``flush_by_topic``, ``disconnect``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from _delivery_helpers import wait_for
from confluent_kafka import Consumer, TopicPartition

import igwn_alert

pytestmark = pytest.mark.timeout(120)


def _uids(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[str]:
    """Every alert's uid on the topic, from the start (PLAINTEXT, as the admin sees it)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chk-{uuid.uuid4().hex[:8]}"})
    got: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(got) >= expect:
                    break
                continue
            if msg.error() is None:
                got.append(json.loads(msg.value())["uid"])
    finally:
        consumer.close()
    return got


def test_publisher_survives_sigkill_and_a_refused_credential(
    kafka_private_broker: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from _kafka_broker.testing import TopicFactory, UserFactory, hop_auth_for

    caplog.set_level(logging.INFO, logger="igwn_alert")
    broker = kafka_private_broker
    topic = TopicFactory(broker)("superevent")
    user = UserFactory(broker, tmp_path / "users")(write=[topic])
    host, port = broker.sasl.rsplit(":", 1)
    publisher = igwn_alert.client(
        auth=hop_auth_for(user), server=f"kafka://{host}", port=int(port), group=topic.group
    )
    publisher.delivery_timeout = timedelta(seconds=90)  # longer than the outage
    publisher.connect(topic.short)
    publisher.publish(topic.short, {"uid": "S-before"})

    results: dict[str, Any] = {}
    stop = threading.Event()

    def publish_loop() -> None:
        i = 0
        while not stop.is_set():
            uid = f"S-{i}"
            t0 = time.monotonic()
            try:
                publisher.publish(topic.short, {"uid": uid})
                results[uid] = time.monotonic() - t0
            except BaseException as exc:  # noqa: BLE001 - asserted below
                results[uid] = exc
            i += 1
            stop.wait(0.05)

    thread = threading.Thread(target=publish_loop, name="publisher", daemon=True)
    thread.start()
    assert wait_for(lambda: len(results) >= 5, 20)

    # 1. the credential disappears (the open connection stays authenticated), 2. SIGKILL
    broker.delete_user(user.username)
    t_kill = time.monotonic()
    broker.kill()
    queued = [f"Q-{i}" for i in range(20)]
    for uid in queued:  # GraceDB style: queued while the broker is down, never flushed
        publisher.publish_to_topic(topic.short, {"uid": uid})
    broker.start()
    t_up = time.monotonic()
    # the producer reconnects and the broker refuses its credential for a while
    refused = wait_for(
        lambda: any("authentication" in r.getMessage().lower() for r in caplog.records), 20
    )
    time.sleep(1.0)
    stalled = len(results)
    broker.create_user(user.username, user.password)
    t_auth = time.monotonic()
    assert wait_for(lambda: len(results) >= stalled + 10, 60), "publish() did not recover"
    stop.set()
    thread.join(100)
    assert not thread.is_alive()

    # later alerts go out with no stale error from anything
    publisher.publish(topic.short, {"uid": "S-after"})
    publisher.publish_to_topic(topic.short, {"uid": "Q-after"})
    publisher.flush_by_topic(topic.short)
    publisher.disconnect()
    assert publisher._producers.running() == 0

    failures = {uid: r for uid, r in results.items() if isinstance(r, BaseException)}
    slowest = max(r for r in results.values() if not isinstance(r, BaseException))
    print(
        f"\nbroker killed, up again after {t_up - t_kill:.1f} s; credential refused on "
        f"reconnect: {refused}; restored {t_auth - t_up:.1f} s after restart; "
        f"{len(results)} publish() calls, slowest {slowest:.1f} s, failures {len(failures)}"
    )
    for r in caplog.records:
        if r.levelno >= logging.WARNING:
            print(f"  {r.levelname} {r.name}: {r.getMessage()[:160]}")
    assert refused, "the broker never refused the credential: the test did not test that"
    assert not failures, failures
    expected = ["S-before", *results, *queued, "S-after", "Q-after"]
    got = _uids(broker.plaintext, topic.full, len(expected))
    missing = sorted(set(expected) - set(got))
    duplicated = len(got) - len(set(got))
    print(f"alerts: expected {len(expected)}, stored {len(got)}, missing {missing[:5]}")
    assert not missing
    assert duplicated == 0
    assert sorted(got) == sorted(expected)
