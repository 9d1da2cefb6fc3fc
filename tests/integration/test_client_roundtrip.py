"""The client against the real broker (plaintext listener, no credential): payloads
round-trip unchanged, topic names stay short, ``get_topics`` keeps to its group, and the
publishing calls (connect / publish_to_topic / flush_by_topic / disconnect / publish)
deliver.

Every test listens with a private listener (no consumer group), which starts at the newest
alert: ``client.listening`` tells when it is positioned, so nothing is published too early.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import pytest
from _helpers import Listening, plain_client, read_from_start
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


def headers_without_id(headers: Optional[Iterable[tuple[str, bytes]]]) -> dict[str, bytes]:
    return {k: v for k, v in (headers or []) if k != "_id"}


# ---------------------------------------------------------------------------- 1. payloads


def test_str_dict_and_bytes_payloads_round_trip(
    kafka_broker: Any, make_topic: Any, alert_text: str, alert_dict: dict[str, Any]
) -> None:
    topic = make_topic("superevent")
    raw = b"\x00\x01 not json \xff" + uuid.uuid4().bytes
    listener = plain_client(kafka_broker.plaintext, topic.group)
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    with Listening(listener, "superevent", quiet=True) as listening:
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
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    publisher.connect("superevent")
    for msg in (alert_text, alert_dict, raw):
        publisher.publish_to_topic("superevent", msg)
    publisher.flush_by_topic("superevent")
    publisher.disconnect()

    messages = read_from_start({"bootstrap.servers": kafka_broker.plaintext}, topic.full, 3)
    assert len(messages) == 3, f"{len(messages)} of 3 raw messages on {topic.full}"
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
    publisher = plain_client(kafka_broker.plaintext, group)
    publisher.connect(names)
    for topic_arg in (names, set(names)):
        with Listening(
            plain_client(kafka_broker.plaintext, group), topic_arg, quiet=True
        ) as listening:
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
    listener = plain_client(kafka_broker.plaintext, group)
    with Listening(listener, None, quiet=True) as listening:
        plain_client(kafka_broker.plaintext, other.group).publish("superevent", {"from": "other"})
        publisher = plain_client(kafka_broker.plaintext, group)
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

    client = plain_client(kafka_broker.plaintext, group)
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
    publisher = plain_client(kafka_broker.plaintext, group)
    with Listening(
        plain_client(kafka_broker.plaintext, group), ["superevent", "cbc_gstlal"], quiet=True
    ) as listening:
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
    publisher = plain_client(kafka_broker.plaintext, group)
    with Listening(
        plain_client(kafka_broker.plaintext, group), ["superevent", "cbc_gstlal"], quiet=True
    ) as listening:
        publisher.publish("superevent", alert_text)  # returns once delivered
        assert publisher.sessions == {}
        publisher.publish(["superevent", "cbc_gstlal"], alert_dict)
        writer = publisher._publishers["cbc_gstlal"]
        for i in range(20):
            publisher.publish("cbc_gstlal", {"n": i})
        # writers are reused: one per topic, the same one for every publish() call
        assert publisher._publishers["cbc_gstlal"] is writer
        assert sorted(publisher._publishers) == ["cbc_gstlal", "superevent"]
        got = listening.wait_for(23)
    publisher.disconnect()

    # Kafka orders alerts within a topic's partition, not across topics
    assert [p for t, p in got if t == "superevent"] == [alert_text, alert_dict]
    assert [p for t, p in got if t == "cbc_gstlal"] == [alert_dict] + [{"n": i} for i in range(20)]


def test_connect_to_a_missing_topic_is_a_clear_error(kafka_broker: Any, make_topic: Any) -> None:
    make_topic("superevent")
    publisher = plain_client(kafka_broker.plaintext, make_topic.group)
    t0 = time.monotonic()
    with pytest.raises(TopicNotFoundError, match=f"{make_topic.group}.does_not_exist"):
        publisher.connect("does_not_exist")
    assert time.monotonic() - t0 < 15
    assert isinstance(TopicNotFoundError("x"), igwn_alert.exceptions.KafkaException)
