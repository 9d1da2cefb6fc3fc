"""The listen loop: read alerts, decode them, hand them to a callback, survive Kafka errors.

The loop gets its stream through ``client.open(url, "r", group_id=...)`` and reads it with
``read(metadata=True, batch_size=..., batch_timeout=...)``, so test suites that patch
``client.open`` drive it; the smarter stream lives behind ``open``
(:class:`igwn_alert._reading.AlertReader`).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from adc.errors import KafkaException
from hop.io import StartPosition
from hop.models import JSONBlob

from ._reading import AlertReader
from ._topics import normalize_topics, short_name

if TYPE_CHECKING:
    from .client import client as Client

__all__ = ["Callback", "Since", "listen", "parse_since", "render"]

log = logging.getLogger(__name__)

#: A listen callback, called as ``callback(topic=<short name>, payload=<payload>)``.
Callback = Callable[..., Any]

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


def unwrap(payload: Any) -> Any:
    """Return what a callback receives for a decoded message (the reference's rules).

    A hop JSON message gives its content unchanged (a dict stays a dict, a str stays a str:
    GraceDB's JSON text is never decoded twice). Anything else is tried as JSON; if that
    fails, a warning, and the payload is passed on as it came.

    Parameters
    ----------
    payload : object
        What the stream yielded.

    Returns
    -------
    object
        The payload for the callback.
    """
    if isinstance(payload, JSONBlob):
        return payload.content
    try:
        return json.loads(payload)
    except (ValueError, TypeError) as exc:
        warnings.warn(f"Payload is not valid json: {exc}", UserWarning, stacklevel=3)
        return payload


def render(payload: Any, jsonpp: bool) -> Any:
    """Return what ``listen()`` without a callback prints for a payload.

    Parameters
    ----------
    payload : object
        The payload.
    jsonpp : bool
        Pretty-print as JSON indented by 4 (a dict, or a str holding JSON).

    Returns
    -------
    object
        The text (or object) to print.
    """
    if not jsonpp:
        return payload
    try:
        value = json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        return json.dumps(value, indent=4)
    except (ValueError, TypeError):
        return payload


def _wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds) if seconds > 0 else event.is_set()


def listen(
    client: Client,
    callback: Optional[Callback],
    topics: list[str],
    start_at: Any = None,
) -> None:
    """Run the listen loop of ``client`` until it is stopped (see :meth:`client.listen`).

    Parameters
    ----------
    client : igwn_alert.client
        The client; its ``open`` gives the stream.
    callback : callable or None
        Called as ``callback(topic=..., payload=...)``; None prints each alert.
    topics : list of str
        Short topic names.
    start_at : object, optional
        Where the first stream starts (see :func:`parse_since`).
    """
    url = client._construct_topic_url(topics)
    group = client.group_prefix
    stop = client.stop_listening
    retries = 1
    positions: dict[tuple[str, int], int] = {}
    first = True
    try:
        while not stop.is_set():
            options: dict[str, Any] = {}
            if first and start_at is not None:
                options["start_at"] = start_at
            elif not first and client.consumer_group is None and positions:
                options["start_at"] = dict(positions)  # resume without a gap
            stream = client.open(url, "r", group_id=client.consumer_group, **options)
            client._listen_stream = stream
            first = False
            try:
                with stream as s:
                    if stop.is_set():
                        break
                    when_ready = getattr(s, "when_ready", None)
                    if isinstance(s, AlertReader) and when_ready is not None:
                        when_ready(client.listening.set)  # once positioned / assigned
                    else:
                        client.listening.set()
                    mark_done = getattr(s, "mark_done", None)
                    for payload, metadata in s.read(
                        metadata=True,
                        autocommit=False,
                        batch_size=client.batch_size,
                        batch_timeout=client.batch_timeout,
                    ):
                        full = metadata.topic
                        payload = unwrap(payload)
                        retries = 1
                        if callback is None:
                            print(
                                f"New message from topic {full}:\n"
                                f"{render(payload, client.jsonpp_on)}"
                            )
                        else:
                            try:
                                callback(topic=short_name(full, group), payload=payload)
                            except KafkaException as exc:
                                if exc.fatal:
                                    raise
                                log.warning("Non-fatal KafkaException from the callback: %s", exc)
                                continue
                        if mark_done is not None:
                            mark_done(metadata)
                        try:
                            positions[(full, metadata.partition)] = metadata.offset + 1
                        except TypeError:  # a stand-in stream without offsets
                            pass
                        if stop.is_set():
                            break
            except KafkaException as exc:
                client.listening.clear()
                if not exc.fatal:
                    log.warning("Non-fatal KafkaException: %s", exc)
                    if _wait(stop, client.retry_wait):
                        break
                    continue
                log.warning("fatal error from Kafka: %s (attempt %d)", exc, retries)
                retries += 1
                if not client.retry_on_fatal or retries > client.listen_retries:
                    log.error(
                        "giving up listening after a fatal Kafka error (retry_on_fatal=%s, "
                        "listen_retries=%d)",
                        client.retry_on_fatal,
                        client.listen_retries,
                    )
                    raise
                if _wait(stop, client.retry_wait):
                    break
    finally:
        client.listening.clear()
        client._listen_stream = None
        stop.clear()


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
