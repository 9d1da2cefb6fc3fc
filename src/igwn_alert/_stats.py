"""Counters of a running listener and publisher, read by ``client.stats()`` and the metrics.

The listen loop calls the hot-path methods of :class:`ListenerStats` once or twice per
alert (:meth:`~ListenerStats.alert_started`, :meth:`~ListenerStats.alert_done`); each takes
one lock, bumps a few counters and stores one float in a fixed-size ring buffer, so nothing
grows with the number of alerts. Percentiles are computed only in
:meth:`~ListenerStats.snapshot`, which returns plain, JSON-serialisable data.

:func:`health` turns a snapshot into a verdict (``ok``, ``reason``) by a documented rule.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Iterable, Mapping
from typing import Any, Optional

__all__ = ["STATES", "WINDOW", "ListenerStats", "PublisherStats", "check_limits", "health"]

#: The states of a listener, in the order they usually occur.
STATES = ("starting", "listening", "reconnecting", "stopped")

#: How many recent samples the latency and callback-duration percentiles are taken over.
WINDOW = 1024
_MASK = WINDOW - 1  # WINDOW is a power of two

_perf = time.perf_counter
_wall = time.time
_mono = time.monotonic


def _percentiles(ring: array[float], written: int, total: float) -> dict[str, Any]:
    n = min(written, WINDOW)
    out: dict[str, Any] = {"p50": None, "p99": None, "samples": n, "count": written, "sum": total}
    if n:
        values = sorted(ring[:n]) if n < WINDOW else sorted(ring)
        # nearest rank: the smallest value with at least q of the samples at or below it
        out["p50"] = values[max(0, math.ceil(0.50 * n) - 1)]
        out["p99"] = values[max(0, math.ceil(0.99 * n) - 1)]
    return out


def _last_alert(topics: dict[str, list[Any]]) -> Optional[dict[str, Any]]:
    seen = [(c[3], t, c) for t, c in topics.items() if c[0]]
    if not seen:
        return None
    arrival, topic, counts = max(seen)
    return {
        "topic": topic,
        "partition": counts[4],
        "broker_timestamp": counts[2] / 1000 if counts[2] is not None else None,
        "arrival": arrival,
    }


class ListenerStats:
    """What one client's listener is doing: state, partitions, alerts, latency, lag, errors.

    Thread-safe, with one rule for the hot path: :meth:`alert_started` and
    :meth:`alert_done` are called by one thread at a time (the listen loop). They take no
    lock: a lock would double their cost, and one listen loop is their only caller. Every
    other method may be called from any thread at any time (the reading thread's
    :meth:`set_lag`, :meth:`error`, any number of :meth:`snapshot` readers). A snapshot
    taken while an alert is being recorded may see that alert's count without its latency
    sample; nothing is ever torn or lost. Topics are short names.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock_offset = _wall() - _perf()
        self._state = "stopped"
        self._since_wall = _wall()
        self._since_mono = _mono()
        self._transitions: dict[str, int] = {}
        self._partitions: list[tuple[str, int]] = []
        # topic -> [received, delivered, last broker timestamp (ms) or None, last arrival,
        #           last partition]
        self._topics: dict[str, list[Any]] = {}
        self._latency = array("d", bytes(8 * WINDOW))
        self._latency_n = 0
        self._latency_sum = 0.0
        self._duration = array("d", bytes(8 * WINDOW))
        self._duration_n = 0
        self._duration_sum = 0.0
        self._lag: dict[tuple[str, int], tuple[int, int]] = {}
        self._lag_updated: Optional[float] = None
        self._reconnects = 0
        self._errors: dict[str, int] = {}

    # -- state -------------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        """Enter a state (setting the current state again keeps its start time).

        Parameters
        ----------
        state : {"starting", "listening", "reconnecting", "stopped"}
            The new state.

        Raises
        ------
        ValueError
            For any other state.
        """
        if state not in STATES:
            raise ValueError(f"unknown listener state {state!r} (one of: {', '.join(STATES)})")
        with self._lock:
            if state == self._state:
                return
            self._state = state
            self._since_wall = _wall()
            self._since_mono = _mono()
            self._transitions[state] = self._transitions.get(state, 0) + 1

    def set_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Record the partitions the listener holds now.

        Parameters
        ----------
        partitions : iterable of (str, int)
            (short topic name, partition) pairs.
        """
        held = sorted((str(t), int(p)) for t, p in partitions)
        with self._lock:
            self._partitions = held

    def reconnect(self) -> None:
        """Count one reconnection (the stream was reopened after an error)."""
        with self._lock:
            self._reconnects += 1

    def error(self, kind: str) -> None:
        """Count one error of a kind.

        Parameters
        ----------
        kind : str
            ``"callback"``, ``"decode"``, ``"transient"``, ``"fatal"``, ``"auth"``, ...

        Raises
        ------
        ValueError
            If ``kind`` is empty.
        """
        if not kind:
            raise ValueError("an error kind must be a non-empty string")
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def set_lag(self, lag: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        """Record each partition's position and end offset (the reading thread, ~1/s).

        Parameters
        ----------
        lag : mapping
            (short topic, partition) -> (position, end offset); a negative value (such as
            librdkafka's ``OFFSET_INVALID``, -1001) means not known yet.
        """
        copy = dict(lag)
        now = _wall()
        with self._lock:
            self._lag = copy
            self._lag_updated = now
            self._clock_offset = now - _perf()

    # -- hot path ----------------------------------------------------------------------

    def alert_started(self, topic: str, partition: int, broker_timestamp_ms: int) -> float:
        """Record an alert about to be handed to the callback.

        Parameters
        ----------
        topic : str
            Short topic name.
        partition : int
            Its partition.
        broker_timestamp_ms : int
            The message's Kafka timestamp in ms since the epoch; 0 or less if it has none
            (then no latency sample is taken).

        Returns
        -------
        float
            The start token to pass to :meth:`alert_done` (a ``time.perf_counter()``).
        """
        # one clock read: the wall-clock arrival is perf_counter + an offset that is
        # re-measured by set_lag() and snapshot() (each about once a second)
        now = _perf()
        arrival = now + self._clock_offset
        counts = self._topics.get(topic)
        if counts is None:
            counts = self._new_topic(topic)
        counts[0] += 1
        counts[3] = arrival
        counts[4] = partition
        if broker_timestamp_ms > 0:
            counts[2] = broker_timestamp_ms
            latency = arrival - broker_timestamp_ms * 0.001
            n = self._latency_n
            self._latency[n & _MASK] = latency
            self._latency_n = n + 1
            self._latency_sum += latency
        else:
            counts[2] = None
        return now

    def alert_done(self, topic: str, started: float) -> None:
        """Record that the callback returned normally for an alert.

        Parameters
        ----------
        topic : str
            Short topic name.
        started : float
            What :meth:`alert_started` returned.
        """
        duration = _perf() - started
        counts = self._topics.get(topic)
        if counts is None:
            counts = self._new_topic(topic)
        counts[1] += 1
        n = self._duration_n
        self._duration[n & _MASK] = duration
        self._duration_n = n + 1
        self._duration_sum += duration

    def _new_topic(self, topic: str) -> list[Any]:
        # a new key under the lock, so that snapshot() never iterates a dict that grows
        with self._lock:
            return self._topics.setdefault(topic, [0, 0, None, 0.0, -1])

    # direct feeds of the rings, for tests with known samples
    def _record_latency(self, seconds: float) -> None:
        # (not on the hot path)
        with self._lock:
            self._latency[self._latency_n & _MASK] = seconds
            self._latency_n += 1
            self._latency_sum += seconds

    def _record_duration(self, seconds: float) -> None:
        with self._lock:
            self._duration[self._duration_n & _MASK] = seconds
            self._duration_n += 1
            self._duration_sum += seconds

    # -- reading -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Return the current values as plain (JSON-serialisable) data.

        Returns
        -------
        dict
            ``time`` (wall clock, s since the epoch), ``state``, ``since`` (when it was
            entered), ``in_state_s``, ``transitions`` (state -> times entered),
            ``partitions`` (list of ``{"topic", "partition"}``), ``topics`` (topic ->
            ``{"received", "delivered", "last_broker_timestamp", "last_arrival"}``),
            ``alerts_total`` (delivered), ``last_alert`` (``{"topic", "partition",
            "broker_timestamp", "arrival"}`` or None), ``latency_s`` and ``callback_s``
            (``{"p50", "p99", "samples", "count", "sum"}``: percentiles over the last
            :data:`WINDOW` alerts, count and sum over all), ``lag`` (``{"partitions":
            [{"topic", "partition", "position", "end", "lag"}], "total", "updated"}``),
            ``reconnects`` and ``errors`` (kind -> count). Timestamps are in seconds.
        """
        with self._lock:
            now_wall = _wall()
            self._clock_offset = now_wall - _perf()
            in_state = _mono() - self._since_mono
            state, since = self._state, self._since_wall
            transitions = dict(self._transitions)
            partitions = list(self._partitions)
            topics = {t: list(c) for t, c in self._topics.items()}
            latency = (array("d", self._latency), self._latency_n, self._latency_sum)
            duration = (array("d", self._duration), self._duration_n, self._duration_sum)
            lag, lag_updated = dict(self._lag), self._lag_updated
            reconnects = self._reconnects
            errors = dict(self._errors)

        lag_rows = []
        total: Optional[int] = None
        for (topic, partition), (position, end) in sorted(lag.items()):
            behind: Optional[int] = None
            if position >= 0 and end >= 0:
                behind = max(0, end - position)
                total = behind + (total or 0)
            lag_rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "position": position if position >= 0 else None,
                    "end": end if end >= 0 else None,
                    "lag": behind,
                }
            )
        return {
            "time": now_wall,
            "state": state,
            "since": since,
            "in_state_s": in_state,
            "transitions": transitions,
            "partitions": [{"topic": t, "partition": p} for t, p in partitions],
            "topics": {
                t: {
                    "received": c[0],
                    "delivered": c[1],
                    "last_broker_timestamp": c[2] / 1000 if c[2] is not None else None,
                    "last_arrival": c[3],
                }
                for t, c in topics.items()
            },
            "alerts_total": sum(c[1] for c in topics.values()),
            "last_alert": _last_alert(topics),
            "latency_s": _percentiles(*latency),
            "callback_s": _percentiles(*duration),
            "lag": {"partitions": lag_rows, "total": total, "updated": lag_updated},
            "reconnects": reconnects,
            "errors": errors,
        }


class PublisherStats:
    """Alerts a client's writers wrote, got delivered and failed to deliver (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written = 0
        self._delivered = 0
        self._failed = 0

    def written(self) -> None:
        """Count one alert handed to the producer."""
        with self._lock:
            self._written += 1

    def delivered(self) -> None:
        """Count one alert the broker acknowledged."""
        with self._lock:
            self._delivered += 1

    def failed(self) -> None:
        """Count one alert that could not be delivered."""
        with self._lock:
            self._failed += 1

    def snapshot(self) -> dict[str, int]:
        """Return ``written``, ``delivered``, ``failed`` and ``in_flight`` (the rest).

        Returns
        -------
        dict
            The four counts.
        """
        with self._lock:
            written, delivered, failed = self._written, self._delivered, self._failed
        return {
            "written": written,
            "delivered": delivered,
            "failed": failed,
            "in_flight": max(0, written - delivered - failed),
        }


def check_limits(**limits: Optional[float]) -> None:
    """Check the limits of :func:`health` (each None or not negative).

    Parameters
    ----------
    **limits
        ``max_reconnecting_s``, ``max_lag``, ``max_silence_s``.

    Raises
    ------
    ValueError
        For a negative or non-numeric limit, naming it.
    """
    for name, value in limits.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number, not negative, not {value!r}")


def health(
    snapshot: Mapping[str, Any],
    *,
    max_reconnecting_s: float = 60.0,
    max_lag: Optional[int] = None,
    max_silence_s: Optional[float] = None,
) -> tuple[bool, str]:
    """Judge a listener by its stats: the health rule of this client.

    A listener is unhealthy when any of these holds, checked in this order:

    1. it is ``stopped`` (``listen()`` is not running);
    2. it has been ``starting`` or ``reconnecting`` for more than ``max_reconnecting_s``;
    3. ``max_lag`` is given and its total lag (alerts not yet handed to the callback, over
       the partitions it holds) is above it;
    4. ``max_silence_s`` is given and no alert arrived for longer than that (counted from
       the last alert, or from when it started listening if none came yet).

    Parameters
    ----------
    snapshot : mapping
        What ``client.stats()`` returns, or its ``"listener"`` part.
    max_reconnecting_s : float, optional
        Seconds a listener may spend starting or reconnecting (default 60).
    max_lag : int, optional
        Total lag allowed; None (the default) does not check lag.
    max_silence_s : float, optional
        Seconds without an alert allowed; None (the default) does not check. Only useful on
        topics that are known to be busy.

    Returns
    -------
    (bool, str)
        Whether the listener is healthy, and why (one short line).

    Raises
    ------
    ValueError
        For a negative limit.
    TypeError
        If ``snapshot`` is not a stats snapshot.
    """
    listener = snapshot.get("listener", snapshot)
    if not isinstance(listener, Mapping) or "state" not in listener:
        raise TypeError("health() needs the snapshot returned by client.stats()")
    check_limits(
        max_reconnecting_s=max_reconnecting_s, max_lag=max_lag, max_silence_s=max_silence_s
    )
    state = listener["state"]
    in_state = float(listener["in_state_s"])
    if state == "stopped":
        return False, "the listener is stopped"
    if state in ("starting", "reconnecting") and in_state > max_reconnecting_s:
        return False, f"{state} for {in_state:.0f} s (more than {max_reconnecting_s:g} s)"
    total = listener["lag"]["total"]
    if max_lag is not None and total is not None and total > max_lag:
        return False, f"lag {total} above {max_lag}"
    if max_silence_s is not None:
        last = listener.get("last_alert")
        if last is not None:
            silent = float(listener["time"]) - float(last["arrival"])
        else:
            silent = in_state if state == "listening" else 0.0
        if silent > max_silence_s:
            return False, f"no alert for {silent:.0f} s (more than {max_silence_s:g} s)"
    lag_text = f", lag {total}" if total is not None else ""
    return True, f"{state} for {in_state:.0f} s{lag_text}"
