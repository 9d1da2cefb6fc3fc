"""LocalBroker: the embedded broker with real igwn_alert clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import igwn_alert
from igwn_alert.testing import LocalBroker

ALERT = '{"uid": "S1", "alert_type": "new"}'


@pytest.fixture(scope="module")
def local() -> Iterator[LocalBroker]:
    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def group(local: LocalBroker) -> str:
    return local.unique_group()


def test_addresses(local: LocalBroker) -> None:
    assert local.server == "kafka://127.0.0.1"
    assert local.bootstrap == f"127.0.0.1:{local.port}"
    assert local.url == f"kafka://127.0.0.1:{local.port}"
    assert "127.0.0.1" in repr(local)


def test_client_is_a_real_client(local: LocalBroker, group: str) -> None:
    made = local.client(group=group, retry_on_fatal=True)
    assert isinstance(made, igwn_alert.client)
    assert made.server == local.server
    assert made.port == local.port
    assert made.auth_obj is False
    assert made.group_prefix == group
    assert made.retry_on_fatal is True
    other = local.client(server="kafka://localhost", noauth=True)
    assert other.server == "kafka://localhost"


def test_unique_group() -> None:
    names = {LocalBroker.unique_group() for _ in range(5)}
    assert len(names) == 5
    assert all(n.startswith("gracedb-test-") for n in names)
    assert LocalBroker.unique_group("x").startswith("x-")


def test_round_trip_str_and_dict(local: LocalBroker, group: str) -> None:
    publisher = local.client(group=group)
    with local.listener(["superevent", "cbc_gstlal"], group=group) as alerts:
        publisher.connect("superevent")
        publisher.publish_to_topic("superevent", ALERT)
        publisher.flush_by_topic("superevent")
        alerts.wait_for(1)
        publisher.publish("cbc_gstlal", {"uid": "G1"})
        received = alerts.wait_for(2)
    assert received == [("superevent", ALERT), ("cbc_gstlal", {"uid": "G1"})]
    assert isinstance(received[0][1], str)  # GraceDB's text is never decoded twice
    assert alerts.payloads == [ALERT, {"uid": "G1"}]
    publisher.disconnect()


def test_get_topics_sees_created_topics(local: LocalBroker, group: str) -> None:
    created = local.create_topics(["superevent", "cbc_gstlal"], group=group)
    assert created == [f"{group}.superevent", f"{group}.cbc_gstlal"]
    assert local.create_topics("superevent", group=group) == []
    assert sorted(local.client(group=group).get_topics()) == ["cbc_gstlal", "superevent"]


def test_listener_callback_is_called(local: LocalBroker, group: str) -> None:
    seen: list[tuple[str, Any]] = []
    with local.listener(
        "superevent", group=group, callback=lambda topic, payload: seen.append((topic, payload))
    ) as alerts:
        local.client(group=group).publish("superevent", ALERT)
        alerts.wait_for(1)
    assert seen == [("superevent", ALERT)]


def test_consumer_group_listener_misses_nothing(local: LocalBroker, group: str) -> None:
    publisher = local.client(group=group)
    with local.listener("superevent", group=group, consumer_group=f"{group}-cg") as alerts:
        publisher.publish("superevent", "first")  # possibly before the group has partitions
        assert alerts.wait_for(1) == [("superevent", "first")]


def test_consumer_group_resumes(local: LocalBroker, group: str) -> None:
    # Leaving and rejoining a classic group on the mock cluster waits for the old
    # member's session timeout; a fresh group per listener keeps this test fast.
    publisher = local.client(group=group)
    local.create_topics("superevent", group=group)
    cg = f"{group}-resume"
    local.ensure_group_positions(cg, [f"{group}.superevent"])
    publisher.publish("superevent", "while nobody listens")
    with local.listener("superevent", group=group, consumer_group=cg) as alerts:
        assert alerts.wait_for(1) == [("superevent", "while nobody listens")]


def test_ensure_group_positions_keeps_existing_commits(local: LocalBroker, group: str) -> None:
    import confluent_kafka

    local.create_topics("t", group=group)
    publisher = local.client(group=group)
    publisher.publish("t", "one")
    name = f"{group}.t"
    local.ensure_group_positions("cg-keep", [name, f"{group}.missing"])
    publisher.publish("t", "two")
    local.ensure_group_positions("cg-keep", [name])  # already committed: unchanged
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": local.bootstrap, "group.id": "cg-keep"}
    )
    try:
        committed = consumer.committed([confluent_kafka.TopicPartition(name, 0)], timeout=5)
    finally:
        consumer.close()
    assert committed[0].offset == 1
    local.ensure_group_positions("cg-none", [f"{group}.missing"])  # nothing to do


def test_listener_error_is_raised_on_stop(local: LocalBroker, group: str) -> None:
    def broken(topic: str, payload: Any) -> None:
        raise ZeroDivisionError

    alerts = local.listener("superevent", group=group, callback=broken).start()
    local.client(group=group).publish("superevent", ALERT)
    with pytest.raises(RuntimeError, match="listener failed"):
        alerts.wait_for(2, timeout=10)
    with pytest.raises(ZeroDivisionError):
        alerts.stop()


def test_wait_for_times_out(local: LocalBroker, group: str) -> None:
    with local.listener("quiet", group=group) as alerts:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="0 of 1"):
            alerts.wait_for(1, timeout=0.2)
        assert time.monotonic() - start < 5


def test_listener_that_never_starts(local: LocalBroker, group: str) -> None:
    alerts = local.listener("superevent", group=group)
    alerts.client.stop()  # listen() will return at once, before it listens
    with pytest.raises(RuntimeError, match="before it started"):
        alerts.start(timeout=5)


def test_stop_closes_clients_and_broker() -> None:
    broker = LocalBroker().start()
    made = broker.client(group="g")
    made.connect("superevent")
    listening = broker.listener("superevent", group="g").start()
    listening.stop()
    broker.stop()
    assert made.sessions == {}
    assert not broker.broker.running


def test_listener_in_a_thread_with_the_plain_client(local: LocalBroker, group: str) -> None:
    """What a test author writes without the helper: listen() in a thread, stop(), join."""
    local.create_topics("superevent", group=group)
    listener = local.client(group=group)
    got: list[Any] = []
    thread = threading.Thread(
        target=listener.listen,
        args=(lambda topic, payload: got.append(payload), "superevent"),
        daemon=True,
    )
    thread.start()
    assert listener.listening.wait(10)
    local.client(group=group).publish("superevent", ALERT)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert got == [ALERT]
