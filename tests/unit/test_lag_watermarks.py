"""``igwn-alert lag`` asks again for the end offset of a partition whose leader is moving."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from igwn_alert import _lag
from igwn_alert.exceptions import AuthorizationError, BrokerUnreachableError


class Consumer:
    """``get_watermark_offsets`` failing with the given errors first, then answering."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        assert cached is False
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return (3, 42)


def watermarks(consumer: Consumer, timeout: float = 5.0) -> tuple[int, int]:
    return _lag._watermarks(
        consumer,
        TopicPartition("gracedb.superevent", 2),
        timeout=timeout,
        group="cg",
        server="kafka.example:9092",
    )


def test_a_moving_leader_is_asked_again() -> None:
    consumer = Consumer(KafkaError._UNKNOWN_PARTITION, KafkaError.NOT_LEADER_FOR_PARTITION)
    assert watermarks(consumer) == (3, 42)
    assert consumer.calls == 3


def test_a_leader_that_never_comes_back_is_named_after_the_timeout() -> None:
    consumer = Consumer(*[KafkaError._UNKNOWN_PARTITION] * 100)
    with pytest.raises(BrokerUnreachableError) as info:
        watermarks(consumer, timeout=0.5)
    assert "partition 2 of gracedb.superevent has no leader that answers" in str(info.value)
    assert 2 <= consumer.calls < 10


def test_other_errors_are_not_retried() -> None:
    consumer = Consumer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(AuthorizationError):
        watermarks(consumer)
    assert consumer.calls == 1
