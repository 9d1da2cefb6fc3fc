"""Consumer-group replay (``since=``: ``_rewind_group``/``_starts``/``_commit_start``).

Each scenario counts ``sent``/``received``/``lost``/``old`` (delivered although published
before ``since``) exactly.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from _delivery_helpers import Listener, Tally, admin_for, alert, alert_id, create_topic, listening
from _helpers import plain_client, produce, wait_for
from confluent_kafka.admin import NewTopic

import igwn_alert
from igwn_alert.exceptions import AuthorizationError

pytestmark = pytest.mark.timeout(90)


def _instant() -> datetime:
    time.sleep(0.01)
    moment = datetime.now(timezone.utc)
    time.sleep(0.01)
    return moment


def _publish(bootstrap: str, topic: str, label: str, partitions: int, each: int) -> list[str]:
    ids = []
    for p in range(partitions):
        batch = [alert(f"{label}-{p}-{i}") for i in range(each)]
        produce(bootstrap, topic, batch, partition=p)
        ids += [a["id"] for a in batch]
    return ids


def _ids(*listeners: Listener) -> list[Any]:
    return [alert_id(p) for lst in listeners for _, p in lst.payloads]


def _group() -> str:
    return f"adv-{uuid.uuid4().hex[:10]}"


def _read_all(bootstrap: str, topic: Any, group: str, ids: list[str]) -> None:
    """A member of ``group`` that reads everything and stops (its positions committed)."""
    lst = Listener(
        plain_client(bootstrap, topic.group, consumer_group=group), topic.short, since="earliest"
    )
    with listening(lst):
        assert wait_for(lambda: set(_ids(lst)) >= set(ids), 30), (len(lst.payloads), lst.error)
    time.sleep(0.5)


@pytest.mark.parametrize("history", ["new group", "group that read everything"])
def test_since_earliest_with_a_group_replays_every_partition(
    kafka_broker: Any, make_topic: Any, history: str
) -> None:
    parts = 6
    topic = make_topic("earliest", partitions=parts)
    group = _group()
    if history != "new group":
        # the group exists: a member joined before anything was published
        pre = Listener(
            plain_client(kafka_broker.plaintext, topic.group, consumer_group=group), topic.short
        )
        with listening(pre):
            assert wait_for(pre.client.listening.is_set, 20)
    ids = _publish(kafka_broker.plaintext, topic.full, "a", parts, 5)
    if history != "new group":
        _read_all(kafka_broker.plaintext, topic, group, ids)
    lst = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        topic.short,
        since="earliest",
    )
    with listening(lst):
        assert wait_for(lambda: len(lst.payloads) >= len(ids), 30), len(lst.payloads)
        time.sleep(0.5)
    got = _ids(lst)
    assert lst.error is None, repr(lst.error)
    assert sorted(got) == sorted(ids), f"lost={set(ids) - set(got)} dup={len(got) - len(set(got))}"


def test_replay_over_many_partitions_and_a_topic_created_meanwhile(
    kafka_broker: Any, make_topic: Any
) -> None:
    parts = 24
    topic = make_topic("many", partitions=parts)
    later = f"{topic.group}.later"
    group = _group()
    old = _publish(kafka_broker.plaintext, topic.full, "old", parts, 2)
    _read_all(kafka_broker.plaintext, topic, group, old)
    since = _instant()
    new = _publish(kafka_broker.plaintext, topic.full, "new", parts, 4)
    lst = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        [topic.short, "later"],
        since=since,
        on_alert=lambda t, p: time.sleep(0.02),
    )
    admin = admin_for(kafka_broker.plaintext)
    try:
        with listening(lst):
            assert wait_for(lambda: len(lst.payloads) >= 5, 20)
            create_topic(kafka_broker.plaintext, later, partitions=3)
            late = _publish(kafka_broker.plaintext, later, "late", 3, 3)
            assert wait_for(lambda: set(_ids(lst)) >= set(new) | set(late), 40), len(lst.payloads)
            time.sleep(0.5)
    finally:
        admin.delete_topics([later])
    got = _ids(lst)
    assert lst.error is None, repr(lst.error)
    assert not set(old) & set(got), f"old delivered: {sorted(set(old) & set(got))[:5]}"
    assert sorted(got) == sorted(new + late)


def test_replay_right_after_the_previous_member_stopped(
    kafka_broker: Any, make_topic: Any, caplog: Any
) -> None:
    """Stop the group's listener, then at once replay with since: the replay happens."""
    parts = 4
    topic = make_topic("handover", partitions=parts)
    group = _group()
    since = _instant()
    ids = _publish(kafka_broker.plaintext, topic.full, "a", parts, 5)
    first = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group), topic.short
    )
    first.start()
    assert wait_for(first.client.listening.is_set, 20)
    more = _publish(kafka_broker.plaintext, topic.full, "b", parts, 5)
    assert wait_for(lambda: set(_ids(first)) >= set(more), 20)
    first.stop()
    caplog.set_level(logging.WARNING, logger="igwn_alert")
    second = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        topic.short,
        since=since,
    )
    with listening(second):
        wait_for(lambda: len(second.payloads) >= len(ids + more), 20)
        time.sleep(0.5)
    got = _ids(second)
    warned = [r.getMessage() for r in caplog.records if "members listening" in r.getMessage()]
    print(f"received={len(got)} of {len(ids + more)}; warned={warned}")
    assert sorted(got) == sorted(ids + more), (
        f"replay did not happen: received {len(got)} of {len(ids + more)}; warning: {warned}"
    )


def test_two_members_with_different_since(kafka_broker: Any, make_topic: Any) -> None:
    """The first member's replay holds; the second joins where the group is (no loss)."""
    parts = 4
    topic = make_topic("twosince", partitions=parts)
    group = _group()
    old = _publish(kafka_broker.plaintext, topic.full, "old", parts, 3)
    t1 = _instant()
    mid = _publish(kafka_broker.plaintext, topic.full, "mid", parts, 3)
    t2 = _instant()
    new = _publish(kafka_broker.plaintext, topic.full, "new", parts, 3)
    tally = Tally()
    for i in mid + new:
        tally.send(i)
    a = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        topic.short,
        tally=tally,
        since=t1,
        on_alert=lambda t, p: time.sleep(0.05),
    )
    b = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        topic.short,
        tally=tally,
        since=t2,
    )
    with listening(a):
        assert wait_for(a.client.listening.is_set, 20)
        with listening(b):
            assert wait_for(lambda: set(_ids(a, b)) >= set(mid + new), 30)
            time.sleep(0.5)
    got = _ids(a, b)
    assert not set(old) & set(got)
    assert not set(mid + new) - set(got), f"lost {sorted(set(mid + new) - set(got))}"


def _sasl_client(broker: Any, auth: Any, group: str) -> igwn_alert.client:
    """A client of the SCRAM listener in a consumer group of its own."""
    host, port = broker.sasl.rsplit(":", 1)
    return igwn_alert.client(
        auth=auth, server=f"kafka://{host}", port=int(port), group=group, consumer_group=_group()
    )


def test_replay_with_a_credential_without_the_group_acl_is_an_authorization_error(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    topic = make_topic("noacl", partitions=2)
    _publish(kafka_broker.plaintext, topic.full, "a", 2, 2)
    user = make_user(read=[topic.full], groups=("some-other-group",))
    problems = []
    for since in ("earliest", _instant(), None):
        client = _sasl_client(kafka_broker, hop_auth_for(user), topic.group)
        started = time.monotonic()
        try:
            client.listen(lambda topic, payload: None, topic.short, since=since)
        except Exception as exc:  # noqa: BLE001 - looked at below
            took = time.monotonic() - started
            if not isinstance(exc, AuthorizationError) or "group" not in str(exc).lower():
                problems.append(f"since={since!r}: {type(exc).__name__}: {exc} ({took:.1f} s)")
        else:
            problems.append(f"since={since!r}: listen() returned")
    print("PROBLEMS", *problems, sep="\n  ")
    assert not problems, problems


def test_replay_with_a_credential_that_may_only_describe_the_topic(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    topic = make_topic("descronly", partitions=2)
    _publish(kafka_broker.plaintext, topic.full, "a", 2, 2)
    user = make_user(describe=[topic.full])
    client = _sasl_client(kafka_broker, hop_auth_for(user), topic.group)
    started = time.monotonic()
    with pytest.raises(AuthorizationError) as info:
        client.listen(lambda topic, payload: None, topic.short, since="earliest")
    assert time.monotonic() - started < 15
    assert topic.full in str(info.value), str(info.value)


def test_describe_but_not_list_topic_is_listened(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    """A credential that can describe (read) one topic but not list all of them."""
    topic = make_topic("onlyone", partitions=2)
    user = make_user(read=[topic.full])
    host, port = kafka_broker.sasl.rsplit(":", 1)
    got: list[Any] = []
    ids = _publish(kafka_broker.plaintext, topic.full, "a", 2, 3)
    client = igwn_alert.client(
        auth=hop_auth_for(user), server=f"kafka://{host}", port=int(port), group=topic.group
    )
    client.listen(
        lambda topic, payload: got.append(alert_id(payload)),
        topic.short,
        since="earliest",
        until_eos=True,
    )
    assert sorted(got) == sorted(ids)


def test_since_for_a_missing_topic_created_later_gets_all_its_alerts(
    kafka_broker: Any, make_topic: Any
) -> None:
    topic = make_topic("present")
    missing = f"{topic.group}.missing"
    group = _group()
    lst = Listener(
        plain_client(kafka_broker.plaintext, topic.group, consumer_group=group),
        [topic.short, "missing"],
        since="earliest",
    )
    admin = admin_for(kafka_broker.plaintext)
    try:
        with listening(lst):
            assert wait_for(lst.client.listening.is_set, 20)
            admin.create_topics([NewTopic(missing, 2, 1)])[missing].result()
            ids = _publish(kafka_broker.plaintext, missing, "m", 2, 3)
            assert wait_for(lambda: set(_ids(lst)) >= set(ids), 40), _ids(lst)
    finally:
        admin.delete_topics([missing])
    assert sorted(_ids(lst)) == sorted(ids)


@pytest.mark.timeout(150)
def test_replay_with_retry_on_fatal_survives_a_broker_down_before_it_started(
    kafka_private_broker: Any,
) -> None:
    """The broker is killed before the replay started and restarted: the replay happens."""
    from _kafka_broker.testing import TopicFactory

    parts = 3
    t = TopicFactory(kafka_private_broker)(partitions=parts)
    bootstrap = kafka_private_broker.plaintext
    time.sleep(3.0)  # leaders elected
    group = _group()
    old = _publish(bootstrap, t.full, "old", parts, 3)
    _read_all(bootstrap, t, group, old)
    since = _instant()
    new = _publish(bootstrap, t.full, "new", parts, 4)
    kafka_private_broker.kill()
    lst = Listener(
        plain_client(bootstrap, t.group, consumer_group=group, retry_on_fatal=True),
        t.short,
        since=since,
    )
    with listening(lst):
        time.sleep(13.0)  # past one start-up's metadata time-out (10 s)
        kafka_private_broker.start()
        more = _publish(bootstrap, t.full, "more", parts, 2)
        wait_for(lambda: set(_ids(lst)) >= set(new + more), 60)
        time.sleep(0.5)
    got = _ids(lst)
    print(f"sent={len(new + more)} received={len(got)} old={len(set(old) & set(got))}")
    assert lst.error is None, repr(lst.error)
    assert not set(old) & set(got), "alerts from before since delivered"
    assert not set(new + more) - set(got), f"lost {sorted(set(new + more) - set(got))}"
