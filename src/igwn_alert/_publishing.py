"""Publishing: writers that encode alerts the way hop does and send them with confluent-kafka.

One client has one :class:`confluent_kafka.Producer` per broker and credential
(:class:`ProducerPool`), shared by all its writers, so ``connect()`` on many topics and
bursts of ``publish()`` cost one connection. The producer is idempotent
(``enable.idempotence``, ``acks=all``): librdkafka's own retries after a lost acknowledgement
never duplicate an alert.

Errors are told to the caller whose alert it was, once, and nothing is kept beyond that:

* :meth:`AlertWriter.publish` (behind ``client.publish()``) waits for *its* alert's
  delivery report and raises only for it;
* :meth:`AlertWriter.write` (behind ``publish_to_topic()``) never raises for an earlier
  alert; the failures of the alerts it queued are logged and then raised, once, by the next
  :meth:`AlertWriter.flush` (``flush_by_topic()``), which names how many and which;
* transient errors (a broker restarting, a refused credential while it does) are logged
  once per outage and left to librdkafka, which retries until the delivery timeout;
* a fatal producer error (librdkafka gives up on the producer) makes the pool replace the
  producer: the alerts it still held fail with the reason, the next alert uses a new one.

Several threads may publish through one client: delivery reports are served by whichever
waiting thread holds the producer's poll lock (the others wait on a condition that every
report notifies), and each report goes to the bookkeeping of the writer, or the call, that
produced it.

Encoding is hop's (:meth:`hop.io.Producer.pack`): a dict, list or str goes out as hop JSON,
raw bytes as a hop blob, a hop model as itself; so the bytes on the wire are those of the
reference client.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any, Callable, Optional, Union

import confluent_kafka
from confluent_kafka import KafkaError
from hop.io import Producer as _HopProducer

from . import _errors
from ._kafka_config import DebugLog, base_config
from .exceptions import (
    AlertTooLargeError,
    AuthenticationError,
    AuthorizationError,
    DeliveryAuthorizationError,
    DeliveryError,
    KafkaException,
)

__all__ = ["DEFAULT_DELIVERY_TIMEOUT", "AlertWriter", "ProducerPool"]

log = logging.getLogger(__name__)

#: How long an alert may take to reach the broker before it counts as not delivered.
DEFAULT_DELIVERY_TIMEOUT = timedelta(seconds=30)

_METADATA_TIMEOUT = 10.0
_GRACE = 5.0  # beyond the delivery timeout, librdkafka's own report is waited for this long
_MAX_LISTED = 10  # failed alerts named one by one in a flush error
_MAX_KEPT = 1000  # failed alerts kept per writer until the next flush (then only counted)
_FIRST_SLICE = 0.005  # seconds of one flush() slice while a caller starts waiting
_FIRST_WAIT = 0.05  # ... for this long, then
_SLICE = 0.1

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})
_CREDENTIAL = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
#: How long a failed producer's callbacks are served for the cause of its fatal error.
_CAUSE_WAIT = 1.0
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._FATAL})
_WRITE_REFUSED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


def _pack(message: Any, headers: Any = None, test: bool = False, auth: Any = None) -> Any:
    """Encode an alert exactly as :meth:`hop.io.Producer.pack` does.

    A str, dict or list without extra headers (every GraceDB alert) is encoded here, with
    the same bytes and headers as hop's, in about 70% of the time (no hop model built);
    anything else goes through hop.
    """
    if headers is None and type(message) in _JSON_TYPES:
        try:
            payload = _dumps(message).encode("utf-8")
        except (TypeError, ValueError):  # hop raises its own error for these
            return _HopProducer.pack(message, headers=headers, test=test, auth=auth)
        full_headers = [("_id", _uuid4().bytes)]
        if auth is not None:
            full_headers.append(("_sender", auth.username.encode("utf-8")))
        if test:
            full_headers.append(("_test", b"true"))
        full_headers.append(("_format", b"json"))
        return payload, full_headers
    return _HopProducer.pack(message, headers=headers, test=test, auth=auth)


_JSON_TYPES = (str, dict, list)
_dumps = json.dumps
_uuid4 = uuid.uuid4


def _alert_uid(value: Any) -> Optional[str]:
    """The ``uid`` (or ``superevent_id``) of an encoded alert, for error messages.

    Parsed only when an alert failed. A GraceDB alert goes out as a JSON string holding the
    alert's JSON text, so a decoded str is decoded once more.
    """
    try:
        content = json.loads(value)
        if isinstance(content, str):
            content = json.loads(content)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(content, Mapping):
        for key in ("uid", "superevent_id", "graceid"):
            found = content.get(key)
            if isinstance(found, (str, int)) and str(found):
                return str(found)
    return None


def _describe(uid: Optional[str]) -> str:
    return f"alert {uid}" if uid else "an alert without uid"


class _ProducerLog(DebugLog):
    """librdkafka's log lines of one producer: filed at debug level, its FATAL line kept.

    confluent-kafka may report a fatal producer error only as an exception from
    ``produce``/``poll`` (even a ``SystemError`` without a cause); the ``FATAL`` log line
    librdkafka writes first still says what happened.
    """

    def __init__(self, reasons: list[str]) -> None:
        self._reasons = reasons  # not the producer itself: no reference cycle through C

    def log(self, level: int, msg: str, *args: Any) -> None:
        if args and args[0] == "FATAL":
            self._reasons.append(str(args[-1]).split("Fatal error: ", 1)[-1])
        super().log(level, msg, *args)


class _Ticket:
    """The outcome of one alert that a caller waits for (``publish()``)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: Optional[KafkaException] = None


def _forward_error(ref: Any, error: Any) -> None:
    producer = ref()
    if producer is not None:
        producer._on_error(error)


class _Producer:
    """One confluent-kafka producer, the errors it reports, and its delivery-report service.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    credential : hop.auth.Auth or None
        The credential.
    timeout : datetime.timedelta
        The delivery timeout (librdkafka's ``message.timeout.ms``).
    """

    def __init__(self, bootstrap: str, credential: Any, timeout: timedelta) -> None:
        timeout_ms = max(1, int(timeout.total_seconds() * 1000))
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.fatal_reasons: list[str] = []
        #: the fatal error that ended this producer (the pool then makes a new one)
        self.dead: Optional[KafkaException] = None
        self.known_topics: set[str] = set()
        self._cond = threading.Condition()
        self._poll_lock = threading.Lock()
        self._sleepers = 0  # threads waiting on _cond for a report or for the poll lock
        self._outage: set[str] = set()  # the kinds of error logged since the last delivery
        self._reached = False  # the broker answered once (before that, errors are raised)
        self.errors_seen = 0
        self.last_error: Any = None
        self.closed = False
        self.producer = confluent_kafka.Producer(
            base_config(
                bootstrap,
                credential,
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    # connect to the brokers the bootstrap answer names at once, not after
                    # librdkafka's >= 11 ms "sparse connection" pause: the first publish()
                    # waits for that connection (measured: 19 ms -> 7 ms on this machine)
                    "enable.sparse.connections": False,
                    "message.timeout.ms": timeout_ms,
                    "request.timeout.ms": min(timeout_ms, 30000),
                    # weakly: no reference cycle through confluent-kafka's C object
                    "error_cb": partial(_forward_error, weakref.ref(self)),
                    "logger": _ProducerLog(self.fatal_reasons),
                },
            )
        )

    # -- errors reported by librdkafka ----------------------------------------------------

    def _on_error(self, error: Any) -> None:
        try:
            if error.fatal() or error.code() == KafkaError._FATAL:
                self.mark_dead(self._fatal_exception(error))
            else:
                self._transient(error)
        except Exception:
            log.exception("cannot handle a producer error")
        self.wake()

    def _transient(self, error: Any) -> None:
        """Log a transient error once per outage (and kind); librdkafka retries by itself."""
        self.errors_seen += 1
        self.last_error = error
        kind = "credential" if error.code() in _CREDENTIAL else "connection"
        if not self._reached:
            # the first topic check raises a clear error for it (refused credential,
            # unreachable broker): no warning as well
            log.debug("producer (not connected yet): %s", error.str())
        elif kind not in self._outage:
            self._outage.add(kind)
            log.warning(
                "producer: %s (%s); librdkafka keeps retrying, alerts wait up to %g s",
                error.str(),
                self.bootstrap,
                self.timeout.total_seconds(),
            )
        else:
            log.debug("producer (still failing): %s", error.str())

    def delivered(self) -> None:
        """A delivery succeeded: any outage is over."""
        if self._outage:
            self._outage = set()
            self.last_error = None
            log.info("producer: delivering to %s again", self.bootstrap)

    def _fatal_exception(self, error: Any) -> KafkaException:
        """The clear exception for the error that ended this producer."""
        reason = None
        code = None
        if error is not None and error.code() != KafkaError._FATAL:
            code = error.code()
            reason = error.str()
        if reason is None:
            # confluent-kafka lost the error (a SystemError): librdkafka's FATAL log line
            reason = self.fatal_reasons[-1] if self.fatal_reasons else "a fatal error"
            if error is not None and error.str():
                reason = error.str()
        if code in _WRITE_REFUSED or "authoriz" in reason.lower():
            return DeliveryAuthorizationError(
                f"the credential is not authorized for writing at {self.bootstrap} "
                f"(missing WRITE ACL): {reason}",
                error,
            )
        return DeliveryError(f"the Kafka producer for {self.bootstrap} failed: {reason}", error)

    def mark_dead(self, exc: KafkaException) -> KafkaException:
        """Record the fatal error that ended this producer (the first one wins)."""
        if self.dead is None:
            self.dead = exc
            log.error("%s; the next alert will use a new producer", exc)
        return self.dead

    def from_exception(self, exc: BaseException) -> KafkaException:
        """The clear exception for what ``produce``/``poll`` raised after a fatal error."""
        if self.dead is not None:
            return self.dead
        if self.closed:  # closed by the pool while this thread was using it: not a failure
            return DeliveryError(f"the producer for {self.bootstrap} was closed")
        error = None
        if isinstance(exc, confluent_kafka.KafkaException) and exc.args:
            error = exc.args[0]
        if error is None or error.code() == KafkaError._FATAL:
            self._serve_cause()
            if self.dead is not None:  # error_cb named the cause meanwhile
                return self.dead
        return self.mark_dead(self._fatal_exception(error))

    def _serve_cause(self, seconds: float = _CAUSE_WAIT) -> None:
        """Serve librdkafka's callbacks until the cause of a fatal error is known.

        ``produce`` can raise "Local: Fatal error" before the error callback and the
        ``FATAL`` log line that name the cause (a missing WRITE ACL, say) were served.
        """
        deadline = time.monotonic() + seconds
        while self.dead is None and not self.fatal_reasons and time.monotonic() < deadline:
            try:
                self.producer.poll(0.05)
            except Exception:  # noqa: BLE001 - the producer is failed: only its cause matters
                time.sleep(0.05)

    # -- delivery reports -----------------------------------------------------------------

    def wake(self) -> None:
        """Wake the threads sleeping until a delivery report (called after each report)."""
        if self._sleepers:
            with self._cond:
                self._cond.notify_all()

    def serve(self) -> None:
        """Serve the delivery reports that are ready, unless another thread is at it."""
        if self._poll_lock.acquire(blocking=False):
            try:
                self.producer.poll(0)
            except (confluent_kafka.KafkaException, SystemError, RuntimeError) as exc:
                self.from_exception(exc)
            finally:
                self._poll_lock.release()

    def wait(self, done: Callable[[], bool], deadline: float) -> bool:
        """Serve delivery reports until ``done()`` or the deadline; return ``done()``.

        One waiting thread at a time polls the producer (and so runs every callback); the
        others sleep on a condition that each delivery report notifies, and one of them
        takes over polling when the poller leaves. With one thread publishing (GraceDB's
        case) no condition is touched: a report's callback then costs a counter check.
        """
        began = time.monotonic()
        while not done():
            now = time.monotonic()
            left = deadline - now
            if left <= 0 or self.closed:
                return done()
            if self._poll_lock.acquire(blocking=False):
                try:
                    # flush(), not poll(): librdkafka then sends what is queued at once
                    # instead of after linger.ms (publish + flush: 1.5 -> 0.3 ms here);
                    # short slices first, so that this caller's own report is seen soon
                    # even while other threads keep the queue busy
                    self.producer.flush(
                        min(left, _FIRST_SLICE if now - began < _FIRST_WAIT else _SLICE)
                    )
                except (confluent_kafka.KafkaException, SystemError, RuntimeError) as exc:
                    self.from_exception(exc)
                    time.sleep(min(left, 0.05))
                finally:
                    self._poll_lock.release()
                self.wake()  # a sleeping thread may take over polling
            else:
                with self._cond:
                    self._sleepers += 1
                    try:
                        if not done():
                            self._cond.wait(min(left, 0.05))
                    finally:
                        self._sleepers -= 1
        return True

    # -- topics ---------------------------------------------------------------------------

    def check_topic(self, topic: str) -> None:
        """Raise a clear error if ``topic`` is missing or not visible (once per topic).

        The first answer is also waited for from a broker that the bootstrap address led to,
        not the bootstrap connection itself: librdkafka asks for the idempotent producer id
        when a metadata answer arrives, and an answer from the bootstrap connection, which
        it is closing at that moment, finds no broker to ask and re-tries only 500 ms later
        (that was the 500 ms first ``publish()``).
        """
        if topic in self.known_topics:
            return
        start = self.errors_seen

        def failed() -> Optional[KafkaException]:
            if self.dead is not None:
                return self.dead
            if self.errors_seen > start and self.last_error is not None:
                exc = _errors.exception_for(self.last_error, server=self.bootstrap)
                if isinstance(exc, (AuthenticationError, AuthorizationError)):
                    return exc
            return None

        deadline = time.monotonic() + _METADATA_TIMEOUT
        while True:
            md = _errors.list_topics(
                self.producer,
                topic=topic,
                timeout=max(0.1, deadline - time.monotonic()),
                serve=self.serve,
                failed=failed,
                server=self.bootstrap,
            )
            self._reached = True
            if getattr(md, "orig_broker_id", 0) >= 0 or time.monotonic() >= deadline:
                break
        meta = md.topics.get(topic)
        if meta is not None and meta.error is not None:
            exc = _errors.exception_for(meta.error, topic=topic, server=self.bootstrap)
            if exc is not None:
                raise exc
        self.known_topics.add(topic)

    # -- shutting down --------------------------------------------------------------------

    def close(self, timeout: float) -> int:
        """Deliver what is queued (at most ``timeout`` s), fail the rest, stop the producer.

        Returns
        -------
        int
            How many alerts were still queued and had to be dropped.
        """
        producer = self.producer
        left = 0
        try:
            left = producer.flush(max(0.0, timeout)) if self.dead is None else len(producer)
            if left:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.flush(1.0)  # serve the purged alerts' reports
            self.closed = True
            # not while a thread polls it; never blocking for good (a callback may close)
            if self._poll_lock.acquire(timeout=1.0):
                try:
                    stop = getattr(producer, "close", None)  # confluent-kafka >= 2.10
                    if stop is not None and not len(producer):
                        stop()
                finally:
                    self._poll_lock.release()
        except (confluent_kafka.KafkaException, SystemError, RuntimeError) as exc:
            log.debug("closing a producer: %s", exc)
        self.closed = True
        self.wake()
        return int(left)


class ProducerPool:
    """The producers of one client, one per broker and credential, shared by its writers.

    A producer lives while a writer uses it. One that a fatal error ended is replaced by a
    new one for the next alert (never reused); its own alerts fail with the reason.

    Parameters
    ----------
    timeout : datetime.timedelta, optional
        The delivery timeout of the producers made from now on.
    """

    def __init__(self, timeout: timedelta = DEFAULT_DELIVERY_TIMEOUT) -> None:
        self._timeout = timeout
        #: the client's publisher statistics (``client.stats()["publisher"]``), if any
        self.stats: Any = None
        self._current: dict[tuple[str, int], _Producer] = {}
        self._users: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    @property
    def timeout(self) -> timedelta:
        """How long an alert may take to be delivered (applies to producers made later)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: timedelta) -> None:
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise ValueError(f"the delivery timeout must be a positive timedelta, not {value!r}")
        self._timeout = value

    @staticmethod
    def key(bootstrap: str, credential: Any) -> tuple[str, int]:
        """The pool's key of a broker and credential."""
        return (bootstrap, id(credential))

    def acquire(self, bootstrap: str, credential: Any) -> None:
        """Count one more writer of a broker and credential."""
        key = self.key(bootstrap, credential)
        with self._lock:
            self._users[key] = self._users.get(key, 0) + 1

    def producer(self, bootstrap: str, credential: Any) -> _Producer:
        """The healthy producer for a broker and credential, made (or replaced) if needed."""
        key = self.key(bootstrap, credential)
        current = self._current.get(key)  # the common case, without the lock
        if current is not None and current.dead is None and not current.closed:
            return current
        with self._lock:
            current = self._current.get(key)
            if current is not None and current.dead is None and not current.closed:
                return current
            old = current
            current = _Producer(bootstrap, credential, self._timeout)
            self._current[key] = current
        if old is not None:
            log.info("replacing the failed producer for %s", bootstrap)
            old.close(0.0)  # its alerts fail with the reason; it is never reused
        return current

    def release(self, bootstrap: str, credential: Any, timeout: float) -> None:
        """Count one writer less; the last one's release stops the producer."""
        key = self.key(bootstrap, credential)
        with self._lock:
            users = self._users.get(key, 0) - 1
            if users > 0:
                self._users[key] = users
                return
            self._users.pop(key, None)
            current = self._current.pop(key, None)
        if current is not None:
            current.close(timeout)

    def running(self) -> int:
        """How many producers the pool holds (0 once every writer is closed)."""
        with self._lock:
            return len(self._current)


class AlertWriter:
    """A stream opened for writing alerts to one or more topics.

    Instances come from :meth:`igwn_alert.client.open` with mode ``"w"``; the API is that of
    :class:`hop.io.Producer`: :meth:`write`, :meth:`write_raw`, :meth:`pack`, :meth:`flush`,
    :meth:`close` and the context manager; :meth:`publish` writes one alert and waits for
    it. A writer may be used from several threads.

    Parameters
    ----------
    pool : ProducerPool
        The client's producers.
    bootstrap : str
        ``host:port`` of the broker.
    topics : list of str
        Broker topic names; each is checked to exist and be visible.
    credential : hop.auth.Auth or None
        The credential.
    produce_timeout : datetime.timedelta, optional
        hop's setting: how long :meth:`flush` and :meth:`close` wait by default (zero: until
        every alert is delivered or has failed). Default: the client's delivery timeout.
    """

    def __init__(
        self,
        pool: ProducerPool,
        bootstrap: str,
        topics: list[str],
        credential: Any,
        produce_timeout: Optional[timedelta] = None,
    ) -> None:
        if produce_timeout is not None and (
            not isinstance(produce_timeout, timedelta) or produce_timeout < timedelta(0)
        ):
            raise ValueError(f"produce_timeout must be a timedelta >= 0, not {produce_timeout!r}")
        self._pool = pool
        self._bootstrap = bootstrap
        self._credential = credential
        self.auth = credential or None
        self.topics = list(topics)
        self.default_topic = self.topics[0] if len(self.topics) == 1 else None
        self.produce_timeout = produce_timeout
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: dict[int, str] = {}  # seq -> topic, alerts from write() not reported yet
        self._failed: list[tuple[str, Optional[str], KafkaException]] = []
        self._failed_count = 0
        self._streak = 0  # alerts failed in a row (the first is logged, the run summed up)
        self._closed = False
        pool.acquire(bootstrap, credential)
        try:
            producer = pool.producer(bootstrap, credential)
            for topic in self.topics:
                producer.check_topic(topic)
        except BaseException:
            pool.release(bootstrap, credential, 0.0)
            raise

    pack = staticmethod(_pack)
    """Encode a message as :meth:`hop.io.Producer.pack` does: ``pack(message, headers=None,
    test=False, auth=None)`` gives ``(payload, headers)``."""

    # -- sending --------------------------------------------------------------------------

    def _timeout(self) -> float:
        return self._pool.timeout.total_seconds()

    def _produce(
        self,
        topic: str,
        payload: Any,
        headers: Any,
        key: Any,
        on_delivery: Any,
        holder: list[_Producer],
    ) -> _Producer:
        """Hand one alert to librdkafka; return the producer that took it.

        Raises for this alert only: too large, refused at once, or no room in the local
        queue within the delivery timeout. A producer found dead is replaced and the alert
        handed to the new one.
        """
        if not isinstance(topic, str):
            raise TypeError(f"the topic must be a str, not {type(topic).__name__}")
        deadline: Optional[float] = None  # of a local queue that stays full
        for _attempt in range(3):
            producer = self._pool.producer(self._bootstrap, self._credential)
            if topic not in producer.known_topics:
                producer.check_topic(topic)
            holder[:] = [producer]  # before produce(): another thread may serve the report
            try:
                while True:
                    try:
                        producer.producer.produce(
                            topic, payload, key=key, headers=headers, on_delivery=on_delivery
                        )
                        break
                    except BufferError:
                        if deadline is None:
                            deadline = time.monotonic() + self._timeout()
                        elif time.monotonic() > deadline:
                            raise DeliveryError(
                                f"the local queue for {self._bootstrap} stayed full for "
                                f"{self._timeout():g} s (is the broker up?): the alert to "
                                f"topic {topic} was not sent"
                            ) from None
                        producer.wait(lambda: False, time.monotonic() + 0.05)
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if error is not None and not error.fatal() and error.code() != KafkaError._FATAL:
                    raise _delivery_exception(
                        error, topic, _alert_uid(payload), producer, _size(payload, headers)
                    ) from None
                producer.from_exception(exc)
                continue  # the producer is dead: the next attempt uses a new one
            except (SystemError, RuntimeError) as exc:
                # confluent-kafka 2.x may fail so after a fatal producer error
                producer.from_exception(exc)
                continue
            producer.serve()
            return producer
        raise producer.dead or DeliveryError(f"cannot send the alert to topic {topic}")

    def _topic(self, topic: Optional[str]) -> str:
        if topic is None:
            if self.default_topic is None:
                raise ValueError(f"name the topic to write to: this writer has {self.topics}")
            return self.default_topic
        return topic

    def write(
        self,
        message: Any,
        headers: Any = None,
        delivery_callback: Any = None,
        test: bool = False,
        topic: Optional[str] = None,
        key: Union[str, bytes, None] = None,
    ) -> None:
        """Encode one alert with hop's rules and queue it for sending (hop's ``write``).

        Never raises for an earlier alert: the failures of queued alerts are logged, and
        raised by the next :meth:`flush`.

        Parameters
        ----------
        message : dict, list, str, bytes or hop model
            The alert. A str (GraceDB's JSON text) goes out as a hop JSON string.
        headers : mapping or list of (str, bytes), optional
            Extra Kafka headers.
        delivery_callback : callable, optional
            Called as ``callback(error, message)`` when the broker acknowledges or gives up.
        test : bool, optional
            Mark the alert as a hop test message.
        topic : str, optional
            The broker topic; needed when the writer has several.
        key : str or bytes, optional
            The Kafka message key.

        Raises
        ------
        DeliveryError
            If this alert cannot be queued (:class:`~igwn_alert.exceptions.AlertTooLargeError`
            for one above the size limit).
        ValueError
            If the writer is closed, or no topic is given for a multi-topic writer.
        """
        if self._closed:
            raise ValueError("cannot write to a closed writer")
        payload, full_headers = _pack(message, headers, test, self.auth)
        self.write_raw(payload, full_headers, delivery_callback, topic, key)

    def write_raw(
        self,
        packed_message: Any,
        headers: Any = None,
        delivery_callback: Any = None,
        topic: Optional[str] = None,
        key: Union[str, bytes, None] = None,
    ) -> None:
        """Queue an alert already encoded by :meth:`pack` (hop's ``write_raw``).

        Parameters
        ----------
        packed_message : bytes
            The encoded alert.
        headers : mapping or list of (str, bytes), optional
            Its headers, as :meth:`pack` returned them.
        delivery_callback : callable, optional
            Called as ``callback(error, message)`` when the broker acknowledges or gives up.
        topic : str, optional
            The broker topic; needed when the writer has several.
        key : str or bytes, optional
            The Kafka message key.

        Raises
        ------
        DeliveryError
            If this alert cannot be queued.
        ValueError
            If the writer is closed, or no topic is given for a multi-topic writer.
        """
        if self._closed:
            raise ValueError("cannot write to a closed writer")
        name = self._topic(topic)
        if headers is not None and type(headers) is not list and isinstance(headers, Mapping):
            headers = list(headers.items())
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._pending[seq] = name
        holder: list[_Producer] = []
        callback = partial(self._on_delivery, seq, delivery_callback, holder)
        try:
            self._produce(name, packed_message, headers, key, callback, holder)
        except BaseException:
            with self._lock:
                self._pending.pop(seq, None)
            raise
        self._written()

    def _written(self) -> None:
        stats = self._pool.stats
        if stats is not None:
            stats.written()

    def _outcome(self, error: Any) -> None:
        stats = self._pool.stats
        if stats is not None:
            if error is None:
                stats.delivered()
            else:
                stats.failed()

    def _on_delivery(
        self, seq: int, user_callback: Any, holder: list[_Producer], error: Any, message: Any
    ) -> None:
        producer = holder[0] if holder else self._pool_producer_nowait()
        self._outcome(error)
        try:
            with self._lock:
                topic = self._pending.pop(seq, None) or "?"
                if error is None:
                    if self._streak > 1:
                        log.error(
                            "%d alerts in a row to %s could not be delivered; delivering "
                            "again (the next flush names them)",
                            self._streak,
                            ", ".join(self.topics) or topic,
                        )
                    self._streak = 0
                else:
                    value = message.value() if message is not None else None
                    uid = _alert_uid(value)
                    exc = _delivery_exception(error, topic, uid, producer, _size(value, None))
                    self._failed_count += 1
                    if len(self._failed) < _MAX_KEPT:
                        self._failed.append((topic, uid, exc))
                    self._streak += 1
                    if self._streak == 1:
                        log.error("%s (reported again by the next flush)", exc)
                    else:
                        log.debug("%s", exc)
            if error is None and producer is not None:
                producer.delivered()
            if user_callback is not None:
                user_callback(error, message)
        except Exception:
            log.exception("error in a delivery callback")
        finally:
            if producer is not None:
                producer.wake()

    def _pool_producer_nowait(self) -> Optional[_Producer]:
        return self._pool._current.get(self._pool.key(self._bootstrap, self._credential))

    def publish(self, message: Any, topic: Optional[str] = None) -> None:
        """Send one alert and return once the broker has acknowledged it.

        Raises only for this alert; nothing about it is kept afterwards (a later
        :meth:`flush` does not report it again).

        Parameters
        ----------
        message : dict, list, str, bytes or hop model
            The alert.
        topic : str, optional
            The broker topic; needed when the writer has several.

        Raises
        ------
        DeliveryError
            If this alert was not delivered, with the reason.
        """
        if self._closed:
            raise ValueError("cannot write to a closed writer")
        name = self._topic(topic)
        payload, headers = _pack(message, None, False, self.auth)
        ticket = _Ticket()
        holder: list[_Producer] = []

        def on_delivery(error: Any, msg: Any) -> None:
            self._outcome(error)
            try:
                if error is not None:
                    producer = holder[0] if holder else None
                    ticket.error = _delivery_exception(
                        error, name, _alert_uid(payload), producer, _size(payload, headers)
                    )
                elif holder:
                    holder[0].delivered()
            finally:
                ticket.done = True
                if holder:
                    holder[0].wake()

        producer = self._produce(name, payload, headers, None, on_delivery, holder)
        self._written()
        timeout = self._timeout()
        if not producer.wait(lambda: ticket.done, time.monotonic() + timeout + _GRACE):
            raise DeliveryError(
                f"{_describe(_alert_uid(payload))} to topic {name} was not acknowledged within "
                f"{timeout:g} s{_last_error(producer)}"
            )
        if ticket.error is not None:
            raise ticket.error

    # -- flushing -------------------------------------------------------------------------

    def flush(self, timeout: Optional[timedelta] = None) -> int:
        """Wait until the alerts written so far are delivered; raise for those that failed.

        Parameters
        ----------
        timeout : datetime.timedelta, optional
            How long to wait; default ``produce_timeout`` if set, else the delivery timeout.

        Returns
        -------
        int
            0: every alert written since the previous flush was delivered.

        Raises
        ------
        DeliveryError
            Once for the alerts written since the previous flush that were not delivered
            (how many, and which), or that were still unsent at the timeout.
        """
        if timeout is None:
            timeout = self.produce_timeout
        if timeout is None:
            wait = self._timeout()
        elif timeout == timedelta(0):
            wait = self._timeout() + _GRACE  # hop: no limit; librdkafka gives up by then
        else:
            wait = timeout.total_seconds()
        lock = self._lock
        pending = self._pending
        with lock:
            target = self._seq

        def done() -> bool:
            if not pending:
                return True
            with lock:
                first = next(iter(pending), None)
            return first is None or first > target

        producer = self._pool_producer_nowait()
        if not done() and producer is not None:
            producer.wait(done, time.monotonic() + wait)
        with lock:
            if not self._failed_count and not pending:
                return 0
            failed, self._failed = self._failed, []
            count, self._failed_count = self._failed_count, 0
            unsent = {topic for seq, topic in pending.items() if seq <= target}
            remaining = sum(1 for seq in pending if seq <= target)
        if failed:
            raise _flush_exception(failed, count, remaining)
        if remaining:
            where = ", ".join(sorted(unsent))
            raise DeliveryError(
                f"{remaining} alert(s) to {where or 'the broker'} were not delivered within "
                f"{wait:g} s (is the broker at {self._bootstrap} up?){_last_error(producer)}"
            )
        return 0

    def close(self) -> int:
        """Deliver what is queued, then release the connection.

        Returns
        -------
        int
            0.

        Raises
        ------
        DeliveryError
            If queued alerts could not be delivered.
        """
        if self._closed:
            return 0
        self._closed = True
        try:
            return self.flush()
        finally:
            self._pool.release(self._bootstrap, self._credential, self._timeout())

    def __enter__(self) -> AlertWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size(payload: Any, headers: Any) -> Optional[int]:
    """The size of an encoded alert and its headers, in bytes (None if unknown)."""
    try:
        size = len(payload)
        for name, value in headers or ():
            size += len(name) + len(value)
    except TypeError:
        return None
    return size


def _last_error(producer: Optional[_Producer]) -> str:
    if producer is None or producer.last_error is None:
        return ""
    return f"; the last error from librdkafka: {producer.last_error.str()}"


def _delivery_exception(
    error: Any,
    topic: str,
    uid: Optional[str],
    producer: Optional[_Producer],
    size: Optional[int] = None,
) -> KafkaException:
    """The exception for one alert that was not delivered, with the reason."""
    what = f"{_describe(uid)} to topic {topic}"
    code = error.code()
    server = producer.bootstrap if producer is not None else "the broker"
    if code in _TOO_LARGE:
        encoded = f"{size:,} bytes encoded, " if size is not None else ""
        return AlertTooLargeError(
            f"{what} was not sent: it is {encoded}larger than a Kafka message may be (the "
            "client allows 1,000,000 bytes, librdkafka's message.max.bytes; the broker "
            f"applies the topic's max.message.bytes): {error.str()}",
            error,
        )
    if code in _WRITE_REFUSED:
        return DeliveryAuthorizationError(
            f"{what} was refused: the credential is not authorized for writing to topic "
            f"{topic} at {server} (missing WRITE ACL)",
            error,
        )
    if code in _PURGED:
        cause = producer.dead if producer is not None else None
        if isinstance(cause, DeliveryAuthorizationError):
            return DeliveryAuthorizationError(f"{what} was not sent: {cause}", error)
        reason = str(cause) if cause is not None else error.str()
        return DeliveryError(f"{what} was not sent: {reason}", error)
    if code == KafkaError._MSG_TIMED_OUT:
        return DeliveryError(
            f"{what} was not delivered within the delivery timeout "
            f"({producer.timeout.total_seconds() if producer else 0:g} s)"
            f"{_last_error(producer)}",
            error,
        )
    if code in _errors.UNKNOWN_TOPIC:
        return DeliveryError(f"{what} was not delivered: topic {topic} does not exist", error)
    return DeliveryError(f"{what} was not delivered: {error.str()}", error)


def _flush_exception(
    failed: list[tuple[str, Optional[str], KafkaException]], count: int, remaining: int
) -> KafkaException:
    """One exception for the failed alerts of a flush: how many, which, and why."""
    topics = sorted({topic for topic, _, _ in failed})
    listed = ", ".join(_describe(uid) for _, uid, _ in failed[:_MAX_LISTED])
    more = f" and {count - _MAX_LISTED} more" if count > _MAX_LISTED else ""
    reasons: dict[str, KafkaException] = {}
    for _, _, exc in failed:
        reasons.setdefault(type(exc).__name__ + str(exc.error.code()), exc)
    first = next(iter(reasons.values()))
    still = f"; {remaining} more still unsent" if remaining else ""
    message = (
        f"{count} alert(s) written to topic {', '.join(topics)} since the last flush were not "
        f"delivered: {listed}{more}{still}. Reason: {first}"
    )
    cls: type[DeliveryError] = DeliveryError
    if len(reasons) == 1 and isinstance(first, DeliveryError):
        cls = type(first)
    return cls(message, first.error)
