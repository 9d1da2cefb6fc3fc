"""Adversarial attacks on the redesigned listen loop (issue 9), on the real broker.

Each test is one way a pipeline operator's worst night could try to break a guarantee of
``docs/guide/delivery.rst``: lose an alert, make ``listen()`` unstoppable, make it die for
good on bad input, or leak a credential. A failing test here is a finding.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest
from _helpers import host_port, n_of, plain_client, produce, wait_for
from _shared import Run

import igwn_alert

RECEIVE = 20.0


# -- until_eos ---------------------------------------------------------------------------------


def test_group_until_eos_on_a_missing_topic_returns(kafka_broker, make_topic):
    """A consumer-group listener with ``until_eos=True`` on a topic that does not exist has
    nothing to read: it must return (a private reader does at once)."""
    existing = make_topic()
    c = plain_client(
        kafka_broker.plaintext, existing.group, consumer_group=f"cg-eos-{uuid.uuid4().hex[:6]}"
    )
    run = Run(c, lambda topic, payload: None, "no-such-topic", until_eos=True)
    run.thread.join(30.0)
    alive = run.thread.is_alive()
    if alive:
        c.stop()
        run.thread.join(5)
    print(f"\nuntil_eos group on a missing topic: still running after 30 s = {alive}")
    assert not alive, "listen(until_eos=True) with a consumer group never returned"
    assert run.error is None or isinstance(run.error, igwn_alert.exceptions.KafkaException)


def test_group_until_eos_with_one_missing_and_one_empty_topic_returns(kafka_broker, make_topic):
    existing = make_topic()
    c = plain_client(
        kafka_broker.plaintext, existing.group, consumer_group=f"cg-eos2-{uuid.uuid4().hex[:6]}"
    )
    produce(kafka_broker.plaintext, existing.full, [{"n": 1}])
    got: list[Any] = []
    run = Run(
        c,
        lambda topic, payload: got.append(n_of(payload)),
        [existing.short, "no-such-topic"],
        until_eos=True,
        since="earliest",
    )
    run.thread.join(30.0)
    alive = run.thread.is_alive()
    if alive:
        c.stop()
        run.thread.join(5)
    print(f"\ngot={got} still running after 30 s = {alive}")
    assert not alive
    assert got == [1]


# -- a topic created while the group was down --------------------------------------------------


def test_group_gets_alerts_of_a_topic_created_while_all_members_were_down(kafka_broker, make_topic):
    """The group listens to [a, b]; b does not exist yet. Every member stops; b is created
    and an alert published to it (acknowledged). The group restarts: that alert is the
    group's (it was subscribed to b all along), and the guide says topics created later
    start at their first alert."""
    a = make_topic("alpha")
    group = f"cg-late-{uuid.uuid4().hex[:6]}"
    got: list[Any] = []
    cb = lambda topic, payload: got.append((topic, n_of(payload)))  # noqa: E731
    c1 = plain_client(kafka_broker.plaintext, a.group, consumer_group=group)
    run1 = Run(c1, cb, ["alpha", "beta"])
    run1.ready()
    produce(kafka_broker.plaintext, a.full, [{"n": 1}])
    assert wait_for(lambda: ("alpha", 1) in got, RECEIVE), got
    run1.stop()
    # while the group is down: beta appears and gets an alert
    b = make_topic("beta", group=a.group)
    produce(kafka_broker.plaintext, b.full, [{"n": 2}])
    c2 = plain_client(kafka_broker.plaintext, a.group, consumer_group=group)
    run2 = Run(c2, cb, ["alpha", "beta"])
    run2.ready()
    delivered = wait_for(lambda: ("beta", 2) in got, 15.0)
    run2.stop()
    print(f"\nsent=2 got={got} lost={0 if delivered else 1}")
    assert delivered, f"alert published on beta while the group was down was lost: {got}"


# -- stop() in hard states ---------------------------------------------------------------------


def test_stop_of_a_group_listener_while_its_broker_is_down_is_prompt(kafka_private_broker):
    """The guide: stop() ends listen() within 0.5 s in every state. A group member whose
    broker was SIGKILLed: listen() sits in AlertReader.close() -> Consumer.close()."""
    from _kafka_broker.testing import TopicFactory

    topics = TopicFactory(kafka_private_broker)
    t = topics()
    c = plain_client(
        kafka_private_broker.plaintext, t.group, consumer_group=f"cg-down-{uuid.uuid4().hex[:6]}"
    )
    got: list[Any] = []
    run = Run(c, lambda topic, payload: got.append(n_of(payload)), t.short)
    run.ready()
    produce(kafka_private_broker.plaintext, t.full, [{"n": 1}])
    assert wait_for(lambda: got == [1], RECEIVE), got
    kafka_private_broker.kill()
    time.sleep(3.0)  # the outage is noticed
    took = run.stop()
    print(f"\nstop() with the broker down (consumer group): listen() returned in {took:.2f} s")
    assert run.error is None, run.error
    assert took < 0.5, f"listen() took {took:.2f} s to return after stop() (guide: 0.5 s)"


def test_stop_of_a_private_listener_while_its_broker_is_down_is_prompt(kafka_private_broker):
    from _kafka_broker.testing import TopicFactory

    topics = TopicFactory(kafka_private_broker)
    t = topics()
    c = plain_client(kafka_private_broker.plaintext, t.group)
    run = Run(c, lambda topic, payload: None, t.short)
    run.ready()
    kafka_private_broker.kill()
    time.sleep(3.0)
    took = run.stop()
    print(f"\nstop() with the broker down (private): listen() returned in {took:.2f} s")
    assert run.error is None, run.error
    assert took < 0.5, f"listen() took {took:.2f} s to return after stop() (guide: 0.5 s)"


def test_stop_of_a_group_listener_connecting_to_a_dead_port_is_prompt():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    c = plain_client(
        f"127.0.0.1:{port}", "gracedb-x", consumer_group="cg-dead", retry_on_fatal=True
    )
    run = Run(c, lambda topic, payload: None, "superevent")
    worst = 0.0
    for delay in (0.3, 1.7, 4.0):  # connecting, between two attempts, during retry
        time.sleep(delay)
        took = run.stop()
        worst = max(worst, took)
        run = Run(c, lambda topic, payload: None, "superevent")
    run.stop()
    print(f"\nworst stop() while connecting to a dead port: {worst:.2f} s")
    assert worst < 0.5, f"listen() took {worst:.2f} s to return after stop()"


# -- stop() that came before listen() ----------------------------------------------------------


# -- credentials never in a message or a log line ----------------------------------------------


def test_no_password_from_the_server_url_in_logs_or_errors(caplog):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    secret = "hunter2-" + uuid.uuid4().hex[:8]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        try:
            c = igwn_alert.client(
                username="alice",
                password=secret,
                server=f"kafka://alice:{secret}@127.0.0.1/",
                port=port,
                group="gracedb-x",
            )
            texts.append(repr(c))
            c.listen(lambda topic, payload: None, "superevent")
        except Exception as exc:  # noqa: BLE001 - its text is looked at
            texts.append(f"{type(exc).__name__}: {exc}")
    texts += [r.getMessage() for r in caplog.records]
    leaked = [t for t in texts if secret in t]
    print(f"\n{len(texts)} texts, {len(leaked)} with the password; first: {texts[:2]}")
    assert not leaked, leaked[:3]


# -- a rebalance during a slow callback, two members -------------------------------------------


def test_two_members_rebalance_during_slow_callbacks_lose_nothing(kafka_broker, make_topic):
    t = make_topic(partitions=4)
    group = f"cg-reb-{uuid.uuid4().hex[:6]}"
    got: list[Any] = []
    lock = threading.Lock()

    def slow(topic: str, payload: Any) -> None:
        time.sleep(0.3)
        with lock:
            got.append(n_of(payload))

    config = {"max.poll.interval.ms": 6000, "session.timeout.ms": 6000}
    a = plain_client(kafka_broker.plaintext, t.group, consumer_group=group, config=config)
    run_a = Run(a, slow, t.short)
    run_a.ready()
    sent = list(range(60))
    produce(kafka_broker.plaintext, t.full, [{"n": n} for n in sent[:30]])
    time.sleep(1.0)  # A is inside slow callbacks
    b = plain_client(kafka_broker.plaintext, t.group, consumer_group=group, config=config)
    run_b = Run(b, slow, t.short)
    produce(kafka_broker.plaintext, t.full, [{"n": n} for n in sent[30:]])
    time.sleep(2.0)
    run_a.stop()  # A leaves mid-batch, B takes everything over
    wait_for(lambda: set(sent) <= set(got), 60.0)
    run_b.stop()
    lost = sorted(set(sent) - set(got))
    print(
        f"\nsent={len(sent)} received={len(set(got))} lost={len(lost)} "
        f"dup={len(got) - len(set(got))}"
    )
    assert run_a.error is None and run_b.error is None, (run_a.error, run_b.error)
    assert not lost, lost


# -- a member SIGKILLed mid-batch --------------------------------------------------------------

_MEMBER = r"""
import os, sys, time, warnings
sys.path.insert(0, {helpers!r})
from _delivery_helpers import plain_client
warnings.simplefilter("ignore")
out = open({out!r}, "a")
def cb(topic, payload):
    out.write("%d %d\n" % (os.getpid(), payload["n"]))
    out.flush()
    time.sleep(0.05)
c = plain_client({bootstrap!r}, {group!r}, consumer_group={cg!r})
c.listen(cb, {short!r})
"""


def test_a_member_sigkilled_mid_batch_loses_nothing(kafka_broker, make_topic, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    t = make_topic(partitions=3)
    cg = f"cg-kill-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "seen.txt"
    out.touch()
    script = _MEMBER.format(
        helpers=str(Path(__file__).resolve().parent),
        out=str(out),
        bootstrap=kafka_broker.plaintext,
        group=t.group,
        cg=cg,
        short=t.short,
    )

    def seen() -> list[int]:
        return [int(line.split()[1]) for line in out.read_text().splitlines() if line.strip()]

    # position the group first (a brand-new group's start is "not guaranteed")
    c0 = plain_client(kafka_broker.plaintext, t.group, consumer_group=cg)
    r0 = Run(c0, lambda topic, payload: None, t.short)
    r0.ready()
    r0.stop()
    first = subprocess.Popen([sys.executable, "-c", script])
    sent = list(range(200))
    produce(kafka_broker.plaintext, t.full, [{"n": n} for n in sent])
    try:
        assert wait_for(lambda: len(seen()) >= 40, 60.0), len(seen())
        os.kill(first.pid, signal.SIGKILL)  # in the middle of a batch of buffered alerts
        first.wait(10)
        at_kill = len(seen())
        second = subprocess.Popen([sys.executable, "-c", script])
        try:
            wait_for(lambda: set(sent) <= set(seen()), 90.0)
        finally:
            second.send_signal(signal.SIGINT)
            try:
                second.wait(10)
            except subprocess.TimeoutExpired:
                second.kill()
                second.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
    got = seen()
    lost = sorted(set(sent) - set(got))
    print(
        f"\nsent={len(sent)} seen_before_kill={at_kill} received={len(set(got))} "
        f"lost={len(lost)} duplicated={len(got) - len(set(got))}"
    )
    assert not lost, lost[:20]


# -- stop() while joining a group and during a re-balance --------------------------------------


def test_stop_while_joining_a_group_and_during_a_rebalance_is_prompt(kafka_broker, make_topic):
    t = make_topic(partitions=4)
    cg = f"cg-join-{uuid.uuid4().hex[:6]}"
    times: dict[str, float] = {}
    for delay in (0.05, 0.5, 1.5):  # joining: before the group assigned anything
        c = plain_client(kafka_broker.plaintext, t.group, consumer_group=cg)
        run = Run(c, lambda topic, payload: None, t.short)
        time.sleep(delay)
        times[f"joining+{delay}"] = run.stop()
        assert run.error is None, run.error
    a = plain_client(kafka_broker.plaintext, t.group, consumer_group=cg)
    run_a = Run(a, lambda topic, payload: time.sleep(0.05), t.short)
    run_a.ready()
    produce(kafka_broker.plaintext, t.full, [{"n": n} for n in range(100)])
    b = plain_client(kafka_broker.plaintext, t.group, consumer_group=cg)
    run_b = Run(b, lambda topic, payload: time.sleep(0.05), t.short)
    time.sleep(0.3)  # B is joining: A is asked to give partitions up
    times["A during rebalance"] = run_a.stop()
    times["B during rebalance"] = run_b.stop()
    print("\n" + " ".join(f"{k}={v:.2f}s" for k, v in times.items()))
    assert run_a.error is None and run_b.error is None, (run_a.error, run_b.error)
    slow = {k: round(v, 2) for k, v in times.items() if v >= 0.5}
    assert not slow, f"listen() took >= 0.5 s after stop(): {slow}"


# -- a refused password is never echoed ----------------------------------------------------------


def test_listen_with_a_wrong_password_never_shows_it(kafka_broker, make_user, caplog, capfd):
    user = make_user(read=["*"])
    host, port = host_port(kafka_broker.sasl)
    secret = "Wr0ng-" + uuid.uuid4().hex
    c = igwn_alert.client(
        username=user.username,
        password=secret,
        server=f"kafka://{host}/",
        port=port,
        group="gracedb-x",
        consumer_group="cg-pw",
        retry_on_fatal=True,
    )
    texts = [repr(c), str(vars(c).get("auth_obj"))]
    with caplog.at_level(logging.DEBUG):
        run = Run(c, lambda topic, payload: None, "superevent")
        run.thread.join(15)
        if run.thread.is_alive():
            run.stop()
    texts.append(f"{type(run.error).__name__}: {run.error}")
    texts += [r.getMessage() for r in caplog.records]
    cap = capfd.readouterr()
    texts += [cap.out, cap.err]
    leaked = [x[:200] for x in texts if secret in x]
    print(f"\nerror={run.error!r}; {len(texts)} texts; leaked={len(leaked)}")
    assert isinstance(run.error, igwn_alert.exceptions.AuthenticationError), run.error
    assert not leaked, leaked[:3]


# -- retries of a failing callback, longer in all than max.poll.interval.ms ------------------------


def test_retry_waits_longer_than_max_poll_interval_do_not_trap_the_group(kafka_broker, make_topic):
    """A follow-up publish fails for alert 1 (a DeliveryError each time); the member retries
    it listen_retries times, retry_wait apart, without calling librdkafka meanwhile. With
    on_failure="skip" alert 1 must be skipped once and alert 2 delivered; the member must
    not be thrown out of its group and handed alert 1 again and again."""
    t = make_topic()
    cg = f"cg-retry-{uuid.uuid4().hex[:6]}"
    calls: list[Any] = []

    def fails_on_1(topic: str, payload: Any) -> None:
        calls.append(n_of(payload))
        if n_of(payload) == 1:
            from igwn_alert.exceptions import DeliveryError

            raise DeliveryError("follow-up publish failed")

    config = {"max.poll.interval.ms": 6000, "session.timeout.ms": 6000}
    c = plain_client(
        kafka_broker.plaintext,
        t.group,
        consumer_group=cg,
        retry_wait=2.5,
        listen_retries=4,
        config=config,
    )
    run = Run(c, fails_on_1, t.short, on_failure="skip")
    run.ready()
    produce(kafka_broker.plaintext, t.full, [{"n": 1}, {"n": 2}])
    wait_for(lambda: 2 in calls, 30.0)
    time.sleep(12.0)  # would alert 1 come back?
    run.stop()
    print(f"\ncalls={calls} (alert 1 called {calls.count(1)} times; listen_retries=4)")
    assert run.error is None, run.error
    assert calls.count(2) == 1 and calls.count(1) == 4, calls


# -- the broker SIGKILLed and restarted under a private and a group listener ---------------------


@pytest.mark.parametrize("settle", [0.0, 3.0])
def test_broker_sigkill_and_restart_loses_nothing_published_after(kafka_private_broker, settle):
    """settle: seconds between the last alert handled and the SIGKILL (0: the group has
    stored but maybe not yet committed its positions; 3: librdkafka committed them)."""
    from _kafka_broker.testing import TopicFactory

    t = TopicFactory(kafka_private_broker)(partitions=3)
    bootstrap = kafka_private_broker.plaintext
    time.sleep(3.0)  # leaders elected (see the test of a listener on a brand-new topic)
    got: dict[str, list[Any]] = {"private": [], "group": []}
    lock = threading.Lock()

    def into(name: str) -> Any:
        def cb(topic: str, payload: Any) -> None:
            with lock:
                got[name].append(n_of(payload))

        return cb

    private = plain_client(bootstrap, t.group)
    group = plain_client(bootstrap, t.group, consumer_group=f"cg-out-{uuid.uuid4().hex[:6]}")
    runs = [Run(private, into("private"), t.short), Run(group, into("group"), t.short)]
    for run in runs:
        run.ready()
    produce(bootstrap, t.full, [{"n": n} for n in range(30)])
    assert wait_for(
        lambda: len(set(got["private"])) == 30 and len(set(got["group"])) == 30, RECEIVE
    )
    time.sleep(settle)
    kafka_private_broker.kill()
    time.sleep(5.0)
    kafka_private_broker.start()
    sent = list(range(30, 90))
    produce(bootstrap, t.full, [{"n": n} for n in sent])
    wait_for(lambda: all(set(sent) <= set(v) for v in got.values()), 60.0)
    for run in runs:
        run.stop()
    lost = {k: sorted(set(sent) - set(v)) for k, v in got.items()}
    print(
        "\n"
        + " ".join(
            f"{k}: sent={len(sent)} lost={len(lost[k])} dup={len(v) - len(set(v))}"
            for k, v in got.items()
        )
    )
    assert all(run.error is None for run in runs), [run.error for run in runs]
    assert not any(lost.values()), lost


# -- a listener started right after its topic was created ----------------------------------------


def test_a_private_listener_started_on_a_brand_new_topic_does_not_die(kafka_broker, make_topic):
    """A pipeline creates its topic and starts listening at once. The offset look-up may meet
    "Not leader for partition" (retriable: leaders are being elected); listen() must
    retry it, not raise BrokerUnreachableError without retry_on_fatal."""
    errors: list[str] = []
    tries = 6
    for _ in range(tries):
        t = make_topic(f"fresh{uuid.uuid4().hex[:6]}", partitions=3)
        c = plain_client(kafka_broker.plaintext, t.group)
        run = Run(c, lambda topic, payload: None, t.short)
        deadline = time.monotonic() + 15
        while not c.listening.wait(0.05) and run.thread.is_alive():
            assert time.monotonic() < deadline
        if run.thread.is_alive():
            run.stop()
        if run.error is not None:
            errors.append(f"{type(run.error).__name__}: {run.error}")
    print(f"\n{len(errors)} of {tries} listeners died at start: {errors[:1]}")
    assert not errors, errors
