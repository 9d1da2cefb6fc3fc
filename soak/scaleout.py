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
is 0 on every partition (``--drain`` at most). Three things watch the group meanwhile:

* the harness's lag sampler, twice a second: the group's committed offset and end offset per
  partition (what ``igwn-alert lag`` computes, in-process; it never joins the group);
* the ``igwn-alert lag -c GROUP --warn W --critical C`` command itself, every
  ``--lag-every`` seconds, as a Nagios check would run it (its status line is printed
  whenever the status changes);
* every listener's own Prometheus endpoint (``client.serve_metrics``; each listener runs with
  ``--metrics-port 0``), scraped every second: its state, the partitions it holds, its lag
  (``igwn_alert_lag_total``) and the alerts it delivered (a line is printed whenever a
  listener's state changes).

At the end it prints, per step: alerts sent (acknowledged), delivered, lost, duplicated, the
most alerts in flight (delivered, not yet committed: what a failure can deliver twice), the
largest lag seen by each of the three watchers, the worst Nagios status and the time from
the pause to lag 0 (sampler and ``igwn-alert lag``); then the duplicates against their bound
(what was in flight at each hand-over, :func:`soak.observe.check_duplicates`). With
``--plot FILE`` it draws each listener's lag from its metrics and the group's lag from
``igwn-alert lag`` over time (matplotlib, from the ``bench`` extra). It exits 1 on any loss,
on more duplicates than were in flight, or if the lag did not come back to 0 after a step.
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
from .observe import (
    Duplicates,
    LagCheck,
    LagChecks,
    MetricsScraper,
    Scrape,
    check_duplicates,
    group_lag,
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
    warn: Optional[int] = None  # igwn-alert lag --warn (None: 2 s of traffic)
    critical: Optional[int] = None  # --critical (None: 10 s of traffic)
    lag_every: float = 3.0  # seconds between two igwn-alert lag runs
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
    cli_max_lag: Optional[int] = None  # the largest total igwn-alert lag printed in the step
    cli_worst: Optional[int] = None  # its worst exit status (0 OK ... 3 UNKNOWN)
    cli_zero: Optional[float] = None  # igwn-alert lag said 0, seconds after the pause
    metrics_max_lag: Optional[int] = None  # the listeners' igwn_alert_lag_total, summed


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
    checks: list[LagCheck] = field(default_factory=list)
    scrapes: list[Scrape] = field(default_factory=list)
    duplicates: Duplicates = field(default_factory=Duplicates)
    lag_command: str = ""


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
    if opts.json_out is not None:
        opts.json_out.write_text(json.dumps(to_json(result), indent=1) + "\n")
    if opts.plot is not None:
        plot(result, opts.plot)
        say(f"plot written to {opts.plot}")
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
        slots,
        workdir,
        brokers.bootstrap,
        GROUP,
        short,
        consumer_group,
        incidents,
        extra_args=lambda slot: ["--metrics-port", "0"],
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
        checks = LagChecks(
            brokers.bootstrap,
            GROUP,
            short,
            consumer_group,
            opts.warn if opts.warn is not None else max(1, round(2 * opts.rate)),
            opts.critical if opts.critical is not None else max(2, round(10 * opts.rate)),
            opts.lag_every,
        )
        say(f"every {opts.lag_every:g} s: {checks.shown()}")
        checks.start()
        scraper = MetricsScraper(procs)
        scraper.start()
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
                # igwn-alert lag must say so too: its next runs after the sampler's zero
                wait_until(
                    lambda paused=step.t_pause: any(c.total == 0 for c in checks.since(paused)),
                    3 * opts.lag_every + 10,
                    0.2,
                )
                observe_step(step, sampler.since(step.t_start), checks, scraper)
                say(
                    f"step {step.name}: max lag {step.max_lag}, lag 0 "
                    + (
                        f"{step.t_zero:.1f} s after the pause"
                        if step.t_zero is not None
                        else "NEVER"
                    )
                    + f"; metrics: {scraper.summary()}"
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
            checks.stop()
            scraper.stop()
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
        samples = list(sampler.samples)
        return Result(
            steps,
            samples,
            t0,
            incidents,
            total,
            seed,
            slots,
            checks=list(checks.checks),
            scrapes=list(scraper.scrapes),
            duplicates=check_duplicates(ledger, samples),
            lag_command=checks.shown(),
        )


def observe_step(
    step: Step, samples: list[LagSample], checks: LagChecks, scraper: MetricsScraper
) -> None:
    """Fill in what the three watchers saw from the step's start to now."""
    step.max_lag = max((sum(s.lag.values()) for s in samples), default=0)
    step.max_in_flight = max((s.in_flight for s in samples), default=0)
    ran = checks.since(step.t_start)
    totals = [c.total for c in ran if c.total is not None]
    step.cli_max_lag = max(totals) if totals else None
    step.cli_worst = max((c.code for c in ran), default=None)
    zero = [c.t for c in checks.since(step.t_pause) if c.total == 0]
    step.cli_zero = zero[0] - step.t_pause if zero else None
    summed = group_lag(scraper.since(step.t_start))
    step.metrics_max_lag = max((v for _, v in summed), default=None)


_STATUS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def _opt(v: Optional[float], fmt: str = "{:d}", none: str = "-") -> str:
    return fmt.format(v) if v is not None else none


def print_table(r: Result) -> None:
    print(
        f"\nscale-out run: {len(r.listeners)} listeners, seed {r.seed}, {r.seconds:.0f} s; "
        f"{r.total.acked} alerts acknowledged, {r.total.delivered} delivered, "
        f"{r.total.lost} lost, {r.total.duplicated} duplicated"
    )
    head = (
        f"{'step':<16} {'sent':>5} {'delivered':>9} {'lost':>4} {'dup':>4} {'in flight':>9} "
        f"{'max lag':>7} {'lag cmd':>7} {'status':>8} {'metrics':>7} "
        f"{'lag 0 after':>11} {'lag cmd 0':>9}"
    )
    print(head)
    print("-" * len(head))
    for s in r.steps:
        t = s.tally or Tally(s.name)
        worst = _STATUS.get(s.cli_worst, "-") if s.cli_worst is not None else "-"
        print(
            f"{s.name:<16} {t.acked:>5} {t.delivered:>9} {t.lost:>4} {t.duplicated:>4} "
            f"{s.max_in_flight:>9} {s.max_lag:>7} {_opt(s.cli_max_lag):>7} {worst:>8} "
            f"{_opt(s.metrics_max_lag):>7} {_opt(s.t_zero, '{:.1f} s', 'never'):>11} "
            f"{_opt(s.cli_zero, '{:.1f} s', 'never'):>9}"
        )
    print(
        "(sent: acknowledged by the broker; dup: delivered more than once; in flight: most "
        "alerts delivered but not yet committed; max lag: the group's committed lag, sampled "
        "twice a second; lag cmd / status: the largest total and worst status of "
        f"`{r.lag_command}`; metrics: the listeners' igwn_alert_lag_total summed; lag 0 "
        "after: from the pause of the stream)"
    )
    d = r.duplicates
    if d.handovers:
        print(
            f"duplicates: {r.total.duplicated}; at most {d.bound} allowed: what was in flight "
            f"(delivered, not committed) when the {d.handovers} replay(s) began"
        )
    else:
        print(
            f"duplicates: {r.total.duplicated} (no partition was read again from an earlier offset)"
        )
    if d.below_committed:
        print(f"{len(d.below_committed)} replay(s) began below the committed offset:")
    for line in d.below_committed[:10]:
        print(f"  {line}")
    for s in r.steps:
        if s.action:
            print(f"  {s.name}: {s.action}")
    for s in r.steps:
        for a in (s.tally.lost_alerts if s.tally else [])[:10]:
            print(f"  LOST {a.uid} partition={a.partition} offset={a.offset} step={s.name}")
    print_incidents(r.incidents, time.time() - (time.monotonic() - r.t0))


def _with_gaps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Break a line where no value could be taken for more than :data:`GAP` seconds."""
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(points):
        if i and x - points[i - 1][0] > GAP:
            out.append(((x + points[i - 1][0]) / 2, math.nan))
        out.append((x, y))
    return out


def per_listener(r: Result) -> dict[str, list[tuple[float, float]]]:
    """Each listener's own lag over time, as its ``/metrics`` said (``igwn_alert_lag_total``)."""
    out: dict[str, list[tuple[float, float]]] = {s: [] for s in r.listeners}
    for sc in r.scrapes:
        if sc.slot in out:
            out[sc.slot].append((sc.t - r.t0, float(sc.lag or 0)))
    return {slot: _with_gaps(points) for slot, points in out.items()}


def rates(r: Result) -> dict[str, list[tuple[float, float]]]:
    """Alerts per second each listener delivered, from ``igwn_alert_alerts_total``.

    A counter that went down is a new process (a restart): the line breaks there.
    """
    out: dict[str, list[tuple[float, float]]] = {s: [] for s in r.listeners}
    last: dict[str, Scrape] = {}
    for sc in r.scrapes:
        before = last.get(sc.slot)
        last[sc.slot] = sc
        if sc.slot not in out or before is None:
            continue
        if sc.delivered < before.delivered or sc.t - before.t > GAP:
            out[sc.slot].append((sc.t - r.t0, math.nan))
            continue
        rate = (sc.delivered - before.delivered) / max(1e-3, sc.t - before.t)
        out[sc.slot].append((sc.t - r.t0, rate))
    return out


def plot(r: Result, path: Path) -> None:
    """Per listener (its metrics) and for the group (``igwn-alert lag``), over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, own_ax, group_ax) = plt.subplots(
        3, 1, figsize=(10, 9), dpi=100, sharex=True, height_ratios=[1.2, 0.8, 1.2]
    )
    for slot, points in rates(r).items():
        rate_ax.plot([p[0] for p in points], [p[1] for p in points], lw=1.0, label=slot)
    for slot, points in per_listener(r).items():
        own_ax.plot([p[0] for p in points], [p[1] for p in points], lw=1.0, label=slot)
    sampled = _with_gaps([(smp.t - r.t0, float(sum(smp.lag.values()))) for smp in r.samples])
    group_ax.plot(
        [p[0] for p in sampled],
        [p[1] for p in sampled],
        "k-",
        lw=0.8,
        label="committed lag (harness sampler, twice a second)",
    )
    colours = {0: "tab:green", 1: "tab:orange", 2: "tab:red"}
    for code, name in _STATUS.items():
        ran = [c for c in r.checks if c.code == code]
        if not ran:
            continue
        if code == 3:  # no total: it could not tell (a partition without a leader)
            group_ax.plot(
                [c.t - r.t0 for c in ran],
                [0] * len(ran),
                "x",
                ms=7,
                color="tab:purple",
                label="igwn-alert lag: UNKNOWN",
            )
            continue
        group_ax.plot(
            [c.t - r.t0 for c in ran],
            [c.total for c in ran],
            "o",
            ms=4,
            color=colours[code],
            label=f"igwn-alert lag: {name}",
        )
    for ax in (rate_ax, own_ax, group_ax):
        for s in r.steps:
            ax.axvline(s.t_start - r.t0, color="grey", lw=0.6, ls=":")
            ax.axvspan(s.t_pause - r.t0, s.t_pause - r.t0 + (s.t_zero or 0), color="0.92")
        ax.set_ylim(bottom=0)
    for s in r.steps:
        rate_ax.annotate(
            s.name,
            (s.t_start - r.t0, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=60,
            fontsize=7,
            va="bottom",
        )
    rate_ax.set_ylabel("alerts/s delivered\n(igwn_alert_alerts_total)")
    rate_ax.legend(ncol=8, fontsize=7, loc="upper right")
    own_ax.set_ylabel("listener's own lag\n(igwn_alert_lag_total)")
    group_ax.set_ylabel("consumer group's lag\n(committed)")
    group_ax.legend(fontsize=7, loc="upper right")
    group_ax.set_xlabel("seconds since the listeners started (shaded: stream paused until lag 0)")
    fig.suptitle(
        f"{len(r.listeners)} listeners in one consumer group, as their /metrics and "
        "igwn-alert lag showed it",
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
                "lag_command_max": s.cli_max_lag,
                "lag_command_worst": _STATUS.get(s.cli_worst) if s.cli_worst is not None else None,
                "lag_command_zero_after": s.cli_zero,
                "metrics_max_lag": s.metrics_max_lag,
                **({k: v for k, v in asdict(s.tally).items() if k != "lost_alerts"}),
            }
            for s in r.steps
            if s.tally is not None
        ],
        "duplicates": {
            "count": r.total.duplicated,
            "bound": r.duplicates.bound,
            "handovers": r.duplicates.handovers,
            "below_committed": r.duplicates.below_committed,
        },
        "lag_command": r.lag_command,
        "incidents": [i.what for i in r.incidents],
    }


def failed(r: Result) -> bool:
    """Any loss, more duplicates than in flight, lag not back to 0 after a step, or a hang."""
    return bool(
        r.total.lost
        or r.total.duplicated > r.duplicates.bound
        or r.duplicates.below_committed
        or any(s.t_zero is None or s.cli_zero is None for s in r.steps)
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
    p.add_argument("--warn", type=int, default=None, help="igwn-alert lag --warn (2 s of alerts)")
    p.add_argument(
        "--critical", type=int, default=None, help="igwn-alert lag --critical (10 s of alerts)"
    )
    p.add_argument(
        "--lag-every", type=float, default=d.lag_every, help="seconds between igwn-alert lag runs"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--plot", type=Path, default=None, help="write the lag plot (PNG) here")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="results as JSON")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here")
    p.add_argument("--keep", action="store_true", help="keep the files even on success")


def options_from(args: argparse.Namespace) -> Options:
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 - checked before a run of minutes, not after it
        except ImportError:
            raise SystemExit(
                "--plot needs matplotlib: pip install -e '.[bench]' (or leave out --plot)"
            ) from None
    return Options(
        nodes=args.nodes,
        partitions=args.partitions,
        listeners=args.listeners,
        restarts=args.restarts,
        rate=args.rate,
        step=args.step,
        drain=args.drain,
        heap=args.heap,
        warn=args.warn,
        critical=args.critical,
        lag_every=args.lag_every,
        seed=args.seed,
        plot=args.plot,
        json_out=args.json_out,
        workdir=args.workdir,
        keep=args.keep,
    )
