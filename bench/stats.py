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
cost ``added / (1e9/R)`` of it. The target of issue 13 is that this stays within 5 %. On a
loaded machine the ns/alert grow while results.json stays, so that share is pessimistic
then; ``--broker`` measures the ratio directly instead:

* ``--broker HOST:PORT`` (a plaintext listener, e.g. ``scripts/kafka status``): replays
  the same back-log of ``--alerts`` GraceDB alerts (``bench/alert.json``) with
  ``client.listen(..., since="earliest")``, alternately with a plain callback and with the
  callback wrapped in ``alert_started``/``alert_done`` as the listen loop calls them, and
  prints both throughputs (fastest of ``--repeat`` runs each) and their ratio.

Without ``--broker`` no broker is needed.
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
    t0 = time.thread_time()
    for _ in range(n):
        token = started_("superevent", 0, ts)
        done_("superevent", token)
    return time.thread_time() - t0


def loop_without(n: int, ts: int) -> float:
    def nothing(topic: str, partition: int, ts: int) -> float:
        return 0.0

    def nothing_done(topic: str, token: float) -> None:
        return None

    t0 = time.thread_time()
    for _ in range(n):
        token = nothing("superevent", 0, ts)
        nothing_done("superevent", token)
    return time.thread_time() - t0


def measure(n: int, repeat: int, scraper: bool) -> tuple[float, float]:
    """Fastest ns/alert of the stats calls and of the empty loop (function calls only),
    the runs of the two interleaved. Times are this thread's CPU time (time.thread_time),
    so that time spent waiting for a core on a shared machine does not count."""
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


def replay_rate(client: object, n: int, wrap: bool) -> tuple[float, float]:
    """Alerts/s from first to last callback of one replay of the n-alert back-log, and the
    process's CPU time per alert (us) over the same span."""
    stats = client._listener_stats  # type: ignore[attr-defined]
    started_, done_ = stats.alert_started, stats.alert_done
    state = {"count": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    ts = int(time.time() * 1000)

    def plain(topic: str, payload: object) -> None:
        c = state["count"] = state["count"] + 1
        if c == 1:
            state["first"] = time.perf_counter()
            state["cpu_first"] = time.process_time()
        if c == n:
            state["last"] = time.perf_counter()
            state["cpu_last"] = time.process_time()
            done.set()

    def wrapped(topic: str, payload: object) -> None:
        token = started_(topic, 0, ts)
        plain(topic, payload)
        done_(topic, token)

    thread = threading.Thread(
        target=client.listen,  # type: ignore[attr-defined]
        args=(wrapped if wrap else plain, ["stats"]),
        kwargs={"since": "earliest"},
        daemon=True,
    )
    thread.start()
    if not done.wait(600):
        raise SystemExit(f"only {state['count']} of {n} alerts replayed in 600 s")
    client.stop()  # type: ignore[attr-defined]
    thread.join(30)
    cpu_us = (state["cpu_last"] - state["cpu_first"]) / (n - 1) * 1e6
    return (n - 1) / (state["last"] - state["first"]), cpu_us


def broker_run(bootstrap: str, n: int, repeat: int) -> None:
    import uuid

    from confluent_kafka.admin import AdminClient, NewTopic

    import igwn_alert

    sys.path.insert(0, str(HERE))
    from worker import PlainProducer

    group = f"bench-stats-{uuid.uuid4().hex[:8]}"
    full = f"{group}.stats"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(full, 1, 1)])[full].result(30)
    try:
        producer = PlainProducer(bootstrap)
        text = (HERE / "alert.json").read_text()
        for _ in range(n):
            producer.send(full, text)
        producer.flush()
        host, port = bootstrap.rsplit(":", 1)
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeat):
            for wrap in (False, True):
                c = igwn_alert.client(
                    noauth=True, server=f"kafka://{host}/", port=int(port), group=group
                )
                rate, cpu_us = replay_rate(c, n, wrap)
                rates[wrap].append(rate)
                cpu[wrap].append(cpu_us)
        off, on = max(rates[False]), max(rates[True])
        cpu_off, cpu_on = min(cpu[False]), min(cpu[True])
        print()
        print(f"listen replay of {n} alerts on {bootstrap}, best of {repeat} runs each:")
        for label, wrap in (("stats off", False), ("stats on ", True)):
            runs = ", ".join(f"{r:.0f}" for r in rates[wrap])
            print(
                f"  {label}: {max(rates[wrap]):9.0f} alerts/s, "
                f"{min(cpu[wrap]):6.2f} us CPU/alert  (runs: {runs})"
            )
        print(f"  on/off: throughput {on / off:.3f}, CPU per alert {cpu_on / cpu_off:.3f}")
    finally:
        admin.delete_topics([full])[full].result(30)


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
    p.add_argument("--broker", metavar="HOST:PORT", help="also measure listen replay there")
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
    else:
        print()
        print(f"{'listen run (results.json)':40} {'alerts/s':>9} {'ns/alert':>9} {'stats':>7}")
        for metric, rate in rates.items():
            per_alert = 1e9 / rate
            share = max(added, added_busy) / per_alert
            print(f"{metric:40} {rate:9.0f} {per_alert:9.0f} {share:7.1%}")
        print("(stats = the added ns/alert, the larger of the two, as a share of that time)")
    if opts.broker:
        broker_run(opts.broker, opts.alerts, opts.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
