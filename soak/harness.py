"""The shared fault-injection harness: brokers, listener processes, publisher, counting, lag.

Both runs use it: the randomized fault soak (:mod:`soak.faults`, issue 9) and the scale-out
run (:mod:`soak.scaleout`, issue 13).

* :class:`Brokers`: a private KRaft cluster of its own (``scripts/_kafka_broker``), nodes
  SIGKILLed and started again on the same ports;
* :class:`ListenerProc`: one slot of a consumer group, run as ``soak/listener.py`` processes
  (one *incarnation* per start), SIGKILLed, stopped with SIGTERM (timed: a stop that takes
  longer than ``stop_timeout`` is reported as a hang) and restarted;
* :class:`Publisher`: a thread that publishes uniquely numbered alerts through the public
  client (``connect``, the writer in ``sessions``, ``flush_by_topic``) at a steady rate and
  in bursts, and records which alerts the broker acknowledged, with partition and offset;
* :class:`Ledger`: reads the listeners' record files (complete lines only) and counts, per
  alert, the deliveries to a callback that returned;
* :class:`LagSampler`: samples the group's lag per partition with a plain confluent-kafka
  consumer (``committed()`` and ``get_watermark_offsets()`` with the group id; it never
  joins the group);
* :func:`tally`: sent / delivered / lost / duplicated / skipped for a set of alerts.

A *loss* is an alert the broker acknowledged that no callback returned for, and that was not
handed to the listener's ``on_failure`` policy (which records it: *skipped*). Duplicates are
allowed (at-least-once) and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
LISTENER = ROOT / "soak" / "listener.py"
if str(ROOT / "scripts") not in sys.path:
    sys.path.append(str(ROOT / "scripts"))

log = logging.getLogger("soak")

#: ``stop()`` must end ``listen()`` within this (seconds); a slower return is reported.
SLOW_STOP = 0.5

_quiet = logging.getLogger("soak.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def say(msg: str) -> None:
    """One progress line on stderr, with the wall-clock time."""
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------- brokers


class Brokers:
    """A private N-node KRaft cluster (PLAINTEXT) for one run; killed by :meth:`close`.

    Parameters
    ----------
    nodes : int
        Number of combined broker+controller nodes.
    directory : pathlib.Path
        Where the nodes keep their data and logs.
    heap : str
        Java heap of each node (e.g. ``"384m"``).
    """

    def __init__(self, nodes: int, directory: Path, heap: str) -> None:
        from _kafka_broker import start_cluster

        self.directory = directory
        t0 = time.monotonic()
        self.cluster = start_cluster(nodes, directory, sasl=False, heap=heap, log=say)
        say(
            f"{nodes}-node Kafka cluster up in {time.monotonic() - t0:.0f} s at "
            f"{self.cluster.bootstrap} (heap {heap}; logs {directory}/node-*/kafka.log)"
        )

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "logger": _quiet})

    def create_topic(
        self, name: str, partitions: int, replication: int, config: Optional[dict[str, str]] = None
    ) -> None:
        """Create a topic and wait until every partition has a leader."""
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        new = NewTopic(name, partitions, replication, config=dict(config or {}))
        for fut in admin.create_topics([new], request_timeout=30).values():
            fut.result()

        def ready() -> bool:
            md = admin.list_topics(topic=name, timeout=5)
            t = md.topics.get(name)
            return (
                t is not None
                and t.error is None
                and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            )

        if not wait_until(ready, 30, 0.1):
            raise RuntimeError(f"topic {name} has no leader for every partition after 30 s")

    def leaders(self, topic: str) -> dict[int, int]:
        """``{partition: leader node id}`` of a topic (-1: none)."""
        md = self.admin().list_topics(topic=topic, timeout=5)
        return {p: int(m.leader) for p, m in md.topics[topic].partitions.items()}

    def kill(self, node_id: int) -> None:
        """SIGKILL one node."""
        self.cluster.node(node_id).kill()

    def start(self, node_id: int, timeout: float = 120.0) -> float:
        """Start a node again on its ports; return how long it took to serve."""
        t0 = time.monotonic()
        self.cluster.node(node_id).start(wait=True, timeout=timeout)
        return time.monotonic() - t0

    def running(self, node_id: int) -> bool:
        return bool(self.cluster.node(node_id).is_running())

    def close(self) -> None:
        self.cluster.kill()


# --------------------------------------------------------------------------- listeners


@dataclass
class Incident:
    """Something that must not happen to a listener: a hang, a crash, a raise."""

    when: float
    slot: str
    what: str
    log_tail: str = ""

    def render(self, t0: float) -> str:
        head = f"t={self.when - t0:6.1f}s {self.slot}: {self.what}"
        if self.log_tail:
            tail = "\n".join("      | " + line for line in self.log_tail.splitlines())
            return head + "\n" + tail
        return head


def _set_parent_death_signal() -> None:  # runs in the child, before exec
    from _kafka_broker.broker import _set_parent_death_signal as set_it

    set_it()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ListenerProc:
    """One member slot of a consumer group: a succession of ``soak/listener.py`` processes.

    Parameters
    ----------
    slot : str
        Its name (``L1``...); stays the same across restarts.
    workdir : pathlib.Path
        Record, status and log files go here (``<slot>-<incarnation>.rec`` / ``.log``).
    bootstrap, group, topic, consumer_group : str
        Where and what it listens to.
    incidents : list of Incident
        Hangs, crashes and exceptions out of ``listen()`` are appended here.
    stop_timeout : float
        SIGTERM must end the process within this many seconds, else it is a hang.
    """

    def __init__(
        self,
        slot: str,
        workdir: Path,
        bootstrap: str,
        group: str,
        topic: str,
        consumer_group: str,
        incidents: list[Incident],
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.slot = slot
        self.extra_args = list(extra_args)
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.consumer_group = consumer_group
        self.incidents = incidents
        self.stop_timeout = stop_timeout
        self.incarnation = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.expected_exit = False
        self.started_at = 0.0
        self.stop_times: list[float] = []  # SIGTERM to process exit
        self.listen_return_times: list[float] = []  # SIGTERM to listen() returning

    @property
    def records(self) -> Path:
        return self.workdir / f"{self.slot}-{self.incarnation}.rec"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.slot}-{self.incarnation}.log"

    def _status(self) -> list[str]:
        try:
            return Path(str(self.records) + ".status").read_text().splitlines()
        except OSError:
            return []

    def start(self) -> None:
        """Start a new incarnation (does not wait for it to be ready)."""
        if self.alive():
            return
        self.incarnation += 1
        cmd = [
            sys.executable,
            str(LISTENER),
            "--bootstrap",
            self.bootstrap,
            "--group",
            self.group,
            "--topic",
            self.topic,
            "--consumer-group",
            self.consumer_group,
            "--records",
            str(self.records),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,  # never outlive the harness
            )
        self.expected_exit = False
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        return any(line.startswith("READY") for line in self._status())

    def metrics_port(self) -> Optional[int]:
        """The port of this incarnation's metrics endpoint, once it serves (``--metrics-port``)."""
        for line in self._status():
            if line.startswith("METRICS "):
                return int(line.split()[1])
        return None

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until this incarnation's ``client.listening`` is set; report if not."""
        ok = wait_until(lambda: self.ready() or not self.alive(), timeout, 0.1) and self.ready()
        if not ok and self.alive():
            self.incidents.append(
                Incident(
                    time.time(),
                    self.slot,
                    f"incarnation {self.incarnation} not listening {timeout:.0f} s after start",
                    _tail(self.log_path),
                )
            )
        return ok

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def terminate(self) -> Optional[float]:
        """SIGTERM and time the exit; a slow or missing exit is a hang (then SIGKILL).

        Returns
        -------
        float or None
            Seconds until the process exited, None if it had to be killed.
        """
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        self.expected_exit = True
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.incidents.append(
                Incident(
                    time.time(),
                    self.slot,
                    f"HANG: still running {self.stop_timeout:.0f} s after SIGTERM "
                    f"(incarnation {self.incarnation}, pid {self.proc.pid}); killed",
                    _tail(self.log_path),
                )
            )
            self.kill()
            return None
        took = time.monotonic() - t0
        self.stop_times.append(took)
        for line in self._status():
            if line.startswith("RETURNED"):
                returned = float(line.split()[1])
                self.listen_return_times.append(returned)
                if returned > SLOW_STOP:
                    self.incidents.append(
                        Incident(
                            time.time(),
                            self.slot,
                            f"SLOW STOP: listen() returned {returned:.2f} s after SIGTERM "
                            f"(client.stop()); incarnation {self.incarnation}",
                            _tail(self.log_path, 25),
                        )
                    )
        return took

    def check(self) -> bool:
        """Report (once) an incarnation that ended on its own; True if one did."""
        if self.proc is None or self.expected_exit or self.proc.poll() is None:
            return False
        self.expected_exit = True
        raised = [s for s in self._status() if s.startswith("RAISED")]
        self.incidents.append(
            Incident(
                time.time(),
                self.slot,
                f"incarnation {self.incarnation} exited by itself (rc={self.proc.returncode})"
                + (f"; {raised[-1]}" if raised else ""),
                _tail(self.log_path),
            )
        )
        return True

    def listen_raised(self) -> list[str]:
        """``RAISED`` lines of every incarnation (``listen()`` raised in the process)."""
        out = []
        for path in self.workdir.glob(f"{self.slot}-*.rec.status"):
            out += [line for line in path.read_text().splitlines() if line.startswith("RAISED")]
        return out


# --------------------------------------------------------------------------- publishing


@dataclass
class Sent:
    """What the publisher knows of one alert."""

    uid: str
    step: str
    fault: Optional[str]
    acked: Optional[bool] = None  # None: no delivery report yet
    partition: int = -1
    offset: int = -1
    error: str = ""


class Publisher(threading.Thread):
    """Publish uniquely numbered alerts, steadily and in bursts; record the acknowledgements.

    Alerts are dicts ``{"uid": "<prefix>-<n>", "n": n, "step": ..., "fault": ...}`` written
    with the client's writer for the topic (``client.sessions[topic].write``, with a
    delivery callback) and flushed with ``client.flush_by_topic`` after each burst and
    every second.

    Parameters
    ----------
    bootstrap, group, topic : str
        Where to publish (short topic name).
    prefix : str
        Start of every uid.
    rate : float
        Alerts per second of the steady stream (0: none).
    """

    def __init__(self, bootstrap: str, group: str, topic: str, prefix: str, rate: float) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        import igwn_alert

        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        self.client = igwn_alert.client(
            noauth=True, server=f"kafka://{host}/", port=int(port), group=group
        )
        self.topic = topic
        self.prefix = prefix
        self.rate = rate
        self.step = "start"
        self.paused = threading.Event()
        self.sent: dict[str, Sent] = {}
        self.errors: list[str] = []
        self._n = 0
        self._faults: list[str] = []  # faults for the next alerts
        self._bursts: list[int] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.client.connect(topic)
        self.writer = self.client.sessions[topic]

    # -- control, from the harness thread
    def burst(self, count: int) -> None:
        with self._lock:
            self._bursts.append(count)

    def raise_in(self, faults: Sequence[str]) -> None:
        """Give the next alerts these callback faults (one each)."""
        with self._lock:
            self._faults.extend(faults)

    def set_step(self, step: str) -> None:
        self.step = step

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for s in self.sent.values() if s.acked is None)

    def acked(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent.values() if s.acked]

    # -- the thread
    def _one(self) -> None:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        self._n += 1
        uid = f"{self.prefix}-{self._n:07d}"
        rec = Sent(uid, self.step, fault)
        alert = {"uid": uid, "n": self._n, "step": self.step, "fault": fault, "alert_type": "new"}

        def on_delivery(err: Any, msg: Any) -> None:
            with self._lock:
                if err is None:
                    rec.acked = True
                    rec.partition, rec.offset = msg.partition(), msg.offset()
                else:
                    rec.acked = False
                    rec.error = err.str()

        with self._lock:
            self.sent[uid] = rec
        try:
            self.writer.write(alert, delivery_callback=on_delivery)
        except Exception as exc:  # noqa: BLE001 - an earlier failure, reported by the writer
            with self._lock:
                if rec.acked is None:
                    rec.acked = False
                    rec.error = f"write raised {type(exc).__name__}: {exc}"
            self.errors.append(f"{uid}: {type(exc).__name__}: {exc}")

    def _flush(self) -> None:
        try:
            self.client.flush_by_topic(self.topic)
        except Exception as exc:  # noqa: BLE001 - alerts not acknowledged are not counted
            self.errors.append(f"flush: {type(exc).__name__}: {exc}")

    def run(self) -> None:
        next_at = time.monotonic()
        last_flush = time.monotonic()
        while not self._halt.is_set():
            with self._lock:
                burst = self._bursts.pop(0) if self._bursts else 0
            if burst:
                for _ in range(burst):
                    self._one()
                self._flush()
                last_flush = time.monotonic()
                continue
            now = time.monotonic()
            if self.rate > 0 and not self.paused.is_set() and now >= next_at:
                self._one()
                next_at = max(next_at + 1.0 / self.rate, now - 1.0)
            if now - last_flush >= 1.0:
                self._flush()
                last_flush = time.monotonic()
            time.sleep(min(0.01, max(0.0, next_at - time.monotonic())) if self.rate else 0.01)
        self._flush()
        with contextlib.suppress(Exception):
            self.client.disconnect()


# --------------------------------------------------------------------------- counting


@dataclass
class Delivery:
    uid: str
    topic: str
    partition: int
    offset: int
    pid: int
    slot: str
    wall: float = 0.0  # when the callback recorded it (Unix time; 0.0: not recorded)


class Ledger:
    """The listeners' records, read incrementally (complete lines only).

    Parameters
    ----------
    workdir : pathlib.Path
        The directory of the ``*.rec`` files.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.deliveries: Counter[str] = Counter()
        self.raised: dict[str, list[str]] = defaultdict(list)
        #: uid -> kind of error, for alerts the on_failure policy was given (and skipped)
        self.policy_skipped: dict[str, str] = {}
        #: uid -> (log file of the incarnation, time) of each raise
        self.raised_where: dict[str, list[tuple[Path, float]]] = defaultdict(list)
        self.by_uid: dict[str, list[Delivery]] = defaultdict(list)
        #: partition -> (slot, time seen) of the last delivery from it
        self.owner: dict[int, tuple[str, float]] = {}
        #: partition -> highest offset delivered + 1
        self.delivered_end: dict[int, int] = {}
        self._pos: dict[Path, int] = {}
        self._lock = threading.Lock()

    def scan(self) -> int:
        """Read what was appended since the last scan; return the number of new lines."""
        new = 0
        with self._lock:
            for path in sorted(self.workdir.glob("*.rec")):
                start = self._pos.get(path, 0)
                try:
                    with open(path, "rb") as fh:
                        fh.seek(start)
                        data = fh.read()
                except OSError:
                    continue
                end = data.rfind(b"\n")
                if end < 0:
                    continue
                self._pos[path] = start + end + 1
                slot = path.name.split("-", 1)[0]
                now = time.monotonic()
                for raw in data[: end + 1].splitlines():
                    parts = raw.decode(errors="replace").split()
                    new += 1
                    if parts[0] == "D" and len(parts) in (6, 7):
                        uid, topic, part, off, pid = parts[1:6]
                        wall = float(parts[6]) if len(parts) == 7 else 0.0
                        d = Delivery(uid, topic, int(part), int(off), int(pid), slot, wall)
                        self.deliveries[uid] += 1
                        self.by_uid[uid].append(d)
                        if d.partition >= 0:
                            self.owner[d.partition] = (slot, now)
                            if d.offset + 1 > self.delivered_end.get(d.partition, 0):
                                self.delivered_end[d.partition] = d.offset + 1
                    elif parts[0] == "S" and len(parts) == 4:
                        self.policy_skipped[parts[1]] = parts[2]
                    elif parts[0] == "R" and len(parts) >= 4:
                        self.raised[parts[1]].append(parts[2])
                        when = float(parts[4]) if len(parts) > 4 else 0.0
                        self.raised_where[parts[1]].append((path.with_suffix(".log"), when))
        return new

    def log_lines_near(self, uid: str, before: float = 0.5, after: float = 3.0) -> list[str]:
        """The listener's log lines (warnings and worse) around each raise on ``uid``."""
        out = []
        for path, when in self.raised_where.get(uid, ()):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if not any(w in line for w in (" WARNING ", " ERROR ", " CRITICAL ")):
                    continue
                try:
                    t = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                    t += int(line[20:23]) / 1000
                except ValueError:
                    continue
                if when - before <= t <= when + after:
                    out.append(f"{path.name}: {line}")
        return out

    def delivered(self, uid: str) -> bool:
        return self.deliveries.get(uid, 0) > 0

    def skipped(self, uid: str) -> bool:
        """The alert was handed to the listener's ``on_failure`` policy (and skipped)."""
        return uid in self.policy_skipped


@dataclass
class Tally:
    """Counts for one set of alerts (a schedule, or a step)."""

    label: str
    sent: int = 0
    acked: int = 0
    unacked: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    skipped: int = 0
    skipped_kinds: Counter[str] = field(default_factory=Counter)
    raised: int = 0
    lost_alerts: list[Sent] = field(default_factory=list)


def tally(label: str, sent: Iterable[Sent], ledger: Ledger) -> Tally:
    """Count sent / delivered / lost / duplicated for ``sent``.

    Parameters
    ----------
    label : str
        What is counted.
    sent : iterable of Sent
        The alerts.
    ledger : Ledger
        What the listeners recorded (scanned).
    """
    t = Tally(label)
    for s in sent:
        t.sent += 1
        n = ledger.deliveries.get(s.uid, 0)
        if ledger.raised.get(s.uid):
            t.raised += 1
        if not s.acked:
            t.unacked += 1
            if n:
                t.delivered += 1
                t.duplicated += n - 1
            continue
        t.acked += 1
        if n:
            t.delivered += 1
            t.duplicated += n - 1
        elif ledger.skipped(s.uid):
            t.skipped += 1
            t.skipped_kinds[ledger.policy_skipped[s.uid]] += 1
        else:
            t.lost += 1
            t.lost_alerts.append(s)
    return t


# --------------------------------------------------------------------------- lag


@dataclass
class LagSample:
    t: float  # monotonic
    lag: dict[int, int]  # partition -> end offset - committed (committed none: end - start)
    owner: dict[int, str]  # partition -> slot that last delivered from it
    in_flight: int  # delivered but not committed, summed over partitions
    wall: float = 0.0  # Unix time of the sample (its committed offsets were read before)
    committed: dict[int, int] = field(default_factory=dict)  # partition -> committed (or start)


class Periodic(threading.Thread):
    """A daemon thread that calls :meth:`tick` every ``interval`` seconds until stopped."""

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._halt = threading.Event()
        self.lock = threading.Lock()  # for what a subclass collects

    def tick(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.monotonic()
            self.tick()
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._halt.set()
        self.join(20)


class LagSampler(Periodic):
    """Sample the consumer group's lag per partition, without joining the group.

    A plain :class:`confluent_kafka.Consumer` with the group's id asks ``committed()`` and
    ``get_watermark_offsets()``; it never subscribes, so it is not a member. Given the
    GraceDB group and short topic name, and if the installed client has it, the client's own
    ``igwn_alert._lag.measure`` (behind ``igwn-alert lag``) is used instead. A sample whose
    requests fail (a broker node is down) is skipped.
    """

    def __init__(
        self,
        bootstrap: str,
        consumer_group: str,
        topic: str,
        partitions: int,
        ledger: Ledger,
        interval: float = 0.5,
        group: Optional[str] = None,
        short: Optional[str] = None,
    ) -> None:
        super().__init__("soak-lag", interval)
        self.group = group  # with the short topic name: use igwn_alert._lag if it is there
        self.short = short
        self.bootstrap = bootstrap
        self.consumer_group = consumer_group
        self.consumer = self._new_consumer()
        self.last_error = ""
        self._failed_in_row = 0
        self.topic = topic
        self.partitions = partitions
        self.ledger = ledger
        self.samples: list[LagSample] = []
        self.failures = 0
        self._lock = threading.Lock()

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.consumer_group,
                "enable.auto.commit": False,
                "logger": _quiet,
                "socket.timeout.ms": 3000,
            }
        )

    def method(self) -> str:
        """What the samples are taken with."""
        try:
            from igwn_alert._lag import measure  # noqa: F401
        except ImportError:
            return "a plain confluent-kafka consumer (committed + watermarks)"
        return "igwn_alert._lag.measure (as igwn-alert lag)"

    def _positions(self, tps: list[Any]) -> dict[int, tuple[int, int]]:
        """``{partition: (committed offset, end offset)}`` of the group.

        With ``igwn_alert._lag.measure`` (what ``igwn-alert lag`` shows; in the client from
        the operability issue on) when the installed client has it, else directly.
        """
        if self.group is not None and self.short is not None:
            try:
                from igwn_alert._lag import measure
            except ImportError:
                pass
            else:
                rows = measure(
                    self.bootstrap, None, self.consumer_group, self.group, [self.short], 3
                )
                return {
                    r.partition: (
                        r.committed
                        if r.committed is not None
                        else (r.end - r.lag if r.lag is not None else 0),  # none: all of it
                        r.end,
                    )
                    for r in rows
                }
        from confluent_kafka import TopicPartition

        out = {}
        for tp in self.consumer.committed(tps, timeout=3):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, tp.partition), timeout=3, cached=False
            )
            out[tp.partition] = (tp.offset if tp.offset >= 0 else low, high)
        return out

    def sample(self) -> Optional[LagSample]:
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            positions = self._positions(tps)  # partition -> (committed or start, end)
            lag: dict[int, int] = {}
            in_flight = 0
            self.ledger.scan()
            for part, (pos, high) in positions.items():
                lag[part] = max(0, high - pos)
                in_flight += max(0, self.ledger.delivered_end.get(part, pos) - pos)
        except Exception as exc:  # noqa: BLE001 - an outage: no sample this time
            self.failures += 1
            self._failed_in_row += 1
            if self.last_error != repr(exc):
                say(f"lag sample failed: {exc!r}")
            self.last_error = repr(exc)
            if self._failed_in_row >= 2:
                # a consumer that lost its coordinator may never find it again: start over
                self.consumer = self._new_consumer()
                self._failed_in_row = 0
            return None
        self._failed_in_row = 0
        owner = {p: o[0] for p, o in self.ledger.owner.items()}
        committed = {part: pos for part, (pos, _) in positions.items()}
        s = LagSample(time.monotonic(), lag, owner, in_flight, time.time(), committed)
        with self._lock:
            self.samples.append(s)
        return s

    def tick(self) -> None:
        self.sample()

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(Exception):
            self.consumer.close()

    def since(self, t0: float) -> list[LagSample]:
        with self._lock:
            return [s for s in self.samples if s.t >= t0]

    def wait_zero(self, timeout: float) -> Optional[float]:
        """Wait until a sample shows lag 0 on every partition; return the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for s in self.since(t0):
                if s.lag and not any(s.lag.values()):
                    return s.t - t0
            time.sleep(0.1)
        return None


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def group_of(
    slots: Iterable[str],
    workdir: Path,
    bootstrap: str,
    group: str,
    topic: str,
    consumer_group: str,
    incidents: list[Incident],
    stop_timeout: float = 10.0,
    extra_args: Optional[Callable[[str], Sequence[str]]] = None,
) -> Iterator[dict[str, ListenerProc]]:
    """Listener slots of one consumer group; every process is SIGKILLed on the way out.

    ``extra_args(slot)`` gives more ``soak/listener.py`` arguments for a slot.
    """
    procs = {
        s: ListenerProc(
            s,
            workdir,
            bootstrap,
            group,
            topic,
            consumer_group,
            incidents,
            stop_timeout,
            extra_args(s) if extra_args is not None else (),
        )
        for s in slots
    }
    try:
        yield procs
    finally:
        for p in procs.values():
            p.kill()


def print_incidents(incidents: Sequence[Incident], t0: float) -> None:
    if not incidents:
        return
    print(f"\n{len(incidents)} listener incident(s):")
    for i in incidents:
        print("  " + i.render(t0))
