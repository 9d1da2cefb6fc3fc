"""A group's start committed before joining (``AlertReader._commit_start``), on a fake
consumer whose ``commit()`` answers as librdkafka does: a coordinator that is still being
found or loaded (a broker just started), a group that has members, a refusal."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from confluent_kafka import KafkaError, KafkaException

from igwn_alert._reading import AlertReader
from igwn_alert.exceptions import AuthorizationError, BrokerUnreachableError

START = {("gracedb.superevent", 0): 5, ("gracedb.superevent", 1): 7}


def reader_answering(*answers: Optional[int]) -> tuple[AlertReader, list[Any]]:
    """A group reader whose commit() raises the error codes ``answers`` in turn (None: ok)."""
    reader = AlertReader("127.0.0.1:9092", ["gracedb.superevent"], group_id="cg")
    left, calls = list(answers), []

    def commit(message: Any = None, offsets: Any = None, asynchronous: bool = True) -> None:
        calls.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))
        code = left.pop(0)
        if code is not None:
            raise KafkaException(KafkaError(code, "from the fake broker"))

    reader._kafka.commit = commit  # type: ignore[method-assign]
    return reader, calls


def test_a_coordinator_still_loading_is_asked_again(fake_consumer):
    reader, calls = reader_answering(
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._WAIT_COORD, None
    )
    assert reader._commit_start(START) is True
    assert calls == [[("gracedb.superevent", 0, 5), ("gracedb.superevent", 1, 7)]] * 3


@pytest.mark.parametrize(
    "code",
    [KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS],
)
def test_a_group_with_members_is_not_moved(fake_consumer, code):
    reader, calls = reader_answering(code)
    assert reader._commit_start(START) is False
    assert len(calls) == 1


def test_a_refusal_is_clear_and_names_the_topic(fake_consumer):
    reader, _ = reader_answering(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(AuthorizationError, match=r"gracedb\.superevent"):
        reader._commit_start(START)


def test_a_coordinator_that_never_comes_is_an_error_after_the_time_out(fake_consumer, monkeypatch):
    from igwn_alert import _reading

    monkeypatch.setattr(_reading, "_LOOKUP_TIMEOUT", 0.6)
    reader, calls = reader_answering(*[KafkaError.COORDINATOR_NOT_AVAILABLE] * 50)
    with pytest.raises(BrokerUnreachableError):
        reader._commit_start(START)
    assert 2 <= len(calls) < 50
