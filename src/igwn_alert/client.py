"""The public compatibility surface: the ``client`` class of ``igwn_alert``.

The class keeps the reference client's name, signature, attributes and behaviour (see the
migration guide for what is better here) and delegates the work to the modules that do it:
:mod:`~igwn_alert._credentials`, :mod:`~igwn_alert._topics`, :mod:`~igwn_alert._publishing`,
:mod:`~igwn_alert._reading` and :mod:`~igwn_alert._listening`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal, Optional, Union, overload
from urllib.parse import unquote

import confluent_kafka
import hop
import hop.list_topics
from adc.kafka import parse_kafka_url
from hop import Stream
from hop.auth import AmbiguousCredentialError, Auth, select_matching_auth
from hop.io import StartPosition

from . import _listening
from ._credentials import private_group_id, resolve_credentials
from ._deprecated import DeprecatedMethods
from ._kafka_config import check_user_config
from ._probe import probe
from ._publishing import AlertWriter, ProducerPool
from ._reading import AlertReader
from ._sessions import WriterMap
from ._settings import ClientSettings
from ._topics import TopicSpec, base_url, group_topics, normalize_topics, topic_url
from .exceptions import BrokerUnreachableError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_TIMEOUT",
    "DEFAULT_GROUP",
    "DEFAULT_LISTEN_RETRIES",
    "DEFAULT_PORT",
    "DEFAULT_RETRY_WAIT",
    "DEFAULT_SERVER",
    "client",
]

log = logging.getLogger(__name__)

DEFAULT_SERVER = "kafka://kafka.scimma.org/"
DEFAULT_PORT = 9092
DEFAULT_GROUP = "gracedb"
DEFAULT_BATCH_SIZE = 1
DEFAULT_BATCH_TIMEOUT = timedelta(seconds=0.2)
DEFAULT_LISTEN_RETRIES = 3
DEFAULT_RETRY_WAIT = 0.1

_LIST_TOPICS_TIMEOUT = 10.0
_HOP_LIST_TOPICS = hop.list_topics.list_topics


class client(WriterMap, DeprecatedMethods, ClientSettings, Stream):  # type: ignore[misc]
    """A hop-scotch client configured for igwn_alerts from GraceDB.

    Parameters
    ----------
    username : str, optional
        The SCIMMA user name, or None to look it up in hop's ``auth.toml`` or netrc.
    password : str, optional
        The SCIMMA password, or None to look it up.
    auth : hop.auth.Auth or list of hop.auth.Auth, optional
        A credential, used as it is.
    authfile : str, optional
        Path to a hop ``auth.toml``.
    noauth : bool, optional
        True for an unauthenticated session.
    group : str, optional
        The GraceDB group (``gracedb``, ``gracedb-playground``, ``gracedb-test``).
    consumer_group : str, optional
        The Kafka consumer group. Listeners in one group share the alerts and resume where
        the group left off; an alert counts as done only once the callback has returned.
        If not set, a private listener sees only alerts published after it starts.
    server : str, optional
        The server URL (``kafka://...``).
    port : int, optional
        The server port.
    batch_size : int, optional
        How many alerts to take from the client library at once (alerts already buffered
        are always taken without waiting).
    batch_timeout : datetime.timedelta, optional
        Kept for compatibility; waiting never delays an alert that has arrived.
    retry_on_fatal : bool, optional
        Reopen the stream after a fatal Kafka error.
    listen_retries : int, optional
        How many times in a row to reopen after a fatal error.
    retry_wait : float, optional
        Seconds to wait before reopening.
    jsonpp_on : bool, optional
        Pretty-print JSON when listening without a callback.
    config : mapping, optional
        librdkafka settings (``{"session.timeout.ms": 45000}``), keyword only, merged last
        into every reader's and writer's configuration. Settings the client must own
        (``group.id``, ``enable.auto.commit``, ``enable.auto.offset.store``, credentials,
        callbacks, ...) are refused with a ValueError.

    Attributes
    ----------
    sessions : dict
        Short topic name -> open writer, filled by :meth:`connect`.
    stop_listening : threading.Event
        Set by :meth:`stop`.
    listening : threading.Event
        Set while :meth:`listen` has its stream open and positioned (an addition of this
        client: wait on it to know that alerts published from now on will be seen). Its
        truth value is whether it is set; assigning ``False`` to it stops the listener, as
        igwn-alert 0.6.3 code does.
    listen_stream : stream or None
        The stream the running :meth:`listen` reads (0.6.3's name; 0.7.0 calls it
        ``_listen_stream``); ``listen_stream._consumer.stop()`` stops the listener.
    auth_obj : hop.auth.Auth, list of hop.auth.Auth, or False
        The credential chosen.

    Examples
    --------
    Listing topics:

    >>> alert_client = client(group='gracedb-test')  # doctest: +SKIP
    >>> topics = alert_client.get_topics()  # doctest: +SKIP

    Running a listener:

    >>> def process_alert(topic, payload):  # doctest: +SKIP
    ...     if topic == 'superevent':
    ...         alert = json.loads(payload)
    >>> client(group='gracedb-test').listen(process_alert, ['superevent'])  # doctest: +SKIP
    """

    def __init__(
        self,
        username: Optional[str] = None,
        password: Optional[str] = None,
        auth: Union[Auth, list[Auth], None] = None,
        authfile: Optional[str] = None,
        noauth: bool = False,
        group: str = DEFAULT_GROUP,
        consumer_group: Optional[str] = None,
        server: str = DEFAULT_SERVER,
        port: int = DEFAULT_PORT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_timeout: timedelta = DEFAULT_BATCH_TIMEOUT,
        retry_on_fatal: bool = False,
        listen_retries: int = DEFAULT_LISTEN_RETRIES,
        retry_wait: float = DEFAULT_RETRY_WAIT,
        jsonpp_on: bool = False,
        *,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.config_overrides = check_user_config(config)
        self._listen_lock = threading.Lock()
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
        self._producers = ProducerPool()
        self._listen_stream: Any = None
        self.auth_obj = self._resolve_auth(
            username=username,
            password=password,
            auth=auth,
            authfile=authfile,
            noauth=noauth,
            server=server,
            port=port,
        )
        super().__init__(auth=self.auth_obj)

    def _resolve_auth(self, **where: Any) -> Any:
        """Choose the credential (the contract's order; the in-memory client reads no file)."""
        return resolve_credentials(**where)

    @property
    def delivery_timeout(self) -> timedelta:
        """How long an alert may take to reach the broker before it counts as undelivered.

        30 s by default (an addition of this client: the reference has no such setting).
        Set it before the first ``connect()`` or ``publish()``; writers opened earlier keep
        the value they were opened with.

        Raises
        ------
        ValueError
            When set to anything but a positive :class:`datetime.timedelta`.
        """
        return self._producers.timeout

    @delivery_timeout.setter
    def delivery_timeout(self, value: timedelta) -> None:
        self._producers.timeout = value

    def __repr__(self) -> str:
        user = getattr(self.auth_obj, "username", None)
        who = f" user={user!r}" if user else ""
        return f"<igwn_alert.client {self.base_url_prefix}{who}>"

    # -- URLs -------------------------------------------------------------------------------

    def _construct_base_url(self) -> str:
        """Return ``kafka://<host>:<port>/<group>`` for this client."""
        return base_url(self.server, self.port, self.group_prefix)

    def _construct_topic_url(self, topics: TopicSpec) -> str:
        """Return the URL of one short topic name or a list of them."""
        return topic_url(self.base_url_prefix, topics)

    # -- streams ----------------------------------------------------------------------------

    @overload
    def open(
        self,
        url: str,
        mode: Literal["w"],
        group_id: Optional[str] = None,
        ignoretest: bool = True,
        **kwargs: Any,
    ) -> AlertWriter: ...

    @overload
    def open(
        self,
        url: str,
        mode: Literal["r"] = "r",
        group_id: Optional[str] = None,
        ignoretest: bool = True,
        **kwargs: Any,
    ) -> AlertReader: ...

    def open(
        self,
        url: str,
        mode: str = "r",
        group_id: Optional[str] = None,
        ignoretest: bool = True,
        **kwargs: Any,
    ) -> Union[AlertReader, AlertWriter]:
        """Open a stream on a ``kafka://`` URL, as :meth:`hop.io.Stream.open` does.

        Parameters
        ----------
        url : str
            ``kafka://[user@]host:port/topic[,topic...]``.
        mode : {"r", "w"}
            Read or write.
        group_id : str, optional
            The consumer group (read mode); None for a private reader.
        ignoretest : bool, optional
            Skip hop test messages when reading.
        **kwargs
            ``start_at`` (read mode): where to start (see
            :class:`igwn_alert._reading.AlertReader`).

        Returns
        -------
        AlertReader or AlertWriter
            The stream.

        Raises
        ------
        ValueError
            For a bad mode, several brokers, or no topic in read mode.
        """
        username, brokers, topics = parse_kafka_url(url)
        if len(brokers) != 1:
            raise ValueError(f"exactly one broker address is supported, not {brokers}")
        bootstrap = brokers[0] if ":" in brokers[0] else f"{brokers[0]}:{self.port}"
        credential = self._credential_for(bootstrap, unquote(username) if username else None)
        if mode == "w":
            return AlertWriter(self._producers, bootstrap, topics or [], credential)
        if mode == "r":
            if not topics:
                raise ValueError(f"no topic(s) in the URL {url}")
            start_at = kwargs.get("start_at", self.start_at)
            return AlertReader(
                bootstrap,
                topics,
                credential,
                group_id=group_id,
                start_at=None if start_at == StartPosition.LATEST else start_at,
                ignoretest=ignoretest,
                until_eos=bool(kwargs.get("until_eos", self.until_eos)),
                config=self.config_overrides,
                private_group=private_group_id(credential),
            )
        raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")

    def _credential_for(self, bootstrap: str, username: Optional[str] = None) -> Any:
        creds = self.auth
        if not creds:
            return None
        if not isinstance(creds, (list, tuple)):
            return creds
        if len(creds) == 1 and username is None:
            return creds[0]
        try:
            return select_matching_auth(creds, bootstrap, username)
        except AmbiguousCredentialError:
            raise
        except RuntimeError:
            return select_matching_auth(creds, bootstrap.rsplit(":", 1)[0], username)

    # -- listening --------------------------------------------------------------------------

    def listen(
        self,
        callback: Optional[_listening.Callback] = None,
        topic: Optional[TopicSpec] = None,
        *,
        since: _listening.Since = None,
        on_failure: _listening.OnFailure = "raise",
        max_messages: Optional[int] = None,
        until_eos: bool = False,
    ) -> None:
        """Call ``callback(topic=..., payload=...)`` for each alert, until :meth:`stop`.

        Parameters
        ----------
        callback : callable, optional
            Called by keyword with the short topic name and the payload (a str as GraceDB
            sends it, a dict, ...). None prints each alert instead.
        topic : str or iterable of str, optional
            Short topic names; None (or, with a warning, an empty collection) means every
            topic of the group.
        since : None, "earliest", datetime.datetime or datetime.timedelta, optional
            Replay: start from the earliest retained alert, from a point in time, or from
            that long ago. None starts at the newest alert (or where the consumer group left
            off).
        on_failure : "raise", "skip" or callable, optional
            What happens to an alert whose callback failed for good (see the delivery
            guide): ``"raise"`` (default) lets the exception leave ``listen()`` with the
            alert not done; ``"skip"`` logs it at ERROR (topic, partition, offset, uid) and
            goes on; a callable ``handler(alert, exc)`` gets an :class:`igwn_alert.Alert`
            (for a dead-letter file or topic), and the alert is done once it returned.
        max_messages : int, optional
            Return once this many alerts are done.
        until_eos : bool, optional
            Return once every partition was read to its end (what is there now).

        Raises
        ------
        RuntimeError
            If another thread is already running ``listen()`` on this client.
        adc.errors.KafkaException
            A fatal Kafka error (after the retries, if ``retry_on_fatal``), a refused
            credential, a missing ACL, or an unreachable broker at start-up (retried,
            with ``retry_on_fatal``).
        Exception
            Whatever the callback raised, with ``on_failure="raise"`` (that alert is not
            done: a consumer group delivers it again).
        """
        options: dict[str, Any] = {"until_eos": True} if until_eos else {}
        self._listen(callback, topic, since, on_failure, max_messages, options)

    def _listen(
        self,
        callback: Optional[_listening.Callback],
        topic: Optional[TopicSpec],
        since: _listening.Since,
        on_failure: _listening.OnFailure,
        max_messages: Optional[int],
        options: dict[str, Any],
    ) -> None:
        """listen(), with options for ``open()`` (the in-memory client adds its own)."""
        policy = _listening.check_on_failure(on_failure)
        start_at = _listening.parse_since(since)
        if not self._listen_lock.acquire(blocking=False):
            raise RuntimeError(
                "listen() is already running on this client in another thread; use one "
                "client per listener (several clients may share a consumer_group)"
            )
        try:
            topics = _listening.resolve_listen_topics(self, topic)
            log.info("Listening to %d topic(s) on %s", len(topics), self.server)
            _listening.listen(
                self,
                callback,
                topics,
                start_at,
                on_failure=policy,
                max_messages=max_messages,
                **options,
            )
        finally:
            self._listen_lock.release()

    def stop(self) -> None:
        """Make the running :meth:`listen` return (thread-safe, within 0.5 s).

        A stop() that lands while listen() is still starting is not lost.
        """
        self.stop_listening.set()
        stream = self._listen_stream
        if stream is not None:
            stream.stop()

    @property  # type: ignore[override]
    def listening(self) -> _listening.ListeningFlag:
        """Set while listen() is positioned; assigning False stops it (0.6.3 code does)."""
        return self._listening_flag

    @listening.setter
    def listening(self, value: Any) -> None:
        if isinstance(value, threading.Event):
            self._listening_flag = _listening.ListeningFlag.adopt(value)
        elif not value:
            self.stop()

    @property
    def listen_stream(self) -> Any:
        """The stream the running listen() reads, or None (igwn-alert 0.6.3's name)."""
        return self._listen_stream

    # -- publishing -------------------------------------------------------------------------

    def _open_writer(self, topic: str) -> AlertWriter:
        return self.open(self._construct_topic_url(topic), "w")

    def publish(self, topic: TopicSpec, msg: Any = None) -> None:
        """Send an alert without a prior :meth:`connect`; return once it is delivered.

        Writers are kept and reused, so a burst of ``publish()`` calls costs about what
        ``publish_to_topic`` costs.

        Parameters
        ----------
        topic : str or list of str
            The short topic name (or several: the alert goes to each).
        msg : str, dict or hop model
            The alert.

        Raises
        ------
        igwn_alert.exceptions.DeliveryError
            If the alert could not be delivered within the delivery timeout.
        """
        for name in normalize_topics(topic):
            writer = self._publisher(name)
            writer.write(msg)
            writer.flush()

    # -- topics -----------------------------------------------------------------------------

    def get_topics(self, group: Optional[str] = None) -> list[str]:
        """List the short names of a group's topics visible to this credential.

        Parameters
        ----------
        group : str, optional
            The group; default this client's.

        Returns
        -------
        list of str
            Short topic names, in the broker's order.

        Raises
        ------
        igwn_alert.exceptions.AuthenticationError
            If the broker refused the credential (within a second or two).
        igwn_alert.exceptions.BrokerUnreachableError
            If the broker did not answer within 10 s.
        """
        group = group or self.group_prefix
        bootstrap = self.base_url_prefix.split("://", 1)[1].split("/", 1)[0]
        credential = self._credential_for(bootstrap) if self.auth else False
        list_topics = hop.list_topics.list_topics  # looked up now: test suites replace it
        if list_topics is _HOP_LIST_TOPICS:
            # hop's own request would print librdkafka's log on stderr and report a refused
            # credential as a time-out; probe() asks the same question quietly
            found = probe(bootstrap, credential or None, timeout=_LIST_TOPICS_TIMEOUT)
        else:
            try:
                found = list_topics(
                    url=f"kafka://{bootstrap}",
                    auth=credential or False,
                    timeout=_LIST_TOPICS_TIMEOUT,
                )
            except confluent_kafka.KafkaException as exc:
                raise BrokerUnreachableError(
                    f"cannot list the topics at {bootstrap}: {exc}"
                ) from None
        return group_topics(found, group)
