"""Helpers for the unit tests: fakes at one boundary, and an isolated home directory.

Nothing here touches a broker, Java or the network.

Fixtures
--------
isolated_home  HOME, XDG_CONFIG_HOME and NETRC pointed into tmp_path (no real credential
               is ever read); returns the fake home directory.
patched_open   ``igwn_alert.client.client.open`` replaced by a MagicMock (the reference's
               own patch point); set ``.side_effect`` / ``.return_value`` to fake streams.
fake_producer  ``confluent_kafka.Producer`` replaced by :class:`FakeProducer` (the boundary
               of :mod:`igwn_alert._publishing`); returns the class, whose ``instances``
               records every producer made.
fake_consumer  ``confluent_kafka.Consumer`` replaced by :class:`FakeConsumer` (the boundary
               of :mod:`igwn_alert._reading`); returns the class.

fakes          the helpers below, as attributes (test modules cannot import conftest).

Helpers
-------
meta(topic, partition=0, offset=0)          a hop.io.Metadata as a stream yields it
fake_stream(*items)                         a MagicMock stream whose __enter__().read()
                                            yields the (payload, metadata) items, raising
                                            the exception items when reached
blocking_stream()                           a stream whose read() blocks until stop()
wire_message(topic, msg, offset=0, ...)     a confluent-kafka-like message holding what hop
                                            packs for ``msg`` (the bytes on the wire)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional
from unittest import mock

import pytest
from hop.io import Metadata
from hop.io import Producer as HopProducer

# -- an isolated home -------------------------------------------------------------------------


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty HOME: no hop auth.toml, no ~/.netrc, no $NETRC."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("NETRC", raising=False)
    return home


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write ``text`` to ``path`` with permissions ``mode`` (default owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def write_hop_auth(home: Path, entries: list[dict[str, str]]) -> Path:
    """Write hop's default auth.toml under ``home`` (as XDG_CONFIG_HOME points there)."""
    lines = []
    for entry in entries:
        lines.append("[[auth]]")
        lines.extend(f'{key} = "{value}"' for key, value in entry.items())
    return write_private(home / ".config" / "hop" / "auth.toml", "\n".join(lines) + "\n")


# -- streams behind client.open ---------------------------------------------------------------


def meta(topic: str, partition: int = 0, offset: int = 0) -> Metadata:
    """The metadata of a message, as a hop stream yields it with ``read(metadata=True)``."""
    return Metadata(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        key=None,
        headers=None,
        _raw=None,
    )


def _is_exception(item: Any) -> bool:
    return isinstance(item, BaseException) or (
        isinstance(item, type) and issubclass(item, BaseException)
    )


def _play(items: tuple[Any, ...]) -> Iterator[Any]:
    for item in items:
        if _is_exception(item):
            raise item
        if callable(item):
            item()  # e.g. client.stop, as if called from another thread
            continue
        yield item


def fake_stream(*items: Any) -> mock.MagicMock:
    """A MagicMock stream: ``with stream as s: s.read(...)`` yields ``items`` in order.

    An item that is an exception (class or instance) is raised when reached; any other
    callable item is called (``client.stop`` ends a listen() there).
    """
    stream = mock.MagicMock(name="stream")

    def read(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from _play(items)

    stream.__enter__.return_value.read.side_effect = read
    return stream


def blocking_stream(*items: Any, limit: float = 5.0) -> mock.MagicMock:
    """A stream that yields ``items``, then blocks in read() until its ``stop()`` is called.

    ``__enter__`` returns the stream itself, so ``stop()`` reaches the reader. It gives up
    after ``limit`` seconds so that a broken stop() fails a test instead of hanging it.
    """
    stream = mock.MagicMock(name="blocking-stream")
    stopped = threading.Event()
    stream.stopped = stopped
    stream.stop.side_effect = stopped.set
    stream.close.side_effect = stopped.set
    stream.__enter__.return_value = stream
    stream.__exit__.return_value = False

    def read(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from _play(items)
        stopped.wait(limit)

    stream.read.side_effect = read
    return stream


def was_closed(stream: mock.MagicMock) -> bool:
    """Whether a fake stream was closed (by ``close()`` or by leaving its ``with`` block)."""
    return bool(stream.close.called or stream.__exit__.called)


@pytest.fixture
def patched_open() -> Iterator[mock.MagicMock]:
    """``igwn_alert.client.client.open`` replaced by a MagicMock."""
    import igwn_alert

    with mock.patch.object(igwn_alert.client, "open") as opened:
        yield opened


# -- confluent-kafka fakes --------------------------------------------------------------------


class FakeMessage:
    """A stand-in for :class:`confluent_kafka.Message`."""

    def __init__(
        self,
        topic: str,
        value: Optional[bytes],
        headers: Any = None,
        partition: int = 0,
        offset: int = 0,
        error: Any = None,
    ) -> None:
        self._topic = topic
        self._value = value
        self._headers = headers
        self._partition = partition
        self._offset = offset
        self._error = error

    def topic(self) -> str:
        return self._topic

    def value(self) -> Optional[bytes]:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def key(self) -> None:
        return None

    def error(self) -> Any:
        return self._error

    def __repr__(self) -> str:
        return f"FakeMessage({self._topic}@{self._offset})"


def wire_message(topic: str, msg: Any, offset: int = 0, partition: int = 0) -> FakeMessage:
    """The message a hop producer puts on the wire for ``msg`` (hop's own packing)."""
    value, headers = HopProducer.pack(msg)
    return FakeMessage(topic, value, headers, partition=partition, offset=offset)


def _metadata(topics: list[str]) -> SimpleNamespace:
    return SimpleNamespace(
        topics={
            t: SimpleNamespace(topic=t, error=None, partitions={0: SimpleNamespace(id=0)})
            for t in topics
        }
    )


class FakeProducer:
    """A stand-in for :class:`confluent_kafka.Producer` that delivers every message at once.

    ``produced`` lists ``(topic, value, headers)``; the class attribute ``instances`` lists
    every producer made since the fixture started.
    """

    instances: list[FakeProducer] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[tuple[str, bytes, Any]] = []
        self.list_topics_calls: list[Optional[str]] = []
        self._pending: list[tuple[Any, FakeMessage]] = []
        type(self).instances.append(self)

    def list_topics(self, topic: Optional[str] = None, timeout: float = -1) -> SimpleNamespace:
        self.list_topics_calls.append(topic)
        return _metadata([topic] if topic else [])

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        on_delivery: Any = None,
        **kwargs: Any,
    ) -> None:
        self.produced.append((topic, value, headers))
        message = FakeMessage(topic, value, headers, offset=len(self.produced) - 1)
        self._pending.append((on_delivery, message))

    def _deliver(self) -> int:
        pending, self._pending = self._pending, []
        for callback, message in pending:
            if callback is not None:
                callback(None, message)
        return len(pending)

    def poll(self, timeout: float = 0) -> int:
        return self._deliver()

    def flush(self, timeout: float = -1) -> int:
        self._deliver()
        return 0

    def __len__(self) -> int:
        return len(self._pending)


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    """``confluent_kafka.Producer`` (as the publishing module uses it) replaced by a fake."""
    from igwn_alert import _publishing as publishing

    monkeypatch.setattr(FakeProducer, "instances", [])
    monkeypatch.setattr(publishing.confluent_kafka, "Producer", FakeProducer)
    return FakeProducer


class FakeConsumer:
    """A stand-in for :class:`confluent_kafka.Consumer`: one partition per topic.

    Put messages in the class attribute ``queue`` before the reader starts; ``poll()`` and
    ``consume()`` hand them out, then ``poll()`` waits its timeout and returns None.
    ``stored`` records the messages passed to ``store_offsets``; ``instances`` every
    consumer made.
    """

    queue: list[FakeMessage] = []
    instances: list[FakeConsumer] = []
    missing: set[str] = set()  # topics the broker does not know
    END = 42  # the "newest" offset of every partition
    COMMITTED = 0  # where the consumer group left off
    COMMITTED_TIMES_OUT = False  # committed() raises _TIMED_OUT

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.queue = list(type(self).queue)
        self.stored: list[FakeMessage] = []
        self.committed_calls: list[Any] = []
        self.assigned: list[Any] = []
        self.subscribed: list[str] = []
        self.closed = False
        self.on_assign: Any = None
        type(self).instances.append(self)

    def list_topics(self, topic: Optional[str] = None, timeout: float = -1) -> SimpleNamespace:
        names = {m.topic() for m in type(self).queue} | set(self.subscribed)
        if topic is not None:
            names.add(topic)
        return _metadata(sorted(names - type(self).missing))

    def subscribe(self, topics: list[str], on_assign: Any = None, **kwargs: Any) -> None:
        self.subscribed = list(topics)
        self.on_assign = on_assign
        self._join_pending = True  # as librdkafka: the assignment arrives from a later poll

    def _serve(self) -> None:
        """What librdkafka's poll does first: run a pending re-balance callback."""
        from confluent_kafka import OFFSET_INVALID, TopicPartition

        if getattr(self, "_join_pending", False):
            self._join_pending = False
            partitions = [TopicPartition(t, 0, OFFSET_INVALID) for t in self.subscribed]
            if self.on_assign is not None:
                self.on_assign(self, partitions)
            else:
                self.incremental_assign(partitions)

    def committed(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        if self.COMMITTED_TIMES_OUT:  # as during a re-balance on a busy broker
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return [TopicPartition(tp.topic, tp.partition, self.COMMITTED) for tp in partitions]

    def offsets_for_times(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [
            TopicPartition(tp.topic, tp.partition, self.END if tp.offset == -1 else 0)
            for tp in partitions
        ]

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned.extend(partitions)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self._serve()
        batch, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return batch

    def poll(self, timeout: Optional[float] = None) -> Optional[FakeMessage]:
        self._serve()
        if self.queue:
            return self.queue.pop(0)
        time.sleep(min(timeout or 0, 0.1))
        return None

    def store_offsets(self, message: Any = None, offsets: Any = None) -> None:
        if message is not None:
            self.stored.append(message)
        else:  # "resume here" positions (a partition's start), not alerts done
            self.stored_positions = [*getattr(self, "stored_positions", []), *offsets]

    def commit(self, message: Any = None, offsets: Any = None, asynchronous: bool = True) -> None:
        self.committed_calls.append(message or offsets)

    def seek(self, partition: Any) -> None:
        self.sought = [*getattr(self, "sought", []), partition]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_consumer(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    """``confluent_kafka.Consumer`` (as the reading module uses it) replaced by a fake."""
    from igwn_alert import _reading as reading

    monkeypatch.setattr(FakeConsumer, "queue", [])
    monkeypatch.setattr(FakeConsumer, "instances", [])
    monkeypatch.setattr(FakeConsumer, "missing", set())
    monkeypatch.setattr(reading.confluent_kafka, "Consumer", FakeConsumer)
    return FakeConsumer


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The helpers of this module, for test modules (which cannot import a conftest)."""
    return SimpleNamespace(
        meta=meta,
        fake_stream=fake_stream,
        blocking_stream=blocking_stream,
        was_closed=was_closed,
        wire_message=wire_message,
        FakeMessage=FakeMessage,
        write_private=write_private,
        write_hop_auth=write_hop_auth,
    )
