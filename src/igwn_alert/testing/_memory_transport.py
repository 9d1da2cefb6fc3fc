"""The in-memory transport: the reader and writer that ``InMemoryClient.open`` returns.

They have the API of the Kafka ones (:class:`igwn_alert._reading.AlertReader`, the
client's writers), so the client's one listen loop runs on them unchanged: the same
decoding, callback call, failure policy, retries, ``mark_done`` and resume. What differs is
only what a bus in memory can do differently from Kafka:

* a bus has one partition per topic, and its offsets are the positions in its log;
* a consumer group's members share the log by *claiming* alerts (a claimed alert goes to
  no other member until the claimer closes without marking it done);
* a reader can end once it has read everything (``idle_timeout=0``) or after waiting a
  while for a new alert, which is what makes ``InMemoryClient.listen`` return in tests.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from hop.io import Metadata, StartPosition

from .._decoding import decode_message

if TYPE_CHECKING:
    from .memory import InMemoryBroker, Record

__all__ = ["Cursor", "MemoryReader", "MemoryWriter"]

ALL_TOPICS = "*"  # the log key of errors injected for every topic

_ids = itertools.count(1)


class Cursor:
    """How far a reader (private) or a consumer group has got on the bus (bus-locked).

    ``next[topic]`` is the first log position not done; ``done`` the positions done past
    it; ``claimed`` the positions a member holds, by member.
    """

    def __init__(self) -> None:
        self.next: dict[str, int] = {}
        self.done: set[int] = set()
        self.claimed: dict[int, int] = {}

    def free(self, member: int) -> None:
        """Give back what ``member`` claimed and did not mark done."""
        for seq in [s for s, m in self.claimed.items() if m == member]:
            del self.claimed[seq]

    def finish(self, topic: str, seq: int) -> None:
        """Mark a position done, moving ``next`` over done positions."""
        self.claimed.pop(seq, None)
        self.done.add(seq)


class _View:
    """A :class:`Record` seen through the confluent_kafka.Message methods."""

    __slots__ = ("_record",)

    def __init__(self, record: Record) -> None:
        self._record = record

    def value(self) -> bytes:
        return self._record.value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._record.headers)

    def topic(self) -> str:
        return self._record.topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._record.seq

    def key(self) -> None:
        return None

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._record.timestamp_ms())


def view(record: Record) -> _View:
    """Return a record as a confluent_kafka.Message-like object (for decoding)."""
    return _View(record)


class MemoryReader:
    """A reader of topics on an :class:`~igwn_alert.testing.InMemoryBroker`.

    Parameters
    ----------
    bus : InMemoryBroker
        The bus.
    topics : list of str
        Broker topic names.
    cursor : Cursor
        The private reader's or the consumer group's position.
    start_at : StartPosition, datetime or dict, optional
        Where to start: None keeps the cursor's position, EARLIEST / LATEST / a time moves
        it, ``{(topic, 0): position}`` resumes there.
    ignoretest : bool, optional
        Skip hop test messages.
    until_eos : bool, optional
        End :meth:`read` once everything there was read.
    idle_timeout : float or None, optional
        End :meth:`read` after this many seconds without a new alert (0: as soon as
        everything there was read); None waits until :meth:`stop`.
    """

    _igwn_alert_reader = True

    def __init__(
        self,
        bus: InMemoryBroker,
        topics: list[str],
        cursor: Cursor,
        start_at: Any = None,
        ignoretest: bool = True,
        until_eos: bool = False,
        idle_timeout: Optional[float] = None,
    ) -> None:
        self.bus = bus
        self.topics = list(topics)
        self.ignoretest = ignoretest
        self._cursor = cursor
        self._member = next(_ids)
        self._idle = 0.0 if until_eos else idle_timeout
        self._stop = threading.Event()
        self._closed = False
        with bus._cond:
            self._position(start_at)

    def _position(self, start: Any) -> None:
        """Move the cursor for ``start`` (bus-locked)."""
        bus, cursor = self.bus, self._cursor
        names = [*self.topics, ALL_TOPICS]
        if start is None:
            for name in names:
                cursor.next.setdefault(name, 0)
            return
        if not isinstance(start, dict):  # a replay: what was done is delivered again
            for name in names:
                cursor.done.difference_update(bus._by_topic.get(name, ()))
        for name in names:
            if isinstance(start, dict):
                cursor.next[name] = start.get((name, 0), cursor.next.get(name, 0))
            elif start == StartPosition.EARLIEST:
                cursor.next[name] = 0
            elif start == StartPosition.LATEST:
                cursor.next[name] = bus._seq
            elif isinstance(start, datetime):
                when = start.replace(tzinfo=start.tzinfo or timezone.utc).timestamp()
                seqs = bus._by_topic.get(name, [])
                later = [s for s in seqs if bus._records[s].timestamp >= when]
                cursor.next[name] = later[0] if later else bus._seq
            else:
                raise TypeError(f"cannot start an in-memory reader at {start!r}")

    def _take(self) -> Optional[Record]:
        """Claim the oldest record of the topics not done nor claimed (bus-locked)."""
        bus, cursor = self.bus, self._cursor
        best: Optional[int] = None
        for name in [*self.topics, ALL_TOPICS]:
            seqs = bus._by_topic.get(name)
            if not seqs:
                continue
            i = bisect.bisect_left(seqs, cursor.next.get(name, 0))
            while i < len(seqs) and (seqs[i] in cursor.done or seqs[i] in cursor.claimed):
                i += 1
            if i < len(seqs) and (best is None or seqs[i] < best):
                best = seqs[i]
        if best is None:
            return None
        cursor.claimed[best] = self._member
        return bus._records[best]

    def idle(self, seconds: float, stop: threading.Event) -> bool:
        """Wait (a callback's retry); True if ``stop`` was set meanwhile.

        Parameters
        ----------
        seconds : float
            How long.
        stop : threading.Event
            The listener's stop event.

        Returns
        -------
        bool
            Whether it was stopped.
        """
        return stop.wait(seconds) if seconds > 0 else stop.is_set()

    def when_ready(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at once: an in-memory reader is positioned when it opens.

        Parameters
        ----------
        hook : callable
            Called without arguments.
        """
        hook()

    def read(self, metadata: bool = False, autocommit: bool = True, **kwargs: Any) -> Iterator[Any]:
        """Yield alerts in log order until :meth:`stop`, or the end (see ``idle_timeout``).

        Parameters
        ----------
        metadata : bool, optional
            Yield ``(payload, hop.io.Metadata)`` pairs.
        autocommit : bool, optional
            Mark an alert done when the next one is asked for (hop's behaviour).
        **kwargs
            Ignored (``batch_size``, ``batch_timeout``).

        Yields
        ------
        payload or (payload, hop.io.Metadata)
            The decoded alert.

        Raises
        ------
        BaseException
            An error injected with :meth:`InMemoryBroker.inject_error`, when reached.
        """
        bus, previous = self.bus, None
        while not self._stop.is_set():
            with bus._cond:
                record = self._take()
                deadline = None if self._idle is None else time.monotonic() + self._idle
                while record is None and not self._stop.is_set():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    bus._cond.wait(0.5 if left is None else min(left, 0.5))
                    record = self._take()
            if record is None:
                break
            if record.error is not None:
                self._finish(record)  # each position meets an injected error once
                raise record.error
            message = view(record)
            if self.ignoretest and any(k == "_test" for k, _ in record.headers):
                self._finish(record)
                continue
            if previous is not None:
                self._finish(previous)
                previous = None
            if autocommit:
                previous = record
            payload = decode_message(message)
            yield (payload, Metadata.from_message(message)) if metadata else payload
        if previous is not None:
            self._finish(previous)

    def _finish(self, record: Record) -> None:
        with self.bus._cond:
            self._cursor.finish(record.topic, record.seq)

    def mark_done(self, metadata: Any, asynchronous: bool = True) -> None:
        """Mark an alert done (its consumer group or this client will not get it again).

        Parameters
        ----------
        metadata : hop.io.Metadata
            As yielded by :meth:`read`.
        asynchronous : bool, optional
            Ignored.
        """
        with self.bus._cond:
            self._cursor.finish(metadata.topic, metadata.offset)

    def positions(self) -> dict[tuple[str, int], int]:
        """Where each topic resumes: its first position not done.

        Returns
        -------
        dict
            ``(topic, 0) -> position``.
        """
        with self.bus._cond:
            cursor, out = self._cursor, {}
            for name in [*self.topics, ALL_TOPICS]:
                seq = cursor.next.get(name, 0)
                seqs = self.bus._by_topic.get(name, [])
                i = bisect.bisect_left(seqs, seq)
                while i < len(seqs) and seqs[i] in cursor.done:
                    i += 1
                out[(name, 0)] = seqs[i] if i < len(seqs) else self.bus._seq
            return out

    def stop(self) -> None:
        """Make :meth:`read` return (thread-safe)."""
        self._stop.set()
        with self.bus._cond:
            self.bus._cond.notify_all()

    def close(self) -> None:
        """Stop, and give back alerts taken but not done."""
        self.stop()
        with self.bus._cond:
            if not self._closed:
                self._closed = True
                self._cursor.free(self._member)

    def __enter__(self) -> MemoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryWriter:
    """A writer to topics on the bus, with the API of the client's Kafka writers.

    Parameters
    ----------
    bus : InMemoryBroker
        The bus.
    topics : str or list of str
        Broker topic name(s).
    """

    def __init__(self, bus: InMemoryBroker, topics: Union[str, list[str]]) -> None:
        self.broker = bus
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.topic = self.topics[0] if len(self.topics) == 1 else None
        self.closed = False

    def write(
        self,
        message: Any,
        headers: Any = None,
        delivery_callback: Any = None,
        test: bool = False,
        topic: Optional[str] = None,
        key: Any = None,
    ) -> None:
        """Publish an alert (encoded as hop encodes it).

        Parameters
        ----------
        message : str, dict, list, bytes or hop model
            The alert.
        headers : list of (str, bytes), optional
            Extra headers.
        delivery_callback : callable, optional
            Called as ``callback(None, message)`` once it is on the bus.
        test : bool, optional
            Mark it as a hop test message.
        topic : str, optional
            The broker topic; needed when the writer has several.
        key : str or bytes, optional
            Ignored.

        Raises
        ------
        ValueError
            If the writer is closed, or no topic is given for a multi-topic writer.
        """
        if self.closed:
            raise ValueError(f"the writer of {', '.join(self.topics)} is closed")
        name = topic or self.topic
        if name is None:
            raise ValueError(f"name the topic to write to: this writer has {self.topics}")
        record = self.broker.append(name, message, headers=headers, test=test)
        if delivery_callback is not None:
            delivery_callback(None, view(record))

    def flush(self, timeout: Any = None) -> int:
        """Return 0: alerts are on the bus as soon as they are written.

        Parameters
        ----------
        timeout : object, optional
            Ignored.

        Returns
        -------
        int
            0.
        """
        return 0

    def close(self) -> int:
        """Close the writer.

        Returns
        -------
        int
            0.
        """
        self.closed = True
        return 0

    def __enter__(self) -> MemoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
