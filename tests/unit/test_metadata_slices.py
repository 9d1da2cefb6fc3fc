"""``_errors.list_topics``: how long each metadata request may block, and stopping it.

The fake handle blocks for the whole ``timeout`` it is given and then raises, as
librdkafka's ``list_topics`` does when nothing answers: with no broker to send the
request to it raises ``_TRANSPORT``; with a request sent but unanswered, ``_TIMED_OUT``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import pytest
from confluent_kafka import KafkaError, KafkaException

from igwn_alert import _errors
from igwn_alert.exceptions import AuthenticationError, BrokerUnreachableError


class BlockingHandle:
    """list_topics() that waits out its time-out, then fails with ``codes`` in turn."""

    def __init__(self, *codes: int, answer_after: Optional[int] = None) -> None:
        self.codes = list(codes)
        self.answer_after = answer_after
        self.timeouts: list[float] = []

    def list_topics(self, topic: Optional[str] = None, timeout: float = -1) -> Any:
        self.timeouts.append(timeout)
        if self.answer_after is not None and len(self.timeouts) > self.answer_after:
            return "metadata"
        time.sleep(timeout)
        code = self.codes[min(len(self.timeouts), len(self.codes)) - 1]
        raise KafkaException(KafkaError(code, "Failed to get metadata"))


def ask(handle: Any, timeout: float, **kwargs: Any) -> Any:
    return _errors.list_topics(
        handle, timeout=timeout, failed=lambda: None, server="h:9092", **kwargs
    )


def test_short_slices_while_no_broker_is_up():
    handle = BlockingHandle(KafkaError._TRANSPORT)
    with pytest.raises(BrokerUnreachableError, match="h:9092"):
        ask(handle, 0.6)
    assert max(handle.timeouts) <= _errors._NO_BROKER_SLICE


def test_a_request_sent_but_unanswered_gets_longer_slices():
    handle = BlockingHandle(KafkaError._TRANSPORT, KafkaError._TIMED_OUT, answer_after=4)
    assert ask(handle, 5.0) == "metadata"
    # no broker at first (short), then a request that timed out: the next ones are longer,
    # twice as long each time
    first = _errors._REQUEST_SLICE
    assert handle.timeouts[0] == _errors._NO_BROKER_SLICE
    assert handle.timeouts[2:] == [first, 2 * first, 4 * first]


class SlowBroker(BlockingHandle):
    """Answers only a request given at least ``answer_time`` seconds (a distant broker)."""

    def __init__(self, answer_time: float) -> None:
        super().__init__(KafkaError._TIMED_OUT)
        self.answer_time = answer_time

    def list_topics(self, topic: Optional[str] = None, timeout: float = -1) -> Any:
        if timeout >= self.answer_time:
            self.timeouts.append(timeout)
            time.sleep(self.answer_time)
            return "metadata"
        return super().list_topics(topic, timeout)


def test_a_broker_slower_than_a_slice_is_heard():
    # each slice sends the request again: with fixed 0.5 s slices a 1.2 s answer never came
    handle = SlowBroker(answer_time=1.2)
    assert ask(handle, 10.0) == "metadata"


def test_stopped_returns_none_within_a_short_slice():
    handle = BlockingHandle(KafkaError._TRANSPORT)
    stopped = threading.Event()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(ask(handle, 10.0, stopped=stopped)))
    thread.start()
    time.sleep(0.35)
    set_at = time.monotonic()
    stopped.set()
    thread.join(5)
    assert not thread.is_alive() and result == [None]
    # the request in flight when stop came is the only one waited for
    assert time.monotonic() - set_at <= _errors._NO_BROKER_SLICE + 0.1


def test_an_error_recorded_by_a_callback_ends_it_at_once():
    handle = BlockingHandle(KafkaError._TRANSPORT)
    refused = AuthenticationError("refused")
    with pytest.raises(AuthenticationError):
        _errors.list_topics(
            handle, timeout=10.0, failed=lambda: refused, server="h:9092", serve=lambda: None
        )
    assert len(handle.timeouts) == 1
