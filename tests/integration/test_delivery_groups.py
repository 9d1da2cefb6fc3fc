"""Delivery with a consumer group, on the real broker (CONTRACT §6, "Better here").

* an alert counts as done only once the callback returned: a listener process killed with
  SIGKILL in the middle of a callback, or a callback that raises, leaves that alert to the
  next listener of the group;
* listeners of one group share the partitions: each alert reaches exactly one of them;
* a group that never committed starts at the newest alert and records that position at
  once, so an alert published after a listener was assigned and stopped is not lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
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
    group_members,
    listening,
    plain_client,
    wait_committed,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

#: A listening process: its callback records each finished alert in <dir>/done, and for the
#: alert marked "hang" writes <dir>/started and sleeps forever (until SIGKILL).
LISTENER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import igwn_alert

    server, port, group, consumer_group, topic, outdir = sys.argv[1:]

    def callback(topic, payload):
        if payload.get("hang"):
            with open(os.path.join(outdir, "started"), "w") as f:
                f.write(str(payload["id"]))
            while True:
                time.sleep(1)
        with open(os.path.join(outdir, "done"), "a") as f:
            f.write(f"{payload['id']}\\n")

    client = igwn_alert.client(noauth=True, server=server, port=int(port), group=group,
                               consumer_group=consumer_group)
    client.listen(callback, topic)
    """
)


def _group_id() -> str:
    return f"delivery-{uuid.uuid4().hex[:10]}"


def _spawn_listener(
    tmp_path: Path, bootstrap: str, group: str, consumer_group: str, topic: str
) -> subprocess.Popen[bytes]:
    script = tmp_path / "listener.py"
    script.write_text(LISTENER_SCRIPT)
    host, port = bootstrap.rsplit(":", 1)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            f"kafka://{host}",
            port,
            group,
            consumer_group,
            topic,
            str(tmp_path),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "listener.err", "wb"),
    )


def test_sigkill_mid_callback_redelivers_to_next_listener(
    kafka_broker: Any, make_topic: Any, tmp_path: Path
) -> None:
    topic = make_topic("superevent")
    admin = admin_for(kafka_broker.plaintext)
    group_id = _group_id()
    tally = Tally("sigkill mid-callback")
    proc = _spawn_listener(tmp_path, kafka_broker.plaintext, topic.group, group_id, topic.short)
    try:
        wait_committed(admin, group_id, topic.full, 1, timeout=30)
        publisher = plain_client(kafka_broker.plaintext, topic.group)
        for i in range(10):
            publisher.publish(topic.short, alert(i))
            tally.send(i)
        publisher.publish(topic.short, alert(10, hang=True))
        tally.send(10)
        for i in range(11, 15):
            publisher.publish(topic.short, alert(i))
            tally.send(i)
        started = tmp_path / "started"
        assert wait_for(started.exists, 20), (
            "the listener process never ran the marked callback: "
            + (tmp_path / "listener.err").read_text()[-2000:]
        )
        # longer than the auto-commit period: a position stored before the callback
        # finished would now be committed (the reference's bug)
        time.sleep(2.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    done_first = [int(x) for x in (tmp_path / "done").read_text().split()]
    assert done_first == list(range(10))
    for i in done_first:
        tally.receive(i)
    print(
        f"\nfirst listener finished {len(done_first)} alerts, "
        "killed inside the callback of alert 10"
    )

    second = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
    )
    t0 = time.monotonic()
    with listening(second):
        # the dead member's session (10 s) must expire before the partition moves
        assert wait_for(lambda: tally.count() >= 15, 45), f"missing: {tally.lost_ids()}"
        time.sleep(0.5)
    print(f"second listener got alert 10 after {time.monotonic() - t0:.1f} s")
    assert second.error is None, second.error
    got_second = [alert_id(p) for _, p in second.payloads]
    assert got_second[0] == 10, got_second
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0, "alerts whose callback had returned were delivered again"


def test_two_listeners_of_one_group_share_the_alerts(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent", partitions=4)
    admin = admin_for(kafka_broker.plaintext)
    group_id = _group_id()
    tally = Tally("two listeners, one group, 4 partitions")
    a = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
        name="a",
    )
    b = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
        name="b",
    )
    with listening(a):
        wait_committed(admin, group_id, topic.full, 4)
        b.start()
        with listening(b):

            def shared() -> bool:
                members = group_members(admin, group_id)
                return len(members) == 2 and all(members)

            assert wait_for(shared, 30, 0.2), (
                f"group never balanced: {group_members(admin, group_id)}"
            )
            print(
                f"\nassignment: {[sorted(p for _, p in m) for m in group_members(admin, group_id)]}"
            )
            publisher = plain_client(kafka_broker.plaintext, topic.group)
            publisher.connect(topic.short)
            for i in range(200):
                # a key per alert spreads the alerts over the 4 partitions
                publisher.sessions[topic.short].write(alert(i), key=str(i))
                tally.send(i)
            publisher.flush_by_topic(topic.short)
            publisher.disconnect()
            assert wait_for(lambda: tally.count() >= 200, 30), f"missing: {tally.lost_ids()[:20]}"
            time.sleep(1.0)  # let a duplicate show up, if any
    assert a.error is None and b.error is None, (a.error, b.error)
    ids_a = [alert_id(p) for _, p in a.payloads]
    ids_b = [alert_id(p) for _, p in b.payloads]
    print(f"listener a got {len(ids_a)}, listener b got {len(ids_b)}")
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0
    assert not set(ids_a) & set(ids_b), "an alert reached both listeners"
    assert ids_a and ids_b, "one listener got nothing: the partitions are not shared"


def test_never_committed_group_records_its_start_position(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("superevent", partitions=2)
    admin = admin_for(kafka_broker.plaintext)
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    publisher.connect(topic.short)
    old = Tally()
    for i in range(4):  # before the group ever existed: not for this group
        publisher.sessions[topic.short].write(alert(f"old-{i}"), key=str(i))
        old.send(f"old-{i}")
    publisher.flush_by_topic(topic.short)
    group_id = _group_id()
    tally = Tally("never-committed group")

    first = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
    )
    with listening(first):
        positions = wait_committed(admin, group_id, topic.full, 2)
    assert first.error is None, first.error
    assert first.payloads == [], "a new group replayed alerts published before it existed"
    assert positions == end_offsets(admin, topic.full, 2), "start position is not the newest alert"
    print(f"\nfirst listener stopped before any alert; committed start positions {positions}")

    for i in range(6):
        publisher.sessions[topic.short].write(alert(i), key=str(i))
        tally.send(i)
    publisher.flush_by_topic(topic.short)
    publisher.disconnect()

    second = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
    )
    with listening(second):
        assert wait_for(lambda: tally.count() >= 6, 20), f"missing: {tally.lost_ids()}"
        time.sleep(0.5)
    assert second.error is None, second.error
    assert not any(str(alert_id(p)).startswith("old-") for _, p in second.payloads)
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0


def test_callback_exception_leaves_the_alert_to_the_next_listener(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("superevent")
    admin = admin_for(kafka_broker.plaintext)
    group_id = _group_id()
    tally = Tally("callback raises")

    class BoomError(RuntimeError):
        pass

    def explode(topic_name: str, payload: Any) -> None:
        if payload.get("boom"):
            raise BoomError(f"cannot handle alert {payload['id']}")

    first = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
        on_alert=explode,
    )
    with listening(first):
        wait_committed(admin, group_id, topic.full, 1)
        publisher = plain_client(kafka_broker.plaintext, topic.group)
        for i in range(6):
            publisher.publish(topic.short, alert(i, boom=(i == 3)))
            tally.send(i)
        first.thread.join(20)
        assert not first.alive, "listen() did not end when the callback raised"
    assert isinstance(first.error, BoomError), (
        f"listen() ended with {first.error!r}, not the callback's error"
    )
    assert [alert_id(p) for _, p in first.payloads] == [0, 1, 2, 3]
    positions = committed(admin, group_id, topic.full, 1)
    print(f"\nlisten() raised {first.error!r}; committed position {positions[0]}")
    assert positions[0] == 3, "the group's position is not at the failed alert"

    second = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group_id),
        topic.short,
        tally,
    )
    with listening(second):
        assert wait_for(lambda: tally.count() >= 6, 20), f"missing: {tally.lost_ids()}"
        time.sleep(0.5)
    assert second.error is None, second.error
    assert [alert_id(p) for _, p in second.payloads] == [3, 4, 5]
    lost, dup = tally.report()
    assert lost == 0
    assert dup == 0
