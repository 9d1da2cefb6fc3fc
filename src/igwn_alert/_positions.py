"""Where a reader starts, and how far each of its partitions is done.

librdkafka owns positions: a consumer-group reader only ever *stores* the offset after an
alert whose callback returned, and librdkafka commits what was stored and resolves
committed positions on assignment. This module holds the two things librdkafka cannot
know: where a *replay* starts (``since``), and, for a private reader (no consumer group,
nothing committed), how far each partition is done, so that a reader reopened after an
error resumes every partition exactly where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Optional, Union

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from hop.io import StartPosition

__all__ = ["Ledger", "StartSpec", "replay_offsets", "wanted_offset"]

#: Where a reader starts: hop's LATEST / EARLIEST, a point in time, or explicit positions
#: ``{(topic, partition): next offset}`` (used to resume after a reconnect).
StartSpec = Union[StartPosition, datetime, dict[tuple[str, int], int], None]

Key = tuple[str, int]


def _millis(when: datetime) -> int:
    return int(when.replace(tzinfo=when.tzinfo or timezone.utc).timestamp() * 1000)


def wanted_offset(start: StartSpec, key: Key) -> Optional[int]:
    """Return the offset a partition starts at, when it needs no look-up.

    Parameters
    ----------
    start : StartSpec
        The reader's start specification.
    key : (str, int)
        The partition.

    Returns
    -------
    int or None
        ``OFFSET_BEGINNING`` for EARLIEST, an explicit resume offset, or None when the
        offset must be looked up (LATEST or a time: see :func:`replay_offsets`).
    """
    if start == StartPosition.EARLIEST:
        return OFFSET_BEGINNING
    if isinstance(start, dict):
        return start.get(key)
    return None


def replay_offsets(
    consumer: Any, start: StartSpec, keys: Iterable[Key], timeout: float
) -> dict[Key, int]:
    """Resolve the concrete offsets of partitions that start at the newest alert or a time.

    One ``offsets_for_times`` request (librdkafka's own look-up) for all of them; a
    partition with no alert at or after the time starts at its end.

    Parameters
    ----------
    consumer : confluent_kafka.Consumer
        The consumer to ask.
    start : StartSpec
        LATEST (None) or a datetime.
    keys : iterable of (str, int)
        The partitions.
    timeout : float
        Seconds.

    Returns
    -------
    dict
        ``(topic, partition) -> offset`` (concrete where the broker answered).

    Raises
    ------
    confluent_kafka.KafkaException
        If the look-up failed; the caller decides.
    """
    stamp = _millis(start) if isinstance(start, datetime) else -1  # -1: the end, now
    query = [TopicPartition(topic, part, stamp) for topic, part in keys]
    if not query:
        return {}
    out: dict[Key, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = consumer.offsets_for_times(
                query, timeout=max(0.1, deadline - time.monotonic())
            )
        except KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            code = error.code() if hasattr(error, "code") else None
            if code not in RETRIABLE or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)  # a topic just created, or a leader moving
            continue
        errors = [tp.error for tp in answer if tp.error is not None]
        if not errors:
            break
        # a topic just created, or a leader moving: retriable, until the time-out
        retriable = all(e.retriable() or e.code() in RETRIABLE for e in errors)
        if time.monotonic() >= deadline or not retriable:
            raise _as_kafka_exception(errors[0])
        time.sleep(0.1)
    for tp in answer:
        out[(tp.topic, tp.partition)] = tp.offset
    late = [TopicPartition(t, p, -1) for (t, p), offset in out.items() if offset < 0]
    if late:  # no alert at or after that time: the concrete end, so a reopen resumes there
        for tp in consumer.offsets_for_times(late, timeout=timeout):
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else OFFSET_END
    return out


#: Offset look-up errors that pass when a partition's leader moves or a topic is new
#: (librdkafka says "Unknown partition" while a partition has no leader).
RETRIABLE = frozenset(
    {
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
    }
)


def _as_kafka_exception(error: Any) -> Exception:
    return KafkaException(error)


class Ledger:
    """How far each partition of a private reader is done.

    Used from the reading thread only (the listen loop reads :meth:`snapshot` there once
    the stream has ended), so it takes no lock on the hot path.

    ``next[(topic, partition)]`` is the offset of the first alert not done yet: the
    concrete start offset until the first alert is done there, then the offset after the
    last alert done. A reader reopened with these as its start positions misses nothing
    and repeats nothing.
    """

    def __init__(self) -> None:
        self._next: dict[Key, int] = {}

    def start(self, key: Key, offset: int) -> None:
        """Record where a newly assigned partition starts (unless it is already known)."""
        self._next.setdefault(key, offset)

    def done(self, key: Key, offset: int) -> None:
        """Record that the alert at ``offset`` is done."""
        self._next[key] = offset + 1

    def forget(self, keys: Iterable[Key]) -> None:
        """Drop partitions this reader no longer holds."""
        for key in keys:
            self._next.pop(key, None)

    def snapshot(self) -> dict[Key, int]:
        """Return ``{(topic, partition): next offset}`` for every partition held."""
        return dict(self._next)
