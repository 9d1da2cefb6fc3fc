"""InMemoryClient and InMemoryBroker: the client's API on an in-memory bus."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from adc.errors import KafkaException

import igwn_alert
from igwn_alert.exceptions import FakeFatalKafkaException, FakeNonFatalKafkaException
from igwn_alert.testing import (
    InMemoryBroker,
    InMemoryClient,
    default_broker,
    demo_alerts,
    set_default_broker,
    use_broker,
)

ALERT = '{"uid": "S1", "alert_type": "new"}'


class Recorder:
    """A callback that takes its arguments by keyword only, as the client calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, *, topic: str, payload: Any) -> None:
        self.calls.append((topic, payload))

    @property
    def payloads(self) -> list[Any]:
        return [p for _, p in self.calls]


@pytest.fixture
def bus() -> InMemoryBroker:
    return InMemoryBroker()


# -- the constructor --------------------------------------------------------------------------


def test_constructor_has_the_client_signature() -> None:
    real = list(inspect.signature(igwn_alert.client.__init__).parameters.values())[1:]
    ours = list(inspect.signature(InMemoryClient.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in ours[: len(real)]] == [(p.name, p.default) for p in real]
    assert [p.name for p in ours[len(real) :]] == ["broker"]
    assert ours[-1].kind is inspect.Parameter.KEYWORD_ONLY


def test_constructor_attributes(bus: InMemoryBroker) -> None:
    c = InMemoryClient(
        noauth=True,
        group="test",
        server="kafka://test.server/",
        port=1234,
        consumer_group="cg",
        broker=bus,
    )
    assert c.server == "kafka://test.server/"
    assert c.port == 1234
    assert c.group_prefix == "test"
    assert c.consumer_group == "cg"
    assert c.batch_size == 1
    assert c.batch_timeout == timedelta(seconds=0.2)
    assert c.retry_on_fatal is False
    assert c.listen_retries == 3
    assert c.retry_wait == 0.1
    assert c.jsonpp_on is False
    assert isinstance(c.stop_listening, threading.Event)
    assert c.sessions == {}
    assert c.auth_obj is False and c.auth is None
    assert c.base_url_prefix == "kafka://test.server:1234/test"
    assert c._construct_topic_url("topic1") == "kafka://test.server:1234/test.topic1"
    assert (
        c._construct_topic_url(["topic1", "topic2"])
        == "kafka://test.server:1234/test.topic1,test.topic2"
    )
    assert c.broker is bus
    assert "test" in repr(c)


def test_constructor_errors() -> None:
    with pytest.raises(TypeError):
        InMemoryClient(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(AssertionError, match="server"):
        InMemoryClient(server=1)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="port"):
        InMemoryClient(port="9092")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="group"):
        InMemoryClient(group=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="both a username and a password"):
        InMemoryClient(username="me")


def test_credentials_are_never_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/nonexistent")
    assert InMemoryClient().auth_obj is False
    with_password = InMemoryClient(username="me", password="secret")
    assert with_password.auth_obj.username == "me"
    assert "secret" not in repr(with_password)
    sentinel = object()
    assert InMemoryClient(auth=sentinel).auth_obj is sentinel


# -- publishing ---------------------------------------------------------------------------------


def test_connect_publish_flush_disconnect(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus, group="gracedb-test")
    c.connect(["superevent", "cbc_gstlal"])
    assert sorted(c.sessions) == ["cbc_gstlal", "superevent"]
    c.publish_to_topic("superevent", ALERT)
    c.publish_to_topic("cbc_gstlal", {"uid": "G1"})
    c.flush_by_topic("superevent")
    assert bus.published("superevent", group="gracedb-test") == [ALERT]
    assert bus.published("cbc_gstlal", group="gracedb-test") == [{"uid": "G1"}]
    assert bus.topics() == ["gracedb-test.superevent", "gracedb-test.cbc_gstlal"]
    c.disconnect("cbc_gstlal")
    assert list(c.sessions) == ["superevent"]
    c.disconnect()
    assert c.sessions == {}


def test_publishing_errors(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    no_sessions = "No active sessions. Please connect before publishing to a topic."
    with pytest.raises(RuntimeError) as err:
        c.publish_to_topic("superevent", ALERT)
    assert str(err.value) == no_sessions
    with pytest.raises(RuntimeError) as err:
        c.flush_by_topic("superevent")
    assert str(err.value) == no_sessions
    c.connect("superevent")
    with pytest.raises(RuntimeError) as err:
        c.publish_to_topic("other", ALERT)
    assert str(err.value) == (
        "Not connected to topic other. Please connect before publishing to a topic."
    )
    with pytest.raises(RuntimeError, match="Not connected to topic other"):
        c.flush_by_topic("other")
    with pytest.warns(UserWarning, match="Not currently connected to topic other"):
        c.disconnect("other")
    with pytest.raises(TypeError):
        c.publish_to_topic("superevent", object())


def test_publish_without_connect(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    c.publish("superevent", ALERT)
    c.publish(["a", "b"], {"x": 1})
    assert bus.published("superevent") == [ALERT]
    assert bus.published("a") == bus.published("b") == [{"x": 1}]
    assert c.sessions == {}


def test_published_excludes_injected_messages_includes(bus: InMemoryBroker) -> None:
    bus.inject("superevent", ALERT)
    InMemoryClient(broker=bus).publish("superevent", "mine")
    assert bus.published("superevent") == ["mine"]
    assert bus.messages("superevent") == [ALERT, "mine"]
    assert [r.source for r in bus.records("superevent")] == ["inject", "publish"]


def test_bytes_on_the_bus_are_hops(bus: InMemoryBroker) -> None:
    from hop.io import Producer

    record = bus.inject("superevent", ALERT)
    value, _ = Producer.pack(ALERT)
    assert record.value == value
    assert dict(record.headers)["_format"] == b"json"
    assert json.loads(record.value) == ALERT  # a JSON string: GraceDB's text, quoted


# -- listening ----------------------------------------------------------------------------------


def test_listen_drains_and_returns(bus: InMemoryBroker) -> None:
    bus.inject("superevent", ALERT)
    bus.inject("superevent", {"uid": "S2"})
    bus.inject("cbc_gstlal", "not mine")
    got = Recorder()
    c = InMemoryClient(broker=bus)
    c.listen(got, "superevent")
    assert got.calls == [("superevent", ALERT), ("superevent", {"uid": "S2"})]
    assert isinstance(got.payloads[0], str)  # never decoded twice
    c.listen(got, "superevent")
    assert len(got.calls) == 2  # nothing new
    bus.inject("superevent", "three")
    c.listen(got, ["superevent"])
    assert got.payloads[-1] == "three"


def test_positional_callback_and_topic(bus: InMemoryBroker) -> None:
    bus.inject("superevent", ALERT)
    got: list[tuple[str, Any]] = []
    InMemoryClient(broker=bus).listen(
        lambda topic, payload: got.append((topic, payload)), "superevent"
    )
    assert got == [("superevent", ALERT)]


def test_new_listener_starts_at_the_beginning_and_each_has_its_own_position(
    bus: InMemoryBroker,
) -> None:
    bus.inject("superevent", "one")
    first, second = Recorder(), Recorder()
    InMemoryClient(broker=bus).listen(first, "superevent")
    InMemoryClient(broker=bus).listen(second, "superevent")
    assert first.payloads == second.payloads == ["one"]


def test_since(bus: InMemoryBroker) -> None:
    bus.inject("superevent", "old")
    c = InMemoryClient(broker=bus)
    got = Recorder()
    c.listen(got, "superevent", since="latest")
    assert got.payloads == []
    bus.inject("superevent", "new")
    c.listen(got, "superevent")
    assert got.payloads == ["new"]
    c.listen(got, "superevent", since="earliest")
    assert got.payloads == ["new", "old", "new"]
    later = Recorder()
    InMemoryClient(broker=bus).listen(later, "superevent", since=timedelta(hours=1))
    assert later.payloads == ["old", "new"]
    future = Recorder()
    InMemoryClient(broker=bus).listen(
        future, "superevent", since=datetime.now(timezone.utc) + timedelta(hours=1)
    )
    assert future.payloads == []
    with pytest.raises(ValueError, match="since"):
        c.listen(got, "superevent", since="yesterday")
    with pytest.raises(TypeError, match="since"):
        c.listen(got, "superevent", since=3)  # type: ignore[arg-type]


def test_consumer_group_shares_one_position(bus: InMemoryBroker) -> None:
    bus.inject("superevent", "one")
    bus.inject("superevent", "two")
    a, b = Recorder(), Recorder()
    InMemoryClient(broker=bus, consumer_group="pipeline").listen(a, "superevent", max_messages=1)
    InMemoryClient(broker=bus, consumer_group="pipeline").listen(b, "superevent")
    assert a.payloads == ["one"]
    assert b.payloads == ["two"]


def test_order_across_topics_is_publish_order(bus: InMemoryBroker) -> None:
    for alert in demo_alerts():
        bus.inject(alert.topic, alert.text)
    got = Recorder()
    InMemoryClient(broker=bus).listen(got, ["superevent", "cbc_gstlal"])
    assert got.calls == [(a.topic, a.text) for a in demo_alerts()]


def test_listen_all_topics_of_the_group(bus: InMemoryBroker) -> None:
    bus.inject("superevent", "s")
    bus.inject("cbc_gstlal", "c")
    bus.inject("superevent", "other group", group="gracedb-playground")
    got = Recorder()
    InMemoryClient(broker=bus).listen(got)
    assert got.payloads == ["s", "c"]
    assert InMemoryClient(broker=bus).get_topics() == ["superevent", "cbc_gstlal"]
    assert InMemoryClient(broker=bus).get_topics("gracedb-playground") == ["superevent"]


def test_listen_empty_collection_warns_and_means_all(bus: InMemoryBroker) -> None:
    bus.inject("superevent", "s")
    got = Recorder()
    with pytest.warns(UserWarning, match="empty topic collection"):
        InMemoryClient(broker=bus).listen(got, [])
    assert got.payloads == ["s"]


def test_listen_empty_str_means_all(bus: InMemoryBroker) -> None:
    bus.inject("superevent", "s")
    got = Recorder()
    with pytest.warns(UserWarning, match="empty topic collection"):
        InMemoryClient(broker=bus).listen(got, "")
    assert got.payloads == ["s"]


def test_listen_without_topics_on_an_empty_bus(bus: InMemoryBroker) -> None:
    with pytest.raises(ValueError, match="no topics"):
        InMemoryClient(broker=bus).listen(Recorder())
    bus.create_topics(["superevent"])
    InMemoryClient(broker=bus).listen(Recorder())  # an empty topic: returns at once
    assert InMemoryClient(broker=bus).get_topics() == ["superevent"]


def test_listen_to_a_set_of_topics(bus: InMemoryBroker) -> None:
    bus.inject("a", 1)
    bus.inject("b", 2)
    got = Recorder()
    InMemoryClient(broker=bus).listen(got, {"a", "b"})
    assert sorted(got.payloads) == [1, 2]


def test_topic_with_dots_keeps_them(bus: InMemoryBroker) -> None:
    bus.inject("cbc.gstlal", "x")
    got = Recorder()
    InMemoryClient(broker=bus).listen(got, "cbc.gstlal")
    assert got.calls == [("cbc.gstlal", "x")]


def test_print_without_callback(bus: InMemoryBroker, capsys: pytest.CaptureFixture[str]) -> None:
    bus.inject("superevent", ALERT)
    bus.inject("superevent", {"uid": "S2"})
    InMemoryClient(broker=bus).listen(topic="superevent")
    assert capsys.readouterr().out == (
        f"New message from topic gracedb.superevent:\n{ALERT}\n"
        "New message from topic gracedb.superevent:\n{'uid': 'S2'}\n"
    )
    InMemoryClient(broker=bus, jsonpp_on=True).listen(topic="superevent")
    pretty = json.dumps(json.loads(ALERT), indent=4)
    assert capsys.readouterr().out == (
        f"New message from topic gracedb.superevent:\n{pretty}\n"
        "New message from topic gracedb.superevent:\n" + json.dumps({"uid": "S2"}, indent=4) + "\n"
    )


def test_payload_that_is_not_json(bus: InMemoryBroker) -> None:
    bus.inject_raw("superevent", b"not json")
    bus.inject_raw("superevent", b'{"plain": "json"}')
    got = Recorder()
    with pytest.warns(UserWarning, match="not valid json"):
        InMemoryClient(broker=bus).listen(got, "superevent")
    assert got.payloads[0].content == b"not json"
    assert got.payloads[1] == {"plain": "json"}


def test_max_messages(bus: InMemoryBroker) -> None:
    for n in range(5):
        bus.inject("t", n)
    got = Recorder()
    c = InMemoryClient(broker=bus)
    c.listen(got, "t", max_messages=2)
    assert got.payloads == [0, 1]
    c.listen(got, "t", max_messages=2)
    assert got.payloads == [0, 1, 2, 3]


def test_stop_from_the_callback(bus: InMemoryBroker) -> None:
    for n in range(3):
        bus.inject("t", n)
    c = InMemoryClient(broker=bus)
    got: list[Any] = []

    def handler(topic: str, payload: Any) -> None:
        got.append(payload)
        c.stop()

    c.listen(handler, "t")
    assert got == [0]
    assert not c.stop_listening.is_set()  # cleared when listen() returns
    c.listen(handler, "t")
    assert got == [0, 1]


def test_stop_before_listen_is_not_lost(bus: InMemoryBroker) -> None:
    bus.inject("t", 1)
    c = InMemoryClient(broker=bus)
    got = Recorder()
    c.stop()
    c.listen(got, "t")
    assert got.payloads == []
    c.listen(got, "t")
    assert got.payloads == [1]


def test_follow_up_published_from_a_callback_is_delivered_in_order(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    seen: list[tuple[str, Any]] = []

    def handler(topic: str, payload: Any) -> None:
        seen.append((topic, payload))
        if topic == "superevent":
            c.publish("followup", {"for": payload})

    bus.inject("superevent", "S1")
    bus.inject("superevent", "S2")
    c.listen(handler, ["superevent", "followup"])
    assert seen == [
        ("superevent", "S1"),
        ("superevent", "S2"),
        ("followup", {"for": "S1"}),
        ("followup", {"for": "S2"}),
    ]


def test_listen_waits_with_timeout_none_until_stop(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    got = Recorder()
    thread = threading.Thread(target=c.listen, args=(got, "t"), kwargs={"timeout": None})
    thread.start()
    assert c.listening.wait(5)
    InMemoryClient(broker=bus).publish("t", "live")
    deadline = time.monotonic() + 5
    while not got.payloads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got.payloads == ["live"]
    c.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert not c.listening.is_set()


def test_listen_timeout_waits_then_returns(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    start = time.monotonic()
    c.listen(Recorder(), "t", timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 2


def test_two_listeners_in_one_group_share_the_alerts(bus: InMemoryBroker) -> None:
    got: list[Any] = []
    lock = threading.Lock()

    def handler(topic: str, payload: Any) -> None:
        with lock:
            got.append(payload)

    clients = [InMemoryClient(broker=bus, consumer_group="shared") for _ in range(2)]
    threads = [
        threading.Thread(target=c.listen, args=(handler, "t"), kwargs={"timeout": None})
        for c in clients
    ]
    for t in threads:
        t.start()
    publisher = InMemoryClient(broker=bus)
    for n in range(50):
        publisher.publish("t", n)
    deadline = time.monotonic() + 5
    while len(got) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    for c in clients:
        c.stop()
    for t in threads:
        t.join(5)
    assert sorted(got) == list(range(50))  # each exactly once


# -- errors -------------------------------------------------------------------------------------


def test_injected_fatal_error_ends_listen(bus: InMemoryBroker) -> None:
    bus.inject("t", 1)
    bus.inject_error(FakeFatalKafkaException)
    bus.inject("t", 2)
    got = Recorder()
    c = InMemoryClient(broker=bus)
    with pytest.raises(KafkaException) as err:
        c.listen(got, "t")
    assert err.value is FakeFatalKafkaException
    assert got.payloads == [1]
    c.listen(got, "t")  # the error is met once
    assert got.payloads == [1, 2]


def test_injected_fatal_error_with_retry(bus: InMemoryBroker) -> None:
    bus.inject_error(FakeFatalKafkaException, topic="t")
    bus.inject("t", 1)
    got = Recorder()
    InMemoryClient(broker=bus, retry_on_fatal=True, retry_wait=0.0).listen(got, "t")
    assert got.payloads == [1]


def test_injected_error_on_another_topic_is_not_met(bus: InMemoryBroker) -> None:
    bus.inject_error(FakeFatalKafkaException, topic="other")
    bus.inject("t", 1)
    got = Recorder()
    InMemoryClient(broker=bus).listen(got, "t")
    assert got.payloads == [1]


def test_injected_non_fatal_error_is_logged(
    bus: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    bus.inject_error(FakeNonFatalKafkaException)
    bus.inject("t", 1)
    got = Recorder()
    with caplog.at_level(logging.WARNING):
        InMemoryClient(broker=bus).listen(got, "t")
    assert got.payloads == [1]
    assert "Non-fatal KafkaException" in caplog.text


def test_fatal_error_from_callback_is_retried_then_raised(bus: InMemoryBroker) -> None:
    bus.inject("t", 1)
    calls: list[Any] = []

    def failing(topic: str, payload: Any) -> None:
        calls.append(payload)
        raise FakeFatalKafkaException

    c = InMemoryClient(broker=bus, retry_on_fatal=True, listen_retries=3, retry_wait=0.0)
    with pytest.raises(KafkaException):
        c.listen(failing, "t")
    assert calls == [1, 1, 1]  # delivered again on each retry
    ok = Recorder()
    c.listen(ok, "t")
    assert ok.payloads == [1]  # not marked done


def test_fatal_error_from_callback_without_retry(bus: InMemoryBroker) -> None:
    bus.inject("t", 1)
    calls: list[Any] = []

    def failing(topic: str, payload: Any) -> None:
        calls.append(payload)
        raise FakeFatalKafkaException

    with pytest.raises(KafkaException):
        InMemoryClient(broker=bus).listen(failing, "t")
    assert calls == [1]


def test_a_delivered_alert_resets_the_retry_count(bus: InMemoryBroker) -> None:
    for n in range(4):
        bus.inject("t", n)
    attempts: dict[int, int] = {}

    def flaky(topic: str, payload: int) -> None:
        attempts[payload] = attempts.get(payload, 0) + 1
        if attempts[payload] < 3:  # two failures per alert, within listen_retries=3
            raise FakeFatalKafkaException

    InMemoryClient(broker=bus, retry_on_fatal=True, retry_wait=0.0).listen(flaky, "t")
    assert attempts == {0: 3, 1: 3, 2: 3, 3: 3}


def test_non_fatal_error_from_callback_is_retried_then_the_policy_applies(
    bus: InMemoryBroker,
) -> None:
    bus.inject("t", 1)
    bus.inject("t", 2)
    calls: list[Any] = []

    def failing(topic: str, payload: Any) -> None:
        calls.append(payload)
        raise FakeNonFatalKafkaException

    c = InMemoryClient(broker=bus, retry_wait=0.0)
    with pytest.raises(type(FakeNonFatalKafkaException)):
        c.listen(failing, "t")  # on_failure="raise": never silently dropped
    assert calls == [1, 1, 1]  # listen_retries calls, then the exception leaves listen()
    c.listen(failing, "t", on_failure="skip")
    assert calls == [1, 1, 1, 1, 1, 1, 2, 2, 2]  # still not done, so delivered again
    c.listen(failing, "t")
    assert calls == [1, 1, 1, 1, 1, 1, 2, 2, 2]  # skipped ones are done


def test_other_exception_from_callback_propagates_and_redelivers(bus: InMemoryBroker) -> None:
    bus.inject("t", 1)

    def broken(topic: str, payload: Any) -> None:
        raise ZeroDivisionError

    c = InMemoryClient(broker=bus)
    with pytest.raises(ZeroDivisionError):
        c.listen(broken, "t")
    assert not c.listening.is_set()
    got = Recorder()
    c.listen(got, "t")
    assert got.payloads == [1]


# -- the default bus and helpers ------------------------------------------------------------------


def test_default_broker_and_use_broker() -> None:
    original = default_broker()
    with use_broker() as bus:
        assert default_broker() is bus
        assert InMemoryClient().broker is bus
        InMemoryClient().publish("t", 1)
        assert bus.published("t") == [1]
        assert original.published("t") == []
    assert default_broker() is original
    mine = InMemoryBroker("mine")
    previous = set_default_broker(mine)
    try:
        assert default_broker() is mine
    finally:
        set_default_broker(previous)


def test_clear(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    bus.inject("t", 1)
    c.listen(Recorder(), "t")
    bus.clear()
    assert bus.topics() == [] and bus.records() == []
    bus.inject("t", 2)
    got = Recorder()
    c.listen(got, "t")
    assert got.payloads == [2]
    assert "1 record" in repr(bus)


def test_deprecated_methods_warn(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    for method, args in [
        (c.get_subscriptions, ()),
        (c.subscribe, ("t",)),
        (c.unsubscribe, ("t",)),
        (c.delete, ()),
    ]:
        with pytest.warns(DeprecationWarning):
            assert method(*args) is None


def test_writer_after_close(bus: InMemoryBroker) -> None:
    c = InMemoryClient(broker=bus)
    c.connect("t")
    writer = c.sessions["t"]
    c.disconnect()
    with pytest.raises(ValueError, match="closed"):
        writer.write("x")


def test_testing_package_exports() -> None:
    import igwn_alert.testing as testing

    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert testing.FakeFatalKafkaException.fatal is True
    assert testing.FakeNonFatalKafkaException.fatal is False
    assert "InMemoryClient" in dir(testing)
    with pytest.raises(AttributeError):
        _ = testing.NoSuchThing
