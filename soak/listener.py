"""One listener process of the soak: ``igwn_alert.client(...).listen(callback, topic)``.

Run by the harness as ``python soak/listener.py --records FILE ...`` (see ``--help``). The
callback appends one line per alert it handled to ``FILE``::

    D <uid> <topic> <partition> <offset> <pid> <unix time>

written with ``os.write`` and ``os.fsync`` *before* the callback returns, so an alert whose
callback returned is on disk even if the process is SIGKILLed right after. A line without
its newline (a kill in the middle of the write) does not count.

An alert whose payload says ``"fault": KIND`` makes the callback raise, once per process
and alert, before recording it (an ``R <uid> <kind> <pid> <time>`` line first):

* ``fatal``: :data:`igwn_alert.exceptions.FakeFatalKafkaException` (the client runs with
  ``retry_on_fatal=True``: it reopens the stream and the alert must come back);
* ``nonfatal``: :data:`igwn_alert.exceptions.FakeNonFatalKafkaException` (logged by the
  client, and the alert must come back);
* ``plain``: a ``SoakPlainError`` (a ``RuntimeError``). Without a failure policy the
  exception leaves ``listen()``; this process calls ``listen()`` again, as a service manager
  would restart it, and the alert must come back.

HOOK, issue 9's failure policy: when the installed client's ``listen`` takes
``on_failure=``, the listener passes a callable policy (the documented dead-letter form of
``on_failure="skip"``): it writes ``S <uid> <kind> <pid>`` and returns, so the alert is
skipped and the harness counts it as *skipped* (by kind), not lost. ``--on-failure skip``
passes the plain string instead (then a skipped alert cannot be told from a lost one).

Status lines go to ``FILE.status``: ``READY <time>`` when ``client.listening`` is set,
``RAISED <repr>`` when ``listen()`` raised, ``RETURNED <seconds>`` (from SIGTERM until
``listen()`` returned), ``EXIT <code>``, and with ``--metrics-port``
``METRICS <port>`` once the client's Prometheus endpoint (``client.serve_metrics``) serves.
SIGTERM calls ``client.stop()``; ``listen()`` must then return promptly (the harness times it).

Only the public API is used, plus one documented patch point: ``client.open`` (the
contract says patching it intercepts what the client uses), to learn the partition and
offset of the alert in hand. If the stream does not yield hop metadata they read ``-1``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any

import igwn_alert
from igwn_alert.exceptions import (
    FakeFatalKafkaException,
    FakeNonFatalKafkaException,
    KafkaException,
)

#: What a soak alert's uid looks like: ``<seed or letter>-<7 digits>``.
UID = re.compile(r"\b[0-9A-Za-z]+-[0-9]{7}\b")


class SoakPlainError(RuntimeError):
    """The plain (non-Kafka) exception a soak callback raises."""


def listen_has_on_failure() -> bool:
    """True if the installed client's ``listen`` takes ``on_failure=``."""
    return "on_failure" in inspect.signature(igwn_alert.client.listen).parameters


class _Recorder:
    """Appends lines to a file, each one flushed to disk before returning."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def line(self, *fields: object) -> None:
        data = (" ".join(str(f) for f in fields) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)


class _Client(igwn_alert.client):
    """The client, with ``open`` noting the metadata of the alert being handled."""

    current: Any = None

    def open(self, url: str, mode: str = "r", **kwargs: Any) -> Any:  # type: ignore[override]
        stream = super().open(url, mode, **kwargs)
        if mode != "r":
            return stream
        read = stream.read
        owner = self

        def noting_read(*args: Any, **kw: Any) -> Any:
            for item in read(*args, **kw):
                if isinstance(item, tuple) and len(item) == 2:
                    owner.current = item[1]
                yield item

        try:
            stream.read = noting_read
        except AttributeError:  # a stream that does not allow it: no metadata then
            pass
        return stream


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="host:port of a PLAINTEXT listener")
    p.add_argument("--group", required=True, help="the igwn-alert group (topic prefix)")
    p.add_argument("--topic", required=True, help="short topic name")
    p.add_argument("--consumer-group", required=True)
    p.add_argument("--records", required=True)
    p.add_argument("--listen-retries", type=int, default=3)
    p.add_argument("--retry-wait", type=float, default=0.5)
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--on-failure",
        choices=("record", "skip", "none"),
        default="record",
        help="failure policy, if listen() has on_failure= (record: skip and record it)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve client.serve_metrics() on 127.0.0.1:PORT (0: a free port)",
    )
    args = p.parse_args(argv)

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("soak.listener")
    pid = os.getpid()
    records = _Recorder(args.records)
    status = _Recorder(args.records + ".status")
    host, port = args.bootstrap.split(",")[0].rsplit(":", 1)
    client = _Client(
        noauth=True,
        server=f"kafka://{host}/",
        port=int(port),
        group=args.group,
        consumer_group=args.consumer_group,
        retry_on_fatal=True,
        listen_retries=args.listen_retries,
        retry_wait=args.retry_wait,
    )
    if args.metrics_port is not None:
        server = client.serve_metrics(args.metrics_port, addr="127.0.0.1")
        status.line("METRICS", server.port)
    raised: set[str] = set()

    def callback(topic: str, payload: Any) -> None:
        uid = payload.get("uid", "?") if isinstance(payload, dict) else "?"
        fault = payload.get("fault") if isinstance(payload, dict) else None
        md = client.current
        where = (
            (getattr(md, "topic", "?"), getattr(md, "partition", -1), getattr(md, "offset", -1))
            if md is not None
            else ("?", -1, -1)
        )
        if fault and uid not in raised:
            raised.add(uid)
            records.line("R", uid, fault, pid, f"{time.time():.3f}")
            if fault == "fatal":
                raise FakeFatalKafkaException
            if fault == "nonfatal":
                raise FakeNonFatalKafkaException
            raise SoakPlainError(f"soak: plain exception for {uid}")
        records.line("D", uid, *where, pid, f"{time.time():.3f}")

    stopping = threading.Event()
    signalled: list[float] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        signalled.append(time.monotonic())
        stopping.set()
        client.stop()

    signal.signal(signal.SIGTERM, on_sigterm)

    def announce() -> None:
        while not stopping.is_set():
            if client.listening.wait(0.05):
                status.line("READY", f"{time.time():.3f}")
                return

    threading.Thread(target=announce, name="soak-ready", daemon=True).start()

    def dead_letter(*alert: Any) -> None:
        # HOOK (issue 9 failure policy): the callable form of on_failure; it gets the alert
        # and the exception. Record the skip so that the harness can count it.
        exc = next((a for a in alert if isinstance(a, BaseException)), None)
        found = UID.search(repr(alert))
        kind = (
            "plain"
            if not isinstance(exc, KafkaException)
            else ("fatal" if getattr(exc, "fatal", False) else "nonfatal")
        )
        records.line("S", found.group(0) if found else "?", kind, pid)

    kwargs: dict[str, Any] = {}
    if args.on_failure != "none" and listen_has_on_failure():
        kwargs["on_failure"] = dead_letter if args.on_failure == "record" else args.on_failure
    log.info("listening (on_failure=%r)", kwargs.get("on_failure", "not passed"))
    result = {"code": 0}

    def run() -> None:
        # listen() runs in a thread of its own and stop() comes from the main thread, as in
        # a service (gwcelery calls stop() from another thread): the signal handler runs at
        # once even while the listening thread is blocked inside librdkafka
        while not stopping.is_set():
            try:
                client.listen(callback, args.topic, **kwargs)
                break
            except SoakPlainError as exc:
                # the default policy lets it leave listen(): listen again, as systemd would
                log.warning("listen() raised %r; calling listen() again", exc)
                status.line("RAISED", type(exc).__name__)
            except BaseException as exc:  # noqa: BLE001 - reported to the harness
                log.error("listen() raised %r\n%s", exc, traceback.format_exc())
                status.line("RAISED", repr(exc).replace("\n", " ")[:300])
                result["code"] = 2
                break

    worker = threading.Thread(target=run, name="soak-listen", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    code = result["code"]
    if signalled:
        status.line("RETURNED", f"{time.monotonic() - signalled[0]:.3f}")
    status.line("EXIT", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
