"""Credentials on the real broker's SCRAM-SHA-512 listener (CONTRACT §3, §6).

* a wrong password gives one clear error within 15 s, in ``listen()`` and in
  ``publish()``, never a hang;
* a missing ACL gives one clear ``AuthorizationError`` within 15 s;
* the password never appears in any log record, even at DEBUG (librdkafka's own lines
  included), nor on stderr.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import pytest
from _delivery_helpers import Listener, Tally, alert, listening, outcome, wait_for

pytestmark = pytest.mark.timeout(120)

BUDGET = 15.0


def _client(kafka_broker: Any, group: str, credential: Any, **kwargs: Any) -> Any:
    import igwn_alert

    host, port = kafka_broker.sasl.rsplit(":", 1)
    return igwn_alert.client(
        auth=credential, server=f"kafka://{host}", port=int(port), group=group, **kwargs
    )


def _client_plain(kafka_broker: Any, group: str) -> Any:
    """A client on the PLAINTEXT listener (no ACLs there): the publisher of a test."""
    import igwn_alert

    host, port = kafka_broker.plaintext.rsplit(":", 1)
    return igwn_alert.client(noauth=True, server=f"kafka://{host}", port=int(port), group=group)


def _credential(user: Any, password: str) -> Any:
    from hop.auth import Auth, SASLMethod

    return Auth(
        user.username, password, host=user.hostname, ssl=False, method=SASLMethod.SCRAM_SHA_512
    )


def _listen_until_error(
    client: Any, topic: str, timeout: float = BUDGET + 10
) -> tuple[BaseException | None, float, list[Any]]:
    got: list[Any] = []
    listener = Listener(client, topic, on_alert=lambda t, p: got.append(p))
    t0 = time.monotonic()
    listener.start()
    listener.thread.join(timeout)
    took = time.monotonic() - t0
    if listener.alive:
        client.stop()
        listener.thread.join(5)
        return None, took, got
    return listener.error, (listener.returned_at or time.monotonic()) - t0, got


def _igwn_errors(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name.startswith("igwn_alert") and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("consumer_group", [None, "group"], ids=["private", "consumer-group"])
def test_wrong_password_is_one_clear_error(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    caplog: pytest.LogCaptureFixture,
    consumer_group: Any,
) -> None:
    from igwn_alert.exceptions import AuthenticationError

    caplog.set_level(logging.INFO)
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    wrong = _credential(user, "not-" + user.password)
    group_id = f"cred-{uuid.uuid4().hex[:8]}" if consumer_group else None

    error, took, got = _listen_until_error(
        _client(kafka_broker, topic.group, wrong, consumer_group=group_id), topic.short
    )
    print(f"\nlisten() with a wrong password: {outcome(error, took)}")
    assert got == []
    assert error is not None, f"listen() was still running after {took:.0f} s with a wrong password"
    assert isinstance(error, AuthenticationError), repr(error)
    assert took < BUDGET
    assert "password" in str(error) and user.password not in str(error)

    publisher = _client(kafka_broker, topic.group, wrong)
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        publisher.publish(topic.short, alert(1))
    took = time.monotonic() - t0
    print(f"publish() with a wrong password: {outcome(info.value, took)}")
    assert took < BUDGET
    warnings = [
        r
        for r in caplog.records
        if r.name.startswith("igwn_alert") and r.levelno >= logging.WARNING
    ]
    print(f"{len(warnings)} warning/error records from igwn_alert")
    assert len(warnings) <= 4, [r.getMessage() for r in warnings]


def test_missing_read_and_group_acl_is_one_clear_authorization_error(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    from igwn_alert.exceptions import AuthorizationError

    topic = make_topic("superevent")
    other = make_topic("other")
    # may read another topic, not this one, and no consumer group at all
    user = make_user(read=[other], groups=())
    credential = _credential(user, user.password)
    for label, kwargs in (
        ("private", {}),
        ("consumer group", {"consumer_group": f"acl-{uuid.uuid4().hex[:8]}"}),
    ):
        error, took, _ = _listen_until_error(
            _client(kafka_broker, topic.group, credential, **kwargs), topic.short
        )
        print(f"\nlisten() ({label}) without READ on {topic.full}: {outcome(error, took)}")
        assert isinstance(error, AuthorizationError), repr(error)
        assert took < BUDGET
        assert topic.full in str(error)


def test_missing_group_acl_is_one_clear_authorization_error(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    from igwn_alert.exceptions import AuthorizationError

    topic = make_topic("superevent")
    user = make_user(read=[topic], groups=())
    group_id = f"acl-{uuid.uuid4().hex[:8]}"
    error, took, _ = _listen_until_error(
        _client(
            kafka_broker, topic.group, _credential(user, user.password), consumer_group=group_id
        ),
        topic.short,
    )
    print(f"\nlisten() without a READ ACL on group {group_id}: {outcome(error, took)}")
    assert isinstance(error, AuthorizationError), repr(error)
    assert took < BUDGET
    assert group_id in str(error)


def test_missing_write_acl_is_a_clear_error(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    from igwn_alert.exceptions import AuthorizationError, KafkaException

    topic = make_topic("superevent")
    writable = make_topic("writable")

    # no WRITE ACL anywhere: the idempotent producer cannot even get a producer id
    reader = make_user(read=[topic])
    client = _client(kafka_broker, topic.group, _credential(reader, reader.password))
    for attempt in (1, 2):
        t0 = time.monotonic()
        with pytest.raises(KafkaException) as info:
            client.publish(topic.short, alert(attempt))
        took = time.monotonic() - t0
        print(f"\npublish() #{attempt} without any WRITE ACL: {outcome(info.value, took)}")
        assert isinstance(info.value, AuthorizationError), repr(info.value)
        assert took < BUDGET
        assert "authoriz" in str(info.value).lower()

    # WRITE on one topic only: the other topic fails clearly, the writable one still works
    writer = make_user(read=[topic], write=[writable])
    client = _client(kafka_broker, topic.group, _credential(writer, writer.password))
    tally = Tally("WRITE on one topic, not on the other")
    client.publish(writable.short, alert("w-1"))
    tally.send("w-1")
    t0 = time.monotonic()
    with pytest.raises(KafkaException) as info:
        client.publish(topic.short, alert("x"))
    took = time.monotonic() - t0
    print(f"publish() to a topic without WRITE: {outcome(info.value, took)}")
    assert isinstance(info.value, AuthorizationError), repr(info.value)
    assert took < BUDGET
    client.publish(writable.short, alert("w-2"))  # the shared producer survived
    tally.send("w-2")
    # the writer may not read that topic: count what reached the log over PLAINTEXT
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": kafka_broker.plaintext, "group.id": f"chk-{uuid.uuid4().hex[:6]}"}
    )
    try:
        consumer.assign([TopicPartition(writable.full, 0, 0)])
        deadline = time.monotonic() + 10
        while tally.count() < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                tally.receive(json.loads(msg.value())["id"])
    finally:
        consumer.close()
    lost, dup = tally.report()
    assert lost == 0 and dup == 0


def test_password_never_logged(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="igwn_alert")
    caplog.set_level(logging.DEBUG, logger="igwn_alert.rdkafka")
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    credential = _credential(user, user.password)
    tally = Tally("SCRAM listen + publish at DEBUG")
    listener = Listener(
        _client(
            kafka_broker, topic.group, credential, consumer_group=f"log-{uuid.uuid4().hex[:8]}"
        ),
        topic.short,
        tally,
    )
    with listening(listener):
        assert wait_for(
            lambda: any("assigned partitions" in r.getMessage() for r in caplog.records), 20
        )
        publisher = _client(kafka_broker, topic.group, credential)
        for i in range(3):
            publisher.publish(topic.short, alert(i))
            tally.send(i)
        assert wait_for(lambda: tally.count() >= 3, 15), tally.lost_ids()
        # also a failing login, whose errors are logged
        _listen_until_error(
            _client(kafka_broker, topic.group, _credential(user, user.password + "x")), topic.short
        )
        publisher.disconnect()
        print(repr(publisher), repr(listener.client))
    assert listener.error is None, repr(listener.error)
    records = caplog.records
    rdkafka_lines = [r for r in records if r.name == "igwn_alert.rdkafka"]
    captured = capfd.readouterr()
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in records)
    for where, blob in (("log records", text), ("stderr", captured.err), ("stdout", captured.out)):
        assert user.password not in blob, f"the password appears in {where}"
        assert (user.password + "x") not in blob
    with capfd.disabled():
        print(
            f"\nscanned {len(records)} log records ({len(rdkafka_lines)} from librdkafka) and "
            f"{len(captured.err)} characters of stderr, {len(captured.out)} of stdout: no password"
        )
        lost, dup = tally.report()
    assert lost == 0 and dup == 0


@pytest.mark.parametrize("retry_on_fatal", [False, True], ids=["defaults", "retry_on_fatal"])
def test_read_acl_revoked_mid_stream_loses_nothing(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    retry_on_fatal: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener's READ ACL is taken away while it listens, then given back.

    What it must do: ride out a short refusal (a broker restart looks like one), then tell
    the caller clearly (an AuthorizationError that names the topic, never a silent stall;
    with ``retry_on_fatal`` it keeps trying), and lose nothing: once the ACL is back, a
    listener of the same consumer group delivers every alert published meanwhile.
    """
    from igwn_alert import _reading
    from igwn_alert.exceptions import AuthorizationError

    # the grace before a refusal is reported (60 s), shortened for the test
    _REFUSED_FOR = 8.0
    monkeypatch.setattr(_reading, "_REFUSED_FOR", _REFUSED_FOR)

    topic = make_topic("superevent")
    user = make_user(read=[topic])
    credential = _credential(user, user.password)
    group_id = f"revoked-{uuid.uuid4().hex[:8]}"
    admin = kafka_broker  # BrokerInfo: ACL administration with the admin credential
    publisher = _client_plain(kafka_broker, topic.group)
    tally = Tally("READ ACL revoked mid-stream")

    def listener() -> Listener:
        return Listener(
            _client(
                kafka_broker,
                topic.group,
                credential,
                consumer_group=group_id,
                retry_on_fatal=retry_on_fatal,
                listen_retries=1000,
                retry_wait=0.5,
            ),
            topic.short,
            tally,
        ).start()

    first = listener()
    assert wait_for(lambda: first.client.listening.is_set(), BUDGET)
    for i in range(5):
        publisher.publish(topic.short, alert(i))
        tally.send(i)
    assert wait_for(lambda: tally.count() >= 5, BUDGET), tally.lost_ids()

    granted = admin.acls_for(user.username)
    admin.delete_acls_for(user.username)
    t_revoked = time.monotonic()
    for i in range(5, 10):  # published while the listener may not read them
        publisher.publish(topic.short, alert(i))
        tally.send(i)
    if not retry_on_fatal:
        first.thread.join(_REFUSED_FOR + 15)
        assert not first.alive, "listen() neither delivered nor reported the refusal"
        took = (first.returned_at or time.monotonic()) - t_revoked
        print(f"\nREAD ACL revoked: {outcome(first.error, took)}")
        assert isinstance(first.error, AuthorizationError), repr(first.error)
        assert topic.full in str(first.error) or topic.short in str(first.error)
        assert _REFUSED_FOR - 1 <= took <= _REFUSED_FOR + 10, took
    else:
        first.thread.join(_REFUSED_FOR + 5)  # past the grace: it goes on trying
        assert first.alive, f"listen() gave up despite retry_on_fatal: {first.error!r}"
        assert first.client.stats()["listener"]["state"] != "listening"
    admin.create_acls(granted)
    admin.wait_acls(user.username, len(granted))
    # with retry_on_fatal the same listen() call goes on; else a service manager restarts it
    survivor = first if retry_on_fatal else listener()
    assert wait_for(lambda: tally.count() >= 10, 30), f"lost: {tally.lost_ids()}"
    t0 = time.monotonic()
    survivor.client.stop()
    survivor.thread.join(5)
    assert not survivor.alive and time.monotonic() - t0 < 1.0
    lost, _dup = tally.report()
    assert lost == 0
