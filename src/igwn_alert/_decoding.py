"""Decoding: Kafka message -> hop model -> what a listen callback receives; never raising.

A message that cannot be decoded, for any reason (bytes that are not UTF-8, JSON nested
deeper than Python's recursion limit, a hop envelope that does not parse, no value at all),
reaches the callback as its raw bytes. It is reported without flooding anyone: a Python
warning with a fixed text (shown once per place by Python's default filter, and one entry
in ``__warningregistry__`` however many bad messages arrive) and log lines that name the
first message, then a count at most once a minute.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from typing import Any, Optional

from hop.io import Deserializer
from hop.models import Blob, JSONBlob

__all__ = ["decode", "decode_message", "payload_of", "render", "unwrap"]

log = logging.getLogger(__name__)

_REPORT_EVERY = 60.0  # seconds between two log lines about undecodable messages


class _Throttle:
    """Counts undecodable messages and reports them at a bounded rate (thread-safe)."""

    def __init__(self, what: str, interval: float = _REPORT_EVERY) -> None:
        self._what = what
        self._interval = interval
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._quiet = 0  # not reported since the last line
        self._warning = f"igwn-alert: {what} ... (passed on as it came; see the log for which)"

    def report(self, where: str, why: object) -> None:
        # one fixed text: Python shows it once per place, and its registry keeps one entry
        warnings.warn(self._warning, UserWarning, stacklevel=4)
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._interval:
                self._quiet += 1
                return
            quiet, self._quiet, self._last = self._quiet, 0, now
        more = f" ({quiet} more since the last report)" if quiet else ""
        log.warning("%s %s (%s); passing it on as it came%s", self._what, where, why, more)


_undecodable = _Throttle("cannot decode the message at")
_not_json = _Throttle("Payload is not valid json: the message at")


def _why(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}"


def _where(message: Any) -> str:
    try:
        return f"{message.topic()}[{message.partition()}]@{message.offset()}"
    except Exception:  # noqa: BLE001 - only for the message text
        return "?"


def decode(message: Any, fmt: Optional[bytes]) -> Any:
    """Decode one message whose ``_format`` header (if any) is already known.

    Parameters
    ----------
    message : confluent_kafka.Message
        The message.
    fmt : bytes or None
        The value of its ``_format`` header.

    Returns
    -------
    hop model
        A :class:`hop.models.JSONBlob` for hop JSON, hop's model for other hop formats, and
        a :class:`hop.models.Blob` of the raw bytes for anything that cannot be decoded.
    """
    value = message.value()
    if value is None:
        return _raw(message, b"", "the message has no value")
    if fmt == b"json":  # every GraceDB alert
        content = _json(message, value)
        return content if type(content) is Blob else _json_blob(content)
    try:
        return Deserializer.deserialize(message)
    except Exception as exc:  # noqa: BLE001 - a bad alert must never stop the listener
        return _raw(message, value, _why(exc))


def payload_of(message: Any, fmt: Optional[bytes]) -> Any:
    """What a listen callback receives for one message: :func:`decode`, then :func:`unwrap`.

    A hop JSON message (every GraceDB alert) gives its content without a
    :class:`hop.models.JSONBlob` in between; anything else goes the long way.

    Parameters
    ----------
    message : confluent_kafka.Message
        The message.
    fmt : bytes or None
        The value of its ``_format`` header.

    Returns
    -------
    object
        The callback's payload.
    """
    if fmt == b"json":
        value = message.value()
        if value is not None:
            return _json(message, value)
    return unwrap(decode(message, fmt), _where(message))


def _json(message: Any, value: bytes) -> Any:
    """The content of a hop JSON message, or (reported) its raw bytes as a Blob."""
    try:
        return json.loads(value.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - ValueError, RecursionError, MemoryError...
        return _raw(message, value, _why(exc))


def _json_blob_fast(content: Any) -> JSONBlob:
    # JSONBlob(content=...) goes through the dataclass __init__; filling the instance
    # dict gives an equal object in three quarters of the time
    blob = _new(JSONBlob)
    blob.__dict__["content"] = content
    return blob


_new = object.__new__
_json_blob: Any = (
    _json_blob_fast
    if tuple(getattr(JSONBlob, "__dataclass_fields__", ())) == ("content",)
    and not hasattr(JSONBlob, "__post_init__")
    and hasattr(JSONBlob(content=None), "__dict__")
    else JSONBlob
)


def _raw(message: Any, value: bytes, why: str) -> Blob:
    _undecodable.report(_where(message), why)
    blob = Blob(content=value)
    blob.__dict__[_REPORTED] = True  # not a dataclass field: equality is unchanged
    return blob


_REPORTED = "_igwn_alert_reported"


def decode_message(message: Any) -> Any:
    """Decode one Kafka message by hop's rules, never raising.

    Parameters
    ----------
    message : confluent_kafka.Message
        The message.

    Returns
    -------
    hop model
        See :func:`decode`.
    """
    fmt = next((value for name, value in message.headers() or () if name == "_format"), None)
    return decode(message, fmt)


def unwrap(payload: Any, where: Any = "?") -> Any:
    """Return what a callback receives for a decoded message (the reference's rules).

    A hop JSON message gives its content unchanged (a dict stays a dict, a str stays a str:
    GraceDB's JSON text is never decoded twice). Anything else is tried as JSON; if that
    fails (for any reason), it is reported (rate-limited) and passed on as it came; raw
    bytes arrive as a :class:`hop.models.Blob`, as with the reference client.

    Parameters
    ----------
    payload : object
        What the stream yielded.
    where : str or hop.io.Metadata, optional
        Where the message was read (``topic[partition]@offset``), for the report; a
        Metadata is turned into that text only when there is something to report.

    Returns
    -------
    object
        The payload for the callback.
    """
    if isinstance(payload, JSONBlob):
        return payload.content
    if isinstance(payload, Blob):  # raw bytes, as the reference passes them on
        if not payload.__dict__.get(_REPORTED):
            _not_json.report(_place(where), "raw bytes")
        return payload
    try:
        return json.loads(payload)
    except Exception as exc:  # noqa: BLE001 - ValueError, TypeError, RecursionError...
        _not_json.report(_place(where), _why(exc))
        return payload


def _place(where: Any) -> str:
    if isinstance(where, str):
        return where
    try:
        return f"{where.topic}[{where.partition}]@{where.offset}"
    except AttributeError:
        return "?"


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
    except Exception:  # noqa: BLE001 - printed as it came
        return payload
