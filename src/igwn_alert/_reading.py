"""The Kafka stream behind ``client.open(url, "r", ...)``: hop's Consumer API on librdkafka.

:class:`AlertReader` reads alerts and leaves positions to librdkafka:

* With a consumer group it joins the group (``subscribe``): listeners of one group share
  the partitions, and librdkafka resumes each assigned partition at its committed
  position. An offset is *stored* only by :meth:`AlertReader.mark_done`, after the
  callback for that alert returned; librdkafka commits what was stored (every second, on
  a re-balance and on close). A partition without a committed position, in a group that
  has positions, is read from its first alert. The hand-made commits are a group's start,
  before it is joined: the newest alert for a brand-new group
  (:meth:`AlertReader._position_group`), the replay's start for ``since``
  (:meth:`AlertReader._rewind_group`); no position is looked up inside a re-balance.
* Without a consumer group it assigns the partitions itself, at concrete offsets, and keeps
  a :class:`~igwn_alert._positions.Ledger` of how far each is done, so that a reader
  reopened with :meth:`AlertReader.positions` resumes every partition exactly.
* Opening does no network round trip: the start-up (metadata, assignment) runs inside
  :meth:`AlertReader.read` and is cut short by :meth:`AlertReader.stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from hop.io import Metadata, StartPosition

from . import _errors
from ._decoding import decode, payload_of
from ._kafka_config import base_config, reader_settings
from ._lag import live_lag
from ._positions import Ledger, StartSpec, replay_offsets, wanted_offset
from ._stats import ListenerStats
from ._topics import short_name
from ._watcher import PartitionWatcher
from .exceptions import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnreachableError,
    KafkaException,
    TopicNotFoundError,
)

__all__ = ["AlertReader", "StartSpec"]

log = logging.getLogger(__name__)

# longest wait inside librdkafka, so stop() is seen within this; an idle listener wakes
# 50 times a second for it (idle listener over 10 s: 0.2% -> 0.3% of one core)
_POLL_SLICE = 0.02
_DRAIN = 500  # most alerts taken at once from what librdkafka already buffered
_BATCH_BUDGET = 0.5  # seconds of callbacks per batch before batches shrink
_METADATA_TIMEOUT = 10.0
_LOOKUP_TIMEOUT = 10.0
_REPORT_EVERY = 1.0  # seconds between two lag reports to the listener's stats
#: Once listening, a credential refused for this long is no broker restart: it is reported.
_REFUSED_FOR = 60.0
_GROUP_LOOKUP = 5.0  # seconds to look up a group's positions before joining it
#: how long close() waits for librdkafka after stop() before finishing in the background
_CLOSE_AFTER_STOP = 0.3
#: a replay from the earliest alert: each partition's first alert at or after this time
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: the answers to a commit of a group's start when the group has members (Kafka moves only
#: a group without members)
_GROUP_HAS_MEMBERS = frozenset(
    {
        confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
        confluent_kafka.KafkaError.ILLEGAL_GENERATION,
        confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    }
)


def _metadata_fast(message: Any, headers: Any) -> Metadata:
    # hop's Metadata.from_message goes through the frozen dataclass __init__ (one
    # object.__setattr__ per field); filling the instance dict gives an equal object in
    # half the time
    md = _new_metadata(Metadata)
    fields = md.__dict__  # item by item: faster than update(**fields)
    fields["topic"] = message.topic()
    fields["partition"] = message.partition()
    fields["offset"] = message.offset()
    fields["timestamp"] = message.timestamp()[1]
    fields["key"] = message.key()
    fields["headers"] = headers
    fields["_raw"] = message
    return md


def _metadata_hop(message: Any, headers: Any) -> Metadata:
    return Metadata.from_message(message)


#: What ``_messages`` yields (see there).
_DECODED, _DECODED_MD, _RAW, _RAW_MD, _LISTEN = range(5)

_new_metadata = object.__new__
_METADATA_FIELDS = ("topic", "partition", "offset", "timestamp", "key", "headers", "_raw")
_metadata = (
    _metadata_fast
    if tuple(getattr(Metadata, "__dataclass_fields__", ())) == _METADATA_FIELDS
    and "__slots__" not in vars(Metadata)
    else _metadata_hop
)


def _kafka_error(exc: BaseException, *, server: str, group: Optional[str]) -> KafkaException:
    """The client's exception for a raw ``confluent_kafka.KafkaException``."""
    error = exc.args[0] if exc.args else None
    if error is None or not hasattr(error, "code"):
        return BrokerUnreachableError(f"Kafka request to {server} failed: {exc}")
    clear = _errors.exception_for(error, group=group, server=server)
    if clear is not None:
        return clear
    return BrokerUnreachableError(f"Kafka request to {server} failed: {error.str()}", error)


def _topics_of(partitions: Any) -> str:
    """The topics of ``(topic, partition)`` keys, for a message."""
    return ", ".join(sorted({topic for topic, _ in partitions}))


class AdcStyleConsumer:
    """What hop's Consumer keeps as ``_consumer`` (an adc Consumer), for code that reaches it.

    ``stream._consumer.stop()`` (the reference's ``stop()``, and older gwcelery releases)
    stops the reader; ``close()`` closes it; ``mark_done(message)`` marks a raw message
    done; anything else is the underlying :class:`confluent_kafka.Consumer`'s.

    Parameters
    ----------
    reader : AlertReader
        The reader.
    kafka : confluent_kafka.Consumer
        Its consumer.
    """

    def __init__(self, reader: AlertReader, kafka: Any) -> None:
        self._reader = reader
        self._consumer = kafka  # adc's name for the confluent-kafka consumer

    def stop(self) -> None:
        """Make the reader's ``read()`` return (thread-safe)."""
        self._reader.stop()

    def close(self) -> None:
        """Close the reader."""
        self._reader.close()

    def mark_done(self, message: Any, asynchronous: bool = True) -> None:
        """Mark a raw Kafka message done (adc's signature)."""
        self._reader.done(message, asynchronous)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


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
        The consumer group; None for a private reader (no group join).
    start_at : StartSpec, optional
        Where to start: ``StartPosition.LATEST`` (default; with a consumer group, where
        the group left off), ``EARLIEST``, a :class:`datetime.datetime`, or explicit
        positions ``{(topic, partition): offset}`` (a private reader resuming).
    ignoretest : bool, optional
        Skip hop test messages (those with a ``_test`` header), as hop does.
    until_eos : bool, optional
        End :meth:`read` once every partition was read to its end.
    config : dict, optional
        librdkafka settings merged last (already checked by the client).
    private_group : str, optional
        The ``group.id`` librdkafka gets for a private reader (it never joins it).
    """

    _igwn_alert_reader = True  # the listen loop's readiness and resume hooks are here

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        credential: Any = None,
        group_id: Optional[str] = None,
        start_at: StartSpec = None,
        ignoretest: bool = True,
        until_eos: bool = False,
        config: Optional[dict[str, Any]] = None,
        private_group: Optional[str] = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.ignoretest = ignoretest
        self.until_eos = until_eos
        self._start_at: StartSpec = StartPosition.LATEST if start_at is None else start_at
        self._private = group_id is None
        self._credential = credential
        self._stop = threading.Event()
        self._stopping = threading.Event()  # stop() was called (not only close())
        self._ready = threading.Event()
        self._on_ready: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self._starting: Optional[threading.Thread] = None  # the start-up (see _begin)
        self._pending: Optional[KafkaException] = None
        self._outage = False
        #: topic (None: the whole connection) -> (since, error) of credentials refused while
        #: listening; retried for _REFUSED_FOR seconds, forgotten when an alert comes through
        self._refused: dict[Optional[str], tuple[float, KafkaException]] = {}
        self._warned_missing: set[str] = set()
        self._assigned: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()
        self._ledger = Ledger()
        self._anchored: set[tuple[str, int]] = set()
        self._existing: set[tuple[str, int]] = set()  # partitions there when it started
        #: set by the listen loop: partitions held and lag are reported to it (about 1/s)
        self.stats: Optional[ListenerStats] = None
        self.stats_group = ""  # the GraceDB group, for short topic names in the stats
        self._reported = 0.0
        self._extra = dict(config or {})
        self._watcher: Optional[PartitionWatcher] = None
        settings = reader_settings(private=self._private, until_eos=until_eos)
        if not self._private:
            # a partition with no committed position, in a group that has positions, is
            # new to the group (created later, or its commit lost): it is read from its
            # first alert; a brand-new group gets its start committed by _position_group
            settings["auto.offset.reset"] = "earliest"
        settings["group.id"] = group_id or private_group or "igwn-alert-private"
        settings["error_cb"] = self._on_error
        settings.update(self._extra)
        if str(settings.get("group.protocol", "classic")).lower() == "consumer":
            # KIP-848: the broker owns the session and the assignment; librdkafka refuses
            # the classic protocol's settings
            for key in ("session.timeout.ms", "heartbeat.interval.ms"):
                if key not in self._extra:
                    settings.pop(key, None)
            if "partition.assignment.strategy" not in self._extra:
                settings.pop("partition.assignment.strategy", None)
        self._kafka = confluent_kafka.Consumer(base_config(bootstrap, credential, settings))
        self._consumer = AdcStyleConsumer(self, self._kafka)

    # -- start-up (inside read(), so that stop() cuts it short) ----------------------------

    def _start(self) -> bool:
        """Describe the topics and assign or subscribe; False if stopped meanwhile."""
        partitions = self._describe()
        if partitions is None:
            return False
        self._existing = set(partitions)
        if self._private:
            self._assign_private(partitions, initial=True)
            self._watcher = PartitionWatcher(self.topics, self._watcher_config)
            self._watcher.start(self._assigned)
            self._set_ready()
        elif self.until_eos and not partitions:
            self._set_ready()  # nothing to read to its end: done at once
        else:
            replay = self._start_at == StartPosition.EARLIEST or isinstance(
                self._start_at, datetime
            )
            if replay:
                if not self._rewind_group(partitions):
                    return False
            elif not self._position_group(partitions):
                return False
            self._kafka.subscribe(
                self.topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        return True

    def _begin(self) -> bool:
        """Run :meth:`_start` in a thread of its own and wait for it, or for :meth:`stop`.

        The start-up's requests (metadata, a group's positions, a replay's start, a
        commit) can each wait seconds for a slow or hung broker, and librdkafka cannot
        cut one short; ``stop()`` does not wait for them. The consumer is closed only once
        that thread has ended (:meth:`close` finishes in the background meanwhile). False
        if stopped (or the start-up was); the start-up's error is raised here.
        """
        outcome: list[Any] = []
        done = threading.Event()

        def start() -> None:
            try:
                outcome.append(self._start())
            except BaseException as exc:  # noqa: BLE001 - raised in the reading thread
                outcome.append(exc)
            done.set()

        self._starting = threading.Thread(target=start, name="igwn-alert-start", daemon=True)
        self._starting.start()
        while not done.wait(_POLL_SLICE):
            if self._stop.is_set():
                return False
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return bool(outcome[0]) and not self._stop.is_set()

    def _position_group(self, partitions: set[tuple[str, int]]) -> bool:
        """Give a brand-new consumer group its start (the newest alert), before joining it.

        The group's committed positions are looked up once, before the group is joined
        (inside a re-balance such a look-up can time out). A group that has a position
        anywhere is left alone: librdkafka resumes each partition there, and reads a
        partition without one from its first alert. Only a group with no position at
        all gets the current end of every partition committed, so that it starts at the
        newest alert and a member that stops before its first alert resumes there. False
        if stopped meanwhile.
        """
        if not partitions:
            return True
        ask = [TopicPartition(t, p) for t, p in sorted(partitions)]
        try:
            # one request, given time to reach the group coordinator (shorter ones are
            # cancelled before it answers); a group the credential may not use is refused
            # here, since librdkafka's join only logs that
            known = self._kafka.committed(ask, timeout=_GROUP_LOOKUP)
        except confluent_kafka.KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            clear = self._clear(error)
            if clear is not None and not isinstance(clear, TopicNotFoundError):
                raise clear from None
            self._raise_pending()
            # no answer: join the group as it is; librdkafka resumes committed partitions
            # and reads the others from their first alert, so nothing is skipped
            log.warning(
                "cannot look up the positions of consumer group %s (%s); joining it as it is",
                self.group_id,
                error.str() if hasattr(error, "str") else exc,
            )
            return True
        if self._stop.is_set():
            return False
        if any(tp.offset >= 0 for tp in known if tp.error is None):
            return True
        if self._commit_start(self._starts(None, partitions, "the newest alert")):
            log.info("new consumer group %s starts at the newest alerts", self.group_id)
        else:  # another member of the new group got there first
            log.info("new consumer group %s: another member gave it its start", self.group_id)
        return True

    def _rewind_group(self, partitions: set[tuple[str, int]]) -> bool:
        """A replay (``since``) with a consumer group: move the group to the replay's start.

        The start of every partition is looked up and committed once, before the group is
        joined, so that whichever member is given a partition (this one, another, or this
        one again after a re-balance) resumes it there; librdkafka then resumes and commits
        as for any group. Kafka lets only a group without members be moved: if the group
        has members listening, this member joins it where it is, with a warning (the replay
        does not take place). False if stopped meanwhile.

        Raises
        ------
        adc.errors.KafkaException
            If a start cannot be looked up (naming the partitions), or the commit is
            refused for another reason (a group the credential may not use).
        """
        if not partitions:
            return True
        since = self._start_at if isinstance(self._start_at, datetime) else _EPOCH
        what = "the first retained alert" if since is _EPOCH else f"the replay start ({since})"
        start = self._starts(since, partitions, what)
        if self._stop.is_set():
            return False
        if self._commit_start(start):
            log.info("consumer group %s replays from %s", self.group_id, what)
        else:
            log.warning(
                "consumer group %s has members listening: Kafka moves only a group without "
                "members, so this member joins it where it is and does not replay from %s "
                "(stop the group's other members to replay it)",
                self.group_id,
                what,
            )
        return True

    def _starts(
        self, at: Optional[datetime], partitions: set[tuple[str, int]], what: str
    ) -> dict[tuple[str, int], int]:
        """Look up where each partition starts (its end, or at a time); errors made clear."""
        try:
            return replay_offsets(self._kafka, at, sorted(partitions), _LOOKUP_TIMEOUT)
        except confluent_kafka.KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            clear = self._clear(error, _topics_of(partitions))
            if clear is not None and not isinstance(clear, TopicNotFoundError):
                raise clear from None
            where = ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))
            reason = error.str() if hasattr(error, "str") else str(exc)
            raise BrokerUnreachableError(
                f"cannot look up {what} of {where} on {self.bootstrap}: {reason}", error
            ) from None

    def _commit_start(self, start: dict[tuple[str, int], int]) -> bool:
        """Commit a group's start before joining it; False if the group has members.

        A coordinator still being found or loaded (a broker just started) is asked again
        until :data:`_LOOKUP_TIMEOUT`; meanwhile the consumer's queue is looked at for a
        clear refusal (see :meth:`_queued_error`), which is raised at once.
        """
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(start.items()) if o >= 0]
        deadline = time.monotonic() + _LOOKUP_TIMEOUT
        while offsets and not self._stop.is_set():
            try:
                self._kafka.commit(offsets=offsets, asynchronous=False)
                break
            except confluent_kafka.KafkaException as exc:
                error: Any = exc.args[0] if exc.args else None
                code = error.code() if hasattr(error, "code") else None
                if code in _GROUP_HAS_MEMBERS:
                    return False
                clear = self._clear(error, _topics_of(start)) or self._queued_error()
                if clear is not None:
                    raise clear from None
                if code not in _errors.TRANSIENT or time.monotonic() >= deadline:
                    raise _kafka_error(exc, server=self.bootstrap, group=self.group_id) from None
        return True

    def _queued_error(self) -> Optional[KafkaException]:
        """A clear error that librdkafka queued for the consumer instead of ``error_cb``.

        A group the credential may not use makes a commit before joining fail with only
        "Waiting for coordinator"; the refusal (``GROUP_AUTHORIZATION_FAILED``) waits on
        the consumer's queue. Nothing is assigned yet, so polling hands out no alert.
        """
        deadline = time.monotonic() + 0.25
        while time.monotonic() < deadline:
            message = self._kafka.poll(0.05)
            if message is not None and message.error() is not None:
                clear = self._clear(message.error())
                if clear is not None and not isinstance(clear, TopicNotFoundError):
                    return clear
        return self._take_pending()

    def _clear(self, error: Any, topic: Optional[str] = None) -> Optional[KafkaException]:
        """The client's clear exception for a librdkafka error, if it has one."""
        if error is None or not hasattr(error, "code"):
            return None
        return _errors.exception_for(error, topic=topic, group=self.group_id, server=self.bootstrap)

    def _watcher_config(self, extra: dict[str, Any]) -> dict[str, Any]:
        return base_config(self.bootstrap, self._credential, extra)

    def _describe(self) -> Optional[set[tuple[str, int]]]:
        """The existing partitions of the topics (warning about missing ones), or None."""
        md = self._metadata(None)
        if md is None:
            return None
        found: set[tuple[str, int]] = set()
        for topic in self.topics:
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None:
                # a credential may describe a topic without listing them all
                one = self._metadata(topic)
                if one is None:
                    return None
                meta = one.topics.get(topic)
            if meta is not None and meta.error is not None:
                exc = _errors.exception_for(meta.error, topic=topic, server=self.bootstrap)
                if exc is not None and not isinstance(exc, TopicNotFoundError):
                    raise exc
                meta = None
            if meta is None:
                self._warn_missing(topic)
                continue
            found |= {(topic, p) for p in meta.partitions}
        return found

    def _metadata(self, topic: Optional[str]) -> Any:
        """The metadata of one topic or (None) all, serving callbacks; None if stopped."""
        return _errors.list_topics(
            self._kafka,
            topic=topic,
            timeout=_METADATA_TIMEOUT,
            serve=lambda: self._kafka.poll(0),
            failed=self._take_pending,
            server=self.bootstrap,
            stopped=self._stop,
        )

    def _warn_missing(self, topic: str) -> None:
        if topic not in self._warned_missing:
            self._warned_missing.add(topic)
            log.warning(
                "topic %s does not exist on %s yet; its alerts will be delivered once it "
                "is created",
                topic,
                self.bootstrap,
            )

    def _assign_private(self, keys: set[tuple[str, int]], initial: bool) -> None:
        """Assign partitions of a private reader at concrete offsets, noted in the ledger."""
        new = sorted(k for k in keys if k not in self._assigned)
        if not new:
            return
        offsets: dict[tuple[str, int], int] = {}
        lookup = []
        for key in new:
            offset = wanted_offset(self._start_at, key) if initial else OFFSET_BEGINNING
            if offset is None and isinstance(self._start_at, dict):
                offset = OFFSET_BEGINNING  # appeared while the reader was away
            if offset is None:
                lookup.append(key)
            else:
                offsets[key] = offset
        if lookup:
            at = self._start_at if isinstance(self._start_at, datetime) else None
            try:
                offsets.update(replay_offsets(self._kafka, at, lookup, _LOOKUP_TIMEOUT))
            except confluent_kafka.KafkaException as exc:
                raise _kafka_error(exc, server=self.bootstrap, group=None) from None
        for key, offset in offsets.items():
            self._ledger.start(key, offset)
        self._kafka.incremental_assign([TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        self._assigned |= set(new)
        log.debug("assigned %s", offsets)

    # -- group membership (librdkafka calls these from poll/consume) ----------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # as librdkafka gave them: it resumes each at the group's committed position (a
        # replay's start was committed before joining: _rewind_group)
        try:
            consumer.incremental_assign(partitions)
        except Exception as exc:  # noqa: BLE001 - never raise into librdkafka
            self._fail(exc)
            return
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self._set_ready()
        log.info("assigned partitions %s", [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            consumer.commit(asynchronous=False)  # what was stored: alerts done
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != confluent_kafka.KafkaError._NO_OFFSET:
                log.warning("cannot commit positions: %s", exc.args[0].str())
        except Exception as exc:  # noqa: BLE001 - never raise into librdkafka
            log.warning("cannot commit positions: %s", exc)
        self._drop(partitions, "partitions taken away: %s", logging.INFO)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._drop(partitions, "partitions lost: %s", logging.WARNING)

    def _drop(self, partitions: list[TopicPartition], text: str, level: int) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= keys
        self._at_end -= keys
        self._anchored -= keys
        self._ledger.forget(keys)
        log.log(level, text, sorted(keys))

    # -- errors -----------------------------------------------------------------------------

    def _on_error(self, error: Any) -> None:
        try:
            exc = _errors.exception_for(error, group=self.group_id, server=self.bootstrap)
            if not self._retried(None, error, exc) and self._pending is None:
                self._pending = exc
        except Exception:
            log.exception("cannot handle a Kafka error")

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, confluent_kafka.KafkaException):
            exc = _kafka_error(exc, server=self.bootstrap, group=self.group_id)
        if not isinstance(exc, KafkaException):
            exc = BrokerUnreachableError(f"Kafka request to {self.bootstrap} failed: {exc}")
        if self._pending is None:
            self._pending = exc

    def _retried(self, topic: Optional[str], error: Any, exc: Optional[KafkaException]) -> bool:
        """Whether an error is left to librdkafka's retries (else the caller reports it).

        Transient errors are; so is, once listening, a refused credential that librdkafka
        does not call fatal (what a broker restart looks like: SCIMMA's do this), for
        :data:`_REFUSED_FOR` seconds (see :meth:`_check_refused`).
        """
        if exc is None:
            self._transient(error)
            return True
        credential = isinstance(exc, (AuthenticationError, AuthorizationError))
        if credential and self._ready.is_set() and not error.fatal():
            self._refused.setdefault(topic, (time.monotonic(), exc))
            self._transient(error)
            return True
        return False

    def _check_refused(self) -> None:
        """Report a refusal that lasted :data:`_REFUSED_FOR` seconds (raises it)."""
        now = time.monotonic()
        for topic, (since, exc) in list(self._refused.items()):
            if now - since >= _REFUSED_FOR:
                self._refused.clear()
                log.error(
                    "the credential is still refused after %.0f s of retrying%s: %s",
                    now - since,
                    f" (topic {topic})" if topic else "",
                    exc,
                )
                raise exc

    def _came_through(self, topic: Optional[str]) -> None:
        self._refused.pop(topic, None)
        self._refused.pop(None, None)
        if self._outage:
            self._outage = False
            log.warning("Kafka broker %s: connection restored", self.bootstrap)
            if self.stats is not None and self._ready.is_set():
                self.stats.set_state("listening")

    def _transient(self, error: Any) -> None:
        if not self._outage:
            self._outage = True
            log.warning("Kafka broker %s: %s; retrying", self.bootstrap, error.str())
            if self.stats is not None and self._ready.is_set():
                self.stats.error("outage")
                self.stats.set_state("reconnecting")
        else:
            log.debug("Kafka broker %s: %s", self.bootstrap, error.str())

    def _take_pending(self) -> Optional[KafkaException]:
        exc, self._pending = self._pending, None
        return exc

    def _raise_pending(self) -> None:
        exc = self._take_pending()
        if exc is not None:
            raise exc

    def _message_error(self, message: Any) -> None:
        error = message.error()
        code = error.code()
        if code == confluent_kafka.KafkaError._PARTITION_EOF:
            self._at_end.add((message.topic(), message.partition()))
            return
        topic = message.topic()
        if code in _errors.UNKNOWN_TOPIC:
            if topic:
                self._warn_missing(topic)
            return
        exc = _errors.exception_for(error, topic=topic, group=self.group_id, server=self.bootstrap)
        if not self._retried(topic or None, error, exc):
            assert exc is not None  # _retried handles None
            raise exc

    # -- readiness ----------------------------------------------------------------------------

    def _set_ready(self) -> None:
        if not self._ready.is_set():
            self._ready.set()
            for hook in self._on_ready:
                hook()

    def when_ready(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the reader is positioned (at once if it already is).

        A private reader is positioned once it assigned its partitions; a consumer-group
        reader once the group gave it its first partitions.

        Parameters
        ----------
        hook : callable
            Called without arguments, from the thread that reads (or the start-up's).
        """
        if self._ready.is_set():
            hook()
        else:
            self._on_ready.append(hook)

    # -- reading ------------------------------------------------------------------------------

    def _finished(self) -> bool:
        """until_eos: every partition held was read to its end."""
        return self._ready.is_set() and self._at_end >= self._assigned

    def read(
        self,
        metadata: bool = False,
        autocommit: bool = True,
        batch_size: int = 1,
        batch_timeout: timedelta = timedelta(seconds=0.2),
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Yield alerts as they arrive, until :meth:`stop` (or the end, with ``until_eos``).

        Parameters
        ----------
        metadata : bool, optional
            Yield ``(payload, hop.io.Metadata)`` pairs instead of payloads.
        autocommit : bool, optional
            Mark an alert done when the next one is asked for (hop's behaviour). Pass False
            and call :meth:`mark_done` yourself to mark it done after handling it.
        batch_size : int, optional
            How many buffered alerts to take at once at first; batches grow while the
            caller handles them quickly and shrink when it is slow, so that a consumer
            group member calls librdkafka often enough to stay in its group.
        batch_timeout : datetime.timedelta, optional
            Accepted for hop compatibility; an alert that arrived is never held back.
        **kwargs
            Ignored (hop compatibility).

        Yields
        ------
        payload or (payload, hop.io.Metadata)
            The decoded alert (a hop model; raw bytes as a :class:`hop.models.Blob`).

        Raises
        ------
        adc.errors.KafkaException
            For a fatal error, a refused credential or a missing ACL (each reported once).
        """
        # one generator, not a generator wrapping another: this is the listen loop's path
        return self._messages(
            max(1, int(batch_size)), autocommit, _DECODED_MD if metadata else _DECODED
        )

    def read_raw(self, metadata: bool = False, autocommit: bool = True, **kwargs: Any) -> Any:
        """Yield the raw :class:`confluent_kafka.Message` objects (hop's ``read_raw``).

        Parameters
        ----------
        metadata : bool, optional
            Yield ``(message, hop.io.Metadata)`` pairs.
        autocommit : bool, optional
            As for :meth:`read`.
        **kwargs
            ``batch_size`` as for :meth:`read`; others ignored.

        Yields
        ------
        confluent_kafka.Message or (confluent_kafka.Message, hop.io.Metadata)
            The messages.
        """
        size = max(1, int(kwargs.get("batch_size", 1)))
        return self._messages(size, autocommit, _RAW_MD if metadata else _RAW)

    def listen_items(self, batch_size: int = 1) -> Iterator[Any]:
        """The listen loop's items: ``(payload, topic, partition, offset, timestamp, token)``.

        ``payload`` is what the callback receives (:func:`~igwn_alert._decoding.payload_of`),
        ``timestamp`` the Kafka timestamp in ms, and ``token`` the raw message, for
        :meth:`done` and :func:`metadata_of`; nothing is marked done by reading.

        Parameters
        ----------
        batch_size : int, optional
            As for :meth:`read`.

        Returns
        -------
        iterator of tuple
            The items.
        """
        return self._messages(max(1, int(batch_size)), False, _LISTEN)

    @staticmethod
    def metadata_of(token: Any) -> Metadata:
        """hop's Metadata of a :meth:`listen_items` token (for callbacks that want it).

        Parameters
        ----------
        token : confluent_kafka.Message
            The token.

        Returns
        -------
        hop.io.Metadata
            Its metadata.
        """
        return _metadata(token, token.headers())

    def _messages(self, take: int, autocommit: bool, shape: int) -> Iterator[Any]:
        """The hot loop: messages in order, errors raised, positions never touched.

        ``shape`` is what is yielded: :data:`_DECODED` payloads, :data:`_DECODED_MD`
        ``(payload, metadata)``, :data:`_RAW` messages, :data:`_RAW_MD` ``(message,
        metadata)`` or :data:`_LISTEN` items (see :meth:`listen_items`).
        """
        if not self._started:
            self._started = True
            if not self._begin():
                return
        kafka = self._kafka
        consume, poll = kafka.consume, kafka.poll
        stop, ignoretest, guard = self._stop, self.ignoretest, not self._private
        until_eos = self.until_eos
        anchor, anchored = not self._private, self._anchored
        limit = _DRAIN
        previous = None
        while not stop.is_set():
            if self._pending is not None:
                self._raise_pending()
            if self._watcher is not None:
                found = self._watcher.take()
                if found:
                    self._assign_private(found, initial=False)
            if until_eos and self._finished():
                break
            if self._refused:
                self._check_refused()
            if self.stats is not None:
                now = time.perf_counter()
                if now - self._reported > _REPORT_EVERY:
                    self._report(now)
            batch = consume(take, 0)
            if not batch:
                first = poll(_POLL_SLICE)
                if first is None:
                    continue
                batch = [first]
            began = time.perf_counter()
            troubled = self._outage or bool(self._refused)
            for index, message in enumerate(batch):
                if message.error() is not None:
                    self._message_error(message)
                    troubled = self._outage or bool(self._refused)
                    continue
                if troubled:  # an alert came through: the outage (or refusal) is over
                    self._came_through(message.topic())
                    troubled = self._outage or bool(self._refused)
                # one pass over the headers (librdkafka converts them once per message)
                headers: Any = message.headers()
                fmt = None
                if headers:
                    test = False
                    for name, value in headers:
                        if name == "_format":
                            if fmt is None:  # the first decides, as in hop; b"": no value
                                fmt = b"" if value is None else value
                        elif name == "_test":
                            test = True
                    if test and ignoretest:
                        continue
                if anchor:
                    where: Any = (message.topic(), message.partition())
                    if where not in anchored:
                        self._anchor(message, where)
                if until_eos:
                    self._at_end.discard((message.topic(), message.partition()))
                if previous is not None:
                    self.done(previous)
                    previous = None
                if autocommit:
                    previous = message
                if shape == _LISTEN:
                    yield (
                        payload_of(message, fmt),
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        message.timestamp()[1],
                        message,
                    )
                elif shape == _DECODED_MD:
                    yield decode(message, fmt), _metadata(message, headers)
                elif shape == _DECODED:
                    yield decode(message, fmt)
                elif shape == _RAW:
                    yield message
                else:
                    yield message, _metadata(message, headers)
                if stop.is_set():
                    break
                if guard and not index & 15 and time.perf_counter() - began > _BATCH_BUDGET * 4:
                    self._rewind(batch[index + 1 :])  # stay in the group: poll again now
                    break
            spent = time.perf_counter() - began
            if spent > _BATCH_BUDGET:
                take = max(1, int(take * _BATCH_BUDGET / spent))
            elif spent < _BATCH_BUDGET / 4 and take < limit:
                take = min(limit, take * 2)
        if previous is not None:
            self.done(previous)

    def idle(self, seconds: float, stop: threading.Event) -> bool:
        """Wait (a callback's retry) while staying in the consumer group; True if stopped.

        The partitions are paused and librdkafka is polled meanwhile, so a member that
        waits longer than ``max.poll.interval.ms`` in all is not thrown out of its group;
        an alert that arrives anyway is given back (librdkafka fetches it again).
        """
        if seconds <= 0:
            return stop.is_set()
        if self._private or not self._assigned:
            return stop.wait(seconds)
        held = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        deadline = time.monotonic() + seconds
        try:
            self._kafka.pause(held)
        except confluent_kafka.KafkaException as exc:
            log.debug("cannot pause while waiting: %s", exc)
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                message = self._kafka.poll(min(left, _POLL_SLICE * 5))
                if message is not None and message.error() is None:
                    self._rewind([message])
            return True
        finally:
            try:
                self._kafka.resume([TopicPartition(t, p) for t, p in sorted(self._assigned)])
            except confluent_kafka.KafkaException as exc:
                log.debug("cannot resume after waiting: %s", exc)

    def _anchor(self, message: Any, key: tuple[str, int]) -> None:
        """Store "resume here" at a partition's first alert since it was assigned.

        Storing the offset *of* an alert (not after it) marks nothing done: for a group
        that had a committed position it is that position again; for a new group (which
        librdkafka started at the end) it makes librdkafka's next commit record where
        this member started, so a member that fails on its very first alert, or the one
        that takes the partition over, starts at that alert instead of at a newer end.
        """
        self._anchored.add(key)
        try:
            self._kafka.store_offsets(offsets=[TopicPartition(key[0], key[1], message.offset())])
        except confluent_kafka.KafkaException as exc:
            log.debug("cannot store the start of %s[%d]: %s", key[0], key[1], exc)

    def _report(self, now: float) -> None:
        """Tell the listen loop's stats which partitions are held and how far behind."""
        self._reported = now
        stats = self.stats
        if stats is None:
            return
        try:
            group = self.stats_group
            stats.set_partitions((short_name(t, group), p) for t, p in sorted(self._assigned))
            stats.set_lag(live_lag(self._kafka, group))
        except Exception as exc:  # noqa: BLE001 - statistics never stop the listener
            log.debug("cannot report lag: %s", exc)

    def _rewind(self, rest: list[Any]) -> None:
        """Give back alerts taken but not handed out (librdkafka fetches them again)."""
        first: dict[tuple[str, int], int] = {}
        for message in rest:
            if message.error() is None:
                key = (message.topic(), message.partition())
                first.setdefault(key, message.offset())
        for (topic, part), offset in first.items():
            try:
                self._kafka.seek(TopicPartition(topic, part, offset))
            except confluent_kafka.KafkaException as exc:
                log.debug("cannot seek %s[%d] back to %d: %s", topic, part, offset, exc)

    # -- positions --------------------------------------------------------------------------

    def done(self, message: Any, asynchronous: bool = True) -> None:
        """Mark the alert of a raw message (a :meth:`listen_items` token) done.

        Parameters
        ----------
        message : confluent_kafka.Message
            The message.
        asynchronous : bool, optional
            As for :meth:`mark_done`.
        """
        if self._private:
            self._ledger.done((message.topic(), message.partition()), message.offset())
            return
        try:
            if asynchronous:
                self._kafka.store_offsets(message=message)
            else:
                self._kafka.commit(message=message, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            log.debug("cannot store the offset (partition revoked?): %s", exc)

    def mark_done(self, metadata: Any, asynchronous: bool = True) -> None:
        """Mark an alert handled, so that neither a reopen nor its group delivers it again.

        Parameters
        ----------
        metadata : hop.io.Metadata
            The alert's metadata, as yielded by :meth:`read`.
        asynchronous : bool, optional
            False commits at once (consumer group); True (default) stores the offset for
            librdkafka's next commit.
        """
        if self._private:  # the metadata's own fields: no call into the message
            self._ledger.done((metadata.topic, metadata.partition), metadata.offset)
            return
        self.done(metadata._raw, asynchronous)

    def positions(self) -> dict[tuple[str, int], int]:
        """Where each partition held resumes: the first alert not done yet.

        Returns
        -------
        dict
            ``(topic, partition) -> offset``; pass it as ``start_at`` to a new reader.
        """
        return self._ledger.snapshot()

    # -- hop Consumer API ------------------------------------------------------------------

    @staticmethod
    def is_test(message: Any) -> bool:
        """Whether a raw message is a hop test message (has a ``_test`` header).

        Parameters
        ----------
        message : confluent_kafka.Message
            The message.

        Returns
        -------
        bool
            True for a test message.
        """
        headers = message.headers()
        return bool(headers) and any(name == "_test" for name, _ in headers)

    def list_topics(self, timeout: float = -1.0) -> dict[str, Any]:
        """Return the topics visible to this reader's credential (hop's ``list_topics``).

        Parameters
        ----------
        timeout : float, optional
            Seconds; negative for librdkafka's default.

        Returns
        -------
        dict
            Topic name -> :class:`confluent_kafka.admin.TopicMetadata`.
        """
        try:
            md = self._kafka.list_topics(timeout=timeout if timeout >= 0 else _METADATA_TIMEOUT)
        except confluent_kafka.KafkaException as exc:
            raise _kafka_error(exc, server=self.bootstrap, group=self.group_id) from None
        return {t: d for t, d in md.topics.items() if d.error is None}

    def stop(self) -> None:
        """Make :meth:`read` return (thread-safe; takes effect within 0.02 s).

        After a stop, :meth:`close` returns within :data:`_CLOSE_AFTER_STOP` even when
        librdkafka takes longer to leave the consumer group (during a re-balance, or with
        the broker down): the close, and its final commit, then finish in a thread of
        their own that the interpreter waits for at exit.
        """
        self._stopping.set()
        self._stop.set()

    def close(self) -> None:
        """Stop, commit what was marked done (with a consumer group) and disconnect."""
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
        # not a daemon: a process that exits right after listen() returned still commits
        closing = threading.Thread(target=self._close_consumer, name="igwn-alert-close")
        closing.start()
        deadline: Optional[float] = None
        while closing.is_alive():
            closing.join(0.05)
            if self._stopping.is_set():
                deadline = deadline or time.monotonic() + _CLOSE_AFTER_STOP
                if time.monotonic() >= deadline and closing.is_alive():
                    log.info(
                        "the consumer is still leaving its group; finishing that in the background"
                    )
                    return

    def _close_consumer(self) -> None:
        if self._starting is not None:  # never close under a start-up request
            self._starting.join()
        try:
            self._kafka.close()
        except RuntimeError:  # already closed
            pass
        except Exception as exc:  # noqa: BLE001 - the reader is closed either way
            log.warning("closing the consumer: %s", exc)

    def __enter__(self) -> AlertReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
