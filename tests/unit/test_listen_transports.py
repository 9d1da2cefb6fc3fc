"""One listen loop: the same behaviours on the in-memory bus and on a real librdkafka client.

The in-memory client is the client on another transport, not a second copy of the loop
(issue 9, scenario 12). Each test here runs the same scenario on ``InMemoryClient`` and on a
real :class:`igwn_alert.client` talking Kafka to the embedded broker (librdkafka's mock
cluster, in-process), and expects the same callback calls and the same outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import igwn_alert
from igwn_alert import _listening
from igwn_alert.exceptions import FakeFatalKafkaException, FakeNonFatalKafkaException
from igwn_alert.testing import InMemoryBroker, InMemoryClient, LocalBroker


@pytest.fixture(scope="module")
def local() -> Iterator[LocalBroker]:
    with LocalBroker() as broker:
        yield broker


class Transport:
    """Make clients and publish alerts on one transport."""

    def __init__(self, kind: str, local: LocalBroker) -> None:
        self.kind = kind
        self.group = LocalBroker.unique_group()
        self.bus = InMemoryBroker()
        self.local = local
        if kind == "kafka":
            local.create_topics(["t"], group=self.group)

    def client(self, **kwargs: Any) -> Any:
        if self.kind == "memory":
            return InMemoryClient(broker=self.bus, group=self.group, **kwargs)
        if kwargs.get("consumer_group"):
            # a new group starts at the end once librdkafka looked it up, a moment after
            # it has its partitions: commit the end first, so the start point is exact
            self.local.ensure_group_positions(kwargs["consumer_group"], [f"{self.group}.t"])
        return self.local.client(group=self.group, **kwargs)

    def listen(self, c: Any, callback: Callable[..., Any], alerts: list[Any], **kwargs: Any):
        """Publish ``alerts`` once ``c`` listens; return (exception or None) when it ends."""
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                c.listen(callback, "t", **kwargs)
            except BaseException as exc:  # noqa: BLE001 - compared by the test
                outcome.append(exc)

        if self.kind == "memory":
            for a in alerts:
                self.bus.inject("t", a, group=self.group)
            run()
            return outcome[0] if outcome else None
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert c.listening.wait(15), "not positioned"
        publisher = self.local.client(group=self.group)
        for a in alerts:
            publisher.publish("t", a)
        thread.join(20)
        if thread.is_alive():  # every scenario ends by itself (max_messages or an error)
            c.stop()
            thread.join(5)
            raise AssertionError("listen() did not end by itself")
        return outcome[0] if outcome else None


@pytest.fixture(params=["memory", "kafka"])
def transport(request: pytest.FixtureRequest, local: LocalBroker) -> Transport:
    return Transport(request.param, local)


def test_in_memory_client_is_the_client_and_runs_its_loop(monkeypatch):
    assert issubclass(InMemoryClient, igwn_alert.client)
    calls = []
    real = _listening.listen

    def spy(*args: Any, **kwargs: Any) -> None:
        calls.append(args[0])
        real(*args, **kwargs)

    monkeypatch.setattr(_listening, "listen", spy)
    bus = InMemoryBroker()
    bus.inject("t", "x")
    c = InMemoryClient(broker=bus)
    c.listen(lambda topic, payload: None, "t")
    assert calls == [c]


def test_delivery_and_short_names(transport):
    got: list[Any] = []
    c = transport.client()
    err = transport.listen(
        c,
        lambda topic, payload: got.append((topic, payload)),
        ['{"uid": "S1"}', {"n": 1}],
        max_messages=2,
    )
    assert err is None
    assert got == [("t", '{"uid": "S1"}'), ("t", {"n": 1})]


def test_fatal_from_callback_retried_listen_retries_times_then_raised(transport):
    calls: list[Any] = []

    def always(topic: str, payload: Any) -> None:
        calls.append(payload)
        raise FakeFatalKafkaException

    c = transport.client(
        retry_on_fatal=True,
        listen_retries=3,
        retry_wait=0.0,
        consumer_group=f"cg-{transport.group}",
    )
    err = transport.listen(c, always, ["a"])
    assert err is FakeFatalKafkaException
    assert calls == ["a", "a", "a"]


def test_nonfatal_from_callback_retried_then_skipped(transport):
    calls: list[Any] = []

    def flaky(topic: str, payload: Any) -> None:
        calls.append(payload)
        if payload == "bad":
            raise FakeNonFatalKafkaException

    c = transport.client(listen_retries=2, retry_wait=0.0)
    err = transport.listen(c, flaky, ["bad", "good"], on_failure="skip", max_messages=2)
    assert err is None
    assert calls == ["bad", "bad", "good"]


def test_dead_letter_handler_gets_the_alert(transport):
    dead: list[Any] = []

    def broken(topic: str, payload: Any) -> None:
        if payload == '{"uid": "S2"}':
            raise ZeroDivisionError

    c = transport.client()
    err = transport.listen(
        c,
        broken,
        ['{"uid": "S2"}', "ok"],
        on_failure=lambda alert, exc: dead.append((alert.topic, alert.uid, type(exc))),
        max_messages=2,
    )
    assert err is None
    assert dead == [("t", "S2", ZeroDivisionError)]


def test_other_exception_leaves_listen_and_the_group_gets_the_alert_again(transport):
    group = f"cg-{transport.group}"

    def broken(topic: str, payload: Any) -> None:
        raise ZeroDivisionError

    c = transport.client(consumer_group=group)
    err = transport.listen(c, broken, ["once"])
    assert isinstance(err, ZeroDivisionError)
    again: list[Any] = []
    c2 = transport.client(consumer_group=group)
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(
            c2.listen(lambda topic, payload: again.append(payload), "t", max_messages=1)
        ),
        daemon=True,
    )
    t.start()
    t.join(20)
    if t.is_alive():
        c2.stop()
        t.join(5)
    assert again == ["once"]


def test_stop_before_listen_is_not_lost(transport):
    c = transport.client()
    c.stop()
    start = time.monotonic()
    c.listen(lambda topic, payload: None, "t")
    assert time.monotonic() - start < 0.5


def test_second_concurrent_listen_raises(transport):
    c = transport.client()
    if transport.kind == "memory":
        kwargs: dict[str, Any] = {"timeout": None}
    else:
        kwargs = {}
    t = threading.Thread(
        target=lambda: c.listen(lambda topic, payload: None, "t", **kwargs), daemon=True
    )
    t.start()
    assert c.listening.wait(15)
    with pytest.raises(RuntimeError, match="already running"):
        c.listen(lambda topic, payload: None, "t")
    c.stop()
    t.join(5)
    assert not t.is_alive()
