"""The listen hot path (``listen_items``/``payload_of``/``done``) on a real broker.

Every kind of message on the wire is delivered as hop + the reference's ``unwrap`` would
deliver it (computed here from hop's own ``Deserializer`` on a plain consumer's copy);
``metadata`` callbacks get hop's ``Metadata``; the failure handler's ``Alert`` is the
message's; a private listener reopened after a fatal error resumes every partition exactly;
a consumer group redelivers an alert whose callback raised; ``client.open().read()`` still
gives hop models.
"""

from __future__ import annotations

import copy
import json
import pickle
import threading
import uuid
import warnings
from typing import Any

import pytest
from _helpers import plain_client, produce, wait_for
from _shared import Run
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import KafkaException as CKafkaException
from hop.io import Deserializer, Metadata, StartPosition
from hop.models import AvroBlob, Blob, JSONBlob

import igwn_alert
from igwn_alert.exceptions import KafkaException

pytestmark = pytest.mark.timeout(90)


def _raw_messages(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Every message of ``topic`` (all partitions), read with a plain consumer."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list[Any] = []
    assert wait_for(
        lambda: out.extend(m for m in c.consume(100, 0.2) if not m.error()) or (len(out) >= count),
        20,
    )
    c.close()
    return out


def _reference_payload(message: Any) -> Any:
    """What the callback must get: hop's deserializer, then the reference's unwrap."""
    headers = message.headers() or []
    if any(name == "_test" for name, _ in headers):
        return "skipped"
    value = message.value()
    if value is None:
        return Blob(content=b"")
    try:
        model = Deserializer.deserialize(message)
    except Exception:  # noqa: BLE001 - undecodable: raw bytes
        return Blob(content=value)
    if isinstance(model, JSONBlob):
        return model.content
    if isinstance(model, Blob):
        return model
    try:
        return json.loads(model)
    except Exception:  # noqa: BLE001
        return model


def _write_every_kind(bootstrap: str, topic: str) -> int:
    """Write every kind of message to partition 0; return how many are not test messages."""
    p = Producer({"bootstrap.servers": bootstrap})
    rows: list[tuple[Any, Any]] = [
        (b'{"n": 0}', [("_format", b"json")]),
        (b"\xff\xfe not utf-8", [("_format", b"json")]),
        (b"[" * 200000 + b"]" * 200000, [("_format", b"json")]),
        (None, [("_format", b"json")]),
        (b'{"n": 4}', [("_format", b"nonsense")]),
        (b'{"n": 5}', [("_format", b"json"), ("_test", b"true")]),
        (Blob(content=b"raw blob").serialize()["content"], [("_format", b"blob")]),
        (b'{"ivorn": "ivo://test/1", "role": "test"}', [("_format", b"voevent")]),
        (AvroBlob(content=[{"a": 1}]).serialize()["content"], [("_format", b"avro")]),
        (b'{"n": 9}', None),
        (b'"a json string"', [("_format", b"json")]),
        (b"null", [("_format", b"json")]),
        (b'{"n": 12}', [("_format", b"json"), ("_format", b"blob")]),
        (b"not json at all", [("_format", b"blob")]),
        (b'{"n": 14}', [("other", b"x"), ("_format", b"json")]),
        (b'{"n": 15}', [("_format", b"json")]),
        # the first _format header decides, even without a value (hop fails on it: raw)
        (b'{"n": 16}', [("_format", None), ("_format", b"json")]),
    ]
    for value, headers in rows:
        p.produce(topic, value, key=b"k", headers=headers, partition=0)
    assert p.flush(30) == 0
    return sum(1 for _, h in rows if not (h and any(n == "_test" for n, _ in h)))


def _listen_all(client: Any, callback: Any, short: str, count: int, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.listen(callback, short, since="earliest", until_eos=True, **kwargs)


def test_every_kind_of_message_reaches_the_callback_as_hop_and_unwrap_give_it(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("everykind")
    n = _write_every_kind(kafka_broker.plaintext, topic.full)
    raw = _raw_messages(kafka_broker.plaintext, topic.full, 17)
    expected = [_reference_payload(m) for m in raw]
    expected = [e for e in expected if not (isinstance(e, str) and e == "skipped")]
    got: list[Any] = []
    client = plain_client(kafka_broker.plaintext, topic.group)
    _listen_all(client, lambda topic, payload: got.append(payload), topic.short, n)
    assert len(got) == n == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert type(g) is type(e) and g == e, (i, g, e)


def test_metadata_callback_gets_hop_metadata_of_each_message(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("withmd", partitions=3)
    for part in range(3):
        produce(kafka_broker.plaintext, topic.full, [{"n": part * 10 + i} for i in range(4)], part)
    raw = {
        (m.partition(), m.offset()): m
        for m in _raw_messages(kafka_broker.plaintext, topic.full, 12)
    }
    got: list[tuple[str, Any, Any]] = []

    def callback(topic: str, payload: Any, metadata: Any) -> None:
        got.append((topic, payload, metadata))

    client = plain_client(kafka_broker.plaintext, topic.group)
    _listen_all(client, callback, topic.short, 12)
    assert len(got) == 12
    for short, payload, md in got:
        assert type(md) is Metadata
        assert md == Metadata.from_message(md._raw)
        m = raw[(md.partition, md.offset)]
        assert (md.topic, md.timestamp, md.key, md.headers) == (
            m.topic(),
            m.timestamp()[1],
            m.key(),
            m.headers(),
        )
        assert short == topic.short
        assert payload == json.loads(m.value())
        assert repr(md).startswith("Metadata(")


def test_print_mode_prints_every_alert(kafka_broker: Any, make_topic: Any, capsys: Any) -> None:
    topic = make_topic("printed")
    produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(3)] + [b"\xff"])
    client = plain_client(kafka_broker.plaintext, topic.group)
    _listen_all(client, None, topic.short, 4)
    out = capsys.readouterr().out
    assert out.count(f"New message from topic {topic.full}:\n") == 4, out
    for i in range(3):
        assert str({"n": i}) in out or json.dumps({"n": i}) in out, out


def test_failure_handler_gets_the_alert_of_the_message(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("handled", partitions=2)
    for part in range(2):
        produce(kafka_broker.plaintext, topic.full, [{"n": part * 10 + i} for i in range(5)], part)
    raw = {
        json.loads(m.value())["n"]: m for m in _raw_messages(kafka_broker.plaintext, topic.full, 10)
    }
    handed: list[tuple[Any, BaseException]] = []
    done: list[int] = []

    def callback(topic: str, payload: Any) -> None:
        if payload["n"] in (2, 13):
            raise ValueError(payload["n"])
        if payload["n"] == 4:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "non-fatal", fatal=False))
        done.append(payload["n"])

    client = plain_client(kafka_broker.plaintext, topic.group, retry_wait=0.01)
    _listen_all(client, callback, topic.short, 10, on_failure=lambda a, e: handed.append((a, e)))
    assert sorted(done) == [0, 1, 3, 10, 11, 12, 14]
    assert sorted(a.payload["n"] for a, _ in handed) == [2, 4, 13]
    for a, _exc in handed:
        assert isinstance(a, igwn_alert.Alert)
        m = raw[a.payload["n"]]
        assert (a.topic, a.full_topic, a.partition, a.offset, a.timestamp) == (
            topic.short,
            m.topic(),
            m.partition(),
            m.offset(),
            m.timestamp()[1],
        )
        assert a.payload == json.loads(m.value())
        assert a.attempts == (client.listen_retries if a.payload["n"] == 4 else 1)


def test_private_listener_reopened_after_a_fatal_error_resumes_every_partition_exactly(
    kafka_broker: Any, make_topic: Any
) -> None:
    parts, each = 4, 15
    topic = make_topic("fatalresume", partitions=parts)
    ids = []
    for part in range(parts):
        batch = [{"n": part * 100 + i} for i in range(each)]
        produce(kafka_broker.plaintext, topic.full, batch, part)
        ids += [b["n"] for b in batch]
    done: list[int] = []
    raised: list[int] = []

    def callback(topic: str, payload: Any) -> None:
        n = payload["n"]
        if n % 100 == 7 and n not in raised:
            raised.append(n)
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal from callback", fatal=True))
        done.append(n)

    client = plain_client(kafka_broker.plaintext, topic.group, retry_on_fatal=True, retry_wait=0.1)
    _listen_all(client, callback, topic.short, len(ids))
    assert sorted(raised) == [p * 100 + 7 for p in range(parts)]
    assert sorted(done) == sorted(ids), (
        f"lost={sorted(set(ids) - set(done))} duplicated={len(done) - len(set(done))}"
    )


def test_group_redelivers_the_alert_whose_callback_raised(
    kafka_broker: Any, make_topic: Any
) -> None:
    parts, each = 3, 10
    topic = make_topic("groupraise", partitions=parts)
    group = f"cg-{uuid.uuid4().hex[:8]}"
    first: list[int] = []
    boom = threading.Event()

    def failing(topic: str, payload: Any) -> None:
        if payload["n"] == 105:
            boom.set()
            raise ValueError("callback failed")
        first.append(payload["n"])

    c1 = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run = Run(c1, failing, topic.short)
    run.ready()
    ids = []
    for part in range(parts):
        batch = [{"n": part * 100 + i} for i in range(each)]
        produce(kafka_broker.plaintext, topic.full, batch, part)
        ids += [b["n"] for b in batch]
    assert wait_for(boom.is_set, 20)
    run.thread.join(20)
    assert isinstance(run.error, ValueError), repr(run.error)
    second: list[int] = []
    c2 = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run2 = Run(c2, lambda topic, payload: second.append(payload["n"]), topic.short)
    run2.ready()
    assert wait_for(lambda: set(first) | set(second) >= set(ids), 30)
    run2.stop()
    assert 105 in second
    assert not set(ids) - set(first) - set(second)
    print(f"duplicated={len(first) + len(second) - len(set(first) | set(second))}")


def test_open_read_still_gives_hop_models(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("openread")
    produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(3)])
    client = plain_client(kafka_broker.plaintext, topic.group)
    url = client._construct_topic_url([topic.short])
    with client.open(url, "r", start_at=StartPosition.EARLIEST) as s:
        pairs = []
        for payload, md in s.read(metadata=True, autocommit=False):
            pairs.append((payload, md))
            s.mark_done(md)
            if len(pairs) == 3:
                break
    for i, (payload, md) in enumerate(pairs):
        assert type(payload) is JSONBlob
        assert payload == JSONBlob(content={"n": i}) and JSONBlob(content={"n": i}) == payload
        assert repr(payload) == repr(JSONBlob(content={"n": i}))
        assert pickle.loads(pickle.dumps(payload)) == payload
        assert copy.deepcopy(payload) == payload
        assert payload.serialize() == JSONBlob(content={"n": i}).serialize()
        assert md == Metadata.from_message(md._raw)
    with client.open(url, "r", start_at=StartPosition.EARLIEST) as s:
        raws = []
        for m in s.read_raw():
            raws.append(m)
            if len(raws) == 3:
                break
    assert [json.loads(m.value()) for m in raws] == [{"n": i} for i in range(3)]


def test_max_messages_counts_done_alerts(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("maxmsg", partitions=2)
    for part in range(2):
        produce(kafka_broker.plaintext, topic.full, [{"n": part * 10 + i} for i in range(5)], part)
    got: list[int] = []
    client = plain_client(kafka_broker.plaintext, topic.group)

    def cb(topic: str, payload: Any) -> None:
        if payload["n"] == 1:
            raise ValueError
        got.append(payload["n"])

    client.listen(cb, topic.short, since="earliest", max_messages=7, on_failure="skip")
    assert len(got) == 6


def test_listen_items_with_a_callback_raising_fatal_without_retry_raises(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("fatalraise")
    produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(3)])
    client = plain_client(kafka_broker.plaintext, topic.group)

    def cb(topic: str, payload: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL, "x", fatal=True))

    with pytest.raises((KafkaException, CKafkaException)):
        client.listen(cb, topic.short, since="earliest", until_eos=True)
