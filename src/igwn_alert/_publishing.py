"""Publishing: writers that encode alerts the way hop does and send them with confluent-kafka.

A client shares one long-lived :class:`confluent_kafka.Producer` among all its writers
(:class:`ProducerPool`), so ``connect()`` on many topics and bursts of ``publish()`` cost
one connection, not one per call. The producer is idempotent (``enable.idempotence``): the
retries librdkafka makes after a lost acknowledgement never duplicate an alert, and
``acks=all`` waits for every in-sync replica.

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
from datetime import timedelta
from typing import Any, Callable, Optional, Union

import confluent_kafka
from hop.io import Producer as _HopProducer

from . import _errors
from ._kafka_config import DebugLog, base_config
from .exceptions import AuthorizationError, DeliveryError, KafkaException

__all__ = ["DEFAULT_DELIVERY_TIMEOUT", "AlertWriter", "ProducerPool"]

log = logging.getLogger(__name__)

#: How long an alert may take to reach the broker before it counts as not delivered.
DEFAULT_DELIVERY_TIMEOUT = timedelta(seconds=30)

_METADATA_TIMEOUT = 10.0
_FATAL_LOG_WAIT = 1.0  # how long to wait for librdkafka's report of a fatal error


def _pack(message: Any, headers: Any, test: bool, auth: Any) -> Any:
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


class _ProducerLog(DebugLog):
    """librdkafka's log lines of one producer: filed at debug level, its fatal error kept.

    confluent-kafka raises a fatal producer error (such as a credential without any WRITE
    ACL, which cannot get an idempotent producer id) from ``poll``/``flush`` instead of
    passing it to ``error_cb``, and may lose it on the way (a ``SystemError`` without a
    cause); the ``FATAL`` log line that librdkafka writes first still says what happened.
    """

    def __init__(self, reasons: list[str]) -> None:
        self._reasons = reasons  # not the producer itself: no reference cycle through C

    def log(self, level: int, msg: str, *args: Any) -> None:
        if args and args[0] == "FATAL":
            text = str(args[-1])
            self._reasons.append(text.split("Fatal error: ", 1)[-1])
        super().log(level, msg, *args)


def _kafka_error_in(exc: BaseException) -> Any:
    """The confluent_kafka.KafkaError behind an exception (or its cause), if any."""
    seen: Optional[BaseException] = exc
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, confluent_kafka.KafkaException) and seen.args:
            return seen.args[0]
        seen = seen.__cause__ or seen.__context__
    return None


class _SharedProducer:
    """One confluent-kafka producer and the writers that use it."""

    def __init__(self, bootstrap: str, credential: Any, timeout: timedelta) -> None:
        timeout_ms = max(1, int(timeout.total_seconds() * 1000))
        self.bootstrap = bootstrap
        self.credential = credential
        self.timeout = timeout
        self.fatal_reasons: list[str] = []
        self.producer = confluent_kafka.Producer(
            base_config(
                bootstrap,
                credential,
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "message.timeout.ms": timeout_ms,
                    "request.timeout.ms": min(timeout_ms, 30000),
                    "error_cb": self._on_error,
                    "logger": _ProducerLog(self.fatal_reasons),
                },
            )
        )
        self.users = 0
        self.lock = threading.Lock()
        self.fatal: Optional[KafkaException] = None
        self.known_topics: set[str] = set()

    def _on_error(self, error: Any) -> None:
        try:
            self._record_error(error)
        except Exception:
            log.exception("cannot handle a producer error")

    def _record_error(self, error: Any) -> None:
        exc = _errors.exception_for(error, server=self.bootstrap)
        if exc is not None and self.fatal is None and (error.fatal() or _is_credential(exc)):
            self.fatal = exc
        if error.code() in _errors.TRANSIENT:
            log.debug("producer: %s", error.str())
        else:
            log.warning("producer error from %s: %s", self.bootstrap, error.str())

    def fail(self, error: Any) -> KafkaException:
        """Record (once) and return the clear exception for the producer's fatal error.

        Parameters
        ----------
        error : confluent_kafka.KafkaError or None
            The fatal error, if confluent-kafka passed it on; None to use librdkafka's own
            report of it.

        Returns
        -------
        adc.errors.KafkaException
            An AuthorizationError for a credential that may not write, else a DeliveryError.
        """
        if self.fatal is not None:
            return self.fatal
        clear: Optional[KafkaException] = None
        if error is not None and error.code() != confluent_kafka.KafkaError._FATAL:
            clear = _errors.exception_for(error, server=self.bootstrap)
            if clear is None:
                clear = DeliveryError(
                    f"the Kafka producer for {self.bootstrap} failed: {error.str()}", error
                )
        else:
            # librdkafka's FATAL log line reaches the logger on the next poll: wait for it
            deadline = time.monotonic() + _FATAL_LOG_WAIT
            while not self.fatal_reasons and time.monotonic() < deadline:
                try:
                    self.producer.poll(0.05)
                except Exception as exc:  # noqa: BLE001 - the producer is dead anyway
                    log.debug("poll after a fatal producer error: %s", exc)
            reason = self.fatal_reasons[-1] if self.fatal_reasons else "a fatal error"
            if "authoriz" in reason.lower():
                clear = AuthorizationError(
                    f"the credential is not authorized for writing at {self.bootstrap} "
                    f"(missing WRITE ACL): {reason}"
                )
            else:
                clear = DeliveryError(f"the Kafka producer for {self.bootstrap} failed: {reason}")
        self.fatal = clear
        return clear

    def check_topic(self, topic: str) -> None:
        """Raise a clear error if ``topic`` is missing or not writable (once per topic)."""
        if topic in self.known_topics:
            return
        md = _errors.list_topics(
            self.producer,
            topic=topic,
            timeout=_METADATA_TIMEOUT,
            serve=lambda: self.producer.poll(0),
            failed=lambda: self.fatal,
            server=self.bootstrap,
        )
        if self.fatal is not None:
            raise self.fatal
        meta = md.topics.get(topic)
        if meta is not None and meta.error is not None:
            exc2 = _errors.exception_for(meta.error, topic=topic, server=self.bootstrap)
            if exc2 is not None:
                raise exc2
        self.known_topics.add(topic)


def _is_credential(exc: KafkaException) -> bool:
    from .exceptions import AuthenticationError, AuthorizationError

    return isinstance(exc, (AuthenticationError, AuthorizationError))


class ProducerPool:
    """The producers of one client, one per broker and credential, shared by its writers."""

    def __init__(self, timeout: timedelta = DEFAULT_DELIVERY_TIMEOUT) -> None:
        self._timeout = timeout
        self._shared: dict[tuple[str, int], _SharedProducer] = {}
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

    def acquire(self, bootstrap: str, credential: Any) -> _SharedProducer:
        """Return the shared producer for a broker and credential, creating it if needed."""
        key = (bootstrap, id(credential))
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                shared = _SharedProducer(bootstrap, credential, self._timeout)
                self._shared[key] = shared
            shared.users += 1
            return shared

    def release(self, shared: _SharedProducer) -> None:
        """Give a shared producer back; the last user's release drops it."""
        with self._lock:
            shared.users -= 1
            if shared.users <= 0:
                self._shared.pop((shared.bootstrap, id(shared.credential)), None)


class AlertWriter:
    """A stream opened for writing alerts to one or more topics.

    Instances come from :meth:`igwn_alert.client.open` with mode ``"w"``; the API is that of
    :class:`hop.io.Producer` (``write``, ``flush``, ``close``, context manager).

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
    """

    def __init__(
        self, pool: ProducerPool, bootstrap: str, topics: list[str], credential: Any
    ) -> None:
        self._pool = pool
        self._shared = pool.acquire(bootstrap, credential)
        self._producer = self._shared.producer
        self._credential = credential
        self.topics = list(topics)
        self.default_topic = self.topics[0] if len(self.topics) == 1 else None
        self._failures: list[tuple[str, Any]] = []
        self._closed = False
        try:
            for topic in self.topics:
                self._shared.check_topic(topic)
        except BaseException:
            self._release()
            raise

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            try:
                topic = message.topic() if message is not None else None
            except Exception:  # noqa: BLE001 - never raise into librdkafka's callback
                topic = None
            self._failures.append((topic or ", ".join(self.topics) or "?", error))

    def write(
        self,
        message: Any,
        headers: Any = None,
        delivery_callback: Any = None,
        test: bool = False,
        topic: Optional[str] = None,
        key: Union[str, bytes, None] = None,
    ) -> None:
        """Encode one alert with hop's rules and queue it for sending.

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
            If an earlier alert of this writer could not be delivered.
        ValueError
            If the writer is closed, or no topic is given for a multi-topic writer.
        """
        if self._closed:
            raise ValueError("cannot write to a closed writer")
        self._raise_failures()
        if topic is None:
            topic = self.default_topic
            if topic is None:
                raise ValueError(f"name the topic to write to: this writer has {self.topics}")
        elif topic not in self.topics:
            self._shared.check_topic(topic)
        payload, full_headers = _pack(message, headers, test, self._credential or None)
        callback: Callable[[Any, Any], None] = self._on_delivery
        if delivery_callback is not None:
            user_callback = delivery_callback

            def both(error: Any, msg: Any) -> None:
                self._on_delivery(error, msg)
                user_callback(error, msg)

            callback = both

        produce = self._producer.produce
        try:
            while True:
                try:
                    produce(topic, payload, key=key, headers=full_headers, on_delivery=callback)
                    break
                except BufferError:
                    self._producer.poll(0.05)  # the local queue is full: let it drain
            self._producer.poll(0)
        except (confluent_kafka.KafkaException, SystemError) as exc:
            # SystemError: confluent-kafka 2.x may fail so after a fatal producer error
            raise self._translate(exc) from None

    def _translate(self, exc: Exception) -> KafkaException:
        """Turn librdkafka's exception into the client's clearest one.

        A fatal error (or the ``SystemError`` confluent-kafka 2.x may raise after one) leaves
        the producer unusable: it is recorded once, with its real cause, and every later
        call raises the same clear error.
        """
        if self._shared.fatal is not None:
            return self._shared.fatal
        error = _kafka_error_in(exc)
        if error is None or error.fatal() or error.code() == confluent_kafka.KafkaError._FATAL:
            return self._shared.fail(error)
        topic = ", ".join(self.topics) or None
        clear = _errors.exception_for(error, topic=topic, server=self._shared.bootstrap)
        return clear if clear is not None else KafkaException(error)

    def flush(self, timeout: Optional[timedelta] = None) -> int:
        """Send everything queued and wait for the broker's acknowledgements.

        Parameters
        ----------
        timeout : datetime.timedelta, optional
            How long to wait; default the delivery timeout (30 s).

        Returns
        -------
        int
            0: every alert was delivered.

        Raises
        ------
        DeliveryError
            If an alert could not be delivered, or some were still unsent at the timeout.
        """
        wait = (timeout or self._shared.timeout).total_seconds()
        deadline = time.monotonic() + wait
        self._raise_failures()
        try:
            remaining = self._producer.flush(wait)
            while remaining and time.monotonic() < deadline:
                remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        except (confluent_kafka.KafkaException, SystemError) as exc:
            # SystemError: confluent-kafka 2.x may fail so after a fatal producer error
            raise self._translate(exc) from None
        self._raise_failures()
        if remaining:
            raise DeliveryError(
                f"{remaining} alert(s) to {', '.join(self.topics) or 'the broker'} were not "
                f"delivered within {wait:g} s (is the broker at {self._shared.bootstrap} up?)"
            )
        return 0

    def _raise_failures(self) -> None:
        if self._shared.fatal is not None:
            raise self._shared.fatal
        if self._failures:
            topic, error = self._failures[0]
            count = len(self._failures)
            self._failures.clear()
            clear = _errors.exception_for(error, topic=topic, server=self._shared.bootstrap)
            if clear is not None:
                raise clear
            raise DeliveryError(
                f"{count} alert(s) to topic {topic} could not be delivered: {error.str()}", error
            )

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
        try:
            return self.flush()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        self._pool.release(self._shared)

    def __enter__(self) -> AlertWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
