"""Publishing errors are told once, to the caller whose alert it was (issue 10).

Boundary: ``confluent_kafka.Producer`` in the publishing module, replaced by
:class:`ScriptedProducer`, which serves each alert's delivery report with the outcome a
test scripts for it (real :class:`confluent_kafka.KafkaError` objects), and can report
errors through ``error_cb`` as librdkafka does.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest
from confluent_kafka import KafkaError, KafkaException

from igwn_alert import client
from igwn_alert.exceptions import (
    AlertTooLargeError,
    AuthorizationError,
    DeliveryAuthorizationError,
    DeliveryError,
)

pytestmark = pytest.mark.usefixtures("isolated_home")

Outcome = Callable[[str, bytes], Optional[KafkaError]]


class _Message:
    def __init__(self, topic: str, value: bytes) -> None:
        self._topic, self._value = topic, value

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value


class ScriptedProducer:
    """A confluent-kafka producer whose delivery reports follow ``outcome(topic, value)``."""

    instances: list[ScriptedProducer] = []
    outcome: Outcome = staticmethod(lambda topic, value: None)
    metadata_brokers: list[int] = []  # orig_broker_id of successive metadata answers
    max_bytes = 1_000_000

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.error_cb = config.get("error_cb")
        self.produced: list[tuple[str, bytes]] = []
        self.pending: list[tuple[Any, _Message]] = []
        self.lock = threading.Lock()
        self.list_topics_calls = 0
        self.closed = False
        self.hold = False  # True: poll() serves nothing (the broker is not answering)
        self.held_topics: set[str] = set()  # topics whose reports poll() keeps back
        type(self).instances.append(self)

    refuse = False  # True: the broker refuses the credential (error_cb), nothing answers

    def list_topics(self, topic: Optional[str] = None, timeout: float = -1) -> Any:
        self.list_topics_calls += 1
        if type(self).refuse:
            self.error_cb(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        brokers = type(self).metadata_brokers
        broker = brokers.pop(0) if brokers else 1
        return SimpleNamespace(
            orig_broker_id=broker,
            topics={topic: SimpleNamespace(topic=topic, error=None, partitions={0: None})},
        )

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None, **kw):
        if self.closed:
            raise RuntimeError("Producer has been closed")
        if len(value) > self.max_bytes:
            raise KafkaException(
                KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
            )
        with self.lock:
            self.produced.append((topic, value))
            self.pending.append((on_delivery, _Message(topic, value)))

    def poll(self, timeout: float = 0) -> int:
        if self.hold:
            return 0
        with self.lock:
            pending = [p for p in self.pending if p[1].topic() not in self.held_topics]
            self.pending = [p for p in self.pending if p[1].topic() in self.held_topics]
        for callback, message in pending:
            callback(type(self).outcome(message.topic(), message.value()), message)
        return len(pending)

    def flush(self, timeout: float = -1) -> int:
        self.poll()
        return len(self.pending)  # what is still queued, as librdkafka's flush() says

    def purge(self, **kwargs: Any) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for callback, message in pending:
            callback(KafkaError(KafkaError._PURGE_QUEUE, "purged"), message)

    def close(self) -> bool:
        self.closed = True
        return True

    def __len__(self) -> int:
        return len(self.pending)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedProducer]:
    from igwn_alert import _publishing

    monkeypatch.setattr(ScriptedProducer, "instances", [])
    monkeypatch.setattr(ScriptedProducer, "metadata_brokers", [])
    monkeypatch.setattr(ScriptedProducer, "refuse", False)
    monkeypatch.setattr(ScriptedProducer, "outcome", staticmethod(lambda t, v: None))
    monkeypatch.setattr(_publishing.confluent_kafka, "Producer", ScriptedProducer)
    return ScriptedProducer


def _fail_when(predicate: Callable[[str, Any], bool], code: int, reason: str) -> Outcome:
    def outcome(topic: str, value: bytes) -> Optional[KafkaError]:
        alert = json.loads(value)
        if isinstance(alert, str):  # GraceDB's JSON text, sent as a JSON string
            alert = json.loads(alert)
        return KafkaError(code, reason) if predicate(topic, alert) else None

    return staticmethod(outcome)  # type: ignore[return-value]


def _alert(uid: str, **extra: Any) -> str:
    """A GraceDB-style alert: its JSON text, as GraceDB passes it."""
    return json.dumps({"uid": uid, "alert_type": "new", **extra})


@pytest.fixture
def c() -> client:
    return client(noauth=True, server="kafka://test.server", port=1234, group="g")


# -- publish(): its own alert only -----------------------------------------------------------


def test_publish_raises_only_for_its_own_alert_and_keeps_nothing(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted,
        "outcome",
        _fail_when(
            lambda t, a: "bad" in a["uid"], KafkaError._MSG_TIMED_OUT, "Local: Message timed out"
        ),
    )
    c.publish("superevent", _alert("S1"))
    with pytest.raises(DeliveryError) as info:
        c.publish("superevent", _alert("S2bad"))
    assert "alert S2bad" in str(info.value) and "delivery timeout" in str(info.value)
    # nothing sticky: the next alerts go out, and no later call reports S2bad again
    c.publish("superevent", _alert("S3"))
    c.connect("superevent")
    c.publish_to_topic("superevent", _alert("S4"))
    c.flush_by_topic("superevent")
    c.disconnect()
    assert [json.loads(json.loads(v))["uid"] for _, v in scripted.instances[0].produced] == [
        "S1",
        "S2bad",
        "S3",
        "S4",
    ]


def test_publish_to_topic_never_raises_for_an_earlier_alert(c, scripted, monkeypatch, caplog):
    monkeypatch.setattr(
        scripted,
        "outcome",
        _fail_when(
            lambda t, a: a["uid"] in ("S2", "S3"), KafkaError._MSG_TIMED_OUT, "Message timed out"
        ),
    )
    c.connect(["superevent", "other"])
    with caplog.at_level(logging.ERROR, logger="igwn_alert"):
        for uid in ("S1", "S2", "S3", "S4", "S5"):
            c.publish_to_topic("superevent", _alert(uid))  # S2, S3 fail: no raise here
        c.publish_to_topic("other", _alert("O1"))
        c.flush_by_topic("other")  # the other topic's failures are not its business
        with pytest.raises(DeliveryError) as info:
            c.flush_by_topic("superevent")
    text = str(info.value)
    assert "2 alert(s)" in text and "alert S2" in text and "alert S3" in text
    assert "S1" not in text and "S4" not in text
    assert "since the last flush" in text
    c.flush_by_topic("superevent")  # reported once: the next flush is clean
    c.publish_to_topic("superevent", _alert("S6"))
    c.flush_by_topic("superevent")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # the first failure of the run, then how many failed in a row once alerts go out again
    assert len(logged) == 2, logged
    assert "alert S2" in logged[0] and logged[1].startswith("2 alerts in a row")
    c.disconnect()


def test_flush_names_at_most_ten_and_counts_the_rest(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted, "outcome", _fail_when(lambda t, a: True, KafkaError._MSG_TIMED_OUT, "timed out")
    )
    c.connect("superevent")
    for i in range(25):
        c.publish_to_topic("superevent", _alert(f"S{i}"))
    with pytest.raises(DeliveryError) as info:
        c.flush_by_topic("superevent")
    text = str(info.value)
    assert text.startswith("25 alert(s)") and "and 15 more" in text
    assert "alert S0," in text and "alert S9 " in text and "alert S10" not in text


def test_alert_without_uid_is_described_so(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted, "outcome", _fail_when(lambda t, a: True, KafkaError._MSG_TIMED_OUT, "timed out")
    )
    with pytest.raises(DeliveryError, match=r"an alert without uid to topic g\.superevent"):
        c.publish("superevent", {"no": "uid"})


def test_refused_write_is_a_delivery_authorization_error(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted,
        "outcome",
        _fail_when(
            lambda t, a: t == "g.secret",
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            "Broker: Topic authorization failed",
        ),
    )
    with pytest.raises(DeliveryAuthorizationError) as info:
        c.publish("secret", _alert("S1"))
    assert isinstance(info.value, AuthorizationError) and isinstance(info.value, DeliveryError)
    assert "WRITE ACL" in str(info.value) and "g.secret" in str(info.value)
    c.publish("superevent", _alert("S2"))


# -- too large ------------------------------------------------------------------------------


def test_too_large_alert_fails_alone(c, scripted, monkeypatch):
    monkeypatch.setattr(scripted, "max_bytes", 1000)
    big = _alert("Sbig", padding="x" * 2000)
    with pytest.raises(AlertTooLargeError) as info:
        c.publish("superevent", big)
    assert isinstance(info.value, DeliveryError)
    assert "alert Sbig" in str(info.value) and "larger than a Kafka message" in str(info.value)
    c.publish("superevent", _alert("S2"))
    c.connect("superevent")
    with pytest.raises(AlertTooLargeError):
        c.publish_to_topic("superevent", big)
    c.publish_to_topic("superevent", _alert("S3"))
    c.flush_by_topic("superevent")  # the refused alert was never queued: nothing to report
    c.disconnect()


def test_broker_refusing_a_large_alert_is_an_alert_too_large_error(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted,
        "outcome",
        _fail_when(
            lambda t, a: "padding" in a,
            KafkaError.MSG_SIZE_TOO_LARGE,
            "Broker: Message size too large",
        ),
    )
    with pytest.raises(AlertTooLargeError, match="alert S1"):
        c.publish("superevent", _alert("S1", padding="x"))


# -- fatal and transient producer errors -----------------------------------------------------


def test_fatal_error_replaces_the_producer_and_is_not_sticky(c, scripted, monkeypatch, caplog):
    c.publish("superevent", _alert("S1"))
    first = scripted.instances[0]
    c.connect("superevent")
    # librdkafka gives up on the producer: error_cb (fatal), then purges the queue
    fatal = KafkaError(
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "Broker: out of order sequence", fatal=True
    )
    first.hold = True
    c.publish_to_topic("superevent", _alert("S2"))
    first.error_cb(fatal)
    first.purge()
    with pytest.raises(DeliveryError) as info:
        c.flush_by_topic("superevent")
    assert "alert S2" in str(info.value) and "out of order sequence" in str(info.value)
    # the next alerts use a new producer, and nothing reports the fatal error again
    c.publish("superevent", _alert("S3"))
    c.publish_to_topic("superevent", _alert("S4"))
    c.flush_by_topic("superevent")
    assert len(scripted.instances) == 2 and first.closed
    assert [json.loads(json.loads(v))["uid"] for _, v in scripted.instances[1].produced] == [
        "S3",
        "S4",
    ]
    c.disconnect()  # no stale error either
    assert c._producers.running() == 0


def test_fatal_error_raised_by_produce_is_retried_on_a_new_producer(c, scripted, monkeypatch):
    c.publish("superevent", _alert("S1"))
    first = scripted.instances[0]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL, "Local: Fatal error", fatal=True))

    monkeypatch.setattr(first, "produce", broken)
    c.publish("superevent", _alert("S2"))
    assert len(scripted.instances) == 2
    assert [json.loads(json.loads(v))["uid"] for _, v in scripted.instances[1].produced] == ["S2"]


def test_fatal_error_whose_cause_comes_after_produce_raised_is_named(c, scripted, monkeypatch):
    # librdkafka may make produce() raise "Local: Fatal error" before the error callback
    # that names the cause (a missing WRITE ACL) is served by the next poll()
    cause = KafkaError(
        KafkaError.CLUSTER_AUTHORIZATION_FAILED, "Broker: Cluster authorization failed", fatal=True
    )
    real_poll = scripted.poll

    def produce(self: Any, *args: Any, **kwargs: Any) -> None:
        self.cause_due = True
        raise KafkaException(KafkaError(KafkaError._FATAL, "Local: Fatal error", fatal=True))

    def poll(self: Any, timeout: float = 0) -> int:
        if getattr(self, "cause_due", False):
            self.cause_due = False
            self.error_cb(cause)
        return real_poll(self, timeout)

    monkeypatch.setattr(scripted, "produce", produce)
    monkeypatch.setattr(scripted, "poll", poll)
    for uid in ("S1", "S2"):  # also on the producer that replaced the first one
        with pytest.raises(DeliveryAuthorizationError) as info:
            c.publish("superevent", _alert(uid))
        assert "Cluster authorization failed" in str(info.value)
        assert "missing WRITE ACL" in str(info.value)


def test_transient_errors_are_logged_once_per_outage(c, scripted, caplog):
    c.publish("superevent", _alert("S1"))
    producer = scripted.instances[0]
    with caplog.at_level(logging.DEBUG, logger="igwn_alert"):
        for _ in range(5):
            producer.error_cb(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
            producer.error_cb(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication failed"))
        c.publish("superevent", _alert("S2"))  # the outage is over
        producer.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        c.publish("superevent", _alert("S3"))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # one line per outage and kind: connection + credential, then connection again
    assert len(warnings) == 3, [r.getMessage() for r in warnings]
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_flush_by_topic_waits_only_for_its_own_alerts(c, scripted):
    """GraceDB flushes one topic while others keep publishing: that flush waits for the
    alerts of its topic written before it, not for the whole producer queue."""
    c.connect(["superevent", "busy"])
    producer = scripted.instances[0]
    producer.held_topics.add("g.busy")  # the busy topic's alerts are not acknowledged yet
    for i in range(5):
        c.publish_to_topic("busy", _alert(f"B{i}"))
        c.publish_to_topic("superevent", _alert(f"S{i}"))
    assert c.flush_by_topic("superevent") is None
    assert len(producer) == 5  # the busy topic's alerts are still in flight
    producer.held_topics.clear()
    c.flush_by_topic("busy")
    assert len(producer) == 0
    c.disconnect()


def test_refused_credential_at_first_is_one_clear_error_not_warnings(
    c, scripted, monkeypatch, caplog
):
    from igwn_alert.exceptions import AuthenticationError

    monkeypatch.setattr(scripted, "refuse", True)
    with caplog.at_level(logging.DEBUG, logger="igwn_alert"):
        with pytest.raises(AuthenticationError, match="refused the credential"):
            c.publish("superevent", _alert("S1"))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert scripted.instances[0].produced == []  # nothing was sent


# -- threads ---------------------------------------------------------------------------------


def test_threads_get_their_own_outcome(c, scripted, monkeypatch):
    monkeypatch.setattr(
        scripted,
        "outcome",
        _fail_when(lambda t, a: a["thread"] == 3, KafkaError._MSG_TIMED_OUT, "timed out"),
    )
    raised: dict[int, int] = {i: 0 for i in range(8)}
    other: list[BaseException] = []

    def run(n: int) -> None:
        for i in range(200):
            try:
                c.publish("superevent", json.dumps({"uid": f"T{n}-{i}", "thread": n}))
            except DeliveryError as exc:
                assert f"T{n}-{i}" in str(exc)
                raised[n] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                other.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not other, other[:3]
    assert raised == {i: (200 if i == 3 else 0) for i in range(8)}
    assert len(scripted.instances) == 1  # one producer for the client
    assert len(c._publishers) == 1  # one kept writer, though eight threads opened it at once


# -- the first metadata answer -------------------------------------------------------------


def test_topic_check_waits_for_an_answer_from_a_learned_broker(c, scripted, monkeypatch):
    """An answer from the bootstrap connection does not start librdkafka's producer-id
    request in time (it retries 500 ms later): ask again until a real broker answers."""
    monkeypatch.setattr(scripted, "metadata_brokers", [-1, -1, 1])
    c.publish("superevent", _alert("S1"))
    assert scripted.instances[0].list_topics_calls == 3
    c.publish("superevent", _alert("S2"))
    assert scripted.instances[0].list_topics_calls == 3  # once per topic and producer


def test_delivery_timeout_reaches_librdkafka(c, scripted):
    c.delivery_timeout = timedelta(seconds=7)
    c.publish("superevent", _alert("S1"))
    assert scripted.instances[0].config["message.timeout.ms"] == 7000
    assert scripted.instances[0].config["enable.idempotence"] is True
    assert scripted.instances[0].config["enable.sparse.connections"] is False
