"""The scale-out run (issue 13): 8 listeners in one group on a 3-node KRaft cluster.

``python -m soak scaleout`` (or ``scripts/soak scaleout``) starts a private 3-node cluster,
creates a topic of 16 partitions (replication 3, ``min.insync.replicas=2``), starts 8
listener processes (``soak/listener.py``) in one consumer group and publishes a steady
stream of alerts. Then, step by step:

* ``steady``: nothing happens (the baseline);
* ``restart Ln``: a rolling restart, one listener at a time (SIGTERM, timed; start again;
  wait until it listens);
* ``kill node N`` (half-way through the restarts): SIGKILL of the broker node that leads the
  most partitions (among the nodes that are not the clients' bootstrap node);
* ``start node N`` (after the restarts): the node comes back.

Each step lasts ``--step`` seconds of traffic, then the stream pauses until the group's lag
is 0 on every partition (``--drain`` at most). The group's lag per partition (end offset
minus committed offset) is sampled twice a second by a plain confluent-kafka consumer with
the group's id, which never joins the group; each partition's lag is attributed to the
listener that last delivered an alert from it.

At the end it prints, per step: alerts sent (acknowledged), delivered, lost, duplicated, the
most alerts in flight (delivered, not yet committed: what a failure can deliver twice), the
largest lag and the time from the pause to lag 0. With ``--plot FILE`` it draws the lag per
listener over time (matplotlib, from the ``bench`` extra). It exits 1 on any loss or if
the lag did not come back to 0 after a step.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .harness import (
    Brokers,
    Incident,
    LagSample,
    LagSampler,
    Ledger,
    Publisher,
    Tally,
    group_of,
    print_incidents,
    say,
    tally,
    wait_until,
)

GROUP = "scaleout"
#: Samples further apart than this (seconds) leave a gap in the plot: none could be taken.
GAP = 2.0


@dataclass
class Options:
    """Sizes of a scale-out run (the command-line options)."""

    nodes: int = 3
    partitions: int = 16
    listeners: int = 8
    restarts: Optional[int] = None  # None: every listener
    rate: float = 40.0
    step: float = 8.0
    drain: float = 45.0
    heap: str = "384m"
    seed: Optional[int] = None
    plot: Optional[Path] = None
    json_out: Optional[Path] = None
    workdir: Optional[Path] = None
    keep: bool = False


@dataclass
class Step:
    name: str
    t_start: float
    t_pause: float = 0.0
    t_zero: Optional[float] = None  # lag 0 on every partition, seconds after the pause
    action: str = ""
    max_lag: int = 0
    max_in_flight: int = 0
    tally: Optional[Tally] = None


@dataclass
class Result:
    steps: list[Step]
    samples: list[LagSample]
    t0: float
    incidents: list[Incident]
    total: Tally
    seed: int
    listeners: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run(opts: Options) -> Result:
    """Start the cluster, run the steps, stop everything; print the table (and plot)."""
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 10**6)
    rng = random.Random(seed)
    t_begin = time.monotonic()
    base = opts.workdir or Path(tempfile.mkdtemp(prefix="igwn-alert-scaleout-"))
    base.mkdir(parents=True, exist_ok=True)
    say(
        f"scale-out: {opts.listeners} listeners, {opts.partitions} partitions, "
        f"{opts.nodes} nodes, {opts.rate:g} alerts/s, seed {seed}"
    )
    brokers = Brokers(opts.nodes, base / "kafka", opts.heap)
    try:
        result = _run(brokers, opts, seed, rng, base)
    finally:
        brokers.close()
    result.seconds = time.monotonic() - t_begin
    print_table(result)
    if opts.plot is not None:
        plot(result, opts.plot)
        say(f"plot written to {opts.plot}")
    if opts.json_out is not None:
        opts.json_out.write_text(json.dumps(to_json(result), indent=1) + "\n")
    if not opts.keep and not failed(result):
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"records, listener logs and broker logs kept in {base}")
    return result


def _run(brokers: Brokers, opts: Options, seed: int, rng: random.Random, base: Path) -> Result:
    short = "superevent"
    full = f"{GROUP}.{short}"
    replication = min(3, opts.nodes)
    brokers.create_topic(
        full, opts.partitions, replication, {"min.insync.replicas": str(min(2, replication))}
    )
    consumer_group = f"scaleout-{seed}"
    workdir = base / "listeners"
    workdir.mkdir()
    incidents: list[Incident] = []
    ledger = Ledger(workdir)
    slots = [f"L{i + 1}" for i in range(opts.listeners)]
    restarts = slots[: opts.listeners if opts.restarts is None else opts.restarts]
    steps: list[Step] = []
    t0 = time.monotonic()
    with group_of(
        slots, workdir, brokers.bootstrap, GROUP, short, consumer_group, incidents
    ) as procs:
        for s in slots:
            procs[s].start()
        for s in slots:
            procs[s].wait_ready(90)
        sampler = LagSampler(
            brokers.bootstrap,
            consumer_group,
            full,
            opts.partitions,
            ledger,
            group=GROUP,
            short=short,
        )
        say(f"lag sampled with {sampler.method()}")
        sampler.start()
        publisher = Publisher(brokers.bootstrap, GROUP, short, "A", opts.rate)
        publisher.start()
        victim: Optional[int] = None

        def supervise() -> None:
            for s in slots:
                if procs[s].check():
                    procs[s].start()

        def traffic(until: float) -> None:
            while time.monotonic() < until:
                supervise()
                time.sleep(0.1)

        plan: list[str] = ["steady"]
        half = len(restarts) // 2
        for i, s in enumerate(restarts):
            if i == half and opts.nodes > 1:
                plan.append("kill-node")
            plan.append(f"restart {s}")
        if opts.nodes > 1:
            plan.append("start-node")
        try:
            for name in plan:
                step = Step(name, time.monotonic())
                publisher.set_step(name)
                if name.startswith("restart "):
                    s = name.split()[1]
                    returns = len(procs[s].listen_return_times)
                    took = procs[s].terminate()
                    returned = procs[s].listen_return_times[returns:]
                    procs[s].start()
                    ready = procs[s].wait_ready(60)
                    step.action = (
                        (f"SIGTERM: listen() returned in {returned[0]:.2f} s, " if returned else "")
                        + (f"exited in {took:.2f} s" if took is not None else "HANG")
                        + f", listening again after {time.monotonic() - step.t_start:.1f} s"
                    )
                    if not ready:
                        step.action += " (NOT listening)"
                elif name == "kill-node":
                    leaders = brokers.leaders(full)
                    counts = {n.node_id: 0 for n in brokers.cluster.nodes if n.node_id != 1}
                    for leader in leaders.values():
                        if leader in counts:
                            counts[leader] += 1
                    most = max(counts.values())
                    victim = rng.choice(sorted(n for n, c in counts.items() if c == most))
                    brokers.kill(victim)
                    step.name = f"kill node {victim}"
                    step.action = f"SIGKILL node {victim} (leader of {most} partitions)"
                elif name == "start-node" and victim is not None:
                    took_n = brokers.start(victim)
                    step.name = f"start node {victim}"
                    step.action = f"node {victim} serving again after {took_n:.1f} s"
                say(f"step {step.name}: {step.action or 'steady traffic'}")
                traffic(step.t_start + opts.step)
                publisher.paused.set()
                step.t_pause = time.monotonic()
                wait_until(lambda: publisher.pending() == 0, 40, 0.1)
                step.t_zero = sampler.wait_zero(opts.drain)
                samples = sampler.since(step.t_start)
                step.max_lag = max((sum(s.lag.values()) for s in samples), default=0)
                step.max_in_flight = max((s.in_flight for s in samples), default=0)
                say(
                    f"step {step.name}: max lag {step.max_lag}, lag 0 "
                    + (
                        f"{step.t_zero:.1f} s after the pause"
                        if step.t_zero is not None
                        else "NEVER"
                    )
                )
                steps.append(step)
                publisher.paused.clear()
            publisher.paused.set()
            wait_until(lambda: publisher.pending() == 0, 40, 0.1)

            def all_in() -> bool:
                supervise()
                ledger.scan()
                return all(ledger.delivered(a.uid) for a in publisher.acked())

            wait_until(all_in, opts.drain, 0.25)
            time.sleep(1.0)
        finally:
            publisher.stop()
            sampler.stop()
            for s in slots:
                procs[s].terminate()
        ledger.scan()
        by_step: dict[str, list[Any]] = {}
        for a in publisher.sent.values():
            by_step.setdefault(a.step, []).append(a)
        for step in steps:
            plan_name = step.name
            if plan_name.startswith("kill node"):
                plan_name = "kill-node"
            elif plan_name.startswith("start node"):
                plan_name = "start-node"
            step.tally = tally(step.name, by_step.get(plan_name, []), ledger)
        total = tally("all", publisher.sent.values(), ledger)
        return Result(steps, list(sampler.samples), t0, incidents, total, seed, slots)


def print_table(r: Result) -> None:
    print(
        f"\nscale-out run: {len(r.listeners)} listeners, seed {r.seed}, {r.seconds:.0f} s; "
        f"{r.total.acked} alerts acknowledged, {r.total.delivered} delivered, "
        f"{r.total.lost} lost, {r.total.duplicated} duplicated"
    )
    head = (
        f"{'step':<16} {'sent':>5} {'delivered':>9} {'lost':>4} {'duplicated':>10} "
        f"{'in flight':>9} {'max lag':>7} {'lag 0 after':>11}"
    )
    print(head)
    print("-" * len(head))
    for s in r.steps:
        t = s.tally or Tally(s.name)
        zero = f"{s.t_zero:.1f} s" if s.t_zero is not None else "never"
        print(
            f"{s.name:<16} {t.acked:>5} {t.delivered:>9} {t.lost:>4} {t.duplicated:>10} "
            f"{s.max_in_flight:>9} {s.max_lag:>7} {zero:>11}"
        )
    print(
        "(sent: acknowledged by the broker; in flight: most alerts delivered but not yet "
        "committed; lag 0 after: from the pause of the stream)"
    )
    for s in r.steps:
        if s.action:
            print(f"  {s.name}: {s.action}")
    for s in r.steps:
        for a in (s.tally.lost_alerts if s.tally else [])[:10]:
            print(f"  LOST {a.uid} partition={a.partition} offset={a.offset} step={s.name}")
    print_incidents(r.incidents, time.time() - (time.monotonic() - r.t0))


def per_listener(r: Result) -> dict[str, list[tuple[float, float]]]:
    """Lag over time per listener: each partition counts for the listener that last read it."""
    out: dict[str, list[tuple[float, float]]] = {s: [] for s in r.listeners}
    previous: Optional[float] = None
    for smp in r.samples:
        if previous is not None and smp.t - previous > GAP:  # no sample: break the lines
            for points in out.values():
                points.append(((previous + smp.t) / 2 - r.t0, math.nan))
        previous = smp.t
        sums = dict.fromkeys(r.listeners, 0)
        for part, lag in smp.lag.items():
            owner = smp.owner.get(part)
            if owner in sums:
                sums[owner] += lag
        for slot, v in sums.items():
            out[slot].append((smp.t - r.t0, v))
    return out


def plot(r: Result, path: Path) -> None:
    """Draw the lag of each listener over time, with the steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=100)
    for slot, points in per_listener(r).items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], lw=1.2, label=slot)
    total: list[tuple[float, float]] = []
    for i, smp in enumerate(r.samples):
        if i and smp.t - r.samples[i - 1].t > GAP:
            total.append(((smp.t + r.samples[i - 1].t) / 2 - r.t0, math.nan))
        total.append((smp.t - r.t0, sum(smp.lag.values())))
    if total:
        ax.plot([p[0] for p in total], [p[1] for p in total], "k--", lw=0.8, label="group")
    top = max((v for _, v in total if not math.isnan(v)), default=1) or 1
    for s in r.steps:
        x = s.t_start - r.t0
        ax.axvline(x, color="grey", lw=0.6, ls=":")
        ax.text(x, top * 1.02, s.name, rotation=60, fontsize=7, va="bottom", ha="left")
        ax.axvspan(s.t_pause - r.t0, s.t_pause - r.t0 + (s.t_zero or 0), color="0.92")
    ax.set_xlabel("seconds since the listeners started (gaps: no lag sample could be taken)")
    ax.set_ylabel("lag (alerts not yet committed)")
    ax.set_ylim(0, top * 1.35)
    ax.legend(ncol=5, fontsize=7, loc="upper right")
    ax.set_title(
        f"{len(r.listeners)} listeners in one consumer group: lag per listener "
        "(shaded: stream paused until lag 0)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def to_json(r: Result) -> dict[str, Any]:
    return {
        "seed": r.seed,
        "seconds": r.seconds,
        "total": {k: v for k, v in asdict(r.total).items() if k != "lost_alerts"},
        "steps": [
            {
                "name": s.name,
                "action": s.action,
                "max_lag": s.max_lag,
                "max_in_flight": s.max_in_flight,
                "lag_zero_after": s.t_zero,
                **({k: v for k, v in asdict(s.tally).items() if k != "lost_alerts"}),
            }
            for s in r.steps
            if s.tally is not None
        ],
        "incidents": [i.what for i in r.incidents],
    }


def failed(r: Result) -> bool:
    """Any loss, a step after which the lag did not come back to 0, or a hang."""
    return bool(
        r.total.lost
        or any(s.t_zero is None for s in r.steps)
        or any(i.what.startswith("HANG") for i in r.incidents)
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Options()
    p.add_argument("--nodes", type=int, default=d.nodes, help="broker nodes (3)")
    p.add_argument("--partitions", type=int, default=d.partitions, help="(16)")
    p.add_argument("--listeners", type=int, default=d.listeners, help="(8)")
    p.add_argument("--restarts", type=int, default=None, help="listeners to restart (all)")
    p.add_argument("--rate", type=float, default=d.rate, help="alerts per second (40)")
    p.add_argument("--step", type=float, default=d.step, help="seconds of traffic a step (8)")
    p.add_argument("--drain", type=float, default=d.drain, help="at most this long to lag 0")
    p.add_argument("--heap", default=d.heap, help="Java heap per node (384m)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--plot", type=Path, default=None, help="write the lag plot (PNG) here")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="results as JSON")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here")
    p.add_argument("--keep", action="store_true", help="keep the files even on success")


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        nodes=args.nodes,
        partitions=args.partitions,
        listeners=args.listeners,
        restarts=args.restarts,
        rate=args.rate,
        step=args.step,
        drain=args.drain,
        heap=args.heap,
        seed=args.seed,
        plot=args.plot,
        json_out=args.json_out,
        workdir=args.workdir,
        keep=args.keep,
    )
