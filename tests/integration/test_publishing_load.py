"""Publishing on the real broker as GraceDB does it: many threads, one client (issue 10).

* a too-large alert fails alone (the client's limit, and a topic's own limit on the broker),
  and the alerts after it are delivered;
* 8 threads x 500 ``publish()`` on one client, one thread's alerts refused by the broker
  (its topic has no WRITE ACL for the credential): only that thread raises, for each of its
  alerts, and every other alert arrives exactly once;
* ``connect()`` twice, then ``disconnect()``: no librdkafka producer thread is left;
* the GraceDB shape: ``connect()`` on 10 topics, 10,000 ``publish_to_topic`` from 4 threads
  without any flush; a reader counts every alert exactly once, and the call-to-arrival
  latency (p50/p99) is printed.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _delivery_helpers import wait_for
from _helpers import plain_client
from confluent_kafka import Consumer, TopicPartition

from igwn_alert.exceptions import AlertTooLargeError, DeliveryAuthorizationError

pytestmark = pytest.mark.timeout(120)

ALERT_TEXT = (Path(__file__).resolve().parents[2] / "bench" / "alert.json").read_text().strip()


def _gracedb_alert(uid: str) -> str:
    """The bench's GraceDB superevent alert (1.2 kB of JSON text) with its own uid."""
    alert = json.loads(ALERT_TEXT)
    alert["uid"] = uid
    return json.dumps(alert)


def _uid(value: bytes) -> str:
    content = json.loads(value)
    if isinstance(content, str):
        content = json.loads(content)
    return str(content["uid"])


class Reader:
    """A raw consumer of every partition of some topics, from the start, in a thread."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"}
        )
        self.consumer.assign([TopicPartition(t, 0, 0) for t in topics])
        self.arrived: dict[str, float] = {}
        self.stored: dict[str, float] = {}  # the broker's append time (LogAppendTime topics)
        self.counts: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                # what is buffered, without waiting for a full batch; else wait for one
                batch = self.consumer.consume(500, 0)
                if not batch:
                    msg = self.consumer.poll(0.1)
                    batch = [msg] if msg is not None else []
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    uid = _uid(msg.value())
                    self.counts[uid] += 1
                    self.arrived.setdefault(uid, time.perf_counter())
                    self.stored.setdefault(uid, msg.timestamp()[1] / 1000.0)
        finally:
            self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _rdkafka_threads() -> list[str]:
    """The names of this process's librdkafka threads (``rdk:main``, ``rdk:broker1``...)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if name.startswith("rdk:"):
            names.append(name)
    return names


# -- too large -------------------------------------------------------------------------------


def test_too_large_alert_fails_alone(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent")
    small = make_topic("small", config={"max.message.bytes": "20000"})
    c = plain_client(kafka_broker.plaintext, topic.group)
    c.publish(topic.short, _gracedb_alert("S-1"))
    huge = _gracedb_alert("S-huge") + " " * 20_000_000  # 20 MB: above the client's limit
    with pytest.raises(AlertTooLargeError) as info:
        c.publish(topic.short, huge)
    print(f"\n20 MB alert: {type(info.value).__name__}: {info.value}")
    assert "S-huge" in str(info.value)
    c.publish(topic.short, _gracedb_alert("S-2"))

    # the topic's own limit, enforced by the broker: the delivery report says so
    c.publish(small.short, _gracedb_alert("M-1"))
    with pytest.raises(AlertTooLargeError) as info:
        c.publish(small.short, _gracedb_alert("M-big") + " " * 50_000)
    print(f"50 kB alert to a topic of 20 kB messages: {info.value}")
    assert "M-big" in str(info.value)
    c.connect([topic.short, small.short])
    c.publish_to_topic(small.short, _gracedb_alert("M-big2") + " " * 50_000)
    c.publish_to_topic(topic.short, _gracedb_alert("S-3"))  # another topic: not affected
    with pytest.raises(AlertTooLargeError, match=r"^1 alert\(s\).*M-big2"):
        c.flush_by_topic(small.short)
    c.flush_by_topic(small.short)  # reported once
    # (an alert queued on the same topic right behind it, before a flush, may share its
    # record batch, which the broker refuses as a whole: see the publishing guide)
    c.publish_to_topic(small.short, _gracedb_alert("M-2"))
    c.flush_by_topic(small.short)
    c.flush_by_topic(topic.short)
    c.publish(small.short, _gracedb_alert("M-3"))
    c.disconnect()

    reader = Reader(kafka_broker.plaintext, [topic.full, small.full])
    try:
        assert wait_for(lambda: len(reader.counts) >= 6, 20), reader.counts
        time.sleep(0.5)
    finally:
        reader.close()
    assert dict(reader.counts) == {u: 1 for u in ("S-1", "S-2", "S-3", "M-1", "M-2", "M-3")}


# -- threads ---------------------------------------------------------------------------------


def test_threads_publishing_get_their_own_outcome(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    import igwn_alert

    topic = make_topic("superevent")
    forbidden = make_topic("forbidden")
    user = make_user(write=[topic], describe=[forbidden])  # sees it, may not write to it
    host, port = kafka_broker.sasl.rsplit(":", 1)
    c = igwn_alert.client(
        auth=hop_auth_for(user), server=f"kafka://{host}", port=int(port), group=topic.group
    )
    per_thread, threads_n, bad = 500, 8, 5
    raised: Counter[int] = Counter()
    wrong: list[str] = []
    start = threading.Barrier(threads_n)

    def run(n: int) -> None:
        start.wait()
        target = forbidden.short if n == bad else topic.short
        for i in range(per_thread):
            uid = f"T{n}-{i}"
            try:
                c.publish(target, _gracedb_alert(uid))
            except DeliveryAuthorizationError as exc:
                raised[n] += 1
                if uid not in str(exc):
                    wrong.append(f"{uid}: {exc}")
            except BaseException as exc:  # noqa: BLE001 - asserted below
                wrong.append(f"{uid}: {type(exc).__name__}: {exc}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,), name=f"pub-{n}") for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    took = time.monotonic() - t0
    c.disconnect()  # nothing stale: the refused alerts were reported to their callers
    print(
        f"\n{threads_n} threads x {per_thread} publish() in {took:.1f} s "
        f"({threads_n * per_thread / took:.0f}/s); raised per thread: {dict(raised)}"
    )
    assert not any(t.is_alive() for t in threads)
    assert not wrong, wrong[:5]
    assert dict(raised) == {bad: per_thread}

    reader = Reader(kafka_broker.plaintext, [topic.full])
    expected = (threads_n - 1) * per_thread
    try:
        assert wait_for(lambda: len(reader.counts) >= expected, 30), len(reader.counts)
        time.sleep(0.5)
    finally:
        reader.close()
    assert len(reader.counts) == expected
    assert set(reader.counts.values()) == {1}  # exactly once
    assert not any(u.startswith(f"T{bad}-") for u in reader.counts)


# -- no producer left ------------------------------------------------------------------------


def test_connect_twice_then_disconnect_leaves_no_producer(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("superevent")
    gc.collect()
    before = len(_rdkafka_threads())
    c = plain_client(kafka_broker.plaintext, topic.group)
    c.connect(topic.short)
    c.publish_to_topic(topic.short, _gracedb_alert("S-1"))
    c.connect(topic.short)  # again: the old writer is flushed and closed
    c.publish_to_topic(topic.short, _gracedb_alert("S-2"))
    c.publish(topic.short, _gracedb_alert("S-3"))
    running = len(_rdkafka_threads())
    c.disconnect()
    gc.collect()
    assert wait_for(lambda: len(_rdkafka_threads()) <= before, 10), _rdkafka_threads()
    print(f"\nlibrdkafka threads: {before} before, {running} while connected, 0 extra after")
    assert running > before  # the measure sees a running producer
    assert c._producers.running() == 0


# -- GraceDB's shape -------------------------------------------------------------------------


def test_gracedb_shaped_load(kafka_broker: Any, make_topic: Any) -> None:
    names = [f"t{i}" for i in range(10)]
    topics = [make_topic(n, config={"message.timestamp.type": "LogAppendTime"}) for n in names]
    group = topics[0].group
    reader = Reader(kafka_broker.plaintext, [t.full for t in topics])
    c = plain_client(kafka_broker.plaintext, group)
    c.connect(names)
    total, threads_n = 10_000, 4
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            for i in range(total // threads_n):
                uid = f"G{n}-{i}"
                text = _gracedb_alert(uid)
                sent_wall[uid] = time.time()
                sent[uid] = time.perf_counter()
                c.publish_to_topic(names[i % len(names)], text)
                time.sleep(0.002)  # requests arrive (~1,500/s in all), not a tight loop
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    calls = time.monotonic() - t0
    try:
        # no flush: librdkafka sends each alert within its linger (1 ms)
        assert wait_for(lambda: len(reader.counts) >= total, 30), len(reader.counts)
        time.sleep(0.5)
    finally:
        reader.close()
    assert not errors, errors[:3]
    latency_ms = sorted((reader.arrived[u] - sent[u]) * 1000 for u in sent)
    stored_ms = sorted((reader.stored[u] - sent_wall[u]) * 1000 for u in sent)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))]

    print(
        f"\nGraceDB shape: {total} publish_to_topic on {len(names)} topics from {threads_n} "
        f"threads in {calls:.1f} s, no flush (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores)\n"
        f"  call -> arrival at the reader: p50 {statistics.median(latency_ms):.1f} ms, "
        f"p99 {pct(latency_ms, 0.99):.1f} ms, max {latency_ms[-1]:.1f} ms\n"
        f"  call -> stored by the broker (LogAppendTime, 1 ms resolution): "
        f"p50 {statistics.median(stored_ms):.1f} ms, p99 {pct(stored_ms, 0.99):.1f} ms"
    )
    assert len(reader.counts) == total
    assert set(reader.counts.values()) == {1}  # every alert exactly once
    c.disconnect()
