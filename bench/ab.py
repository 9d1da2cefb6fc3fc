#!/usr/bin/env python
"""Two versions of this client side by side, each as a ratio to plain confluent-kafka.

Usage::

    python bench/ab.py --old-commit ae950a6 [--rounds 5] [--n 50000] [--bootstrap HOST:PORT]
    python bench/ab.py --old-src /path/to/old/src ...

A change to the listen loop must keep its speed *relative to plain confluent-kafka* on the
same machine; absolute rates move by 20 % or more from run to run on a shared machine, so
both versions and the plain loop are measured in each round, in a rotating order, and each
round gives a ratio per version. The rounds' medians are compared:

* listen throughput (``bench/worker.py listen_replay`` and ``listen_live``, with and without
  a consumer group): alerts/s of a version / alerts/s of the plain loop;
* latency (``latency``: ``publish_to_topic`` + ``flush_by_topic`` -> callback, p50 and p99):
  plain / version (higher is better, as for throughput); "listener latency" is the same
  with a plain producer publishing for every version, so only the listener differs;
* ``stop()`` until ``listen()`` returns (``stop``, max over the trials): milliseconds, as
  the plain loop has no ``stop()``;
* latency "pooled": p50 and p99 over every round's samples together (a single round's
  p99 is its tenth-worst sample and moves by half between rounds on a shared machine);
* latency "side by side": the three versions' latency trials run at the same time, on
  one schedule of ticks ``interval`` apart, each version in its own third of the
  interval; a pause of the machine or of the broker's JVM then falls on all three alike
  instead of on the one whose trial was running, which is what moves a p99 measured one
  version after another (the tick schedule uses CLOCK_MONOTONIC, shared by processes on
  Linux).

The old version is checked out from ``--old-commit`` into ``.cache/bench-ab/<commit>`` (a
``git worktree``), or taken from ``--old-src``. Nothing is asserted: it prints a table with
``new/old`` for each metric (1.00: the same ratio to plain) and writes ``<out>/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402 - bench/run.py, beside this script
from worker import pct  # noqa: E402 - bench/worker.py, beside this script

ROOT = HERE.parent


def checkout(commit: str) -> Path:
    """The ``src`` directory of ``commit``, checked out once under ``.cache/bench-ab``."""
    where = ROOT / ".cache" / "bench-ab" / commit
    if not (where / "src" / "igwn_alert").is_dir():
        where.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit],
            check=True,
            capture_output=True,
        )
    return where / "src"


#: (metric, scenario, worker parameters, value key, higher_is_better)
METRICS: list[tuple[str, str, dict[str, Any], str, bool]] = [
    ("replay, no group (alerts/s)", "listen_replay", {}, "rate_per_s", True),
    (
        "replay, consumer group (alerts/s)",
        "listen_replay",
        {"consumer_group": True},
        "rate_per_s",
        True,
    ),
    ("live, no group (alerts/s)", "listen_live", {}, "rate_per_s", True),
    (
        "live, consumer group (alerts/s)",
        "listen_live",
        {"consumer_group": True},
        "rate_per_s",
        True,
    ),
    ("latency p50 (ms)", "latency", {}, "p50_ms", False),
    ("latency p99 (ms)", "latency", {}, "p99_ms", False),
    # the same with the plain producer publishing for every version: the listener alone
    ("listener latency p50 (ms)", "latency", {"plain_publisher": True}, "p50_ms", False),
    ("listener latency p99 (ms)", "latency", {"plain_publisher": True}, "p99_ms", False),
]

#: latency with the three versions side by side (label, worker parameters)
TOGETHER: list[tuple[str, dict[str, Any]]] = [
    ("latency side by side", {}),
    ("listener latency side by side", {"plain_publisher": True}),
]
_MARGIN = 10.0  # seconds for the side-by-side workers to start and warm up


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    old = ap.add_mutually_exclusive_group(required=True)
    old.add_argument("--old-commit", help="the commit to compare with (checked out for it)")
    old.add_argument("--old-src", help="the src/ directory of the version to compare with")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    ap.add_argument("--n", type=int, default=50_000, help="alerts per throughput trial")
    ap.add_argument("--latency-n", type=int, default=300, help="alerts per latency trial")
    ap.add_argument("--stop-trials", type=int, default=10)
    ap.add_argument(
        "--bootstrap", help="host:port of a plaintext listener (default: scripts/kafka)"
    )
    ap.add_argument("--out", default=str(HERE / "results" / "ab"))
    args = ap.parse_args(argv)

    old_src = Path(args.old_src).resolve() if args.old_src else checkout(args.old_commit)
    versions = {"new": ROOT / "src", "old": old_src}
    broker = bench.ensure_broker(args.bootstrap)
    bootstrap = broker["plaintext"]
    topics = bench.Topics(bootstrap)
    pythons = {"ours": sys.executable, "plain": sys.executable}
    runner = bench.Runner(bootstrap, topics, pythons)
    names = ["replay"]
    for c in ("new", "old", "plain"):
        names += [f"lat-{c}", f"latt-{c}", f"stop-{c}"]
        for r in range(args.rounds):
            names += [f"live{r}-{c}", f"livew{r}-{c}", f"liveg{r}-{c}", f"livegw{r}-{c}"]
    topics.create(names)
    runner.produce("replay", args.n)

    def one(cand: str, scenario: str, extra: dict[str, Any], r: int) -> Any:
        who = "plain" if cand == "plain" else "ours"
        env = None if cand == "plain" else {"PYTHONPATH": str(versions[cand])}
        params: dict[str, Any] = dict(extra)
        if scenario == "listen_replay":
            params.update(topic="replay", n=args.n)
            if cand == "plain":  # the plain loop replays without a group (as in run.py)
                params.pop("consumer_group", None)
        elif scenario == "listen_live":
            g = "g" if extra.get("consumer_group") else ""
            params.update(topic=f"live{g}{r}-{cand}", warm_topic=f"live{g}w{r}-{cand}", n=args.n)
        elif scenario == "latency":
            params.setdefault("topic", f"lat-{cand}")
            params.update(n=args.latency_n, interval=0.01)
        elif scenario == "stop":
            params.update(topic=f"stop-{cand}", trials=args.stop_trials)
        return runner.run(who, scenario, env=env, **params)

    def together(extra: dict[str, Any], order: list[str]) -> dict[str, Any]:
        """One latency trial of each version, run at the same time on one schedule."""
        interval = 0.01
        start_at = time.perf_counter() + _MARGIN
        with ThreadPoolExecutor(len(order)) as pool:
            futures = {
                cand: pool.submit(
                    one,
                    cand,
                    "latency",
                    {
                        **extra,
                        "topic": f"latt-{cand}",
                        "start_at": start_at,
                        "offset": interval * i / len(order),
                    },
                    0,
                )
                for i, cand in enumerate(order)
            }
            return {cand: f.result() for cand, f in futures.items()}

    raw: dict[str, dict[str, list[float]]] = {}
    pooled: dict[str, dict[str, list[float]]] = {}  # every latency sample of every round
    order = ["plain", "new", "old"]
    started = time.monotonic()
    try:
        for r in range(args.rounds):
            bench.log(f"round {r + 1} of {args.rounds} (order {order})")
            done: dict[tuple[str, str], Any] = {}
            for metric, scenario, extra, key, _ in METRICS:
                for cand in order:
                    ident = (cand, scenario + json.dumps(extra, sort_keys=True))
                    if ident not in done:
                        done[ident] = one(cand, scenario, extra, r)
                        if scenario == "latency":
                            label = "listener latency" if extra else "latency"
                            samples = done[ident].get("samples_ms") or []
                            pooled.setdefault(label, {}).setdefault(cand, []).extend(samples)
                    value = done[ident].get(key)
                    raw.setdefault(metric, {}).setdefault(cand, []).append(
                        float(value) if isinstance(value, (int, float)) else float("nan")
                    )
            for label, extra in TOGETHER:
                outs = together(extra, order)
                for cand, out in outs.items():
                    pooled.setdefault(label, {}).setdefault(cand, []).extend(
                        out.get("samples_ms") or []
                    )
                    if out.get("late_s"):
                        bench.log(f"{label}: {cand} was {out['late_s']:.1f} s late")
                    for q in (50, 99):
                        value = out.get(f"p{q}_ms")
                        raw.setdefault(f"{label} p{q} (ms)", {}).setdefault(cand, []).append(
                            float(value) if isinstance(value, (int, float)) else float("nan")
                        )
            for cand in ("new", "old"):
                out = one(cand, "stop", {}, r)
                raw.setdefault("stop() max (ms)", {}).setdefault(cand, []).append(
                    float(out.get("max_ms", float("nan")))
                )
            order = order[1:] + order[:1]
    finally:
        topics.delete()
        topics.close()
    table = summarise(raw) + pooled_rows(pooled)
    print_table(table, args.rounds, time.monotonic() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(
        json.dumps(
            {
                "old": str(args.old_commit or old_src),
                "rounds": args.rounds,
                "n": args.n,
                "machine": bench.machine_info(broker),
                "raw": raw,
                "table": table,
            },
            indent=1,
        )
        + "\n"
    )
    return 0


def summarise(raw: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Per metric: each version's median ratio to plain, and new/old of those ratios."""
    better: dict[str, bool] = {m: hib for m, _, _, _, hib in METRICS}
    better.update({f"{label} p{q} (ms)": False for label, _ in TOGETHER for q in (50, 99)})
    rows = []
    for metric, by in raw.items():
        if metric.startswith("stop()"):
            new, old = statistics.median(by["new"]), statistics.median(by["old"])
            rows.append({"metric": metric, "new": new, "old": old, "new_vs_old": old / new})
            continue
        ratio: Callable[[float, float], float] = (
            (lambda v, p: v / p) if better[metric] else (lambda v, p: p / v)
        )
        per = {c: [ratio(v, p) for v, p in zip(by[c], by["plain"])] for c in ("new", "old")}
        new, old = statistics.median(per["new"]), statistics.median(per["old"])
        rows.append(
            {
                "metric": metric,
                "plain": statistics.median(by["plain"]),
                "new_value": statistics.median(by["new"]),
                "old_value": statistics.median(by["old"]),
                "new": new,
                "old": old,
                "new_vs_old": new / old,
                "new_ratios": per["new"],
                "old_ratios": per["old"],
            }
        )
    return rows


def pooled_rows(pooled: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """p50 and p99 over the latency samples of all rounds together, per version.

    A p99 of one round is its tenth-worst sample of 1,000 and moves by half from round to
    round on a shared machine; over every round's samples it is steadier.
    """
    rows = []
    for label, by in pooled.items():
        if not all(by.get(c) for c in ("plain", "new", "old")):
            continue
        for q in (50, 99):
            value = {c: pct(by[c], q) for c in ("plain", "new", "old")}
            new, old = value["plain"] / value["new"], value["plain"] / value["old"]
            rows.append(
                {
                    "metric": f"{label} p{q} (ms), pooled",
                    "plain": value["plain"],
                    "new_value": value["new"],
                    "old_value": value["old"],
                    "new": new,
                    "old": old,
                    "new_vs_old": new / old,
                    "samples": {c: len(by[c]) for c in by},
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], rounds: int, seconds: float) -> None:
    print(
        f"\n{rounds} rounds in {seconds:.0f} s; ratio: to plain confluent-kafka in the same round"
    )
    head = (
        f"{'metric':<48} {'plain':>9} {'new':>9} {'old':>9} {'new ratio':>9} "
        f"{'old ratio':>9} {'new/old':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["metric"].startswith("stop()"):
            print(
                f"{r['metric']:<48} {'-':>9} {r['new']:>9.1f} {r['old']:>9.1f} {'-':>9} "
                f"{'-':>9} {r['new_vs_old']:>8.2f}"
            )
            continue
        fmt = "{:>9.0f}" if "alerts/s" in r["metric"] else "{:>9.2f}"
        print(
            f"{r['metric']:<48} {fmt.format(r['plain'])} {fmt.format(r['new_value'])} "
            f"{fmt.format(r['old_value'])} {r['new']:>9.3f} {r['old']:>9.3f} "
            f"{r['new_vs_old']:>8.2f}"
        )
    print(
        "(throughput ratio: version / plain; latency ratio: plain / version, so higher is "
        "better for both; new/old: new ratio / old ratio, 1.00 = the same; stop(): median "
        "over rounds of the worst stop, new/old = old ms / new ms)"
    )


if __name__ == "__main__":
    sys.exit(main())
