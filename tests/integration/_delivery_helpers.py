"""Helpers for the delivery and resilience tests (``test_delivery_*``, ``test_resilience_*``).

Everything here talks to a real Kafka broker: the shared one (``kafka_broker``) or a
dedicated single-node broker a test module starts for itself (:func:`dedicated_broker`), so
that stopping and restarting it disturbs nobody else.

Each test prints one line ``sent=N received=N lost=N duplicated=N`` (:class:`Tally`), where
``received`` counts distinct alerts, ``lost`` the sent alerts never received and
``duplicated`` the deliveries beyond the first of an alert.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Optional

from _helpers import host_port, plain_client, wait_for
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

__all__ = ["host_port", "plain_client", "wait_for"]  # re-exported for the delivery tests

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))

_quiet = logging.getLogger("tests.delivery.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


# --------------------------------------------------------------------------- counting


class Tally:
    """What was sent and what arrived, by alert id (thread-safe)."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self._lock = threading.Lock()

    def send(self, alert_id: Any) -> None:
        with self._lock:
            self.sent.append(alert_id)

    def receive(self, alert_id: Any) -> None:
        with self._lock:
            self.received.append(alert_id)

    def got(self, alert_id: Any) -> bool:
        with self._lock:
            return alert_id in self.received

    def count(self) -> int:
        with self._lock:
            return len(set(self.received))

    def lost_ids(self) -> list[Any]:
        with self._lock:
            seen = set(self.received)
            return [a for a in self.sent if a not in seen]

    def duplicated(self) -> int:
        with self._lock:
            return sum(n - 1 for n in Counter(self.received).values() if n > 1)

    def report(self) -> tuple[int, int]:
        """Print the summary line; return (lost, duplicated)."""
        with self._lock:
            sent = set(self.sent)
            counts = Counter(self.received)
        received = len(sent & set(counts))
        lost = len(sent - set(counts))
        dup = sum(n - 1 for n in counts.values() if n > 1)
        prefix = f"[{self.label}] " if self.label else ""
        print(f"\n{prefix}sent={len(sent)} received={received} lost={lost} duplicated={dup}")
        if lost:
            print(f"{prefix}lost: {sorted(sent - set(counts), key=str)[:20]}")
        if dup:
            again = sorted((a for a, n in counts.items() if n > 1), key=str)
            print(f"{prefix}duplicated: {again[:20]}")
        return lost, dup


def outcome(exc: Optional[BaseException], took: float) -> str:
    """``<ExceptionName> after <t> s: <message>`` for the test's printout."""
    return f"{type(exc).__name__} after {took:.1f} s: {exc}"


# --------------------------------------------------------------------------- clients


def alert(i: Any, **extra: Any) -> dict[str, Any]:
    """A small GraceDB-like alert with an id."""
    return {"id": i, "alert_type": "new", "uid": f"S{i}", **extra}


def alert_id(payload: Any) -> Any:
    if isinstance(payload, dict):
        return payload.get("id")
    return None


class Listener:
    """``client.listen(callback, topics, since=...)`` in a thread; records what it got."""

    def __init__(
        self,
        client: Any,
        topics: Any,
        tally: Optional[Tally] = None,
        on_alert: Optional[Callable[[str, Any], None]] = None,
        since: Any = None,
        name: str = "listener",
    ) -> None:
        self.client = client
        self.topics = topics
        self.tally = tally
        self.on_alert = on_alert
        self.since = since
        self.payloads: list[tuple[str, Any]] = []
        self.error: Optional[BaseException] = None
        self.returned_at: Optional[float] = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _callback(self, topic: str, payload: Any) -> None:
        self.payloads.append((topic, payload))
        if self.on_alert is not None:
            self.on_alert(topic, payload)  # may raise: then the alert is not counted
        if self.tally is not None:
            self.tally.receive(alert_id(payload))

    def _run(self) -> None:
        try:
            self.client.listen(self._callback, self.topics, since=self.since)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.returned_at = time.monotonic()

    def start(self) -> Listener:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> float:
        """stop() the client and join; return how long listen() took to return."""
        t0 = time.monotonic()
        self.client.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"listen() did not return within {timeout} s of stop()"
        return (self.returned_at or time.monotonic()) - t0

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


@contextlib.contextmanager
def listening(*listeners: Listener) -> Iterator[None]:
    """Start listeners; stop them on the way out (whatever happened)."""
    for lst in listeners:
        if not lst.thread.is_alive() and lst.returned_at is None:
            lst.start()
    try:
        yield
    finally:
        for lst in listeners:
            if lst.alive:
                with contextlib.suppress(AssertionError):
                    lst.stop()


# --------------------------------------------------------------------------- admin views


def admin_for(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})


def committed(admin: AdminClient, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offsets of a topic (partition -> offset; -1001 none)."""
    request = ConsumerGroupTopicPartitions(
        group_id, [TopicPartition(topic, p) for p in range(partitions)]
    )
    futures = admin.list_consumer_group_offsets([request], request_timeout=10)
    result = futures[group_id].result()
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_committed(
    admin: AdminClient, group_id: str, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, int]:
    """Wait until the group has a committed position on every partition of ``topic``.

    A listener of a group that never committed records its start position at once when it
    is assigned a partition, so this is the moment from which nothing published is missed.
    """
    last: dict[int, int] = {}

    def done() -> bool:
        nonlocal last
        try:
            last = committed(admin, group_id, topic, partitions)
        except Exception:  # noqa: BLE001 - coordinator loading, retry
            return False
        return len(last) == partitions and all(o >= 0 for o in last.values())

    assert wait_for(done, timeout, 0.1), (
        f"group {group_id} has no committed position on {topic} after {timeout} s: {last}"
    )
    return last


def group_members(admin: AdminClient, group_id: str) -> list[set[tuple[str, int]]]:
    """The assignment of each member of a consumer group, as the coordinator sees it."""
    desc = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id].result()
    out = []
    for member in desc.members:
        parts = member.assignment.topic_partitions if member.assignment else []
        out.append({(tp.topic, tp.partition) for tp in parts})
    return out


def end_offsets(admin: AdminClient, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka.admin import OffsetSpec

    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    result = admin.list_offsets(request, request_timeout=10)
    return {tp.partition: fut.result().offset for tp, fut in result.items()}


# --------------------------------------------------------------------------- brokers


def start_dedicated_broker(directory: Path, nodes: int = 1, **kwargs: Any) -> Any:
    """Start a throw-away PLAINTEXT KRaft cluster (killed by the caller), warmed up."""
    from _kafka_broker import start_cluster
    from _kafka_broker.admin import warm_up

    cluster = start_cluster(nodes, directory, **kwargs)
    try:
        warm_up(cluster.bootstrap)
    except BaseException:
        cluster.kill()
        raise
    return cluster


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    replication: int = 1,
    config: Optional[dict[str, str]] = None,
    timeout: float = 30.0,
) -> None:
    """Create a topic over PLAINTEXT and wait until every partition has a leader."""
    from confluent_kafka.admin import NewTopic

    admin = admin_for(bootstrap)
    new = NewTopic(name, partitions, replication, config=dict(config or {}))
    admin.create_topics([new], request_timeout=timeout)[name].result()

    def ready() -> bool:
        md = admin.list_topics(topic=name, timeout=5)
        t = md.topics.get(name)
        return (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        )

    assert wait_for(ready, timeout, 0.1), f"topic {name} has no leaders after {timeout} s"


def warnings_from_igwn_alert(records: Iterable[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.WARNING and r.name.startswith("igwn_alert")]
