"""Reading: the Kafka stream behind ``client.open(url, "r", ...)``.

:class:`AlertReader` has the API of :class:`hop.io.Consumer` (``read``, ``mark_done``,
``stop``, ``close``, context manager) and does what the reference's stream does not:

* With a consumer group it joins the group for real (``subscribe``), so listeners of one
  group share the partitions; offsets are *stored* only when :meth:`AlertReader.mark_done`
  is called (after the callback returned) and committed every second, on a re-balance and
  on close. A partition the group never committed starts at the newest alert, and that
  position is committed at once, so a crash before the first commit resumes from there.
* Without a consumer group it assigns the partitions itself (no group join, so the first
  alert is not delayed by a re-balance), starting at the newest alert.
* A topic that does not exist yet is not an error: a warning names it, and it is read from
  its first alert once it appears. Partitions added later are picked up as well.
* Broker outages are retried by librdkafka; they are logged once per outage.
* :meth:`AlertReader.stop` makes :meth:`AlertReader.read` return within 0.02 s.
"""

from __future__ import annotations

import json
import logging
import random
import string
import threading
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Union

import confluent_kafka
import confluent_kafka.admin
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition
from hop.io import Deserializer, Metadata, StartPosition
from hop.models import Blob, JSONBlob

from . import _errors
from ._credentials import private_group_id
from ._kafka_config import base_config
from .exceptions import KafkaException, TopicNotFoundError

__all__ = ["AlertReader", "StartSpec", "decode_message"]

log = logging.getLogger(__name__)

#: Where a reader starts: hop's LATEST / EARLIEST, a point in time, or explicit positions
#: ``{(topic, partition): next offset}`` (used to resume after a reconnect).
StartSpec = Union[StartPosition, datetime, dict[tuple[str, int], int], None]

# longest wait inside librdkafka, so stop() is seen within this; an idle listener wakes
# 50 times a second for it (idle listener over 10 s: 0.2% -> 0.3% of one core)
_POLL_SLICE = 0.02
_DRAIN = 500  # alerts taken at once from what librdkafka already buffered
_METADATA_TIMEOUT = 10.0
_WATCH_FAST = 1.0  # metadata check period while a topic is missing
_WATCH_SLOW = 10.0  # ... and once every topic exists
_WATCH_TIMEOUT = 5.0  # a metadata request of the watcher (its own client, not the consumer)


def decode_message(message: Any) -> Any:
    """Decode one Kafka message by hop's rules, never raising.

    A hop JSON message gives a :class:`hop.models.JSONBlob`; other hop formats give their
    model; a message hop cannot decode (an empty value, JSON-labelled bytes that are not
    JSON, ...) gives a :class:`hop.models.Blob` of the raw bytes, with a warning.

    Parameters
    ----------
    message : confluent_kafka.Message
        The message.

    Returns
    -------
    hop model
        The decoded payload.
    """
    fmt = next((value for name, value in message.headers() or () if name == "_format"), None)
    return _decode(message, fmt)


def _decode(message: Any, fmt: Optional[bytes]) -> Any:
    """Decode a message whose ``_format`` header (if any) is already known."""
    value = message.value()
    if fmt == b"json" and value is not None:  # every GraceDB alert
        try:
            return JSONBlob(content=json.loads(value.decode("utf-8")))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            return _undecodable(message, value, exc)
    if value is None:
        return _undecodable(message, b"", "the message has no value")
    try:
        return Deserializer.deserialize(message)
    except Exception as exc:  # noqa: BLE001 - a bad alert must never stop the listener
        return _undecodable(message, value, exc)


def _undecodable(message: Any, value: bytes, why: object) -> Blob:
    warnings.warn(
        f"cannot decode the message at {message.topic()}[{message.partition()}]@"
        f"{message.offset()} ({why}); passing on its raw bytes",
        UserWarning,
        stacklevel=2,
    )
    return Blob(content=value)


def _metadata_fast(message: Any, headers: Any) -> Metadata:
    # hop's Metadata.from_message goes through the frozen dataclass __init__ (one
    # object.__setattr__ per field); filling the instance dict gives an equal object in
    # half the time
    md = _new_metadata(Metadata)
    md.__dict__.update(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp=message.timestamp()[1],
        key=message.key(),
        headers=headers,
        _raw=message,
    )
    return md


def _metadata_hop(message: Any, headers: Any) -> Metadata:
    return Metadata.from_message(message)


_new_metadata = object.__new__
_METADATA_FIELDS = ("topic", "partition", "offset", "timestamp", "key", "headers", "_raw")
_metadata = (
    _metadata_fast
    if tuple(getattr(Metadata, "__dataclass_fields__", ())) == _METADATA_FIELDS
    and "__slots__" not in vars(Metadata)
    else _metadata_hop
)


def _is_test(message: Any) -> bool:
    headers = message.headers()
    return bool(headers) and any(name == "_test" for name, _ in headers)


def _ignore(error: Any) -> None:
    """error_cb of the watcher's metadata client: the consumer reports errors itself."""
    log.debug("metadata client: %s", error.str())


def _random_group() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "igwn-alert-" + "".join(random.SystemRandom().choice(alphabet) for _ in range(12))


class AlertReader:
    """A stream opened for reading alerts from one or more topics.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    topics : list of str
        Broker topic names.
    credential : hop.auth.Auth or None
        The credential.
    group_id : str, optional
        The consumer group; None for a private reader without a group.
    start_at : StartSpec, optional
        Where to start: hop's ``StartPosition.LATEST`` (default) or ``EARLIEST``, a
        :class:`datetime.datetime`, or explicit positions. With a consumer group, a
        committed position wins over ``LATEST``; ``EARLIEST`` or a time replays from there.
    ignoretest : bool, optional
        Skip hop test messages (those with a ``_test`` header), as hop does.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        credential: Any = None,
        group_id: Optional[str] = None,
        start_at: StartSpec = None,
        ignoretest: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.ignoretest = ignoretest
        self._start_at: StartSpec = StartPosition.LATEST if start_at is None else start_at
        self._private = group_id is None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._pending: Optional[KafkaException] = None
        self._outage = False
        self._warned_missing: set[str] = set()
        self._assigned: set[tuple[str, int]] = set()
        self._first_seen: set[tuple[str, int]] = set()
        self._existing: set[tuple[str, int]] = set()
        # partitions the watcher found, assigned by the reading thread (see _watch)
        self._found: set[tuple[str, int]] = set()
        self._credential = credential
        config = base_config(
            bootstrap,
            credential,
            {
                "group.id": group_id or private_group_id(credential),
                "enable.auto.commit": not self._private,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "latest",
                "allow.auto.create.topics": False,
                "topic.metadata.refresh.interval.ms": 5000,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                # a fetch waiting for data returns at once when an alert arrives on Kafka;
                # brokers that do not wake it (librdkafka's mock) answer within this bound
                "fetch.wait.max.ms": 100,
                # catching up on a back-log: librdkafka stops fetching while its pre-fetch
                # queue is full and, by default, looks again only 1 s later, stalling the
                # listener (bench/run.py: replay ~68k -> ~132k alerts/s); 16 MB of
                # pre-fetched alerts (~12,000 GraceDB alerts) keeps the pipe full with a
                # quarter of the default's memory (RSS after 1M alerts: 129 -> 71 MB)
                "fetch.queue.backoff.ms": 10,
                "queued.max.messages.kbytes": 16384,
                "partition.assignment.strategy": "cooperative-sticky",
                "error_cb": self._on_error,
            },
        )
        self._consumer = confluent_kafka.Consumer(config)
        self._watcher: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._on_ready: list[Callable[[], None]] = []
        try:
            self._start()
        except BaseException:
            self._consumer.close()
            self._closed = True
            raise

    # -- start-up -------------------------------------------------------------------------

    def _start(self) -> None:
        partitions = self._describe()
        self._existing = {tp for tps in partitions.values() for tp in tps}
        if self._private:
            self._assign(self._existing, initial=True)
            self._watcher = threading.Thread(
                target=self._watch, name="igwn-alert-metadata", daemon=True
            )
            self._watcher.start()
            self._ready.set()
        else:
            self._consumer.subscribe(
                self.topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )

    def _describe(
        self, *, warn: bool = True, timeout: float = _METADATA_TIMEOUT
    ) -> dict[str, set[tuple[str, int]]]:
        """Return the partitions of each existing topic; warn about missing ones.

        At start-up (``warn``) librdkafka's callbacks are served between short requests,
        so a refused credential is reported at once instead of as a time-out.
        """
        serve = (lambda: self._consumer.poll(0)) if warn else None
        md = _errors.list_topics(
            self._consumer,
            timeout=timeout,
            serve=serve,
            failed=self._take_pending,
            server=self.bootstrap,
        )
        self._raise_pending()
        found: dict[str, set[tuple[str, int]]] = {}
        for topic in self.topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                meta = self._describe_one(topic, timeout)
            if meta is None:
                if warn:
                    self._warn_missing(topic)
                continue
            found[topic] = {(topic, p) for p in meta.partitions}
        return found

    def _describe_one(self, topic: str, timeout: float) -> Any:
        md = self._consumer.list_topics(topic=topic, timeout=timeout)
        meta = md.topics.get(topic)
        if meta is not None and meta.error is not None:
            exc = _errors.exception_for(meta.error, topic=topic, server=self.bootstrap)
            if exc is not None and not isinstance(exc, TopicNotFoundError):
                raise exc
            return None
        return meta

    def _warn_missing(self, topic: str) -> None:
        if topic not in self._warned_missing:
            self._warned_missing.add(topic)
            log.warning(
                "topic %s does not exist on %s yet; its alerts will be delivered once it "
                "is created",
                topic,
                self.bootstrap,
            )

    def _positions(self, tps: set[tuple[str, int]], initial: bool) -> list[TopicPartition]:
        """Resolve where each partition starts."""
        start = self._start_at
        out: list[TopicPartition] = []
        by_time: list[TopicPartition] = []
        for topic, part in sorted(tps):
            if not initial or (topic, part) not in self._existing:
                out.append(TopicPartition(topic, part, OFFSET_BEGINNING))
            elif isinstance(start, dict):
                offset = start.get((topic, part))
                out.append(TopicPartition(topic, part, OFFSET_END if offset is None else offset))
            elif isinstance(start, datetime):
                ms = int(start.replace(tzinfo=start.tzinfo or timezone.utc).timestamp() * 1000)
                by_time.append(TopicPartition(topic, part, ms))
            elif start == StartPosition.EARLIEST:
                out.append(TopicPartition(topic, part, OFFSET_BEGINNING))
            else:
                by_time.append(TopicPartition(topic, part, -1))  # -1: the end, now
        if by_time:
            out.extend(self._resolve(by_time))
        return out

    def _resolve(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Turn timestamps (or -1, the end) into concrete offsets with one request."""
        try:
            resolved = self._consumer.offsets_for_times(tps, timeout=_METADATA_TIMEOUT)
        except confluent_kafka.KafkaException as exc:
            log.warning("cannot look up start offsets (%s); starting at the newest", exc)
            return [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in tps]
        out = []
        for tp in resolved:
            offset = tp.offset if tp.offset >= 0 else OFFSET_END
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out

    def _assign(self, tps: set[tuple[str, int]], initial: bool) -> None:
        new = {tp for tp in tps if tp not in self._assigned}
        if not new:
            return
        positions = self._positions(new, initial)
        self._consumer.incremental_assign(positions)
        with self._lock:  # the watcher reads it
            self._assigned |= new
        log.debug("assigned %s", positions)

    # -- group membership (consumer group) ----------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=_METADATA_TIMEOUT)
        except confluent_kafka.KafkaException as exc:
            log.warning("cannot read committed positions (%s)", exc)
            committed = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        replay = self._start_at if not isinstance(self._start_at, StartPosition) else None
        if self._start_at == StartPosition.EARLIEST:
            replay = StartPosition.EARLIEST
        chosen: list[TopicPartition] = []
        fresh: set[tuple[str, int]] = set()
        for tp in committed:
            key = (tp.topic, tp.partition)
            first = key not in self._first_seen
            self._first_seen.add(key)
            if replay is not None and first:
                fresh.add(key)
            elif tp.offset >= 0:
                chosen.append(TopicPartition(tp.topic, tp.partition, tp.offset))
            else:
                fresh.add(key)
        if fresh:
            resolved = self._positions(fresh, initial=True)
            chosen.extend(resolved)
            concrete = [tp for tp in resolved if tp.offset >= 0]
            if concrete:
                try:  # record the start position at once, so a crash resumes from it
                    consumer.commit(offsets=concrete, asynchronous=False)
                except confluent_kafka.KafkaException as exc:
                    log.warning("cannot commit start positions (%s)", exc)
        consumer.incremental_assign(chosen)
        self._assigned |= {(tp.topic, tp.partition) for tp in chosen}
        self._set_ready()
        log.info("assigned partitions %s", [(tp.topic, tp.partition) for tp in chosen])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._commit(consumer)
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.info("partitions taken away: %s", [(tp.topic, tp.partition) for tp in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.warning("partitions lost: %s", [(tp.topic, tp.partition) for tp in partitions])

    @staticmethod
    def _commit(consumer: Any) -> None:
        try:
            consumer.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError._NO_OFFSET:
                log.warning("cannot commit positions: %s", exc.args[0].str())

    # -- metadata watch (private reader) ------------------------------------------------

    def _watch(self) -> None:
        """Look for new topics and partitions; the reading thread assigns them.

        The watcher never touches the consumer: with confluent-kafka 2.x a call on a
        consumer (``list_topics``, ``incremental_assign``) from another thread blocks for
        as long as the reading thread keeps polling it, so new topics and partitions were
        never picked up. It asks its own metadata client instead and leaves what it found
        in ``_found`` for :meth:`read` to assign between two polls.
        """
        admin: Any = None
        while not self._stop.is_set():
            with self._lock:
                known = {tp[0] for tp in self._assigned | self._found}
            missing = any(t not in known for t in self.topics)
            if self._stop.wait(_WATCH_FAST if missing else _WATCH_SLOW):
                return
            try:
                if admin is None:
                    admin = confluent_kafka.admin.AdminClient(
                        base_config(self.bootstrap, self._credential, {"error_cb": _ignore})
                    )
                md = admin.list_topics(timeout=_WATCH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - keep watching through outages
                log.debug("metadata check failed: %s", exc)
                continue
            tps = set()
            for topic in self.topics:
                meta = md.topics.get(topic)
                if meta is not None and meta.error is None:
                    tps |= {(topic, p) for p in meta.partitions}
            with self._lock:
                if self._closed:
                    return
                new = tps - self._assigned - self._found
                if new:
                    log.info("new partitions to read: %s", sorted(new))
                    self._found |= new

    def _assign_found(self) -> None:
        """Assign what the watcher found (in the reading thread)."""
        with self._lock:
            new, self._found = self._found, set()
        if new:
            self._assign(new, initial=False)

    # -- errors -----------------------------------------------------------------------------

    def _on_error(self, error: Any) -> None:
        exc = _errors.exception_for(error, group=self.group_id, server=self.bootstrap)
        if exc is not None and self._pending is None:
            self._pending = exc
            return
        self._transient(error)

    def _transient(self, error: Any) -> None:
        if not self._outage:
            self._outage = True
            log.warning("Kafka broker %s: %s; retrying", self.bootstrap, error.str())
        else:
            log.debug("Kafka broker %s: %s", self.bootstrap, error.str())

    def _take_pending(self) -> Optional[KafkaException]:
        exc, self._pending = self._pending, None
        return exc

    def _raise_pending(self) -> None:
        exc = self._pending
        if exc is not None:
            self._pending = None
            raise exc

    def _message_error(self, message: Any) -> None:
        error = message.error()
        code = error.code()
        if code == confluent_kafka.KafkaError._PARTITION_EOF:
            return
        topic = message.topic()
        if code in _errors.UNKNOWN_TOPIC:
            if topic:
                self._warn_missing(topic)
            return
        exc = _errors.exception_for(error, topic=topic, group=self.group_id, server=self.bootstrap)
        if exc is not None:
            raise exc
        self._transient(error)

    def _set_ready(self) -> None:
        if not self._ready.is_set():
            self._ready.set()
            for hook in self._on_ready:
                hook()

    def when_ready(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the reader is positioned (at once if it already is).

        A private reader is positioned when it opens; a consumer-group reader once the
        group gave it its first partitions.

        Parameters
        ----------
        hook : callable
            Called without arguments, from the thread that reads.
        """
        if self._ready.is_set():
            hook()
        else:
            self._on_ready.append(hook)

    # -- the hop Consumer API ------------------------------------------------------------

    def read(
        self,
        metadata: bool = False,
        autocommit: bool = True,
        batch_size: int = 1,
        batch_timeout: timedelta = timedelta(seconds=0.2),
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Yield alerts as they arrive, until :meth:`stop` is called.

        Parameters
        ----------
        metadata : bool, optional
            Yield ``(payload, hop.io.Metadata)`` pairs instead of payloads.
        autocommit : bool, optional
            Mark an alert done when the next one is asked for (hop's behaviour). Pass False
            and call :meth:`mark_done` yourself to mark it done after handling it.
        batch_size : int, optional
            At least this many buffered alerts are taken at once. The reader never waits to
            fill a batch: it takes what is buffered, and otherwise waits for the next alert.
        batch_timeout : datetime.timedelta, optional
            Accepted for hop compatibility; waiting is bounded by 0.02 s slices instead.
        **kwargs
            Ignored (hop compatibility).

        Yields
        ------
        payload or (payload, hop.io.Metadata)
            The decoded alert (a hop model; see :func:`decode_message`).

        Raises
        ------
        adc.errors.KafkaException
            For a fatal error, a refused credential or a missing ACL.
        """
        consumer = self._consumer
        consume = consumer.consume
        poll = consumer.poll
        drain = max(_DRAIN, int(batch_size))
        stop = self._stop
        ignoretest = self.ignoretest
        previous = None
        while not stop.is_set():
            if self._pending is not None:
                self._raise_pending()
            if self._found:
                self._assign_found()
            batch = consume(drain, 0)
            if not batch:
                first = poll(_POLL_SLICE)
                if first is None:
                    continue
                batch = [first]
            if self._outage:
                self._outage = False
                log.warning("Kafka broker %s: connection restored", self.bootstrap)
            for message in batch:
                if message.error() is not None:
                    self._message_error(message)
                    continue
                # one pass over the headers (librdkafka converts them once per message)
                # finds the hop format and the test flag
                headers: Any = message.headers()  # a list of (str, bytes) when reading
                fmt = None
                if headers:
                    test = False
                    for key, header in headers:
                        if key == "_format":
                            if fmt is None:
                                fmt = header
                        elif key == "_test":
                            test = True
                    if test and ignoretest:
                        continue
                if previous is not None:
                    self._store(previous)
                    previous = None
                payload = _decode(message, fmt)
                if autocommit:
                    previous = message
                yield (payload, _metadata(message, headers)) if metadata else payload
                if stop.is_set():
                    break
        if previous is not None:
            self._store(previous)

    def _store(self, message: Any) -> None:
        if not self._private:
            try:
                self._consumer.store_offsets(message=message)
            except confluent_kafka.KafkaException as exc:
                log.debug("cannot store the offset (partition revoked?): %s", exc)

    def mark_done(self, metadata: Any, asynchronous: bool = True) -> None:
        """Mark an alert handled, so that its consumer group resumes after it.

        Parameters
        ----------
        metadata : hop.io.Metadata
            The alert's metadata, as yielded by :meth:`read`.
        asynchronous : bool, optional
            False commits at once; True (default) lets the next periodic commit do it.
        """
        if self._private:
            return
        raw = metadata._raw
        if asynchronous:
            self._store(raw)
        else:
            self._consumer.commit(message=raw, asynchronous=False)

    def stop(self) -> None:
        """Make :meth:`read` return (thread-safe; takes effect within 0.02 s)."""
        self._stop.set()

    def close(self) -> None:
        """Stop, commit what was marked done (with a consumer group) and disconnect."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._consumer.close()
        except RuntimeError:  # already closed
            pass

    def __enter__(self) -> AlertReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
