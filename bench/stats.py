#!/usr/bin/env python
"""Cost of the listener's stats on the hot path: ns per alert, printed (never asserted).

Usage::

    python bench/stats.py [--alerts N] [--repeat R] [--results bench/results/results.json]

Measures, in this interpreter:

* ``alert_started`` + ``alert_done`` (the two calls the listen loop makes per alert), in a
  loop shaped like the listen loop's (one topic, one partition, a real broker timestamp),
  minus the same loop without the calls: the added ns/alert;
* the same while another thread calls ``snapshot()`` every 10 ms (a scraper far more
  eager than Prometheus), to show lock contention;
* ``snapshot()`` itself (full rings), in microseconds.

Then it relates the added cost to the listen throughputs quoted in ``results.json`` (the
side-by-side benchmark's last run): at R alerts/s a loop spends 1e9/R ns per alert, so stats
cost ``added / (1e9/R)`` of it. The target of issue 13 is that this stays within 5 %.
No broker is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from igwn_alert._stats import WINDOW, ListenerStats  # noqa: E402


def loop_with(stats: ListenerStats, n: int, ts: int) -> float:
    started_ = stats.alert_started
    done_ = stats.alert_done
    t0 = time.perf_counter()
    for _ in range(n):
        token = started_("superevent", 0, ts)
        done_("superevent", token)
    return time.perf_counter() - t0


def loop_without(n: int, ts: int) -> float:
    def nothing(topic: str, partition: int, ts: int) -> float:
        return 0.0

    def nothing_done(topic: str, token: float) -> None:
        return None

    t0 = time.perf_counter()
    for _ in range(n):
        token = nothing("superevent", 0, ts)
        nothing_done("superevent", token)
    return time.perf_counter() - t0


def measure(n: int, repeat: int, scraper: bool) -> tuple[float, float]:
    """Fastest ns/alert of the stats calls and of the empty loop (function calls only),
    the runs of the two interleaved: on a shared machine the fastest run is the one least
    disturbed by other processes."""
    stats = ListenerStats()
    stats.set_state("listening")
    ts = int(time.time() * 1000)
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        while not stop.wait(0.01):
            stats.snapshot()
            scrapes[0] += 1

    thread = threading.Thread(target=scrape, daemon=True) if scraper else None
    if thread:
        thread.start()
    with_, without = [], []
    try:
        for _ in range(repeat):
            with_.append(loop_with(stats, n, ts) / n * 1e9)
            without.append(loop_without(n, ts) / n * 1e9)
    finally:
        stop.set()
        if thread:
            thread.join()
    return min(with_), min(without)


def snapshot_cost(repeat: int) -> float:
    stats = ListenerStats()
    ts = int(time.time() * 1000)
    loop_with(stats, 2 * WINDOW, ts)
    stats.set_lag({("superevent", p): (10, 12) for p in range(16)})
    t0 = time.perf_counter()
    for _ in range(repeat):
        stats.snapshot()
    return (time.perf_counter() - t0) / repeat * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=200_000, help="alerts per run (200000)")
    p.add_argument("--repeat", type=int, default=9, help="runs; the fastest is shown (9)")
    p.add_argument(
        "--results",
        type=Path,
        default=HERE / "results" / "results.json",
        help="the side-by-side benchmark's results, for the listen throughputs",
    )
    opts = p.parse_args()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"python {sys.version.split()[0]}, {opts.alerts} alerts x {opts.repeat} runs, "
        f"{os.cpu_count()} cores, load average {load}"
    )
    plain_ns, empty_ns = measure(opts.alerts, opts.repeat, scraper=False)
    busy_ns, _ = measure(opts.alerts, opts.repeat, scraper=True)
    added = plain_ns - empty_ns
    added_busy = busy_ns - empty_ns
    print(f"empty loop (2 function calls):          {empty_ns:7.0f} ns/alert")
    print(f"stats calls, no reader:                 {added:7.0f} ns/alert added")
    print(f"stats calls, snapshot() every 10 ms:    {added_busy:7.0f} ns/alert added")
    print(f"snapshot() with full rings:             {snapshot_cost(2000):7.1f} us")

    rates: dict[str, float] = {}
    if opts.results.exists():
        summary = json.loads(opts.results.read_text()).get("summary", [])
        for row in summary:
            if str(row.get("metric", "")).startswith("(b) listen") and row.get("ours"):
                rates[row["metric"]] = float(row["ours"])
    if not rates:
        print(f"(no listen throughputs in {opts.results}; run bench/run.py for them)")
        return 0
    print()
    print(f"{'listen run (results.json)':40} {'alerts/s':>9} {'ns/alert':>9} {'stats':>7}")
    for metric, rate in rates.items():
        per_alert = 1e9 / rate
        share = max(added, added_busy) / per_alert
        print(f"{metric:40} {rate:9.0f} {per_alert:9.0f} {share:7.1%}")
    print("(stats = the added ns/alert, the larger of the two, as a share of the loop's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
