"""The listen core on the real broker: one test per failure path of the redesign (issue 9).

Each test failed on the listener before the redesign (the scenario number is in its name)
and prints what was sent and what arrived where counting matters.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import warnings
from typing import Any

import pytest
from _delivery_helpers import admin_for, committed
from _helpers import host_port, n_of, plain_client, produce, wait_for
from _shared import Run
from confluent_kafka import Consumer, TopicPartition
from hop.models import Blob

from igwn_alert.exceptions import (
    AuthenticationError,
    BrokerUnreachableError,
    DeliveryError,
    FakeFatalKafkaException,
    KafkaException,
)

RECEIVE = 20.0


def group_at_end(bootstrap: str, group: str, topic: str, partitions: int = 1) -> str:
    """Commit the end of ``topic`` as ``group``'s position: a new group then starts exactly
    there (librdkafka otherwise looks the end up a moment after the group is joined)."""
    plain = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        ends = []
        for p in range(partitions):
            _, high = plain.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends.append(TopicPartition(topic, p, high))
        plain.commit(offsets=ends, asynchronous=False)
    finally:
        plain.close()
    return group


def got_into(got: list[Any]) -> Any:
    return lambda topic, payload: got.append(payload)


# -- 1, 2: bad bytes on the wire ---------------------------------------------------------------


def test_1_deeply_nested_json_reaches_the_callback_as_raw_bytes_and_the_group_goes_on(
    kafka_broker, make_topic
):
    topic = make_topic()
    bomb = b"[" * 1000
    got: list[Any] = []
    group = group_at_end(kafka_broker.plaintext, f"cg-{topic.group}", topic.full)
    c = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run = Run(c, lambda topic, payload: got.append(payload), topic.short)
    run.ready()
    produce(kafka_broker.plaintext, topic.full, [bomb, {"n": 1}])
    assert wait_for(lambda: len(got) == 2, RECEIVE), got
    run.stop()
    assert run.error is None, run.error
    assert isinstance(got[0], Blob) and got[0].content == bomb
    assert got[1] == {"n": 1}
    # a restart of the group does not die on it either: both were done
    produce(kafka_broker.plaintext, topic.full, [{"n": 2}])
    again: list[Any] = []
    c2 = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run2 = Run(c2, lambda topic, payload: again.append(payload), topic.short)
    assert wait_for(lambda: again == [{"n": 2}], RECEIVE), again
    run2.stop()
    assert run2.error is None


def _registry_entries() -> int:
    return sum(len(getattr(m, "__warningregistry__", {}) or {}) for m in list(sys.modules.values()))


def test_2_many_undecodable_messages_keep_memory_and_logs_flat(kafka_broker, make_topic, caplog):
    topic = make_topic()
    count = 100_000
    produce(kafka_broker.plaintext, topic.full, [b"\xff not json %d" % i for i in range(count)])
    c = plain_client(kafka_broker.plaintext, topic.group)
    seen = [0]

    def callback(topic: str, payload: Any) -> None:
        seen[0] += 1

    before = _registry_entries()
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="igwn_alert"):
        warnings.simplefilter("default")  # Python's own behaviour outside pytest
        c.listen(callback, topic.short, since="earliest", until_eos=True)
    grown = _registry_entries() - before
    lines = [r for r in caplog.records if "decode" in r.getMessage()]
    print(
        f"\nundecodable={count} delivered={seen[0]} registry_growth={grown} log_lines={len(lines)}"
    )
    assert seen[0] == count
    assert grown <= 2
    assert len(lines) <= 3


# -- 3, 4: callbacks that raise ------------------------------------------------------------------


def test_3_nonfatal_error_from_the_callback_never_skips_the_alert(kafka_broker, make_topic):
    topic = make_topic()
    group = group_at_end(kafka_broker.plaintext, f"cg-{topic.group}", topic.full)
    calls: list[Any] = []

    def follow_up_fails(topic: str, payload: Any) -> None:
        calls.append(n_of(payload))
        if n_of(payload) == 2:
            raise DeliveryError("the follow-up publish failed")

    c = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group, retry_wait=0.05)
    run = Run(c, follow_up_fails, topic.short)
    run.ready()
    produce(kafka_broker.plaintext, topic.full, [{"n": 1}, {"n": 2}, {"n": 3}])
    run.thread.join(RECEIVE)
    assert isinstance(run.error, DeliveryError), run.error  # on_failure="raise" (default)
    assert calls == [1, 2, 2, 2]  # delivered again, listen_retries calls in all
    # the group did not move past it: a restart gets alert 2 again, then 3
    again: list[Any] = []
    c2 = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run2 = Run(c2, lambda topic, payload: again.append(n_of(payload)), topic.short)
    assert wait_for(lambda: again == [2, 3], RECEIVE), again
    run2.stop()
    print(f"\nsent=3 first_run={calls} after_restart={again} lost=0")


def test_4_fatal_error_from_the_callback_is_retried_at_most_listen_retries_times(
    kafka_broker, make_topic
):
    topic = make_topic()
    calls: list[Any] = []

    def always_fatal(topic: str, payload: Any) -> None:
        calls.append(n_of(payload))
        raise FakeFatalKafkaException

    c = plain_client(
        kafka_broker.plaintext,
        topic.group,
        consumer_group=group_at_end(kafka_broker.plaintext, f"cg-{topic.group}", topic.full),
        retry_on_fatal=True,
        listen_retries=3,
        retry_wait=0.05,
    )
    run = Run(c, always_fatal, topic.short)
    run.ready()
    produce(kafka_broker.plaintext, topic.full, [{"n": 1}])
    run.thread.join(60)
    assert not run.thread.is_alive(), f"redelivered forever: {len(calls)} calls"
    assert run.error is FakeFatalKafkaException
    assert calls == [1, 1, 1]


# -- 5: a private listener reopened resumes every partition ----------------------------------


def test_5_private_listener_reopened_resumes_every_partition(kafka_broker, make_topic):
    topic = make_topic(partitions=2)
    got: list[Any] = []
    published = threading.Event()

    def callback(topic: str, payload: Any) -> None:
        if n_of(payload) == 1 and not published.is_set():
            # a fatal error before any alert completed; while the listener is away, an
            # alert arrives on the quiet partition and one on the busy one
            produce(kafka_broker.plaintext, topic_full, [{"n": 2}], partition=1)
            produce(kafka_broker.plaintext, topic_full, [{"n": 3}], partition=0)
            published.set()
            raise FakeFatalKafkaException
        got.append(n_of(payload))

    topic_full = topic.full
    c = plain_client(kafka_broker.plaintext, topic.group, retry_on_fatal=True, retry_wait=1.0)
    run = Run(c, callback, topic.short)
    run.ready()
    produce(kafka_broker.plaintext, topic.full, [{"n": 1}], partition=0)
    assert wait_for(lambda: sorted(got) == [1, 2, 3], RECEIVE), got
    run.stop()
    assert run.error is None
    print(f"\nsent=3 received={sorted(got)} lost=0")


# -- 6: librdkafka resolves the group's committed position ----------------------------------


def test_6_group_resumes_at_its_committed_position_not_at_the_end(kafka_broker, make_topic):
    topic = make_topic()
    group = f"cg-{topic.group}"
    produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(42)])
    plain = Consumer({"bootstrap.servers": kafka_broker.plaintext, "group.id": group})
    plain.commit(offsets=[TopicPartition(topic.full, 0, 17)], asynchronous=False)
    plain.close()
    got: list[Any] = []
    c = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run = Run(c, lambda topic, payload: got.append(n_of(payload)), topic.short)
    assert wait_for(lambda: len(got) >= 25, RECEIVE), got
    run.stop()
    assert got == list(range(17, 42))
    assert committed(admin_for(kafka_broker.plaintext), group, topic.full, 1) == {0: 42}


def test_6_group_resumes_at_its_committed_position_when_the_look_up_times_out(
    kafka_broker: Any, make_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario itself: the position look-up times out (a re-balance on a busy broker).

    The old reader replaced a failed ``committed()`` by "no position", started at the end
    and committed it (17-41 never delivered); librdkafka, which resolves the committed
    position itself on assignment, must be left to do so.
    """
    import confluent_kafka
    from confluent_kafka import KafkaError, KafkaException

    topic = make_topic()
    group = f"cg-{topic.group}"
    produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(42)])
    plain = Consumer({"bootstrap.servers": kafka_broker.plaintext, "group.id": group})
    plain.commit(offsets=[TopicPartition(topic.full, 0, 17)], asynchronous=False)
    plain.close()
    timeouts = []

    class TimingOut(confluent_kafka.Consumer):  # type: ignore[misc]
        """The real consumer, whose committed() look-ups for this group time out."""

        def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            self._times_out = config.get("group.id") == group
            super().__init__(config, *args, **kwargs)

        def committed(self, *args: Any, **kwargs: Any) -> Any:
            if self._times_out:
                timeouts.append(time.monotonic())
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
            return super().committed(*args, **kwargs)

    monkeypatch.setattr(confluent_kafka, "Consumer", TimingOut)
    got: list[Any] = []
    c = plain_client(kafka_broker.plaintext, topic.group, consumer_group=group)
    run = Run(c, lambda topic, payload: got.append(n_of(payload)), topic.short)
    assert wait_for(lambda: len(got) >= 25, RECEIVE), got
    time.sleep(1.0)  # nothing more may come
    run.stop()
    monkeypatch.undo()
    assert timeouts, "the reader never looked the position up: the scenario was not exercised"
    assert got == list(range(17, 42))
    assert committed(admin_for(kafka_broker.plaintext), group, topic.full, 1) == {0: 42}


# -- 7: slow callbacks stay in the group -----------------------------------------------------


def test_7_slow_callbacks_keep_their_group_membership(kafka_broker, make_topic, caplog):
    topic = make_topic()
    got: list[Any] = []

    def slow(topic: str, payload: Any) -> None:
        time.sleep(0.4)
        got.append(n_of(payload))

    c = plain_client(
        kafka_broker.plaintext,
        topic.group,
        consumer_group=group_at_end(kafka_broker.plaintext, f"cg-{topic.group}", topic.full),
        config={"max.poll.interval.ms": 6000, "session.timeout.ms": 6000},
    )
    with caplog.at_level(logging.INFO, logger="igwn_alert"):
        run = Run(c, slow, topic.short)
        run.ready()
        produce(kafka_broker.plaintext, topic.full, [{"n": i} for i in range(40)])  # 16 s
        assert wait_for(lambda: len(got) >= 40, 60), len(got)
        before_stop = list(caplog.records)  # closing gives the partition back: not counted
        run.stop()
    taken = [
        r.getMessage()
        for r in before_stop
        if "taken away" in r.getMessage() or "lost" in r.getMessage()
    ]
    print(f"\nsent=40 delivered={len(got)} distinct={len(set(got))} revocations={len(taken)}")
    assert got == list(range(40)), "redelivered or reordered: the member left its group"
    assert not taken


# -- 9: open() inside the retry handling; stop() in every state -------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_9_unreachable_broker_is_retried_with_retry_on_fatal_and_stop_is_prompt():
    port = _closed_port()
    c = plain_client(f"127.0.0.1:{port}", "gracedb", retry_on_fatal=True)
    run = Run(c, lambda topic, payload: None, "superevent")
    time.sleep(12)  # longer than one start-up attempt (10 s)
    assert run.thread.is_alive(), f"gave up: {run.error!r}"
    took = run.stop()
    print(f"\nstop() while the broker is unreachable: {took * 1000:.0f} ms")
    assert took < 0.5
    assert run.error is None


def test_9_unreachable_broker_without_retry_raises_and_stop_while_starting_is_prompt():
    port = _closed_port()
    c = plain_client(f"127.0.0.1:{port}", "gracedb")
    run = Run(c, lambda topic, payload: None, "superevent")
    run.thread.join(20)
    assert isinstance(run.error, BrokerUnreachableError), run.error
    c2 = plain_client(f"127.0.0.1:{port}", "gracedb")
    run2 = Run(c2, lambda topic, payload: None, "superevent")
    time.sleep(1.0)
    took = run2.stop()
    assert took < 0.5 and run2.error is None, (took, run2.error)


# -- 10, 11: threads and the older stop idioms --------------------------------------------------


def test_10_a_second_concurrent_listen_raises_at_once(kafka_broker, make_topic):
    topic = make_topic()
    c = plain_client(kafka_broker.plaintext, topic.group)
    run = Run(c, lambda topic, payload: None, topic.short)
    run.ready()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="already running"):
        c.listen(lambda topic, payload: None, topic.short)
    assert time.monotonic() - start < 0.5
    assert run.stop() < 0.5


def test_11_reference_stop_idiom_through_the_streams_consumer(kafka_broker, make_topic):
    topic = make_topic()
    c = plain_client(kafka_broker.plaintext, topic.group)
    for _ in range(2):  # and the same client listens again afterwards
        got: list[Any] = []
        run = Run(c, got_into(got), topic.short)
        run.ready()
        produce(kafka_broker.plaintext, topic.full, [{"n": 1}])
        assert wait_for(lambda got=got: got == [{"n": 1}], RECEIVE), got
        start = time.monotonic()
        c.stop_listening.set()
        c._listen_stream._consumer.stop()  # igwn-alert 0.7.0's stop(), by hand
        run.thread.join(2)
        assert not run.thread.is_alive() and run.error is None
        assert time.monotonic() - start < 1.0


# -- 13: errors leaving the public API ---------------------------------------------------------


def test_13_get_topics_with_a_wrong_password_is_a_quiet_clear_error(kafka_broker, make_user, capfd):
    user = make_user(read=["*"])
    host, port = host_port(kafka_broker.sasl)
    import igwn_alert

    c = igwn_alert.client(
        username=user.username, password="wrong", server=f"kafka://{host}/", port=port
    )
    capfd.readouterr()
    start = time.monotonic()
    with pytest.raises(KafkaException) as info:
        c.get_topics()
    took = time.monotonic() - start
    err = capfd.readouterr().err
    print(f"\nget_topics with a wrong password: {type(info.value).__name__} in {took:.2f} s")
    assert isinstance(info.value, AuthenticationError), info.value
    assert took < 5
    assert "rdkafka" not in err and "SASL" not in err, err[:500]
    gc.collect()
