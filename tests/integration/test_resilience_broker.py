"""Resilience to broker outages, on a dedicated single-node broker of this module.

The shared broker serves every other test running at the same time, so the outages here
stop and restart a broker of their own (``scripts/_kafka_broker``: same ports, same data).

* the broker restarted while 1,000 alerts stream: a consumer-group listener gets them all;
* an outage of several seconds is logged once (not once per retry), and listeners recover
  by themselves;
* an alert that cannot be delivered within the delivery timeout raises an error saying so;
  the producer is idempotent (its batches carry a producer id and sequence numbers).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _delivery_helpers import (
    Listener,
    Tally,
    admin_for,
    alert,
    alert_id,
    create_topic,
    listening,
    outcome,
    plain_client,
    start_dedicated_broker,
    wait_committed,
    wait_for,
    warnings_from_igwn_alert,
)

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = start_dedicated_broker(tmp_path_factory.mktemp("dedicated-kafka"))
    yield cluster
    cluster.kill()


@pytest.fixture
def node(broker: Any) -> Iterator[Any]:
    """The broker's only node, running at the start and at the end of each test."""
    n = broker.nodes[0]
    if not n.is_running():
        n.start()
    yield n
    if not n.is_running():
        n.start()


def _topic(broker: Any, partitions: int = 1) -> tuple[str, str]:
    group = f"gracedb-resilience-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, f"{group}.superevent", partitions)
    return group, "superevent"


# --------------------------------------------------------------------------- restart


@pytest.mark.timeout(300)  # a slow restart: the publisher waits up to 150 s
def test_broker_restart_while_streaming_loses_nothing(broker: Any, node: Any) -> None:
    group, short = _topic(broker, partitions=2)
    group_id = f"restart-{uuid.uuid4().hex[:8]}"
    tally = Tally("broker restarted mid-stream, 1,000 alerts")
    listener = Listener(
        plain_client(broker.bootstrap, group, consumer_group=group_id), short, tally
    )
    total, rate = 1000, 200.0  # alerts, alerts per second: 5 s of streaming
    acked: list[int] = []
    failed: list[Any] = []
    publish_error: list[BaseException] = []
    written = threading.Event()
    progress = [0]

    def publish() -> None:
        client = plain_client(broker.bootstrap, group)
        # every alert must outlive the restart, however slowly the broker comes back (on a
        # loaded machine it took 30 s, librdkafka's default delivery timeout, once)
        client.delivery_timeout = timedelta(seconds=120)
        try:
            client.connect(short)
            writer = client.sessions[short]
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

                def on_delivery(err: Any, msg: Any, i: int = i) -> None:
                    (failed if err is not None else acked).append(err or i)

                writer.write(alert(i), delivery_callback=on_delivery)
                tally.send(i)
                progress[0] = i + 1
            written.set()
            writer.flush(timedelta(seconds=150))
        except BaseException as exc:  # noqa: BLE001 - reported below
            publish_error.append(exc)
        finally:
            written.set()

    with listening(listener):
        wait_committed(admin_for(broker.bootstrap), group_id, f"{group}.{short}", 2)
        publisher = threading.Thread(target=publish, name="publisher", daemon=True)
        publisher.start()
        assert wait_for(lambda: progress[0] >= 350, 20)
        t0 = time.monotonic()
        stopped_at = progress[0]
        node.restart()
        print(
            f"\nbroker stopped after {stopped_at} alerts were written, up again "
            f"{time.monotonic() - t0:.1f} s later (after {progress[0]})"
        )
        publisher.join(160)
        assert not publisher.is_alive(), "publishing did not finish"
        assert wait_for(lambda: tally.count() >= len(acked) and len(acked) == total, 60, 0.2), (
            f"acked {len(acked)}, received {tally.count()}, missing {tally.lost_ids()[:20]}"
        )
        time.sleep(1.0)
    assert listener.error is None, repr(listener.error)
    print(f"acknowledged by the broker: {len(acked)} of {total}; delivery failures: {failed[:3]}")
    assert not publish_error, repr(publish_error[0])
    lost, _dup = tally.report()  # duplicates allowed (at-least-once), reported
    assert len(acked) == total
    assert lost == 0


# --------------------------------------------------------------------------- outage


def test_outage_is_logged_once_and_listeners_recover(
    broker: Any, node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    group, short = _topic(broker)
    group_id = f"outage-{uuid.uuid4().hex[:8]}"
    in_group = Tally("outage: consumer-group listener")
    private = Tally("outage: private listener")
    listeners = [
        Listener(
            plain_client(broker.bootstrap, group, consumer_group=group_id),
            short,
            in_group,
            name="group",
        ),
        Listener(plain_client(broker.bootstrap, group), short, private, name="private"),
    ]
    publisher = plain_client(broker.bootstrap, group)
    with listening(*listeners):
        wait_committed(admin_for(broker.bootstrap), group_id, f"{group}.{short}", 1)
        assert wait_for(listeners[1].client.listening.is_set, 10)
        publisher.publish(short, alert("before"))
        for t in (in_group, private):
            t.send("before")
        assert wait_for(lambda: in_group.got("before") and private.got("before"), 10)
        time.sleep(1.5)  # longer than the auto-commit period: "before" is committed

        before = len(caplog.records)
        node.stop()
        down = time.monotonic()
        time.sleep(6.0)
        during = warnings_from_igwn_alert(caplog.records[before:])
        node.start()
        print(
            f"\nbroker down for {time.monotonic() - down:.1f} s; warnings while down: {len(during)}"
        )
        for r in during:
            print(f"  {r.levelname} {r.name} [{r.threadName}]: {r.getMessage()}")
        up = time.monotonic()
        for t in (in_group, private):
            t.send("after")
        publisher.publish(short, alert("after"))
        published = time.monotonic()
        arrived: dict[str, float] = {}

        def both_got_it() -> bool:
            for name, t in (("group", in_group), ("private", private)):
                if name not in arrived and t.got("after"):
                    arrived[name] = time.monotonic() - published
            return len(arrived) == 2

        # the group listener re-joins once the coordinator expired its old membership
        # (session timeout, 10 s)
        assert wait_for(both_got_it, 30, 0.05), (
            f"group got {in_group.received}, private got {private.received}"
        )
        print(
            f"broker up again; publish() took {published - up:.1f} s, then the group listener "
            f"got the alert in {arrived['group']:.1f} s, "
            f"the private one in {arrived['private']:.1f} s"
        )
        time.sleep(0.5)
    for lst in listeners:
        assert lst.error is None, f"{lst.thread.name}: {lst.error!r}"
    after = warnings_from_igwn_alert(caplog.records[before:])
    for r in after[len(during) :]:
        print(f"  after restart: {r.levelname} {r.name}: {r.getMessage()}")
    for t in (in_group, private):
        lost, dup = t.report()
        assert lost == 0
        assert dup == 0
    # once per outage and per client: two listeners (at most one report each, plus the
    # consumer group's partitions being lost) and the publisher
    assert len(during) <= 4, "the outage was reported again and again"


# --------------------------------------------------------------------------- publishing


def test_undeliverable_alert_raises_a_clear_error(broker: Any, node: Any) -> None:
    from igwn_alert.exceptions import BrokerUnreachableError, DeliveryError

    group, short = _topic(broker)
    tally = Tally("publishing to a stopped broker")

    # a client whose writers give up after 3 s
    quick = plain_client(broker.bootstrap, group)
    quick.delivery_timeout = timedelta(seconds=3)
    quick.publish(short, alert("up"))
    tally.send("up")
    patient = plain_client(broker.bootstrap, group)
    # its alert must outlive the whole outage, however slowly the broker restarts
    patient.delivery_timeout = timedelta(seconds=120)
    patient.connect(short)
    node.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            quick.publish(short, alert("down-1"))
        took = time.monotonic() - t0
        print(f"\npublish() with a 3 s delivery timeout: {outcome(info.value, took)}")
        assert took < 10
        assert "deliver" in str(info.value)

        # hop's writer API: flush(timeout) says how many alerts were left
        writer = patient.sessions[short]
        writer.write(alert("down-2"))
        t0 = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            writer.flush(timedelta(seconds=1))
        took = time.monotonic() - t0
        print(f"flush(1 s): {outcome(info.value, took)}")
        assert took < 5
        assert "not delivered within 1 s" in str(info.value)

        # a client that never reached the broker
        fresh = plain_client(broker.bootstrap, group)
        t0 = time.monotonic()
        with pytest.raises(BrokerUnreachableError) as unreachable:
            fresh.publish(short, alert("down-3"))
        took = time.monotonic() - t0
        print(f"publish() from a new client: {outcome(unreachable.value, took)}")
        assert took < 15
    finally:
        node.start()

    # the alert left in the patient writer is delivered once the broker is back
    tally.send("down-2")
    patient.flush_by_topic(short)
    reader = Listener(plain_client(broker.bootstrap, group), short, tally, since="earliest")
    with listening(reader):
        assert wait_for(lambda: tally.count() >= 2, 20), tally.received
        time.sleep(0.5)
    assert sorted(map(str, (alert_id(p) for _, p in reader.payloads))) == ["down-2", "up"]
    lost, dup = tally.report()
    assert lost == 0 and dup == 0


def _batches(segment: Path) -> list[tuple[int, int, int, int]]:
    """(base offset, producer id, producer epoch, base sequence) of each record batch."""
    data = segment.read_bytes()
    out = []
    pos = 0
    while pos + 61 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length <= 0:
            break
        producer_id, epoch, sequence = struct.unpack_from(">qhi", data, pos + 43)
        out.append((base_offset, producer_id, epoch, sequence))
        pos += 12 + length
    return out


def test_producer_is_idempotent(broker: Any, node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    configs: list[dict[str, Any]] = []
    real_producer = confluent_kafka.Producer

    def recording_producer(config: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        configs.append(dict(config))
        return real_producer(config, *args, **kwargs)

    monkeypatch.setattr(confluent_kafka, "Producer", recording_producer)
    group, short = _topic(broker)
    client = plain_client(broker.bootstrap, group)
    tally = Tally("idempotent producer")
    for i in range(5):
        client.publish(short, alert(i))
        tally.send(i)
    client.disconnect()
    assert configs, "the client did not create a confluent_kafka.Producer"
    for config in configs:
        assert config.get("enable.idempotence") in (True, "true"), config.get("enable.idempotence")
        assert str(config.get("acks")) in ("all", "-1"), config.get("acks")

    # what the broker stored: every batch carries the producer id and a sequence number
    segment = node.data_dir / f"{group}.{short}-0" / "00000000000000000000.log"
    assert wait_for(lambda: len(_batches(segment)) >= 5, 10)
    batches = _batches(segment)
    print(f"\nstored batches (offset, producer id, epoch, sequence): {batches}")
    assert all(pid >= 0 for _, pid, _, _ in batches), (
        "a batch without a producer id: not idempotent"
    )
    assert len({pid for _, pid, _, _ in batches}) == 1
    assert [seq for *_, seq in batches] == sorted(seq for *_, seq in batches)
    for _, _, _, seq in batches:
        tally.receive(seq)  # one stored batch per alert, sequence 0..4
    lost, dup = tally.report()
    assert lost == 0 and dup == 0
