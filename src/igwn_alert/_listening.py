"""The listen loop: the one loop that delivers alerts, on Kafka and on the in-memory bus.

The loop gets its stream through ``client.open(url, "r", group_id=...)`` and reads it with
``read(metadata=True, autocommit=False, ...)``, so test suites that patch ``client.open``
drive it, and the in-memory transport of :mod:`igwn_alert.testing` runs it unchanged. The
Kafka reader hands the same loop the callbacks' payloads directly (``listen_items``: no hop
model or Metadata built per alert unless the callback asks for ``metadata``); what is
delivered is the same (``tests/unit/test_decoding.py``).

.. rubric:: What happens to an alert

* It is *done* once the callback returned normally (or the failure policy disposed of it);
  only then is it marked done on the stream (``mark_done``, or the Kafka reader's
  ``done``), so neither a restart of a consumer group nor a reopened private stream
  misses it.
* A callback raising a non-fatal ``KafkaException`` is called again for the same alert
  (after ``retry_wait``), at most ``listen_retries`` calls in all, then the policy applies.
* A callback raising a fatal ``KafkaException`` closes the stream; with ``retry_on_fatal``
  it is reopened and the alert delivered again, at most ``listen_retries`` times in a row
  (the count restarts only after a callback returned normally), then the policy applies.
* Any other exception: the policy at once.
* The policy (``on_failure``): ``"raise"`` (the exception leaves ``listen()``; the alert is
  not done), ``"skip"`` (logged at ERROR with topic, partition, offset and uid, then done),
  or a callable ``handler(alert, exc)`` (a dead-letter file or topic; done once it
  returned; if it raises, that leaves ``listen()``).
"""

from __future__ import annotations

import inspect
import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from adc.errors import KafkaException
from hop.io import StartPosition
from hop.models import JSONBlob

from ._alert import Alert
from ._decoding import render, unwrap
from ._stats import ListenerStats
from ._topics import normalize_topics, short_name
from .exceptions import AuthenticationError, AuthorizationError, BrokerUnreachableError

if TYPE_CHECKING:
    from .client import client as Client

__all__ = [
    "Callback",
    "ListeningFlag",
    "OnFailure",
    "Since",
    "check_on_failure",
    "listen",
    "parse_since",
]

log = logging.getLogger(__name__)

#: A listen callback, called as ``callback(topic=<short name>, payload=<payload>)``.
Callback = Callable[..., Any]

#: What happens to an alert whose callback failed for good: "raise", "skip" or a handler
#: called as ``handler(alert, exc)``.
OnFailure = Union[str, Callable[[Alert, BaseException], Any]]

#: Where a listener starts: None (newest / the group's position), ``"earliest"``, a
#: :class:`datetime.datetime`, or a :class:`datetime.timedelta` before now.
Since = Union[None, str, datetime, timedelta]


def parse_since(since: Since) -> Any:
    """Turn a ``since`` argument into the start position of a stream.

    Parameters
    ----------
    since : None, "earliest", "latest", datetime or timedelta
        None keeps the default; "earliest" replays every retained alert; a datetime (naive
        means UTC) or a timedelta (that long ago) replays from that time.

    Returns
    -------
    hop.io.StartPosition, datetime or None
        The position to open the stream at.

    Raises
    ------
    ValueError
        For a string other than "earliest" or "latest".
    TypeError
        For any other type.
    """
    if since is None:
        return None
    if isinstance(since, str):
        word = since.strip().lower()
        if word in ("earliest", "beginning"):
            return StartPosition.EARLIEST
        if word == "latest":
            return StartPosition.LATEST
        raise ValueError(
            f"since must be 'earliest', 'latest', a datetime or a timedelta: {since!r}"
        )
    if isinstance(since, datetime):
        return since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    if isinstance(since, timedelta):
        return datetime.now(timezone.utc) - since
    raise TypeError(f"since must be a str, datetime or timedelta, not {type(since).__name__}")


class ListeningFlag(threading.Event):
    """``client.listening``: an event set while listen() is positioned, true when set.

    It serves both generations of downstream code: ``client.listening.wait()`` (0.7) and
    ``if client.listening:`` (0.6.3, where it was a plain bool).
    """

    def __bool__(self) -> bool:
        return self.is_set()

    @classmethod
    def adopt(cls, event: threading.Event) -> ListeningFlag:
        """Return ``event`` as a ListeningFlag (a new one in the same state if needed).

        Parameters
        ----------
        event : threading.Event
            The event.

        Returns
        -------
        ListeningFlag
            The flag.
        """
        if isinstance(event, cls):
            return event
        flag = cls()
        if event.is_set():
            flag.set()
        return flag


def _wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds) if seconds > 0 else event.is_set()


def check_on_failure(on_failure: OnFailure) -> OnFailure:
    """Check a failure policy (see the module documentation).

    Parameters
    ----------
    on_failure : "raise", "skip" or callable
        The policy.

    Returns
    -------
    "raise", "skip" or callable
        The policy.

    Raises
    ------
    ValueError
        For any other value.
    """
    if on_failure in ("raise", "skip") or callable(on_failure):
        return on_failure
    raise ValueError(
        f"on_failure must be 'raise', 'skip' or a callable handler(alert, exc), not {on_failure!r}"
    )


class _Failed(Exception):  # noqa: N818 - internal signal
    """A callback's fatal Kafka error: close the stream, then maybe deliver the alert again."""

    def __init__(self, exc: KafkaException, alert: Alert) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.alert = alert


class _Escalate(Exception):  # noqa: N818 - internal signal
    """The callback's exception, to leave listen() (not a stream error to recover from)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(repr(exc))
        self.exc = exc


def _dispose(policy: OnFailure, alert: Alert, exc: BaseException) -> None:
    """Apply the failure policy to an alert whose callback failed for good."""
    if policy == "raise":
        raise _Escalate(exc)
    if policy == "skip":
        log.error("skipping alert %s: the callback failed: %r", alert.describe(), exc)
        return
    assert callable(policy)
    log.warning("handing alert %s to on_failure: the callback failed: %r", alert.describe(), exc)
    try:
        policy(alert, exc)
    except Exception as failure:  # noqa: BLE001 - it leaves listen() as it is
        raise _Escalate(failure) from None


class _Run:
    """One listen() call: what the loop keeps across reopening its stream."""

    def __init__(self, client: Client, callback: Optional[Callback], policy: OnFailure) -> None:
        self.client, self.callback, self.policy = client, callback, policy
        self.stop = client.stop_listening
        self.group = client.group_prefix
        self.fatal_in_a_row = 0  # fatal errors since a callback last returned normally
        self.positions: dict[tuple[str, int], int] = {}  # private streams: where to resume
        self.positioned = False  # some stream of this run was positioned
        self.handled = 0
        self.stats: ListenerStats = getattr(client, "_listener_stats", None) or ListenerStats()
        self.with_metadata = _takes_metadata(callback)
        self.stream: Any = None  # the stream being read
        self.metadata_of: Callable[[Any], Any] = _same  # an item's token -> hop Metadata
        self.short: dict[str, str] = {}  # broker topic -> the short name callbacks get

    def idle(self, seconds: float) -> bool:
        """Wait before calling a callback again (serving the stream); True if stopped."""
        stream = self.stream
        if stream is not None and _ours(stream):
            return bool(stream.idle(seconds, self.stop))
        return _wait(self.stop, seconds)

    def deliver(
        self, payload: Any, full: str, partition: int, offset: int, stamp: Any, token: Any
    ) -> None:
        """Call the callback for one alert until it is done (raises if it is not)."""
        client, callback = self.client, self.callback
        if callback is None:
            print(f"New message from topic {full}:\n{render(payload, client.jsonpp_on)}")
            return
        topic = self.short.get(full)
        if topic is None:
            topic = self.short[full] = short_name(full, self.group)
        md = self.metadata_of(token) if self.with_metadata else None
        stats, attempts, when = self.stats, 0, stamp if type(stamp) is int else 0
        while True:
            attempts += 1
            started = stats.alert_started(topic, partition, when)
            try:
                if md is None:
                    callback(topic=topic, payload=payload)
                else:
                    callback(topic=topic, payload=payload, metadata=md)
                stats.alert_done(topic, started)
                self.fatal_in_a_row = 0
                return
            except KafkaException as exc:
                self.stats.error("callback")
                alert = Alert(topic, full, partition, offset, stamp, payload, attempts)
                if exc.fatal:
                    self.fatal_in_a_row += 1
                    log.warning(
                        "fatal Kafka error from the callback for %s (attempt %d of %d): %s",
                        alert.describe(),
                        attempts,
                        client.listen_retries,
                        exc,
                    )
                    if client.retry_on_fatal and self.fatal_in_a_row < client.listen_retries:
                        raise _Failed(exc, alert) from exc  # reopen, then deliver it again
                    return _dispose(self.policy, alert, exc)
                log.warning(
                    "Non-fatal KafkaException from the callback for %s (attempt %d of %d): %s",
                    alert.describe(),
                    attempts,
                    client.listen_retries,
                    exc,
                )
                if attempts >= client.listen_retries:
                    return _dispose(self.policy, alert, exc)
                if self.idle(client.retry_wait):
                    raise _Stopped from None
            except Exception as exc:  # noqa: BLE001 - the failure policy decides
                self.stats.error("callback")
                alert = Alert(topic, full, partition, offset, stamp, payload, attempts)
                return _dispose(self.policy, alert, exc)


def _takes_metadata(callback: Optional[Callback]) -> bool:
    """Whether a callback has a parameter named ``metadata`` (it then gets hop's Metadata)."""
    if callback is None:
        return False
    try:
        parameter = inspect.signature(callback).parameters.get("metadata")
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


class _Stopped(Exception):  # noqa: N818 - internal signal
    """stop() during a retry wait: the alert is not done."""


def listen(
    client: Client,
    callback: Optional[Callback],
    topics: list[str],
    start_at: Any = None,
    *,
    on_failure: OnFailure = "raise",
    max_messages: Optional[int] = None,
    **stream_options: Any,
) -> None:
    """Run the listen loop of ``client`` until it is stopped (see :meth:`client.listen`).

    Parameters
    ----------
    client : igwn_alert.client
        The client; its ``open`` gives the stream.
    callback : callable or None
        Called as ``callback(topic=..., payload=...)``; None prints each alert instead.
    topics : list of str
        Short topic names.
    start_at : object, optional
        Where the first stream starts (see :func:`parse_since`).
    on_failure : "raise", "skip" or callable, optional
        The failure policy (module documentation).
    max_messages : int, optional
        Return once this many alerts are done.
    **stream_options
        Passed to ``client.open`` (``until_eos=True``, or options of the in-memory bus).
    """
    if max_messages is not None and (
        not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1
    ):
        raise ValueError(f"max_messages must be a whole number of at least 1, not {max_messages!r}")
    run = _Run(client, callback, check_on_failure(on_failure))
    url, stop = client._construct_topic_url(topics), run.stop
    run.stats.set_state("starting")
    try:
        while not stop.is_set():
            options = dict(stream_options)
            if start_at is not None and not run.positioned:
                # until a stream was positioned there: a replay (or a start) that failed
                # before it began is not dropped when the stream is opened again
                options["start_at"] = start_at
            elif client.consumer_group is None and run.positions:
                options["start_at"] = dict(run.positions)  # resume every partition exactly
            stream = None
            try:
                stream = client.open(url, "r", group_id=client.consumer_group, **options)
                client._listen_stream = stream
                if _ours(stream):
                    stream.stats, stream.stats_group = run.stats, run.group
                with stream as s:
                    run.stream = s
                    if stop.is_set():
                        break
                    _when_ready(s, run, client)
                    items, done, run.metadata_of = _source(s, client)
                    for payload, topic, partition, offset, stamp, token in items:
                        run.deliver(payload, topic, partition, offset, stamp, token)
                        done(token)
                        run.handled += 1
                        if stop.is_set() or run.handled == max_messages:
                            return
                return  # the stream ended: stopped, or read to its end
            except _Stopped:
                return
            except _Escalate as escalate:
                raise escalate.exc from None
            except (KafkaException, _Failed) as exc:
                run.stats.error(_kind(exc))
                run.stats.set_state("reconnecting")
                if not _recover(run, exc):
                    if stop.is_set():
                        return  # stopped while recovering: not an error
                    if isinstance(exc, _Failed):
                        raise exc.exc from None
                    raise
                run.stats.reconnect()
            finally:
                client.listening.clear()
                if stream is not None and _ours(stream):
                    run.positions.update(stream.positions())
    finally:
        run.stats.set_state("stopped")
        client.listening.clear()
        client._listen_stream = None
        stop.clear()


def _kind(exc: BaseException) -> str:
    """The kind of an error, for ``client.stats()``."""
    if isinstance(exc, _Failed):
        return "callback-fatal"
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return "auth"
    if isinstance(exc, BrokerUnreachableError):
        return "unreachable"
    return "fatal" if getattr(exc, "fatal", False) else "transient"


def _when_ready(stream: Any, run: _Run, client: Client) -> None:
    def ready() -> None:
        run.positioned = True
        run.stats.set_state("listening")
        client.listening.set()

    if _ours(stream):
        stream.when_ready(ready)  # once positioned / assigned
    else:  # a stand-in stream (tests patching client.open)
        ready()


def _source(stream: Any, client: Client) -> tuple[Iterator[Any], Callable[[Any], Any], Any]:
    """A stream's alerts as ``(payload, topic, partition, offset, timestamp, token)``, how
    to mark a token done, and how to get hop's Metadata of a token.

    This package's Kafka reader gives the callback's payloads directly
    (``listen_items``); any other stream (the in-memory reader, a test's stand-in for
    ``client.open``) is read through hop's ``read(metadata=True)``.
    """
    items = getattr(stream, "listen_items", None)
    if items is not None and _ours(stream):
        return items(client.batch_size), stream.done, stream.metadata_of
    pairs = stream.read(
        metadata=True,
        autocommit=False,
        batch_size=client.batch_size,
        batch_timeout=client.batch_timeout,
    )
    return _items_of(pairs), stream.mark_done, _same


def _items_of(pairs: Iterable[tuple[Any, Any]]) -> Iterator[Any]:
    """hop's ``(payload, Metadata)`` pairs as listen items (the token is the Metadata)."""
    for payload, md in pairs:
        payload = payload.content if type(payload) is JSONBlob else unwrap(payload, md)
        yield payload, md.topic, md.partition, md.offset, md.timestamp, md


def _same(token: Any) -> Any:
    return token


def _ours(stream: Any) -> bool:
    """Whether a stream is one of this package's readers (not a test's stand-in)."""
    return getattr(stream, "_igwn_alert_reader", None) is True


def _recover(run: _Run, exc: Union[KafkaException, _Failed]) -> bool:
    """Decide after a stream error: True to reopen the stream, False to raise."""
    client, stop = run.client, run.stop
    if isinstance(exc, _Failed):  # the callback's fatal error, with retries left
        return not _wait(stop, client.retry_wait)
    if isinstance(exc, BrokerUnreachableError) and client.retry_on_fatal:
        log.warning("%s; retrying", exc)  # an outage, also at start-up
        return not _wait(stop, max(client.retry_wait, 1.0))
    if not exc.fatal and not (isinstance(exc, BrokerUnreachableError) and not run.positioned):
        log.warning("Non-fatal KafkaException: %s", exc)
        return not _wait(stop, client.retry_wait)
    if not exc.fatal:
        return False  # unreachable before anything was read: say so at once
    run.fatal_in_a_row += 1
    log.warning("fatal error from Kafka: %s (attempt %d)", exc, run.fatal_in_a_row)
    if client.retry_on_fatal and run.fatal_in_a_row < client.listen_retries:
        return not _wait(stop, client.retry_wait)
    log.error(
        "giving up listening after a fatal Kafka error (retry_on_fatal=%s, listen_retries=%d)",
        client.retry_on_fatal,
        client.listen_retries,
    )
    return False


def resolve_listen_topics(client: Client, topic: Optional[Iterable[str] | str]) -> list[str]:
    """Return the short names a listen() call covers (None or empty: every group topic).

    Parameters
    ----------
    client : igwn_alert.client
        The client.
    topic : str, iterable of str, or None
        What the caller passed.

    Returns
    -------
    list of str
        Short topic names.

    Raises
    ------
    ValueError
        If the group has no topics at all.
    """
    names = [name for name in normalize_topics(topic) if name]
    if not names:
        if topic is not None:
            warnings.warn(
                "listen() was given an empty topic collection; listening to every topic of "
                "the group (pass topic=None to do that on purpose)",
                UserWarning,
                stacklevel=3,
            )
        names = normalize_topics(client.get_topics())
        log.info("Listening to all %d available topics on %s", len(names), client.server)
        if not names:
            raise ValueError(
                f"there are no topics of group {client.group_prefix!r} on {client.server} "
                "visible to this credential"
            )
    return names
