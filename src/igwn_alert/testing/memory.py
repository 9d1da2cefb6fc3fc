"""An in-memory alert bus and a client for it: test alert handlers with no broker at all.

:class:`InMemoryClient` *is* :class:`igwn_alert.client` on another transport: its
``open()`` returns readers and writers of an :class:`InMemoryBroker` (a plain Python
object) instead of Kafka streams, so ``listen()`` runs the client's one listen loop — the
same decoding, callback call, failure policy (``on_failure``), retries and resume as in
production — and publishing goes through the same writer map.

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
* An alert counts as handled when the callback returns; what happens when it raises is
  the client's failure policy (see :meth:`igwn_alert.client.listen`), exactly as on Kafka.
* :meth:`InMemoryBroker.inject_error` puts a Kafka error in the log; a listener that
  reaches it handles it as the real client handles an error from the stream: a fatal one
  ends ``listen()`` with the exception (or is retried, with ``retry_on_fatal``), a
  non-fatal one is logged and the stream reopened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Optional, Union

from .._topics import TopicSpec, normalize_topics
from ..client import client
from ._memory_transport import ALL_TOPICS as _ALL_TOPICS
from ._memory_transport import Cursor, MemoryReader
from ._memory_transport import MemoryWriter as InMemoryWriter

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
        from .._decoding import decode_message, unwrap
        from ._memory_transport import view

        return unwrap(decode_message(view(self)))


def _encode(
    msg: Any, headers: Any = None, test: bool = False
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode an alert as the real client does (hop's encoding)."""
    from hop.io import Producer as HopProducer

    value, headers = HopProducer.pack(msg, headers=headers, test=test)
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
        self._group_positions: dict[str, Cursor] = {}

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

    def append(
        self,
        topic: str,
        msg: Any,
        *,
        source: str = "publish",
        headers: Any = None,
        test: bool = False,
    ) -> Record:
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
        headers : list of (str, bytes), optional
            Extra headers, as hop takes them.
        test : bool, optional
            Mark it as a hop test message.

        Returns
        -------
        Record
            The new log entry.

        Raises
        ------
        TypeError
            If hop cannot encode ``msg``.
        """
        value, full_headers = _encode(msg, headers, test)
        return self._append(topic, value=value, headers=full_headers, source=source)

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

    def _group_cursor(self, consumer_group: str) -> Cursor:
        with self._cond:
            return self._group_positions.setdefault(consumer_group, Cursor())


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


# -- the client ---------------------------------------------------------------------------------


class InMemoryClient(client):
    """:class:`igwn_alert.client` on an :class:`InMemoryBroker` instead of Kafka.

    It takes the same arguments as :class:`igwn_alert.client` (and ``broker``), keeps the
    same attributes, raises the same errors and runs the same listen loop, but never
    touches the network and never reads a credential file: without ``auth``, ``username``
    and ``password`` or ``noauth`` the session is simply unauthenticated.

    Parameters
    ----------
    username, password, auth, authfile, noauth, group, consumer_group, server, port, \
batch_size, batch_timeout, retry_on_fatal, listen_retries, retry_wait, jsonpp_on
        As for :class:`igwn_alert.client`.
    config : mapping, optional
        As for :class:`igwn_alert.client` (checked the same way; the bus ignores it).
    broker : InMemoryBroker, optional
        The bus (keyword only); default :func:`default_broker` at construction time.

    Notes
    -----
    See the module documentation for where ``listen()`` starts and when it returns.
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
        config: Optional[Mapping[str, Any]] = None,
        broker: Optional[InMemoryBroker] = None,
    ) -> None:
        self.broker = broker if broker is not None else default_broker()
        self.authfile = authfile
        self._private_cursor = Cursor()
        super().__init__(
            username=username,
            password=password,
            auth=auth,
            authfile=authfile,
            noauth=noauth,
            group=group,
            consumer_group=consumer_group,
            server=server,
            port=port,
            batch_size=batch_size,
            batch_timeout=batch_timeout,
            retry_on_fatal=retry_on_fatal,
            listen_retries=listen_retries,
            retry_wait=retry_wait,
            jsonpp_on=jsonpp_on,
            config=config,
        )

    def _resolve_auth(self, **where: Any) -> Any:
        """The credential from the arguments alone (no credential file is ever read)."""
        if where["auth"] is not None:
            return where["auth"]
        if where["noauth"]:
            return False
        username, password = where["username"], where["password"]
        if username and password:
            from hop.auth import Auth

            return Auth(username, password)
        if bool(username) != bool(password):
            raise RuntimeError(
                "You must provide both a username and a password for basic authentication."
            )
        return False

    def __repr__(self) -> str:
        return (
            f"<InMemoryClient group={self.group_prefix!r} consumer_group="
            f"{self.consumer_group!r} on {self.broker!r}>"
        )

    # -- the transport ----------------------------------------------------------------------

    def open(  # type: ignore[override]
        self,
        url: str,
        mode: str = "r",
        group_id: Optional[str] = None,
        ignoretest: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Open a reader or writer of the bus, for a ``kafka://`` URL as the client builds it.

        Parameters
        ----------
        url : str
            ``kafka://host:port/topic[,topic...]`` (the host is not looked at).
        mode : {"r", "w"}
            Read or write.
        group_id : str, optional
            The consumer group (read mode).
        ignoretest : bool, optional
            Skip hop test messages when reading.
        **kwargs
            ``start_at``, ``until_eos`` and ``idle_timeout`` (read mode).

        Returns
        -------
        MemoryReader or MemoryWriter
            The stream.

        Raises
        ------
        ValueError
            For a bad mode, or no topic in read mode.
        """
        from adc.kafka import parse_kafka_url

        _user, _brokers, topics = parse_kafka_url(url)
        if mode == "w":
            return InMemoryWriter(self.broker, topics or [])
        if mode != "r":
            raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")
        if not topics:
            raise ValueError(f"no topic(s) in the URL {url}")
        cursor = self._private_cursor if group_id is None else self.broker._group_cursor(group_id)
        return MemoryReader(
            self.broker,
            topics,
            cursor,
            start_at=kwargs.get("start_at"),
            ignoretest=ignoretest,
            until_eos=bool(kwargs.get("until_eos", False)),
            idle_timeout=kwargs.get("idle_timeout"),
        )

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

    def listen(  # type: ignore[override]
        self,
        callback: Optional[Callable[..., Any]] = None,
        topic: Optional[TopicSpec] = None,
        *,
        since: Since = None,
        on_failure: Any = "raise",
        max_messages: Optional[int] = None,
        until_eos: bool = False,
        timeout: Optional[float] = 0.0,
    ) -> None:
        """Deliver the alerts on the bus with the client's listen loop, then return.

        Parameters
        ----------
        callback : callable, optional
            Called as ``callback(topic=<short name>, payload=<payload>)``; None prints
            ``New message from topic <full name>:`` and the payload, as the real client.
        topic : str or iterable of str, optional
            Short topic names; None (or, with a warning, an empty collection) means every
            topic of the group on the bus.
        since : None, "earliest", "latest", datetime or timedelta, optional
            Where to start: None continues from this listener's position (the beginning of
            the log for a new one; a consumer group's position for a group).
        on_failure : "raise", "skip" or callable, optional
            As for :meth:`igwn_alert.client.listen`.
        max_messages : int, optional
            Return after handling this many alerts.
        until_eos : bool, optional
            Return once everything on the bus was read (the same as ``timeout=0``).
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
            Whatever the callback raised, with ``on_failure="raise"`` (that alert will be
            delivered again).
        """
        options = {"idle_timeout": 0.0 if until_eos else timeout}
        self._listen(callback, topic, since, on_failure, max_messages, options)

    def stop(self) -> None:
        """Make the running :meth:`listen` return (thread-safe).

        A stop() that comes before listen() starts makes that listen() return at once.
        """
        super().stop()
        with self.broker._cond:
            self.broker._cond.notify_all()
