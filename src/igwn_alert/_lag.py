"""Consumer-group lag with the group's own credential: ``igwn-alert lag``.

For each partition of the topics asked for, the group's committed offset
(``Consumer.committed``: an OffsetFetch request, which needs only DESCRIBE on the group
and the topic) and the end offset (``Consumer.get_watermark_offsets``: a ListOffsets
request) give the lag, ``end - committed``. No admin API is used, the consumer never joins
the group (it does not subscribe) and never commits, so running the check changes nothing
for the listeners of the group.

With ``--warn N`` and/or ``--critical N`` the command is a Nagios plugin: one status line
``IGWN-ALERT LAG OK - total lag 0 | lag=0;10;100;0`` and exit status 0 (OK), 1 (WARNING,
total lag above N), 2 (CRITICAL) or 3 (UNKNOWN: broker unreachable, credential refused,
no committed offset, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional, TextIO

import confluent_kafka
from confluent_kafka import TopicPartition

from . import _errors
from ._argtypes import count
from ._kafka_config import base_config, rdkafka_logger
from ._positions import RETRIABLE
from ._topics import full_name, group_topics, server_address, short_name
from .exceptions import (
    AuthorizationError,
    BrokerUnreachableError,
    KafkaException,
    TopicNotFoundError,
)

__all__ = ["PartitionLag", "add_parser", "live_lag", "measure", "run"]

log = logging.getLogger(__name__)

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_STATUS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class PartitionLag:
    """One partition's committed offset, end offset and lag.

    Attributes
    ----------
    topic : str
        Short topic name.
    partition : int
        The partition.
    committed : int or None
        The group's committed offset (the next alert it will read); None if it has none.
    end : int
        The end offset (the offset the next alert published will get).
    lag : int or None
        ``end - committed`` (0 for an empty partition without a commit); None if unknown.
    """

    topic: str
    partition: int
    committed: Optional[int]
    end: int
    lag: Optional[int]


def _raise_for(error: Any, *, group: str, topic: Optional[str], server: str) -> None:
    exc = _errors.exception_for(error, topic=topic, group=group, server=server)
    if exc is not None:
        raise exc
    raise _errors.unreachable(server, error.str())


def _watermarks(
    consumer: Any, tp: TopicPartition, *, timeout: float, group: str, server: str
) -> tuple[int, int]:
    """The low and high watermark of a partition, asked again while its leader moves."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout, cached=False
            )
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if error.code() not in RETRIABLE:  # not a leader moving: report it
                _raise_for(error, group=group, topic=tp.topic, server=server)
            if time.monotonic() >= deadline:
                raise _errors.unreachable(
                    server,
                    f"partition {tp.partition} of {tp.topic} has no leader that answers "
                    f"(a broker node down?): {error.str()}",
                ) from None
        time.sleep(0.2)


class _GroupWatch:
    """librdkafka's logger for the lag consumer: notices a refused group (FindCoordinator).

    librdkafka retries a coordinator lookup that the broker refuses with
    GROUP_AUTHORIZATION_FAILED and only logs it (``debug=cgrp``), so ``committed()`` would
    just time out; this turns that log line into a clear error.
    """

    def __init__(self) -> None:
        self.denied = False

    def log(self, level: int, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        if "GROUP_AUTHORIZATION_FAILED" in text:
            self.denied = True
        rdkafka_logger.debug("%s", text)


def _committed(
    consumer: Any,
    tps: list[TopicPartition],
    *,
    watch: _GroupWatch,
    recorded: list[KafkaException],
    consumer_group: str,
    bootstrap: str,
    timeout: float,
) -> list[TopicPartition]:
    """``consumer.committed(tps)`` in short slices, failing fast on a refused group."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return consumer.committed(tps, timeout=max(0.05, min(1.0, remaining)))  # type: ignore[no-any-return]
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            if error.code() != confluent_kafka.KafkaError._TIMED_OUT:
                _raise_for(error, group=consumer_group, topic=None, server=bootstrap)
        consumer.poll(0)  # serves the error and log callbacks
        if recorded:
            raise recorded[0]
        if watch.denied:
            raise AuthorizationError(
                f"the credential is not authorized for consumer group {consumer_group} at "
                f"{bootstrap} (missing ACL)"
            )
        if time.monotonic() >= deadline:
            raise BrokerUnreachableError(
                f"no answer from the coordinator of consumer group {consumer_group} at "
                f"{bootstrap} within {timeout:g} s"
            )


def measure(
    bootstrap: str,
    credential: Any,
    consumer_group: str,
    group: str,
    topics: Optional[Sequence[str]] = None,
    timeout: float = 10.0,
) -> list[PartitionLag]:
    """Return the lag of a consumer group on each partition of some topics.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    credential : hop.auth.Auth or None
        The credential (the group's own is enough: no admin rights are needed).
    consumer_group : str
        The Kafka consumer group.
    group : str
        The GraceDB group (topic prefix).
    topics : sequence of str, optional
        Short topic names; None or empty for every topic of the group.
    timeout : float, optional
        Seconds allowed for each request to the broker.

    Returns
    -------
    list of PartitionLag
        By topic, then partition.

    Raises
    ------
    igwn_alert.exceptions.BrokerUnreachableError
        If the broker does not answer.
    igwn_alert.exceptions.AuthenticationError
        If it refuses the credential.
    igwn_alert.exceptions.AuthorizationError
        If the credential may not describe the group or a topic.
    igwn_alert.exceptions.TopicNotFoundError
        For a topic that does not exist (or that no topic of the group is visible).
    """
    recorded: list[KafkaException] = []
    watch = _GroupWatch()

    def on_error(error: Any) -> None:
        exc = _errors.exception_for(error, group=consumer_group, server=bootstrap)
        if exc is not None:
            recorded.append(exc)

    consumer = confluent_kafka.Consumer(
        base_config(
            bootstrap,
            credential,
            {
                "group.id": consumer_group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "error_cb": on_error,
                "logger": watch,
                "debug": "cgrp",
            },
        )
    )
    try:
        metadata = _errors.list_topics(
            consumer,
            timeout=timeout,
            serve=lambda: consumer.poll(0),
            failed=lambda: recorded[0] if recorded else None,
            server=bootstrap,
        )
        if topics:
            names = [full_name(group, t) for t in topics]
        else:
            visible = [n for n, m in metadata.topics.items() if m.error is None]
            names = [full_name(group, t) for t in sorted(group_topics(visible, group))]
            if not names:
                raise TopicNotFoundError(
                    f"no topic of the group {group} is visible to this credential at {bootstrap}"
                )
        tps = []
        for name in names:
            meta = metadata.topics.get(name)
            if meta is None:
                raise TopicNotFoundError(f"topic {name} does not exist at {bootstrap}")
            if meta.error is not None:
                _raise_for(meta.error, group=consumer_group, topic=name, server=bootstrap)
            tps += [TopicPartition(name, p) for p in sorted(meta.partitions)]
        offsets = _committed(
            consumer,
            tps,
            watch=watch,
            recorded=recorded,
            consumer_group=consumer_group,
            bootstrap=bootstrap,
            timeout=timeout,
        )
        rows = []
        for tp in offsets:
            if tp.error is not None:
                _raise_for(tp.error, group=consumer_group, topic=tp.topic, server=bootstrap)
            low, high = _watermarks(
                consumer, tp, timeout=timeout, group=consumer_group, server=bootstrap
            )
            committed = tp.offset if tp.offset >= 0 else None
            if committed is not None:
                lag: Optional[int] = max(0, high - committed)
            else:
                lag = 0 if high == low else None  # nothing retained: nothing to catch up
            rows.append(
                PartitionLag(short_name(tp.topic, group), tp.partition, committed, high, lag)
            )
        return rows
    finally:
        consumer.close()


def live_lag(consumer: Any, group: str) -> dict[tuple[str, int], tuple[int, int]]:
    """Position and end offset of each partition a running consumer holds, without a request.

    For :meth:`igwn_alert._stats.ListenerStats.set_lag`, from the thread that polls the
    consumer, about once a second: the position is the next offset the consumer will hand
    out (``Consumer.position``) and the end offset the high watermark of the last fetch
    response (``get_watermark_offsets(cached=True)``), so this costs no broker round trip.

    Parameters
    ----------
    consumer : confluent_kafka.Consumer
        The consumer.
    group : str
        The GraceDB group, to turn topic names into short names.

    Returns
    -------
    dict
        (short topic, partition) -> (position, end offset); negative where not known yet.
    """
    assignment = consumer.assignment()
    if not assignment:
        return {}
    out = {}
    for tp in consumer.position(assignment):
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
        except confluent_kafka.KafkaException:
            high = -1
        out[(short_name(tp.topic, group), tp.partition)] = (tp.offset, high)
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lag`` sub-command to the ``igwn-alert`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The sub-command's parser.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lag",
        help="a consumer group's lag per partition (a Nagios plugin with --warn/--critical)",
        description="Committed offset, end offset and lag of a consumer group on each "
        "partition, with the group's own credential (no admin rights). With --warn and/or "
        "--critical: one Nagios status line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    p.add_argument("topics", nargs="*", help="short topic names (default: all of the group)")
    p.add_argument(
        "-c", "--consumer-group", dest="lag_group", metavar="GROUP", help="the consumer group"
    )
    p.add_argument("--warn", type=count(0), metavar="N", help="WARNING when the total lag > N")
    p.add_argument("--critical", type=count(0), metavar="N", help="CRITICAL when the total lag > N")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds per request (10)"
    )
    return p


def _status(total: int, warn: Optional[int], critical: Optional[int]) -> int:
    if critical is not None and total > critical:
        return CRITICAL
    if warn is not None and total > warn:
        return WARNING
    return OK


def _blank(value: Optional[int]) -> str:
    return "" if value is None else str(value)


def _table(rows: list[PartitionLag], consumer_group: str, total: Optional[int]) -> str:
    header = ("TOPIC", "PARTITION", "COMMITTED", "END", "LAG")
    cells = [header] + [
        (
            r.topic,
            str(r.partition),
            "-" if r.committed is None else str(r.committed),
            str(r.end),
            "-" if r.lag is None else str(r.lag),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    unknown = sum(r.lag is None for r in rows)
    note = f" ({unknown} without a committed offset)" if unknown else ""
    lines.append(
        f"total lag {_blank(total) or '-'} for consumer group {consumer_group} "
        f"over {len(rows)} partition(s){note}"
    )
    return "\n".join(lines)


def run(lv: Any, opts: argparse.Namespace, stream: Optional[TextIO] = None) -> int:
    """Run ``igwn-alert lag`` for a client built from the command line.

    Parameters
    ----------
    lv : igwn_alert.client
        The client (server, port, group and credential come from it).
    opts : argparse.Namespace
        The parsed options (see :func:`add_parser`; ``consumer_group`` is the global ``-c``).
    stream : file, optional
        Where to print (default stdout).

    Returns
    -------
    int
        The exit status: 0, or with thresholds the Nagios status (0-3).

    Raises
    ------
    adc.errors.KafkaException, ValueError
        Without thresholds, what went wrong (the command line reports it on stderr).
    """
    out = stream or sys.stdout
    consumer_group = opts.lag_group or opts.consumer_group
    nagios = opts.warn is not None or opts.critical is not None
    started = time.monotonic()
    try:
        if not consumer_group:
            raise ValueError("lag needs a consumer group: igwn-alert lag -c GROUP")
        if opts.warn is not None and opts.critical is not None and opts.warn > opts.critical:
            raise ValueError(f"--warn ({opts.warn}) must not be above --critical ({opts.critical})")
        if opts.timeout <= 0:
            raise ValueError(f"--timeout must be positive, not {opts.timeout}")
        host, port = server_address(lv.server, lv.port)
        bootstrap = f"{host}:{port}"
        rows = measure(
            bootstrap,
            lv._credential_for(bootstrap) if lv.auth else None,
            consumer_group,
            lv.group_prefix,
            opts.topics,
            opts.timeout,
        )
        known = [r.lag for r in rows if r.lag is not None]
        total: Optional[int] = sum(known) if known else None
        if nagios and total is None:
            names = ", ".join(sorted({r.topic for r in rows}))
            raise LookupError(f"consumer group {consumer_group} has no committed offset on {names}")
    except (KafkaException, ValueError, LookupError, OSError, RuntimeError) as exc:
        if not nagios:
            raise
        message = str(exc).replace("|", "/").replace("\n", " ")
        if opts.json:
            print(json.dumps({"status": "UNKNOWN", "error": message}), file=out)
        else:
            print(f"IGWN-ALERT LAG UNKNOWN - {message}", file=out)
        return UNKNOWN
    log.debug("lag of %d partition(s) in %.3f s", len(rows), time.monotonic() - started)
    code = _status(total, opts.warn, opts.critical) if nagios and total is not None else OK
    if opts.json:
        report: dict[str, Any] = {
            "consumer_group": consumer_group,
            "group": lv.group_prefix,
            "partitions": [asdict(r) for r in rows],
            "total": total,
        }
        if nagios:
            report.update(status=_STATUS[code], warn=opts.warn, critical=opts.critical)
        print(json.dumps(report), file=out)
    elif nagios:
        unknown = sum(r.lag is None for r in rows)
        note = f" ({unknown} partition(s) without a committed offset)" if unknown else ""
        print(
            f"IGWN-ALERT LAG {_STATUS[code]} - total lag {total}{note} | "
            f"lag={total};{_blank(opts.warn)};{_blank(opts.critical)};0",
            file=out,
        )
    else:
        print(_table(rows, consumer_group, total), file=out)
    return code
