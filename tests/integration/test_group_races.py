"""Consumer-group races on the real broker: replays re-balanced mid-way, new groups starting.

* ``listen(since=...)`` with a consumer group moves the group to the replay's start before
  joining it (``AlertReader._rewind_group``: looked up by time and committed for every
  partition, never inside a re-balance). A second member joining and leaving while the
  first one replays moves partitions back and forth: every alert published at or after
  ``since`` must still reach some member, none from before it; a second member with the
  same ``since`` joins the group where it is, with a warning (Kafka moves only a group
  without members); a look-up the broker cannot answer ends ``listen()`` with a clear
  error. (Before, each member looked its partitions up as they came, inside the
  re-balance: a partition given away before it was read kept the group's old position,
  losing replayed alerts or delivering older ones, and a failed look-up was retried
  silently without the replay.)
* A brand-new group gets the end of every partition committed before its first member
  joins (``AlertReader._position_group``). Two members starting at the same moment race
  to do that: nothing published once they listen may be lost, nothing published before
  they started may be delivered.

Each test prints ``sent=N received=N lost=N duplicated=N`` (:class:`Tally`) per scenario.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from _delivery_helpers import (
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
    wait_for,
    warnings_from_igwn_alert,
)
from _helpers import produce
from confluent_kafka.admin import NewTopic

import igwn_alert.exceptions

pytestmark = pytest.mark.timeout(120)

READY = 20.0  # seconds for a listener to report listening
PARTITIONS = 8
BUSY = range(0, PARTITIONS, 2)  # partitions with alerts after `since`; the odd ones have none
OLD_EACH, NEW_EACH = 3, 40
SLOW = 0.05  # seconds per callback: the replay lasts a few seconds, time to re-balance in
#: The controller fences a silent node after 3 s instead of 9 s.
FAST_FAILOVER = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


class _Gated(Listener):
    """A :class:`Listener` whose ``listen()`` starts once every party reached ``barrier``."""

    def __init__(
        self, *args: Any, barrier: threading.Barrier, delay: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier
        self.delay = delay

    def _run(self) -> None:
        self.barrier.wait(10)
        if self.delay:
            time.sleep(self.delay)  # a start a little after the other member's
        super()._run()


def _group_id() -> str:
    return f"races-{uuid.uuid4().hex[:10]}"


def _slow(topic: str, payload: Any) -> None:
    time.sleep(SLOW)


def _publish(bootstrap: str, topic: str, label: str, partitions: Any, each: int) -> list[str]:
    """Write ``each`` alerts to every one of ``partitions``; return their ids in order."""
    ids = []
    for p in partitions:
        batch = [alert(f"{label}-{p}-{i}") for i in range(each)]
        produce(bootstrap, topic, batch, partition=p)
        ids += [a["id"] for a in batch]
    return ids


def _instant() -> datetime:
    """A moment strictly between alerts written before and after the call (ms stamps)."""
    time.sleep(0.005)
    moment = datetime.now(timezone.utc)
    time.sleep(0.005)
    return moment


def _holders(admin: Any, group_id: str) -> list[set[tuple[str, int]]]:
    """The non-empty assignments of the group's members (empty while it cannot say)."""
    try:
        return [a for a in group_members(admin, group_id) if a]
    except Exception:  # noqa: BLE001 - coordinator busy re-balancing: ask again
        return []


def _delivered(*listeners: Listener) -> list[Any]:
    return [alert_id(p) for lst in listeners for _, p in lst.payloads]


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize("history", ["new group", "group that read everything"])
@pytest.mark.parametrize("second_since", ["same since", "no since"])
def test_replay_since_while_a_member_joins_and_leaves(
    kafka_broker: Any, make_topic: Any, history: str, second_since: str, caplog: Any
) -> None:
    """A group replaying ``since`` that a second member joins and leaves mid-replay delivers
    every alert from ``since`` on (none lost) and none from before it.

    The second member uses the same ``since`` or none; the group is new, or already read
    every alert (its committed positions are past ``since``: a re-processing replay).
    """
    bootstrap = kafka_broker.plaintext
    topic = make_topic("superevent", partitions=PARTITIONS)
    admin = admin_for(bootstrap)
    group_id = _group_id()
    veteran = None
    if history != "new group":
        veteran = Listener(
            plain_client(bootstrap, topic.group, consumer_group=group_id),
            topic.short,
            name="veteran",
        ).start()
        assert veteran.client.listening.wait(READY), (
            "the first listener of the group never listened"
        )

    old = _publish(bootstrap, topic.full, "old", range(PARTITIONS), OLD_EACH)
    since = _instant()
    new = _publish(bootstrap, topic.full, "new", BUSY, NEW_EACH)

    if veteran is not None:  # the group read everything, committed, and is empty again
        assert wait_for(lambda: len(veteran.payloads) >= len(old) + len(new), 20)
        veteran.stop()
        assert veteran.error is None, repr(veteran.error)
        ends = end_offsets(admin, topic.full, PARTITIONS)

        def settled() -> bool:
            try:
                positions = committed(admin, group_id, topic.full, PARTITIONS)
                return not group_members(admin, group_id) and positions == ends
            except Exception:  # noqa: BLE001 - coordinator busy: ask again
                return False

        assert wait_for(settled, 20), "the group did not commit what it read"

    tally = Tally(f"replay since, second member {second_since}, {history}")
    for i in new:
        tally.send(i)
    first = Listener(
        plain_client(bootstrap, topic.group, consumer_group=group_id),
        topic.short,
        tally,
        on_alert=_slow,
        since=since,
        name="first",
    )
    second = Listener(
        plain_client(bootstrap, topic.group, consumer_group=group_id),
        topic.short,
        tally,
        on_alert=_slow,
        since=since if second_since == "same since" else None,
        name="second",
    )
    shares: list[set[tuple[str, int]]] = []
    sentinels = [f"end-{p}" for p in range(PARTITIONS)]
    with listening(first):
        assert wait_for(lambda: len(first.payloads) >= 3, READY), "the replay never started"
        with listening(second):
            assert wait_for(lambda: len(_holders(admin, group_id)) == 2, READY), (
                f"the second member never got partitions: {group_members(admin, group_id)}"
            )
            shares = _holders(admin, group_id)
            wait_for(lambda: len(second.payloads) > 0, 5)  # it may hold only quiet partitions
        everything = {(topic.full, p) for p in range(PARTITIONS)}
        assert wait_for(lambda: _holders(admin, group_id) == [everything], 30), (
            f"the first member did not get every partition back: {group_members(admin, group_id)}"
        )
        # one last alert per partition: once each arrived, every partition was read past
        # all the alerts above (a partition is read in order), so what is missing is lost
        for p, sentinel in enumerate(sentinels):
            produce(bootstrap, topic.full, [alert(sentinel)], partition=p)
            tally.send(sentinel)
        wait_for(lambda: all(tally.got(s) for s in sentinels), 30)

    print(
        f"\npartitions per member while both were in: {[sorted(p for _, p in s) for s in shares]}"
    )
    lost, _dup = tally.report()
    early = sorted(set(_delivered(first, second)) & set(old))
    print(f"delivered from before since: {len(early)} {early[:12]}")
    assert first.error is None and second.error is None, (first.error, second.error)
    assert all(tally.got(s) for s in sentinels), "the last alerts never arrived"
    problems = []
    if lost:
        problems.append(f"{lost} alert(s) from since on lost: {tally.lost_ids()[:10]}")
    if early:
        problems.append(f"{len(early)} alert(s) from before since delivered: {early[:10]}")
    assert not problems, "; ".join(problems)
    said = [r.getMessage() for r in warnings_from_igwn_alert(caplog.records)]
    joined_as_is = [m for m in said if "has members listening" in m]
    if second_since == "same since":  # the group had a member: it was not moved again
        assert joined_as_is, f"no warning that the second member joined as is: {said[:6]}"
    else:
        assert not joined_as_is, joined_as_is


def test_replay_lookup_that_cannot_be_answered_raises(make_cluster: Any, caplog: Any) -> None:
    """A member joining a replaying group whose look-up of ``since`` cannot be answered (the
    only replica of its partitions is down) ends ``listen()`` with a clear error naming the
    topic, instead of listening on without the replay."""
    cluster = make_cluster(3, extra_properties=FAST_FAILOVER)
    victim, survivor = cluster.nodes[-1], cluster.nodes[0]
    bootstrap = survivor.plaintext
    admin = admin_for(bootstrap)
    group, short = "gracedb-races", "superevent"
    full = f"{group}.{short}"
    placed = NewTopic(full, num_partitions=2, replica_assignment=[[victim.node_id]] * 2)
    admin.create_topics([placed], request_timeout=30)[full].result()

    def leaders() -> set[int]:
        parts = admin.list_topics(topic=full, timeout=5).topics[full].partitions
        return {p.leader for p in parts.values()}

    assert wait_for(lambda: leaders() == {victim.node_id}, 30), leaders()
    old = _publish(bootstrap, full, "old", range(2), OLD_EACH)
    since = _instant()
    new = _publish(bootstrap, full, "new", range(2), 5)
    tally = Tally("replay look-up unanswerable (partitions without a leader)")
    for i in new:
        tally.send(i)
    group_id = _group_id()
    first = Listener(
        plain_client(bootstrap, group, consumer_group=group_id), short, tally, since=since
    )
    second = Listener(
        plain_client(bootstrap, group, consumer_group=group_id, retry_wait=0.5),
        short,
        tally,
        since=since,
        name="second",
    )
    with listening(first):
        assert wait_for(lambda: not tally.lost_ids(), READY), "the replay did not deliver"
        victim.kill()
        assert wait_for(lambda: leaders() == {-1}, 20), f"leaders still {leaders()}"
        t0 = time.monotonic()
        with listening(second):
            ended = wait_for(lambda: not second.alive, 20)
            took = time.monotonic() - t0
            holders = _holders(admin, group_id)

    tally.report()
    early = sorted(set(_delivered(first, second)) & set(old))
    said = [r.getMessage() for r in warnings_from_igwn_alert(caplog.records)]
    print(f"second member: listen() {'raised' if ended else 'still running'} after {took:.1f} s")
    print(f"  error: {second.error!r}")
    print(f"  warnings logged: {said[:4]}")
    print(f"  partitions held then: {holders}")
    assert first.error is None, repr(first.error)
    assert not early, f"alerts from before since delivered: {early}"
    assert ended, (
        "listen() went on after the replay look-up failed (the replay was dropped for the "
        f"partitions it could not look up); it logged: {said[:4]}"
    )
    assert isinstance(second.error, igwn_alert.exceptions.KafkaException), repr(second.error)
    assert full in str(second.error), f"the error does not name the topic: {second.error}"


# --------------------------------------------------------------------------- new groups

STAGGER = (0.0, 0.0, 0.002, 0.01, 0.03)  # seconds the second member starts after the first


def test_new_group_members_racing_to_start_lose_nothing(kafka_broker: Any, make_topic: Any) -> None:
    """Two members of a brand-new group started together (5 fresh groups): nothing published
    once both listen is lost, nothing published before they started is delivered."""
    bootstrap = kafka_broker.plaintext
    topic = make_topic("superevent", partitions=4)
    results = []
    for rnd, delay in enumerate(STAGGER):
        before = _publish(bootstrap, topic.full, f"before{rnd}", range(4), 2)
        group_id = _group_id()
        tally = Tally(f"new group {rnd + 1}, second member {delay * 1000:.0f} ms later")
        barrier = threading.Barrier(2)
        members = [
            _Gated(
                plain_client(bootstrap, topic.group, consumer_group=group_id),
                topic.short,
                tally,
                barrier=barrier,
                delay=d,
                name=f"member{k}",
            )
            for k, d in enumerate((0.0, delay))
        ]
        with listening(*members):
            for m in members:
                assert m.client.listening.wait(READY), f"{m.thread.name} never listened"
            after = _publish(bootstrap, topic.full, f"after{rnd}", range(4), 6)
            for i in after:
                tally.send(i)
            wait_for(lambda t=tally: not t.lost_ids(), 15)
        lost, _dup = tally.report()
        early = sorted(set(_delivered(*members)) & set(before))
        print(f"delivered from before the start: {len(early)} {early[:8]}")
        assert all(m.error is None for m in members), [m.error for m in members]
        results.append((lost, early))
    assert all(lost == 0 for lost, _ in results), f"alerts lost: {results}"
    assert not any(early for _, early in results), f"alerts from before delivered: {results}"


class _Flow:
    """Publish alerts one after another in a thread until :meth:`end`.

    An alert whose ``publish()`` began after one of ``members`` reported listening goes to
    ``tally`` (it must be delivered); one delivered to the broker before :meth:`start_members`
    was called goes to ``before`` (it must not be).
    """

    def __init__(self, client: Any, short: str, label: str, members: list[Listener]) -> None:
        self.client, self.short, self.label, self.members = client, short, label, members
        self.tally = Tally(label)
        self.before: list[str] = []
        self.failures: list[BaseException] = []
        self._started, self._stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                listened = any(m.client.listening.is_set() for m in self.members)
                name = f"{self.label}-{i}"
                self.client.publish(self.short, alert(name))
                if listened:
                    self.tally.send(name)
                elif not self._started.is_set():
                    self.before.append(name)
                i += 1
                self._stop.wait(0.004)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failures.append(exc)

    def start_members(self) -> None:
        self._started.set()

    def end(self) -> None:
        self._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive() and not self.failures, self.failures


def test_new_group_members_racing_while_alerts_flow(kafka_broker: Any, make_topic: Any) -> None:
    """Alerts published without a pause while two members of a brand-new group start
    together (3 fresh groups): every alert published after the first member reported
    listening is delivered, none published before they started."""
    bootstrap = kafka_broker.plaintext
    topic = make_topic("superevent", partitions=4)
    publisher = plain_client(bootstrap, topic.group)
    results = []
    for rnd in range(3):
        group_id = _group_id()
        barrier = threading.Barrier(2)
        members: list[Listener] = []
        flow = _Flow(publisher, topic.short, f"flow{rnd}", members)
        tally = flow.tally
        members += [
            _Gated(
                plain_client(bootstrap, topic.group, consumer_group=group_id),
                topic.short,
                tally,
                barrier=barrier,
                name=f"member{k}",
            )
            for k in range(2)
        ]
        assert wait_for(lambda f=flow: len(f.before) >= 20, 20), "the publisher does not publish"
        flow.start_members()
        with listening(*members):
            for m in members:
                assert m.client.listening.wait(READY), f"{m.thread.name} never listened"
            assert wait_for(lambda t=tally: len(t.sent) >= 100, 30), "too few alerts after"
            flow.end()
            wait_for(lambda t=tally: not t.lost_ids(), 15)
        lost, _dup = tally.report()
        early = sorted(set(_delivered(*members)) & set(flow.before))
        print(f"published before the start: {len(flow.before)}, delivered of those: {len(early)}")
        assert all(m.error is None for m in members), [m.error for m in members]
        results.append((lost, early))
    assert all(lost == 0 for lost, _ in results), f"alerts lost: {results}"
    assert not any(early for _, early in results), f"alerts from before delivered: {results}"
