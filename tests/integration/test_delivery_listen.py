"""Listening on the real broker: stop() latency, listeners without a consumer group, replay,
and bad input (CONTRACT §6).

* ``stop()`` makes ``listen()`` return within 0.5 s: while it starts, before it starts,
  and while it idles;
* without a consumer group a listener sees only alerts published after it started; a topic
  that does not exist yet is announced by a warning and read once it is created; a
  partition added later is read too;
* ``since="earliest"``, ``since=<datetime>`` and the command line's ``--from-beginning`` /
  ``--since 10m`` replay older alerts;
* undecodable messages reach the callback as hop would pass them and never stop the
  listener.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from _delivery_helpers import (
    REPO_ROOT,
    Listener,
    Tally,
    admin_for,
    alert,
    alert_id,
    committed,
    end_offsets,
    listening,
    plain_client,
    wait_committed,
    wait_for,
)
from confluent_kafka import Producer

pytestmark = pytest.mark.timeout(120)

STOP_BUDGET = 0.5


# --------------------------------------------------------------------------- stop()


@pytest.mark.parametrize("consumer_group", [None, "group"], ids=["private", "consumer-group"])
def test_stop_latency(kafka_broker: Any, make_topic: Any, consumer_group: Any) -> None:
    topic = make_topic("superevent")
    group_id = f"stop-{uuid.uuid4().hex[:8]}" if consumer_group else None

    def new_client() -> Any:
        return plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id)

    timings = {}

    # 1. stop() right after the listening thread started (listen() is starting up)
    worst = 0.0
    for _ in range(3):
        lst = Listener(new_client(), topic.short).start()
        worst = max(worst, lst.stop())
        assert lst.error is None, lst.error
    timings["during start-up"] = worst

    # 2. stop() before the thread even called listen()
    client = new_client()
    client.stop()
    lst = Listener(client, topic.short)
    t0 = time.monotonic()
    lst.start()
    lst.thread.join(5)
    assert not lst.alive, "a stop() before listen() was lost: listen() is still running"
    assert lst.error is None, lst.error
    timings["before listen()"] = (lst.returned_at or 0) - t0

    # 3. stop() while idle, after the listener is fully positioned
    lst = Listener(new_client(), topic.short).start()
    assert wait_for(lst.client.listening.is_set, 10)
    if group_id:
        wait_committed(admin_for(kafka_broker.plaintext), group_id, topic.full, 1)
    time.sleep(1.0)
    timings["while idle"] = lst.stop()
    assert lst.error is None, lst.error

    print(
        "\n"
        + ", ".join(
            f"stop() {k}: listen() returned in {v * 1000:.0f} ms" for k, v in timings.items()
        )
    )
    for what, took in timings.items():
        assert took < STOP_BUDGET, f"listen() took {took:.3f} s to return after stop() {what}"


# --------------------------------------------------------------------------- no consumer group


def test_private_listener_sees_only_new_alerts(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent", partitions=2)
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    publisher.publish(topic.short, alert("before"))
    tally = Tally("private listener: newest only")
    listener = Listener(plain_client(kafka_broker.plaintext, topic.group), topic.short, tally)
    with listening(listener):
        assert wait_for(listener.client.listening.is_set, 10)
        for i in range(5):
            publisher.publish(topic.short, alert(i))
            tally.send(i)
        assert wait_for(lambda: tally.count() >= 5, 10), f"missing: {tally.lost_ids()}"
        time.sleep(0.5)
    assert listener.error is None, listener.error
    assert "before" not in tally.received, "an alert published before listen() was delivered"
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0


def test_missing_topic_warns_and_is_read_once_created(
    kafka_broker: Any, make_topic: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    existing = make_topic("superevent")
    missing_short = f"later_{uuid.uuid4().hex[:6]}"
    missing_full = f"{existing.group}.{missing_short}"
    tally = Tally("topic created after listen()")
    listener = Listener(
        plain_client(kafka_broker.plaintext, existing.group), [existing.short, missing_short], tally
    )
    with listening(listener):
        assert wait_for(lambda: missing_full in caplog.text, 10), (
            "no warning about the missing topic"
        )
        assert listener.alive and listener.error is None, listener.error
        warned = [r for r in caplog.records if missing_full in r.getMessage()]
        print(f"\nwarning: {warned[0].levelname} {warned[0].name}: {warned[0].getMessage()}")
        time.sleep(1.5)  # the listener has been running without the topic for a while
        created = time.monotonic()
        make_topic(missing_short, partitions=2)
        publisher = plain_client(kafka_broker.plaintext, existing.group)
        for i in range(5):
            publisher.publish(missing_short, alert(i))
            tally.send(i)
        publisher.publish(existing.short, alert("other-topic"))
        tally.send("other-topic")
        assert wait_for(lambda: tally.count() >= 6, 15), f"missing: {tally.lost_ids()}"
        took = time.monotonic() - created
        time.sleep(0.3)
    print(f"alerts of the new topic delivered {took:.1f} s after it was created")
    assert listener.error is None, listener.error
    assert {t for t, _ in listener.payloads} == {existing.short, missing_short}
    assert len(warned) == 1, f"the missing topic was reported {len(warned)} times"
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0
    assert took < 15


@pytest.mark.parametrize("consumer_group", [None, "group"], ids=["private", "consumer-group"])
def test_partition_added_later_is_read(
    kafka_broker: Any, make_topic: Any, consumer_group: Any
) -> None:
    from confluent_kafka.admin import NewPartitions

    topic = make_topic("superevent", partitions=1)
    admin = admin_for(kafka_broker.plaintext)
    group_id = f"partitions-{uuid.uuid4().hex[:8]}" if consumer_group else None
    tally = Tally(
        f"partitions added while listening ({'consumer group' if group_id else 'private'})"
    )
    listener = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
    )
    with listening(listener):
        assert wait_for(listener.client.listening.is_set, 10)
        if group_id:
            wait_committed(admin, group_id, topic.full, 1)
        admin.create_partitions([NewPartitions(topic.full, 3)])[topic.full].result(timeout=30)
        kafka_broker.wait_topics([topic.full], partitions=3)
        added = time.monotonic()
        producer = Producer({"bootstrap.servers": kafka_broker.plaintext, "acks": "all"})
        for i in range(9):
            producer.produce(
                topic.full,
                json.dumps(alert(i)).encode(),
                partition=i % 3,
                headers=[("_format", b"json")],
            )
            tally.send(i)
        assert producer.flush(15) == 0
        assert wait_for(lambda: tally.count() >= 9, 20), f"missing: {tally.lost_ids()}"
        took = time.monotonic() - added
        time.sleep(0.3)
    print(f"\nalerts on the new partitions delivered {took:.1f} s after they were added")
    assert listener.error is None, listener.error
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0


# --------------------------------------------------------------------------- replay


def test_replay_since_earliest_and_since_time(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent", partitions=2)
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    for i in range(3):
        publisher.publish(topic.short, alert(i))
    time.sleep(0.3)
    middle = datetime.now(timezone.utc)
    time.sleep(0.3)
    for i in range(3, 6):
        publisher.publish(topic.short, alert(i))

    cases = [
        ("since='earliest' (private)", {"since": "earliest"}, None, range(6)),
        ("since=<datetime> (private)", {"since": middle}, None, range(3, 6)),
        (
            "since='earliest' (consumer group)",
            {"since": "earliest"},
            f"replay-{uuid.uuid4().hex[:8]}",
            range(6),
        ),
    ]
    for label, kwargs, group_id, expected in cases:
        tally = Tally(label)
        for i in expected:
            tally.send(i)
        listener = Listener(
            plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
            topic.short,
            tally,
            **kwargs,
        )
        with listening(listener):
            want = len(expected)
            assert wait_for(lambda t=tally, n=want: t.count() >= n, 20), (
                f"{label}: missing {tally.lost_ids()}"
            )
            time.sleep(0.5)
        assert listener.error is None, listener.error
        got = sorted(alert_id(p) for _, p in listener.payloads)
        assert got == list(expected), f"{label}: got {got}"
        lost, dup = tally.report()
        assert lost == 0 and dup == 0


@pytest.mark.parametrize(
    "replay", [["--from-beginning"], ["--since", "10m"]], ids=["from-beginning", "since-10m"]
)
def test_cli_listen_replays(kafka_broker: Any, make_topic: Any, replay: list[str]) -> None:
    topic = make_topic("superevent")
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    marker = uuid.uuid4().hex[:8]
    for i in range(3):
        publisher.publish(topic.short, alert(f"{marker}-{i}"))
    host, port = kafka_broker.plaintext.rsplit(":", 1)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from igwn_alert.tool import main; sys.exit(main())",
        "--no-auth",
        "-s",
        f"kafka://{host}",
        "-p",
        port,
        "-g",
        topic.group,
        "listen",
        topic.short,
        *replay,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    tally = Tally(f"CLI listen {' '.join(replay)}")
    for i in range(3):
        tally.send(f"{marker}-{i}")

    def seen() -> bool:
        text = "".join(lines)
        return all(f"{marker}-{i}" in text for i in range(3))

    try:
        ok = wait_for(seen, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(5)
    text = "".join(lines)
    stderr = proc.stderr.read() if proc.stderr else ""  # type: ignore[union-attr]
    assert ok, (
        f"the CLI did not print the old alerts; stdout={text[-1000:]!r} stderr={stderr[-1000:]!r}"
    )
    for line in text.splitlines():
        for i in range(3):
            if f"'id': '{marker}-{i}'" in line:
                tally.receive(f"{marker}-{i}")
    assert text.count(f"New message from topic {topic.full}:") == 3
    assert proc.returncode == 0, (
        f"exit status {proc.returncode} after SIGTERM; stderr={stderr[-1000:]!r}"
    )
    lost, dup = tally.report()
    assert lost == 0 and dup == 0


# --------------------------------------------------------------------------- bad input


def test_bad_messages_never_stop_the_listener(kafka_broker: Any, make_topic: Any) -> None:
    from hop.models import Blob

    topic = make_topic("superevent")
    admin = admin_for(kafka_broker.plaintext)
    group_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    big_pad = "x" * (1_048_576 - 2_000)  # just under the broker's 1 MiB message.max.bytes
    cases: list[tuple[str, Any, Any, Any]] = [
        # (name, value, headers, what the callback must receive)
        ("not JSON", b"this is {not json", None, Blob(content=b"this is {not json")),
        ("invalid UTF-8", b"\xff\xfe\xfa\x80", None, Blob(content=b"\xff\xfe\xfa\x80")),
        ("empty value", b"", None, Blob(content=b"")),
        ("null value", None, None, Blob(content=b"")),
        (
            "_format json, invalid JSON",
            b"{'oops':",
            [("_format", b"json")],
            Blob(content=b"{'oops':"),
        ),
        (
            "unknown _format",
            b"\x00\x01payload",
            [("_format", b"no-such-format")],
            Blob(content=b"\x00\x01payload"),
        ),
        (
            "_format avro, garbage",
            b"\x00garbage",
            [("_format", b"avro")],
            Blob(content=b"\x00garbage"),
        ),
        (
            "near the size limit",
            json.dumps(alert("big", pad=big_pad)).encode(),
            [("_format", b"json")],
            "big",
        ),
        ("valid alert", json.dumps(alert("valid")).encode(), [("_format", b"json")], "valid"),
    ]
    received: list[Any] = []
    listener = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        on_alert=lambda t, p: received.append(p),
    )
    tally = Tally("bad input")
    with listening(listener):
        wait_committed(admin, group_id, topic.full, 1)
        producer = Producer(
            {
                "bootstrap.servers": kafka_broker.plaintext,
                "acks": "all",
                "message.max.bytes": 1_048_588,
            }
        )
        errors: list[Any] = []
        for index, (_, value, headers, _) in enumerate(cases):
            producer.produce(
                topic.full,
                value,
                headers=headers,
                on_delivery=lambda err, _m: err and errors.append(err),
            )
            tally.send(index)
        assert producer.flush(20) == 0 and not errors, errors
        assert wait_for(lambda: len(received) >= len(cases), 20), (
            f"the listener got {len(received)} of {len(cases)} messages; "
            f"listener error: {listener.error!r}"
        )
        time.sleep(0.5)
        assert listener.alive, f"the listener died: {listener.error!r}"
    assert listener.error is None, listener.error
    for index, ((name, _, _, expected), got) in enumerate(zip(cases, received)):
        if isinstance(expected, Blob):
            assert isinstance(got, Blob) and got.content == expected.content, (
                f"{name}: got {got!r:.200}"
            )
        else:
            assert isinstance(got, dict) and got["id"] == expected, f"{name}: got {got!r:.200}"
        tally.receive(index)
    assert len(received[-2]["pad"]) == len(big_pad)
    final = committed(admin, group_id, topic.full, 1)
    print(
        f"\n{len(cases)} messages delivered in order; committed position {final[0]} "
        f"(end {end_offsets(admin, topic.full, 1)[0]})"
    )
    assert final == end_offsets(admin, topic.full, 1), "not every message was marked done"
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0
