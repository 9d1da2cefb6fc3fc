"""The client against the real broker (plaintext listener, no credential): payloads
round-trip unchanged, topic names stay short, ``get_topics`` keeps to its group, and the
publishing calls (connect / publish_to_topic / flush_by_topic / disconnect / publish)
deliver.

Every test listens with a private listener (no consumer group), which starts at the newest
alert: ``client.listening`` tells when it is positioned, so nothing is published too early.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import pytest
from confluent_kafka import Consumer, KafkaException
from hop.io import Producer as HopProducer
from hop.models import Blob

import igwn_alert
from igwn_alert.exceptions import TopicNotFoundError

DATA = Path(__file__).resolve().parent.parent / "data"
READY_TIMEOUT = 15.0
RECEIVE_TIMEOUT = 15.0


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def alert_text() -> str:
    """A realistic GraceDB superevent alert, as the JSON text GraceDB publishes."""
    text = (DATA / "superevent_new.json").read_text()
    assert 1000 < len(text.encode()) < 2000
    return text


@pytest.fixture(scope="module")
def alert_dict(alert_text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(alert_text)
    return value


def plain_client(broker: Any, group: str, **kwargs: Any) -> igwn_alert.client:
    """A client of the broker's plaintext listener, unauthenticated."""
    host, port = broker.plaintext.rsplit(":", 1)
    return igwn_alert.client(
        noauth=True, server=f"kafka://{host}/", port=int(port), group=group, **kwargs
    )


class Listening:
    """Run ``client.listen(callback, topic)`` in a thread and collect what it delivers.

    Entering waits until the listener is positioned (``client.listening``); leaving stops it
    and checks that ``listen()`` returned and did not raise.
    """

    def __init__(self, client: igwn_alert.client, topic: Any) -> None:
        self.client = client
        self.topic = topic
        self.received: list[tuple[str, Any]] = []
        self.error: Optional[BaseException] = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="test-listen", daemon=True)

    def _callback(self, topic: str, payload: Any) -> None:
        with self._cond:
            self.received.append((topic, payload))
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # raw bytes warn "not valid json"
                self.client.listen(self._callback, self.topic)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc

    def __enter__(self) -> Listening:
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.client.listening.wait(0.05):
            if not self._thread.is_alive():
                raise AssertionError(f"listen() ended before it was ready: {self.error!r}")
            if time.monotonic() > deadline:
                self.client.stop()
                raise AssertionError(f"listen() not ready within {READY_TIMEOUT} s")
        return self

    def wait_for(self, count: int, timeout: float = RECEIVE_TIMEOUT) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    break
                self._cond.wait(min(left, 0.1))
            got = list(self.received)
        assert self.error is None, f"listen() raised {self.error!r}"
        assert len(got) >= count, f"expected {count} alerts within {timeout} s, got {got!r}"
        return got

    def __exit__(self, *exc: object) -> None:
        t0 = time.monotonic()
        self.client.stop()
        self._thread.join(5)
        assert not self._thread.is_alive(), "listen() did not return after stop()"
        assert time.monotonic() - t0 < 2.0
        if exc[0] is None and self.error is not None:
            raise AssertionError(f"listen() raised {self.error!r}")


def raw_messages(broker: Any, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """The raw Kafka messages of ``topic`` from its start (bytes and headers on the wire)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.plaintext,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
        assert len(got) == count, f"{len(got)} of {count} raw messages on {topic}"
        return got
    finally:
        consumer.close()


def headers_without_id(headers: Optional[Iterable[tuple[str, bytes]]]) -> dict[str, bytes]:
    return {k: v for k, v in (headers or []) if k != "_id"}


# ---------------------------------------------------------------------------- 1. payloads


def test_str_dict_and_bytes_payloads_round_trip(
    kafka_broker: Any, make_topic: Any, alert_text: str, alert_dict: dict[str, Any]
) -> None:
    topic = make_topic("superevent")
    raw = b"\x00\x01 not json \xff" + uuid.uuid4().bytes
    listener = plain_client(kafka_broker, topic.group)
    publisher = plain_client(kafka_broker, topic.group)
    with Listening(listener, "superevent") as listening:
        publisher.connect("superevent")
        publisher.publish_to_topic("superevent", alert_text)
        publisher.publish_to_topic("superevent", alert_dict)
        publisher.publish_to_topic("superevent", raw)
        publisher.flush_by_topic("superevent")
        got = listening.wait_for(3)
    publisher.disconnect()

    assert [t for t, _ in got] == ["superevent"] * 3
    (_, as_str), (_, as_dict), (_, as_bytes) = got
    # GraceDB's JSON text arrives as the very same str, decoded once only
    assert type(as_str) is str
    assert as_str == alert_text
    assert json.loads(as_str) == alert_dict
    # a dict arrives as an equal dict
    assert type(as_dict) is dict
    assert as_dict == alert_dict
    # raw bytes: what the reference delivers, a hop Blob holding them
    assert type(as_bytes) is Blob
    assert as_bytes.content == raw


def test_bytes_on_the_wire_are_hops(
    kafka_broker: Any, make_topic: Any, alert_text: str, alert_dict: dict[str, Any]
) -> None:
    """publish_to_topic writes exactly what hop (and so the reference) writes."""
    topic = make_topic("superevent")
    raw = b"\x00raw\xff"
    publisher = plain_client(kafka_broker, topic.group)
    publisher.connect("superevent")
    for msg in (alert_text, alert_dict, raw):
        publisher.publish_to_topic("superevent", msg)
    publisher.flush_by_topic("superevent")
    publisher.disconnect()

    messages = raw_messages(kafka_broker, topic.full, 3)
    for msg, sent in zip(messages, (alert_text, alert_dict, raw)):
        value, headers = HopProducer.pack(sent)
        assert msg.value() == value
        assert headers_without_id(msg.headers()) == headers_without_id(headers)
        assert len(dict(msg.headers())["_id"]) == 16  # hop's message UUID
    # a str goes out as a JSON string (not the text itself, not double-encoded)
    assert json.loads(messages[0].value()) == alert_text
    assert dict(messages[0].headers())["_format"] == b"json"
    assert dict(messages[2].headers())["_format"] == b"blob"


# ---------------------------------------------------------------------------- 2. topics


def test_multi_topic_listen_gets_short_names(kafka_broker: Any, make_topic: Any) -> None:
    names = ["superevent", "cbc_gstlal", "external.fermi"]
    for name in names:
        make_topic(name)
    group = make_topic.group
    publisher = plain_client(kafka_broker, group)
    publisher.connect(names)
    for topic_arg in (names, set(names)):
        with Listening(plain_client(kafka_broker, group), topic_arg) as listening:
            for name in names:
                publisher.publish_to_topic(name, {"topic": name})
                publisher.flush_by_topic(name)
            got = listening.wait_for(3)
        assert sorted(got, key=lambda x: x[0]) == sorted(
            ((n, {"topic": n}) for n in names), key=lambda x: x[0]
        )
    publisher.disconnect()


def test_listen_without_topics_covers_the_whole_group(kafka_broker: Any, make_topic: Any) -> None:
    names = ["superevent", "cbc_gstlal", "external.fermi"]
    for name in names:
        make_topic(name)
    group = make_topic.group
    other = make_topic("superevent", group=f"test-{group}")  # not of this group
    listener = plain_client(kafka_broker, group)
    with Listening(listener, None) as listening:
        plain_client(kafka_broker, other.group).publish("superevent", {"from": "other"})
        publisher = plain_client(kafka_broker, group)
        for name in names:
            publisher.publish(name, {"topic": name})
        listening.wait_for(3)
        time.sleep(0.5)
        got = list(listening.received)
    publisher.disconnect()
    assert sorted(t for t, _ in got) == sorted(names)
    assert all(payload == {"topic": t} for t, payload in got)


# ---------------------------------------------------------------------------- 3. get_topics


def test_get_topics_lists_only_the_groups_short_names(kafka_broker: Any, make_topic: Any) -> None:
    names = ["superevent", "cbc_gstlal", "external.fermi"]
    for name in names:
        make_topic(name)
    group = make_topic.group
    # the reference's substring test would list these under `group` as well
    make_topic("superevent", group=f"test-{group}")
    make_topic("other", group=f"test-{group}")
    make_topic("lookalike", group=f"{group}x")

    client = plain_client(kafka_broker, group)
    found = client.get_topics()
    assert sorted(found) == sorted(names)
    assert len(found) == len(set(found))
    assert sorted(client.get_topics(group=f"test-{group}")) == ["other", "superevent"]
    assert client.get_topics(group=f"{group}x") == ["lookalike"]
    assert client.get_topics(group=f"nothing-{uuid.uuid4().hex[:6]}") == []


# ---------------------------------------------------------------------------- 4. publishing


def test_connect_publish_flush_disconnect(kafka_broker: Any, make_topic: Any) -> None:
    make_topic("superevent")
    make_topic("cbc_gstlal")
    group = make_topic.group
    publisher = plain_client(kafka_broker, group)
    with Listening(plain_client(kafka_broker, group), ["superevent", "cbc_gstlal"]) as listening:
        publisher.connect(["superevent", "cbc_gstlal"])
        assert sorted(publisher.sessions) == ["cbc_gstlal", "superevent"]
        for i in range(3):
            publisher.publish_to_topic("superevent", {"n": i})
        publisher.publish_to_topic("cbc_gstlal", "text")
        publisher.flush_by_topic("superevent")
        publisher.flush_by_topic("cbc_gstlal")
        got = listening.wait_for(4)

        publisher.disconnect("cbc_gstlal")
        assert list(publisher.sessions) == ["superevent"]
        with pytest.raises(RuntimeError, match="cbc_gstlal"):
            publisher.publish_to_topic("cbc_gstlal", {"late": True})
        with pytest.warns(UserWarning, match="nope"):
            publisher.disconnect("nope")
        publisher.publish_to_topic("superevent", {"n": 3})
        publisher.flush_by_topic("superevent")
        got = listening.wait_for(5)

        publisher.disconnect()
        assert publisher.sessions == {}
        with pytest.raises(RuntimeError, match="No active sessions"):
            publisher.publish_to_topic("superevent", {"n": 4})
        with pytest.raises(RuntimeError, match="No active sessions"):
            publisher.flush_by_topic("superevent")

        # connect again after a full disconnect: works as new
        publisher.connect("superevent")
        publisher.publish_to_topic("superevent", {"n": 5})
        publisher.flush_by_topic("superevent")
        got = listening.wait_for(6)
        publisher.disconnect()
        time.sleep(0.3)
        got = list(listening.received)

    per_topic = {t: [p for tt, p in got if tt == t] for t in ("superevent", "cbc_gstlal")}
    assert per_topic["superevent"] == [{"n": i} for i in (0, 1, 2, 3, 5)]
    assert per_topic["cbc_gstlal"] == ["text"]


def test_publish_without_connect(
    kafka_broker: Any, make_topic: Any, alert_text: str, alert_dict: dict[str, Any]
) -> None:
    make_topic("superevent")
    make_topic("cbc_gstlal")
    group = make_topic.group
    publisher = plain_client(kafka_broker, group)
    with Listening(plain_client(kafka_broker, group), ["superevent", "cbc_gstlal"]) as listening:
        publisher.publish("superevent", alert_text)  # returns once delivered
        assert publisher.sessions == {}
        publisher.publish(["superevent", "cbc_gstlal"], alert_dict)
        t0 = time.monotonic()
        for i in range(20):
            publisher.publish("cbc_gstlal", {"n": i})
        burst = time.monotonic() - t0
        got = listening.wait_for(23)
    publisher.disconnect()

    assert got[0] == ("superevent", alert_text)
    assert [p for t, p in got if t == "superevent"] == [alert_text, alert_dict]
    assert [p for t, p in got if t == "cbc_gstlal"] == [alert_dict] + [{"n": i} for i in range(20)]
    # writers are reused: 20 acknowledged publish() calls cost well under a second each
    assert burst < 5.0, f"20 publish() calls took {burst:.2f} s"


def test_connect_to_a_missing_topic_is_a_clear_error(kafka_broker: Any, make_topic: Any) -> None:
    make_topic("superevent")
    publisher = plain_client(kafka_broker, make_topic.group)
    t0 = time.monotonic()
    with pytest.raises(TopicNotFoundError, match=f"{make_topic.group}.does_not_exist"):
        publisher.connect("does_not_exist")
    assert time.monotonic() - t0 < 15
    assert isinstance(TopicNotFoundError("x"), igwn_alert.exceptions.KafkaException)
