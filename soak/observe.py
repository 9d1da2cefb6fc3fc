"""What an operator sees during a scale-out run: ``igwn-alert lag`` and each listener's metrics.

Two watchers run beside the harness's own lag sampler, using only what a site would deploy:

* :class:`LagChecks` runs the ``igwn-alert lag -c GROUP --warn W --critical C`` command (a
  subprocess, exactly as Nagios would) every few seconds and keeps its status line, exit
  code and total lag;
* :class:`MetricsScraper` scrapes each listener's Prometheus endpoint
  (``client.serve_metrics``, started by ``soak/listener.py --metrics-port 0``) every second
  and keeps its state, partitions held, lag (``igwn_alert_lag_total``) and alerts delivered
  (``igwn_alert_alerts_total``).

Both print a progress line when something changes (a new Nagios status, a listener's state),
so the run shows them as it happens, and both keep their samples for the table and the plot.
The duplicate bound (:func:`check_duplicates`) is here too: it compares the listeners'
records with the group's committed positions the lag sampler saw.
"""

from __future__ import annotations

import bisect
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .harness import LagSample, Ledger, ListenerProc, Periodic, say

#: ``IGWN-ALERT LAG WARNING - total lag 37 | lag=37;40;200;0``
_PERF = re.compile(r"\|\s*lag=(\d+);")
SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class LagCheck:
    """One run of ``igwn-alert lag`` with thresholds."""

    t: float  # monotonic, when it returned
    code: int  # 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    line: str  # its status line
    total: Optional[int]  # the total lag from its performance data


@dataclass
class Scrape:
    """One scrape of one listener's ``/metrics``."""

    t: float  # monotonic
    slot: str
    state: str
    partitions: int
    lag: Optional[int]  # igwn_alert_lag_total; None before the listener has a position
    delivered: int  # igwn_alert_alerts_total, summed over topics


def parse_metrics(text: str) -> tuple[str, int, Optional[int], int]:
    """``(state, partitions, lag, delivered)`` from a listener's exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    state, partitions, lag, delivered = "?", 0, None, 0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "igwn_alert_listener_state" and s.value == 1:
                state = s.labels["igwn_alert_listener_state"]
            elif s.name == "igwn_alert_partitions":
                partitions = int(s.value)
            elif s.name == "igwn_alert_lag_total":
                lag = int(s.value)
            elif s.name == "igwn_alert_alerts_total":
                delivered += int(s.value)
    return state, partitions, lag, delivered


class LagChecks(Periodic):
    """``igwn-alert lag`` as a Nagios check of the consumer group, every ``interval`` s."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        short: str,
        consumer_group: str,
        warn: int,
        critical: int,
        interval: float = 3.0,
    ) -> None:
        super().__init__("soak-lag-cli", interval)
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        self.command = [
            sys.executable,
            "-m",
            "igwn_alert",
            "--no-auth",
            "-s",
            f"kafka://{host}",
            "-p",
            port,
            "-g",
            group,
            "lag",
            "-c",
            consumer_group,
            "--warn",
            str(warn),
            "--critical",
            str(critical),
            "--timeout",
            "3",
            short,
        ]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.checks: list[LagCheck] = []
        self._last_code: Optional[int] = None

    def shown(self) -> str:
        """The command line, as an operator would type it."""
        return "igwn-alert " + " ".join(self.command[3:])

    def tick(self) -> None:
        try:
            done = subprocess.run(
                self.command, capture_output=True, text=True, timeout=20, env=self.env
            )
            line = (done.stdout.strip() or done.stderr.strip()).splitlines()
            text = line[0] if line else f"(no output, exit {done.returncode})"
            code = done.returncode
        except subprocess.TimeoutExpired:
            text, code = "(igwn-alert lag did not return within 20 s)", 3
        found = _PERF.search(text)
        check = LagCheck(time.monotonic(), code, text, int(found.group(1)) if found else None)
        with self.lock:
            self.checks.append(check)
        if code != self._last_code:
            say(f"igwn-alert lag: {text} (exit {code})")
            self._last_code = code

    def since(self, t0: float, t1: float = float("inf")) -> list[LagCheck]:
        with self.lock:
            return [c for c in self.checks if t0 <= c.t < t1]


class MetricsScraper(Periodic):
    """Scrape every live listener's ``/metrics`` every ``interval`` seconds."""

    def __init__(self, procs: dict[str, ListenerProc], interval: float = 1.0) -> None:
        super().__init__("soak-metrics", interval)
        self.procs = procs
        self.scrapes: list[Scrape] = []
        self.failures = 0
        self._last: dict[str, str] = {}

    def tick(self) -> None:
        for slot, proc in self.procs.items():
            port = proc.metrics_port() if proc.alive() else None
            if port is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    text = r.read().decode()
            except OSError:
                self.failures += 1  # the process is on its way out (or in): none this time
                continue
            state, partitions, lag, delivered = parse_metrics(text)
            with self.lock:
                self.scrapes.append(
                    Scrape(time.monotonic(), slot, state, partitions, lag, delivered)
                )
            shown = f"{state}, {partitions} partition(s)"
            if self._last.get(slot, "").split(",")[0] != state:
                say(f"metrics {slot}: {shown}, lag {lag}, {delivered} alerts delivered")
            self._last[slot] = shown

    def since(self, t0: float, t1: float = float("inf")) -> list[Scrape]:
        with self.lock:
            return [s for s in self.scrapes if t0 <= s.t < t1]

    def summary(self) -> str:
        """The latest scrape of each listener on one line."""
        with self.lock:
            latest = {s.slot: s for s in self.scrapes}
        return ", ".join(
            f"{slot} {s.state[:6]} lag {s.lag if s.lag is not None else '-'}"
            for slot, s in sorted(latest.items(), key=lambda kv: int(kv[0][1:]))
        )


def group_lag(scrapes: list[Scrape]) -> list[tuple[float, int]]:
    """The listeners' own lags summed at each scrape round (latest value of each listener)."""
    latest: dict[str, int] = {}
    out = []
    for s in scrapes:
        latest[s.slot] = s.lag or 0
        out.append((s.t, sum(latest.values())))
    return out


@dataclass
class Duplicates:
    """Re-deliveries found in the records, against what was in flight at each hand-over."""

    handovers: int = 0  # replays: a partition read again from an earlier offset
    bound: int = 0  # sum over the replays of (delivered so far - committed before it)
    below_committed: list[str] = field(default_factory=list)  # replays from before a commit


def check_duplicates(ledger: Ledger, samples: list[LagSample]) -> Duplicates:
    """Bound the re-deliveries by what was in flight when each replay began.

    At-least-once delivery re-delivers, after a hand-over (a listener restarted, a
    rebalance, a reopened stream), the alerts of a partition from its committed offset up
    to the last one delivered: those were *in flight*, handled but not committed. For each
    partition the records (in the order the callbacks ran) show where a replay begins: an
    offset at or below the highest already delivered. Its bound is that highest offset + 1
    minus the group's committed offset of the partition in the last lag sample taken before
    the replay began (commits only move forward, so this is at most what was committed at the
    hand-over). A replay that begins below that committed offset re-delivered an alert that
    had been committed: it is listed in ``below_committed``.

    Parameters
    ----------
    ledger : Ledger
        The listeners' records (scanned; ``Delivery.wall`` set).
    samples : list of LagSample
        The lag sampler's samples (``wall`` and ``committed`` set), in time order.
    """
    out = Duplicates()
    parts: dict[int, list[Any]] = defaultdict(list)
    for deliveries in ledger.by_uid.values():
        for d in deliveries:
            if d.partition >= 0:
                parts[d.partition].append(d)
    walls = [s.wall for s in samples]
    for part, ds in parts.items():
        ds.sort(key=lambda d: (d.wall, d.offset))
        high = -1
        prev: Any = None
        in_replay = False
        for d in ds:
            if d.offset <= high:
                starts = not in_replay or d.pid != prev.pid or d.offset <= prev.offset
                if starts:
                    i = bisect.bisect_left(walls, d.wall) - 1
                    committed = samples[i].committed.get(part, 0) if i >= 0 else 0
                    out.handovers += 1
                    out.bound += max(0, high + 1 - committed)
                    if d.offset < committed:
                        out.below_committed.append(
                            f"partition {part}: replay from offset {d.offset} by pid {d.pid}, "
                            f"committed {committed} before it"
                        )
                in_replay = True
            else:
                in_replay = False
                high = d.offset
            prev = d
    return out
