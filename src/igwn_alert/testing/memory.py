"""An in-memory alert bus and a client for it: test alert handlers with no broker at all.

:class:`InMemoryClient` has the API of :class:`igwn_alert.client` (same constructor
keywords, same methods, same error messages, same decoding of payloads, same callback
call) but publishes to and listens on an :class:`InMemoryBroker`, a plain Python object.

.. rubric:: How delivery works

* The bus keeps one ordered log of every alert published or injected, over all topics.
  Alerts are encoded and decoded exactly as on Kafka (hop's encoding), so a ``str``
  arrives as a ``str`` and a ``dict`` as a ``dict``.
* ``listen()`` delivers, in log order, the alerts of its topics that this listener has not
  had yet, then **returns once there are none left** (``timeout=0``, the default). It also
  returns after :meth:`InMemoryClient.stop` or once ``max_messages`` alerts were handled.
  With ``timeout=None`` it waits for new alerts until ``stop()``, like the real client;
  with ``timeout=T`` it waits at most T seconds for the next alert.
* A listener starts at the **beginning** of the log: alerts injected before ``listen()``
  are delivered (a real client without a consumer group would only see newer ones). Each
  client remembers how far it got, so a second ``listen()`` delivers only what is new.
  Clients with the same ``consumer_group`` share one position, as a Kafka consumer group
  does. ``since="latest"`` skips what is already there; ``since="earliest"`` replays.
* An alert published from inside a callback (a handler that publishes a follow-up) is
  appended to the log and delivered later in the same ``listen()`` if it is on one of its
  topics: delivery never recurses.
* An alert counts as handled when the callback returns. If the callback raises, the
  exception leaves ``listen()`` and the same alert is delivered again next time.
* :meth:`InMemoryBroker.inject_error` puts a Kafka error in the log; a listener that
  reaches it handles it as the real client handles an error from the stream: a fatal one
  ends ``listen()`` with the exception (or is retried, with ``retry_on_fatal``), a
  non-fatal one is logged. A fatal ``KafkaException`` raised by the callback is retried
  or raised the same way; a non-fatal one is logged and the alert counts as handled.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Union

from .._deprecated import DeprecatedMethods
from .._sessions import WriterMap
from .._settings import ClientSettings
from .._topics import TopicSpec, base_url, normalize_topics, short_name, topic_url

__all__ = [
    "InMemoryBroker",
    "InMemoryClient",
    "InMemoryWriter",
    "Record",
    "default_broker",
    "set_default_broker",
    "use_broker",
]

log = logging.getLogger(__name__)

_ALL_TOPICS = "*"  # the log key of errors injected for every topic

#: ``since`` values accepted by :meth:`InMemoryClient.listen`.
Since = Union[None, str, datetime, timedelta]


@dataclass
class Record:
    """One entry of the bus's log.

    Attributes
    ----------
    seq : int
        Position in the bus's log (increasing, never reused).
    topic : str
        The broker topic name, ``<group>.<short name>``; ``'*'`` for an error injected for
        every topic.
    value : bytes
        The message bytes, as they would be on Kafka.
    headers : list of (str, bytes)
        The message headers, as hop writes them.
    timestamp : float
        When it was added (seconds since the epoch).
    source : str
        ``'publish'`` (from a client), ``'inject'`` or ``'error'``.
    error : BaseException or None
        The exception, for an injected error.
    """

    seq: int
    topic: str
    value: bytes = b""
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = 0.0
    source: str = "publish"
    error: Optional[BaseException] = None

    # The confluent_kafka.Message methods that decoding reads.

    def partition(self) -> int:
        """Return 0: the bus has one partition per topic."""
        return 0

    def offset(self) -> int:
        """Return :attr:`seq`."""
        return self.seq

    def key(self) -> None:
        """Return None: alerts have no key."""
        return None

    def timestamp_ms(self) -> int:
        """Return :attr:`timestamp` in milliseconds."""
        return int(self.timestamp * 1000)

    def decode(self) -> Any:
        """Return the payload a listener callback gets for this record.

        Returns
        -------
        object
            A str or dict for hop JSON, else what the client's decoding rules give.
        """
        from .._listening import unwrap
        from .._reading import decode_message

        return unwrap(decode_message(_MessageView(self)))


class _MessageView:
    """A :class:`Record` seen through the confluent_kafka.Message methods."""

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


def _encode(msg: Any) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode an alert as the real client does (hop's encoding)."""
    from hop.io import Producer as HopProducer

    value, headers = HopProducer.pack(msg)
    if isinstance(value, str):
        value = value.encode("utf-8")
    return bytes(value), [(str(k), bytes(v)) for k, v in headers]


class InMemoryBroker:
    """An in-memory alert bus shared by :class:`InMemoryClient` objects.

    Parameters
    ----------
    name : str, optional
        A name shown in ``repr()`` and used as the ``server`` of its clients' URLs.

    Examples
    --------
    >>> bus = InMemoryBroker()
    >>> bus.inject("superevent", '{"uid": "S1", "alert_type": "new"}')
    >>> got = []
    >>> InMemoryClient(broker=bus).listen(lambda topic, payload: got.append(payload),
    ...                                   "superevent")
    >>> got
    ['{"uid": "S1", "alert_type": "new"}']
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._cond = threading.Condition(threading.RLock())
        self._seq = 0
        self._records: dict[int, Record] = {}
        self._by_topic: dict[str, list[int]] = {}
        self._group_positions: dict[str, dict[str, int]] = {}

    def __repr__(self) -> str:
        with self._cond:
            return (
                f"<InMemoryBroker {self.name!r}: {len(self._by_topic)} topic(s), "
                f"{len(self._records)} record(s)>"
            )

    # -- adding to the log ------------------------------------------------------------------

    def _append(self, record_topic: str, **fields: Any) -> Record:
        with self._cond:
            record = Record(seq=self._seq, topic=record_topic, timestamp=time.time(), **fields)
            self._seq += 1
            self._records[record.seq] = record
            self._by_topic.setdefault(record_topic, []).append(record.seq)
            self._cond.notify_all()
            return record

    def append(self, topic: str, msg: Any, *, source: str = "publish") -> Record:
        """Encode ``msg`` as hop does and append it to a broker topic.

        This is what :class:`InMemoryClient` publishing calls; tests usually call
        :meth:`inject` instead.

        Parameters
        ----------
        topic : str
            The broker topic name, ``<group>.<short name>``.
        msg : str, dict, list, bytes or hop model
            The alert.
        source : str, optional
            ``'publish'`` (default) or ``'inject'``.

        Returns
        -------
        Record
            The new log entry.

        Raises
        ------
        TypeError
            If hop cannot encode ``msg``.
        """
        value, headers = _encode(msg)
        return self._append(topic, value=value, headers=headers, source=source)

    def inject(self, topic: str, payload: Any, group: str = "gracedb") -> Record:
        """Add an alert as if GraceDB had published it.

        Parameters
        ----------
        topic : str
            The short topic name, such as ``'superevent'``.
        payload : str, dict or hop model
            The alert. Pass the JSON text as a ``str`` to do what GraceDB does.
        group : str, optional
            The GraceDB group (default ``'gracedb'``).

        Returns
        -------
        Record
            The new log entry.
        """
        return self.append(f"{group}.{topic}", payload, source="inject")

    def inject_raw(
        self,
        topic: str,
        value: bytes,
        headers: Optional[Sequence[tuple[str, bytes]]] = None,
        group: str = "gracedb",
    ) -> Record:
        """Add a message with exactly these bytes (for example, one that is not JSON).

        Parameters
        ----------
        topic : str
            The short topic name.
        value : bytes
            The message bytes.
        headers : list of (str, bytes), optional
            The message headers (default none: a plain message without hop's ``_format``).
        group : str, optional
            The GraceDB group (default ``'gracedb'``).

        Returns
        -------
        Record
            The new log entry.
        """
        return self._append(
            f"{group}.{topic}", value=bytes(value), headers=list(headers or []), source="inject"
        )

    def inject_error(
        self, exc: BaseException, topic: Optional[str] = None, group: str = "gracedb"
    ) -> Record:
        """Make listeners meet an error from the stream at this point of the log.

        Each listener position (each private client, each consumer group) meets it once.

        Parameters
        ----------
        exc : BaseException
            Usually an :class:`adc.errors.KafkaException`, such as
            :data:`igwn_alert.exceptions.FakeFatalKafkaException` (ends ``listen()``
            unless ``retry_on_fatal``) or :data:`~igwn_alert.exceptions.FakeNonFatalKafkaException`
            (logged). Any other exception simply leaves ``listen()``.
        topic : str, optional
            The short topic name whose listeners meet it; None (default) for every
            listener, whatever its topics.
        group : str, optional
            The GraceDB group of ``topic`` (default ``'gracedb'``).

        Returns
        -------
        Record
            The new log entry.
        """
        name = _ALL_TOPICS if topic is None else f"{group}.{topic}"
        return self._append(name, source="error", error=exc)

    def create_topics(self, topics: TopicSpec, group: str = "gracedb") -> None:
        """Make topics exist (empty), so that ``listen(topic=None)`` and ``get_topics`` see them.

        Parameters
        ----------
        topics : str or iterable of str
            Short topic names.
        group : str, optional
            The GraceDB group (default ``'gracedb'``).
        """
        with self._cond:
            for name in normalize_topics(topics):
                self._by_topic.setdefault(f"{group}.{name}", [])

    def clear(self) -> None:
        """Forget every topic, alert, error and consumer-group position."""
        with self._cond:
            self._records.clear()
            self._by_topic.clear()
            self._group_positions.clear()

    # -- looking at the log -----------------------------------------------------------------

    def topics(self) -> list[str]:
        """Return the broker topic names (``<group>.<short>``), in order of creation.

        Returns
        -------
        list of str
            Topic names.
        """
        with self._cond:
            return [t for t in self._by_topic if t != _ALL_TOPICS]

    def records(self, topic: Optional[str] = None, group: str = "gracedb") -> list[Record]:
        """Return log entries, oldest first.

        Parameters
        ----------
        topic : str, optional
            A short topic name; None for every entry of the log.
        group : str, optional
            The GraceDB group of ``topic`` (default ``'gracedb'``).

        Returns
        -------
        list of Record
            The entries.
        """
        with self._cond:
            if topic is None:
                return [self._records[s] for s in sorted(self._records)]
            return [self._records[s] for s in self._by_topic.get(f"{group}.{topic}", [])]

    def messages(self, topic: str, group: str = "gracedb") -> list[Any]:
        """Return every alert on a topic (published or injected), decoded, oldest first.

        Parameters
        ----------
        topic : str
            The short topic name.
        group : str, optional
            The GraceDB group (default ``'gracedb'``).

        Returns
        -------
        list
            The payloads, as a listener's callback receives them.
        """
        return [r.decode() for r in self.records(topic, group) if r.source != "error"]

    def published(self, topic: str, group: str = "gracedb") -> list[Any]:
        """Return the alerts that clients published on a topic (not injected ones).

        Parameters
        ----------
        topic : str
            The short topic name.
        group : str, optional
            The GraceDB group (default ``'gracedb'``).

        Returns
        -------
        list
            The payloads, decoded as a listener's callback receives them: a str that was
            published comes back as the same str, a dict as an equal dict.
        """
        return [r.decode() for r in self.records(topic, group) if r.source == "publish"]

    # -- delivery (used by InMemoryClient) ---------------------------------------------

    def _positions_for(
        self, consumer_group: Optional[str], private: dict[str, int]
    ) -> dict[str, int]:
        if consumer_group is None:
            return private
        return self._group_positions.setdefault(consumer_group, {})

    def _next(self, topics: list[str], positions: dict[str, int]) -> Optional[Record]:
        """Return the oldest record of ``topics`` at or after their positions (locked)."""
        best: Optional[int] = None
        for name in [*topics, _ALL_TOPICS]:
            seqs = self._by_topic.get(name)
            if not seqs:
                continue
            i = bisect.bisect_left(seqs, positions.get(name, 0))
            if i < len(seqs) and (best is None or seqs[i] < best):
                best = seqs[i]
        return None if best is None else self._records[best]

    def _start(self, topics: list[str], positions: dict[str, int], since: Since) -> None:
        """Move ``positions`` for ``topics`` according to ``since`` (locked)."""
        if since is None:
            return
        names = [*topics, _ALL_TOPICS]
        if isinstance(since, str):
            word = since.strip().lower()
            if word in ("earliest", "beginning"):
                for name in names:
                    positions[name] = 0
                return
            if word == "latest":
                for name in names:
                    positions[name] = self._seq
                return
            raise ValueError(
                f"since must be 'earliest', 'latest', a datetime or a timedelta: {since!r}"
            )
        if isinstance(since, timedelta):
            since = datetime.now(timezone.utc) - since
        if not isinstance(since, datetime):
            raise TypeError(
                f"since must be a str, datetime or timedelta, not {type(since).__name__}"
            )
        when = (since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp()
        for name in names:
            later = [s for s in self._by_topic.get(name, []) if self._records[s].timestamp >= when]
            positions[name] = later[0] if later else self._seq


# -- the default bus --------------------------------------------------------------------------

_default_lock = threading.Lock()
_default: list[InMemoryBroker] = [InMemoryBroker("default")]


def default_broker() -> InMemoryBroker:
    """Return the bus that :class:`InMemoryClient` uses when given no ``broker``.

    Returns
    -------
    InMemoryBroker
        The module-level default bus.
    """
    with _default_lock:
        return _default[0]


def set_default_broker(broker: Optional[InMemoryBroker] = None) -> InMemoryBroker:
    """Replace the default bus (by a fresh one if ``broker`` is None).

    Parameters
    ----------
    broker : InMemoryBroker, optional
        The new default.

    Returns
    -------
    InMemoryBroker
        The previous default.
    """
    with _default_lock:
        previous = _default[0]
        _default[0] = broker if broker is not None else InMemoryBroker("default")
        return previous


@contextmanager
def use_broker(broker: Optional[InMemoryBroker] = None) -> Iterator[InMemoryBroker]:
    """Make a bus the default inside a ``with`` block (a fresh one if None).

    Parameters
    ----------
    broker : InMemoryBroker, optional
        The bus.

    Yields
    ------
    InMemoryBroker
        The bus that is the default inside the block.
    """
    bus = broker if broker is not None else InMemoryBroker()
    previous = set_default_broker(bus)
    try:
        yield bus
    finally:
        set_default_broker(previous)


# -- the client ---------------------------------------------------------------------------------


class InMemoryWriter:
    """A writer of one topic, as ``InMemoryClient.sessions`` holds them.

    Parameters
    ----------
    broker : InMemoryBroker
        The bus.
    topic : str
        The broker topic name, ``<group>.<short>``.
    """

    def __init__(self, broker: InMemoryBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.closed = False

    def write(self, msg: Any) -> None:
        """Publish an alert.

        Parameters
        ----------
        msg : str, dict or hop model
            The alert.

        Raises
        ------
        ValueError
            If the writer is closed.
        """
        if self.closed:
            raise ValueError(f"the writer of {self.topic} is closed")
        self.broker.append(self.topic, msg)

    def flush(self) -> None:
        """Do nothing: alerts are on the bus as soon as they are written."""

    def close(self) -> None:
        """Close the writer."""
        self.closed = True

    def __enter__(self) -> InMemoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InMemoryClient(WriterMap, DeprecatedMethods, ClientSettings):
    """A stand-in for :class:`igwn_alert.client` that talks to an :class:`InMemoryBroker`.

    It takes the same arguments as :class:`igwn_alert.client` (and ``broker``), keeps the
    same attributes and raises the same errors, but never touches the network, and never
    reads a credential file: without ``auth``, ``username`` and ``password`` or ``noauth``
    the session is simply unauthenticated.

    Parameters
    ----------
    username, password, auth, authfile, noauth, group, consumer_group, server, port, \
batch_size, batch_timeout, retry_on_fatal, listen_retries, retry_wait, jsonpp_on
        As for :class:`igwn_alert.client`.
    broker : InMemoryBroker, optional
        The bus (keyword only); default :func:`default_broker` at construction time.

    Notes
    -----
    See the module documentation for when ``listen()`` returns and what it delivers.
    """

    def __init__(
        self,
        username: Optional[str] = None,
        password: Optional[str] = None,
        auth: Any = None,
        authfile: Optional[str] = None,
        noauth: bool = False,
        group: str = "gracedb",
        consumer_group: Optional[str] = None,
        server: str = "kafka://kafka.scimma.org/",
        port: int = 9092,
        batch_size: int = 1,
        batch_timeout: timedelta = timedelta(seconds=0.2),
        retry_on_fatal: bool = False,
        listen_retries: int = 3,
        retry_wait: float = 0.1,
        jsonpp_on: bool = False,
        *,
        broker: Optional[InMemoryBroker] = None,
    ) -> None:
        self._apply_settings(
            server=server,
            port=port,
            group=group,
            consumer_group=consumer_group,
            batch_size=batch_size,
            batch_timeout=batch_timeout,
            retry_on_fatal=retry_on_fatal,
            listen_retries=listen_retries,
            retry_wait=retry_wait,
            jsonpp_on=jsonpp_on,
        )
        self.broker = broker if broker is not None else default_broker()
        self.authfile = authfile
        self._positions: dict[str, int] = {}
        self._publishers: dict[str, InMemoryWriter] = {}
        if auth is not None:
            credential: Any = auth
        elif noauth:
            credential = False
        elif username and password:
            from hop.auth import Auth

            credential = Auth(username, password)
        elif bool(username) != bool(password):
            raise RuntimeError(
                "You must provide both a username and a password for basic authentication."
            )
        else:
            credential = False
        self.auth_obj = credential
        self.auth = credential if credential else None

    def __repr__(self) -> str:
        return (
            f"<InMemoryClient group={self.group_prefix!r} consumer_group="
            f"{self.consumer_group!r} on {self.broker!r}>"
        )

    # -- names ------------------------------------------------------------------------------

    def _construct_base_url(self) -> str:
        return base_url(self.server, self.port, self.group_prefix)

    def _construct_topic_url(self, topics: TopicSpec) -> str:
        return topic_url(self.base_url_prefix, topics)

    def _full(self, topic: str) -> str:
        return f"{self.group_prefix}.{topic}"

    # -- publishing -------------------------------------------------------------------------

    def _open_writer(self, topic: str) -> InMemoryWriter:
        return InMemoryWriter(self.broker, self._full(topic))

    def publish(self, topic: TopicSpec, msg: Any = None) -> None:
        """Publish an alert without a prior :meth:`connect`.

        Parameters
        ----------
        topic : str or list of str
            The short topic name (or several: the alert goes to each).
        msg : str, dict or hop model
            The alert.
        """
        for name in normalize_topics(topic):
            self.broker.append(self._full(name), msg)

    # -- topics -----------------------------------------------------------------------------

    def get_topics(self, group: Optional[str] = None) -> list[str]:
        """Return the short names of a group's topics on the bus, in order of creation.

        Parameters
        ----------
        group : str, optional
            The group; default this client's.

        Returns
        -------
        list of str
            Short topic names.
        """
        prefix = (group or self.group_prefix) + "."
        return [t[len(prefix) :] for t in self.broker.topics() if t.startswith(prefix)]

    # -- listening --------------------------------------------------------------------------

    def listen(
        self,
        callback: Optional[Callable[..., Any]] = None,
        topic: Optional[TopicSpec] = None,
        *,
        since: Since = None,
        max_messages: Optional[int] = None,
        timeout: Optional[float] = 0.0,
    ) -> None:
        """Deliver the alerts waiting on the bus, then return.

        Parameters
        ----------
        callback : callable, optional
            Called as ``callback(topic=<short name>, payload=<payload>)``; None prints
            ``New message from topic <full name>:`` and the payload, as the real client.
        topic : str or iterable of str, optional
            Short topic names; None (or, with a warning, an empty collection or ``""``)
            means every topic of the group on the bus.
        since : None, "earliest", "latest", datetime or timedelta, optional
            Where to start: None continues from this listener's position (the beginning of
            the log for a new one).
        max_messages : int, optional
            Return after handling this many alerts.
        timeout : float or None, optional
            How long to wait for a new alert when none is waiting: 0 (default) returns at
            once, None waits until :meth:`stop`.

        Raises
        ------
        adc.errors.KafkaException
            A fatal Kafka error met in the log or raised by the callback (after the
            retries, if ``retry_on_fatal``).
        ValueError
            If ``topic`` is None and the group has no topic on the bus.
        Exception
            Whatever the callback raised (that alert will be delivered again).
        """
        names = normalize_topics(topic) if topic else []
        if not names:
            if topic is not None:
                warnings.warn(
                    "listen() was given an empty topic collection; listening to every topic "
                    "of the group (pass topic=None to do that on purpose)",
                    UserWarning,
                    stacklevel=2,
                )
            names = self.get_topics()
            if not names:
                raise ValueError(
                    f"there are no topics of group {self.group_prefix!r} on {self.broker!r}"
                )
        full = [self._full(n) for n in names]
        bus = self.broker
        with bus._cond:
            positions = bus._positions_for(self.consumer_group, self._positions)
            bus._start(full, positions, since)
        try:
            self._listen(callback, full, positions, max_messages, timeout)
        finally:
            self.listening.clear()
            self.stop_listening.clear()

    def _listen(
        self,
        callback: Optional[Callable[..., Any]],
        full: list[str],
        positions: dict[str, int],
        max_messages: Optional[int],
        timeout: Optional[float],
    ) -> None:
        from adc.errors import KafkaException

        from .._listening import render

        bus = self.broker
        stop = self.stop_listening
        handled = 0
        retries = 1
        self.listening.set()
        while not stop.is_set():
            if max_messages is not None and handled >= max_messages:
                return
            with bus._cond:
                record = bus._next(full, positions)
                if record is None:
                    if timeout is not None and timeout <= 0:
                        return
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while record is None and not stop.is_set():
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return
                        bus._cond.wait(remaining if remaining is not None else 0.5)
                        record = bus._next(full, positions)
                    if record is None:
                        return
                # Claim it, so that another listener of the same consumer group skips it.
                positions[record.topic] = record.seq + 1
            try:
                if record.error is not None:
                    raise record.error
                payload = record.decode()
                if callback is None:
                    print(
                        f"New message from topic {record.topic}:\n{render(payload, self.jsonpp_on)}"
                    )
                else:
                    try:
                        callback(topic=short_name(record.topic, self.group_prefix), payload=payload)
                    except KafkaException as exc:
                        if exc.fatal:
                            self._unclaim(positions, record)
                            raise
                        log.warning("Non-fatal KafkaException from the callback: %s", exc)
                    except BaseException:
                        self._unclaim(positions, record)
                        raise
                handled += 1
                retries = 1
            except KafkaException as exc:
                if not exc.fatal:
                    log.warning("Non-fatal KafkaException: %s", exc)
                    continue
                log.warning("fatal error from Kafka: %s (attempt %d)", exc, retries)
                retries += 1
                if not self.retry_on_fatal or retries > self.listen_retries:
                    raise
                if self.retry_wait > 0 and stop.wait(self.retry_wait):
                    return

    def _unclaim(self, positions: dict[str, int], record: Record) -> None:
        """Deliver ``record`` again next time (its callback did not complete)."""
        with self.broker._cond:
            positions[record.topic] = min(positions.get(record.topic, 0), record.seq)

    def stop(self) -> None:
        """Make the running :meth:`listen` return (thread-safe).

        A stop() that comes before listen() starts makes that listen() return at once.
        """
        self.stop_listening.set()
        with self.broker._cond:
            self.broker._cond.notify_all()
