"""Adversarial attacks on the one listen loop through the in-memory client (issue 9).

A failing test here is a finding: bad input that makes ``listen()`` misbehave instead of
naming the problem, stop() not prompt, or an alert lost.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _shared import Run

from igwn_alert.exceptions import DeliveryError
from igwn_alert.testing import InMemoryBroker, InMemoryClient


@pytest.mark.parametrize("bad", [0, -1, "2", 2.5])
def test_a_bad_max_messages_is_a_clear_error_not_an_endless_listen(bad):
    """``max_messages`` that can never equal a count (0, negative, a str, a float) makes
    the loop's ``run.handled == max_messages`` test never true: listen() never returns
    and handles every alert. Bad input should get a clear error naming the problem."""
    bus = InMemoryBroker()
    c = InMemoryClient(broker=bus)
    for n in range(3):
        bus.inject("superevent", {"n": n})
    got: list[Any] = []
    run = Run(
        c,
        lambda topic, payload: got.append(payload),
        "superevent",
        quiet=False,
        max_messages=bad,
        timeout=None,
    )
    run.thread.join(2.0)
    alive = run.thread.is_alive()
    c.stop()
    run.thread.join(2.0)
    print(
        f"\nmax_messages={bad!r}: still listening after 2 s={alive}, handled={len(got)}, "
        f"error={run.error!r}"
    )
    expected = isinstance(run.error, (ValueError, TypeError))
    assert expected, f"max_messages={bad!r}: handled {len(got)}, error {run.error!r}"


def test_stop_from_many_threads_during_retry_wait_is_prompt_and_the_alert_not_done():
    bus = InMemoryBroker()
    c = InMemoryClient(broker=bus, retry_wait=30.0, listen_retries=5)
    bus.inject("superevent", {"n": 1})
    calls: list[Any] = []

    def fails(topic: str, payload: Any) -> None:
        calls.append(payload)
        raise DeliveryError("follow-up publish failed")

    run = Run(c, fails, "superevent", quiet=False, timeout=None)
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # inside retry_wait
    start = time.monotonic()
    stoppers = [threading.Thread(target=c.stop) for _ in range(8)]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    run.thread.join(5)
    took = (run.ended or time.monotonic()) - start
    assert not run.thread.is_alive()
    assert took < 0.5, took
    assert run.error is None, run.error
    # a stop() that lands after listen() returned is honoured by the next listen() (by
    # design: a stop() racing a listen() that has not begun yet must never be lost, and
    # the two cannot be told apart); clear it to listen again
    stale = c.stop_listening.is_set()
    c.stop_listening.clear()
    # not done: the next listen() on the same client delivers it again
    again: list[Any] = []
    c.listen(lambda topic, payload: again.append(payload), "superevent")
    print(f"\nstop flag still set after listen() returned: {stale}; next listen got {again}")
    assert again == [{"n": 1}], f"next listen() delivered {again} (stale stop flag: {stale})"


def test_group_until_eos_on_a_missing_topic_returns_in_memory():
    """The in-memory twin of the Kafka test of the same name (it returns here)."""
    bus = InMemoryBroker()
    c = InMemoryClient(broker=bus, consumer_group="cg")
    run = Run(c, lambda topic, payload: None, "no-such-topic", quiet=False, until_eos=True)
    run.thread.join(5)
    assert not run.thread.is_alive()
    assert run.error is None


def test_a_callback_raising_systemexit_leaves_the_alert_not_done_for_its_group():
    bus = InMemoryBroker()
    c = InMemoryClient(broker=bus, consumer_group="cg")
    bus.inject("superevent", {"n": 1})
    with pytest.raises(SystemExit):

        def dies(topic: str, payload: Any) -> None:
            raise SystemExit(3)

        c.listen(dies, "superevent")
    got: list[Any] = []
    InMemoryClient(broker=bus, consumer_group="cg").listen(
        lambda topic, payload: got.append(payload), "superevent"
    )
    assert got == [{"n": 1}]
    # and the first client can listen again (its lock and flags were released)
    c.listen(lambda topic, payload: None, "superevent")
