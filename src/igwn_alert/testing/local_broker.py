"""A real (embedded) Kafka broker for tests, with ready-made clients and a listener helper.

:class:`LocalBroker` wraps :class:`igwn_alert.testing._embedded_broker.EmbeddedBroker`: it needs
nothing but ``confluent-kafka``, starts in milliseconds, and the clients it makes are real
:class:`igwn_alert.client` objects talking Kafka over a local socket.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._topics import TopicSpec, normalize_topics
from ._embedded_broker import EmbeddedBroker

if TYPE_CHECKING:
    from ..client import client as Client

__all__ = ["BackgroundListener", "LocalBroker"]

log = logging.getLogger(__name__)

_group_numbers = itertools.count(1)


class LocalBroker:
    """An embedded Kafka broker with helpers for tests.

    Parameters
    ----------
    port : int, optional
        A fixed port; by default a random one.
    **options
        Passed on to :class:`~igwn_alert.testing._embedded_broker.EmbeddedBroker` (``backend``,
        ``broker_rtt_ms``, ``group_initial_rebalance_delay_ms``).

    Examples
    --------
    >>> with LocalBroker() as broker:  # doctest: +SKIP
    ...     publisher = broker.client(group="gracedb-test")
    ...     with broker.listener("superevent", group="gracedb-test") as alerts:
    ...         publisher.publish("superevent", '{"uid": "S1"}')
    ...         alerts.wait_for(1)
    ...     assert alerts.payloads == ['{"uid": "S1"}']
    """

    def __init__(self, port: Optional[int] = None, **options: Any) -> None:
        self.broker = EmbeddedBroker(port, **options)
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start the broker.

        Returns
        -------
        LocalBroker
            This object.
        """
        self.broker.start()
        return self

    def stop(self) -> None:
        """Close the clients made by :meth:`client`, then stop the broker."""
        with self._lock:
            clients, self._clients = self._clients, []
        for made in clients:
            try:
                made.stop()
                made.disconnect()
            except Exception as exc:  # noqa: BLE001 - stop the broker whatever happens
                log.debug("closing a test client failed: %s", exc)
        self.broker.stop()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalBroker {self.broker!r}>"

    # -- addresses -----------------------------------------------------------------------

    @property
    def server(self) -> str:
        """str: The ``server`` argument for clients, ``'kafka://127.0.0.1'``."""
        return self.broker.server

    @property
    def port(self) -> int:
        """int: The ``port`` argument for clients."""
        return self.broker.port

    @property
    def bootstrap(self) -> str:
        """str: ``'127.0.0.1:PORT'``, for plain Kafka clients."""
        return self.broker.bootstrap

    @property
    def url(self) -> str:
        """str: ``'kafka://127.0.0.1:PORT'``."""
        return self.broker.url

    # -- helpers -------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> Client:
        """Return an :class:`igwn_alert.client` connected to this broker.

        Parameters
        ----------
        **kwargs
            Any argument of :class:`igwn_alert.client` (``group``, ``consumer_group``,
            ``retry_on_fatal``, ...). ``server``, ``port`` and ``noauth=True`` are filled
            in unless given.

        Returns
        -------
        igwn_alert.client
            The client. :meth:`stop` closes it.
        """
        import igwn_alert

        kwargs.setdefault("server", self.server)
        kwargs.setdefault("port", self.port)
        kwargs.setdefault("noauth", True)
        made: Client = igwn_alert.client(**kwargs)
        with self._lock:
            self._clients.append(made)
        return made

    def create_topics(
        self, topics: TopicSpec, group: str = "gracedb", partitions: int = 1
    ) -> list[str]:
        """Create a group's topics (existing ones are left alone).

        Parameters
        ----------
        topics : str or iterable of str
            Short topic names.
        group : str, optional
            The GraceDB group (default ``'gracedb'``).
        partitions : int, optional
            Partitions per topic (default 1).

        Returns
        -------
        list of str
            The broker names of the topics created.
        """
        names = [f"{group}.{t}" for t in normalize_topics(topics)]
        return self.broker.create_topics(names, partitions=partitions)

    @staticmethod
    def unique_group(prefix: str = "gracedb-test") -> str:
        """Return a GraceDB group name no other caller in this process gets.

        Topics live as long as the broker; a session-wide broker shared by many tests keeps
        them apart with one group per test.

        Parameters
        ----------
        prefix : str, optional
            The start of the name.

        Returns
        -------
        str
            For example ``'gracedb-test-4242-7'``.
        """
        return f"{prefix}-{os.getpid()}-{next(_group_numbers)}"

    def listener(
        self,
        topic: TopicSpec,
        *,
        callback: Optional[Callable[..., Any]] = None,
        **kwargs: Any,
    ) -> BackgroundListener:
        """Return a listener that runs ``client.listen()`` in a thread (a context manager).

        Parameters
        ----------
        topic : str or iterable of str
            Short topic names to listen to; they are created if missing.
        callback : callable, optional
            Also called for each alert, after it is recorded.
        **kwargs
            Arguments of :class:`igwn_alert.client` (``group``, ``consumer_group``...).

        Returns
        -------
        BackgroundListener
            Not started yet: use it in a ``with`` block, or call ``start()``.
        """
        names = normalize_topics(topic)
        group = kwargs.get("group", "gracedb")
        self.create_topics(names, group=group)
        return BackgroundListener(self, self.client(**kwargs), names, callback)

    def ensure_group_positions(self, consumer_group: str, topics: Iterable[str]) -> None:
        """Commit the current end as a consumer group's position where it has none.

        A listener with a new ``consumer_group`` starts at the newest alert once the group
        has its partitions, which takes a moment; alerts published in between would be
        missed. Committing the position first makes the start point exact.

        Parameters
        ----------
        consumer_group : str
            The Kafka consumer group.
        topics : iterable of str
            Broker topic names (``<group>.<short>``).
        """
        import confluent_kafka

        from .._kafka_config import base_config

        consumer = confluent_kafka.Consumer(
            base_config(
                self.bootstrap, None, {"group.id": consumer_group, "enable.auto.commit": False}
            )
        )
        try:
            metadata = consumer.list_topics(timeout=10)
            partitions = [
                confluent_kafka.TopicPartition(name, p)
                for name in topics
                if name in metadata.topics
                for p in metadata.topics[name].partitions
            ]
            if not partitions:
                return
            committed = consumer.committed(partitions, timeout=10)
            missing = []
            for tp in committed:
                if tp.offset < 0:
                    _, high = consumer.get_watermark_offsets(tp, timeout=10)
                    missing.append(confluent_kafka.TopicPartition(tp.topic, tp.partition, high))
            if missing:
                consumer.commit(offsets=missing, asynchronous=False)
        finally:
            consumer.close()


class BackgroundListener:
    """A client's ``listen()`` running in a thread, recording what it receives.

    Made by :meth:`LocalBroker.listener`. Entering the ``with`` block starts listening
    and returns once the listener reads its topics; leaving it stops and joins the
    thread, and re-raises an exception that ended ``listen()``.

    Parameters
    ----------
    broker : LocalBroker
        The broker.
    client : igwn_alert.client
        The listening client.
    topics : list of str
        Short topic names.
    callback : callable, optional
        Called as ``callback(topic=..., payload=...)`` after each alert is recorded.

    Attributes
    ----------
    client : igwn_alert.client
        The listening client.
    received : list of (str, object)
        ``(short topic, payload)`` of each alert, in arrival order.
    """

    def __init__(
        self,
        broker: LocalBroker,
        client: Client,
        topics: list[str],
        callback: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.broker = broker
        self.client = client
        self.topics = topics
        self.received: list[tuple[str, Any]] = []
        self.error: Optional[BaseException] = None
        self._callback = callback
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    @property
    def payloads(self) -> list[Any]:
        """list: The payloads received, in arrival order."""
        with self._changed:
            return [payload for _, payload in self.received]

    def _record(self, topic: str, payload: Any) -> None:
        with self._changed:
            self.received.append((topic, payload))
            self._changed.notify_all()
        if self._callback is not None:
            self._callback(topic=topic, payload=payload)

    def _run(self) -> None:
        try:
            self.client.listen(self._record, self.topics)
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def start(self, timeout: float = 10.0) -> BackgroundListener:
        """Start listening; return once the listener reads its topics.

        With a ``consumer_group``, the group's position is first set to the current end of
        each partition that has none, so that nothing published after this returns is
        missed while the group gets its partitions.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the listener to start.

        Returns
        -------
        BackgroundListener
            This object.

        Raises
        ------
        TimeoutError
            If the listener did not start in time.
        """
        group = self.client.consumer_group
        if group:
            self.broker.ensure_group_positions(
                group, [f"{self.client.group_prefix}.{t}" for t in self.topics]
            )
        self._thread = threading.Thread(
            target=self._run, name="igwn-alert-test-listener", daemon=True
        )
        self._thread.start()
        ready = getattr(self.client, "listening", None)
        deadline = time.monotonic() + timeout
        while ready is not None and not ready.wait(0.02):
            if not self._thread.is_alive():
                self.stop()  # re-raises what ended listen(), if anything
                raise RuntimeError("listen() returned before it started listening")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the listener did not start within {timeout:g} s")
        return self

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, Any]]:
        """Wait until at least ``count`` alerts were received.

        Parameters
        ----------
        count : int
            How many alerts.
        timeout : float, optional
            Seconds to wait.

        Returns
        -------
        list of (str, object)
            A copy of :attr:`received`.

        Raises
        ------
        TimeoutError
            If fewer arrived in time.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                if self.error is not None:
                    raise RuntimeError("the listener failed") from self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self.received)} of {count} alert(s) arrived within {timeout:g} s"
                    )
                self._changed.wait(remaining)
            return list(self.received)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and join the thread; re-raise what ended ``listen()``, if anything.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread.
        """
        self.client.stop()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the listener did not stop within {timeout:g} s")
        error, self.error = self.error, None
        if error is not None:
            raise error

    def __enter__(self) -> BackgroundListener:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            try:
                self.stop()
            except BaseException as stop_exc:  # noqa: BLE001 - keep the original error
                log.debug("stopping the listener after an error: %r", stop_exc)
