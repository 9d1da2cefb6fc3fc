"""The randomized fault soak (issue 9): no acknowledged alert lost, whatever happens.

``python -m soak faults [--budget 300] [--seed N]`` (or ``scripts/soak faults``) starts a
private single-node Kafka broker and runs random *schedules* until the budget is spent.
Each schedule has its own topic and consumer group, 2-5 listener processes
(``soak/listener.py``) in that group, a publisher with a steady stream of uniquely numbered
alerts, and a seeded random sequence of faults:

* ``broker-kill``: SIGKILL the broker, start it again on the same ports;
* ``listener-kill``: SIGKILL a listener process, start it again;
* ``join`` / ``leave``: a member joins the group, or leaves it (SIGTERM, timed);
* ``burst``: publish a few hundred alerts at once;
* ``raise-fatal`` / ``raise-nonfatal`` / ``raise-plain``: the next alerts make their
  callback raise (once per process): a fatal Kafka error (listeners run with
  ``retry_on_fatal=True``), a non-fatal one, a plain exception (it leaves ``listen()``
  and the process listens again; once the client has ``listen(..., on_failure=...)``, the
  odd-numbered listeners pass a recording skip policy, and an alert given to it counts as
  *skipped*, not lost).

When the faults stop, every member comes back, the stream pauses and the harness waits
until every acknowledged alert was delivered (or ``--drain`` seconds passed). It prints
sent / delivered / lost / duplicated per schedule; it exits 1 on any loss (an acknowledged
alert no callback returned for) and on any listener that did not stop within 10 s of
SIGTERM. Duplicates are allowed (at-least-once) and counted.

Schedule *i* has seed ``seed + i``; ``--seed S --schedules 1`` replays the schedule of
seed S (the same fault sequence; timings differ).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .harness import (
    Brokers,
    Incident,
    Ledger,
    Publisher,
    Tally,
    group_of,
    print_incidents,
    say,
    tally,
    wait_until,
)

GROUP = "soak"
#: Fault kinds and how often each is drawn.
WEIGHTS = {
    "broker-kill": 1.0,
    "listener-kill": 3.0,
    "join": 1.5,
    "leave": 1.5,
    "burst": 2.0,
    "raise-fatal": 1.0,
    "raise-nonfatal": 1.0,
    "raise-plain": 1.0,
}


@dataclass
class Options:
    """Sizes of a soak run (the command-line options)."""

    budget: float = 300.0
    seed: Optional[int] = None
    schedules: Optional[int] = None
    events: int = 12
    partitions: int = 4
    members: int = 3
    min_members: int = 2
    max_members: int = 5
    rate: float = 20.0
    drain: float = 60.0
    heap: str = "384m"
    workdir: Optional[Path] = None
    keep: bool = False
    kinds: Optional[list[str]] = None  # None: every kind of WEIGHTS


@dataclass
class Event:
    gap: float  # seconds after the previous event
    kind: str
    size: int = 0  # burst size / number of raising alerts


@dataclass
class ScheduleResult:
    index: int
    seed: int
    events: list[str]
    tally: Tally
    incidents: list[Incident]
    seconds: float
    stop_times: list[float] = field(default_factory=list)
    skip_policy: bool = False
    return_times: list[float] = field(default_factory=list)


def make_schedule(seed: int, events: int, kinds: Optional[Sequence[str]] = None) -> list[Event]:
    """The fault sequence of a seed (what ``--seed`` replays).

    Every kind of fault comes once, in a random order (the first ``events`` of them if
    fewer are asked for), then random draws by :data:`WEIGHTS` fill up to ``events``.
    """
    rng = random.Random(seed)
    kinds = list(WEIGHTS if kinds is None else kinds)
    unknown = sorted(set(kinds) - set(WEIGHTS))
    if unknown or not kinds:
        raise ValueError(f"unknown fault kinds {unknown}; choose among {sorted(WEIGHTS)}")
    weights = [WEIGHTS[k] for k in kinds]
    first = rng.sample(kinds, len(kinds))
    out = []
    for n in range(events):
        kind = first[n] if n < len(first) else rng.choices(kinds, weights)[0]
        size = rng.randint(200, 800) if kind == "burst" else rng.randint(1, 4)
        out.append(Event(round(rng.uniform(1.0, 4.0), 2), kind, size))
    return out


def policy_of(slot: str) -> list[str]:
    """Odd slots pass a recording ``on_failure`` policy (if the client has one), even slots
    keep the default (a plain exception leaves ``listen()``), so both paths are soaked."""
    return ["--on-failure", "record" if int(slot[1:]) % 2 else "none"]


def run_schedule(
    brokers: Brokers, index: int, seed: int, opts: Options, workdir: Path
) -> ScheduleResult:
    """Run one schedule on ``brokers``; return its counts."""
    from .listener import listen_has_on_failure

    schedule = make_schedule(seed, opts.events, opts.kinds)
    rng = random.Random(seed * 7919 + 1)  # run-time choices (which member, how long)
    short = f"s{seed}"
    brokers.create_topic(f"{GROUP}.{short}", opts.partitions, 1)
    consumer_group = f"soak-{seed}"
    incidents: list[Incident] = []
    ledger = Ledger(workdir)
    slots = [f"L{i + 1}" for i in range(opts.max_members)]
    done: list[str] = []
    t0 = time.monotonic()
    wall0 = time.time()
    with group_of(
        slots,
        workdir,
        brokers.bootstrap,
        GROUP,
        short,
        consumer_group,
        incidents,
        extra_args=policy_of,
    ) as procs:
        wanted = set(slots[: opts.members])
        for s in sorted(wanted):
            procs[s].start()
        for s in sorted(wanted):
            procs[s].wait_ready()
        publisher = Publisher(brokers.bootstrap, GROUP, short, f"{seed}", opts.rate)
        publisher.start()

        def supervise() -> None:
            for s in sorted(wanted):
                if procs[s].check() or not procs[s].alive():
                    procs[s].start()

        def pause(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                supervise()
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))

        def note(text: str) -> None:
            line = f"t={time.monotonic() - t0:6.1f}s {text}"
            done.append(line)
            say(f"schedule {index} (seed {seed}): {line}")

        try:
            for n, ev in enumerate(schedule):
                pause(ev.gap)
                publisher.set_step(f"e{n}")
                alive = sorted(s for s in wanted if procs[s].alive())
                if ev.kind == "broker-kill":
                    brokers.kill(1)
                    down = rng.uniform(0.5, 3.0)
                    pause(down)
                    took = brokers.start(1)
                    note(f"broker SIGKILL, down {down:.1f} s, serving again after {took:.1f} s")
                elif ev.kind == "listener-kill" and alive:
                    victim = rng.choice(alive)
                    wanted.discard(victim)  # not restarted by supervise() meanwhile
                    procs[victim].kill()
                    back = rng.uniform(0.0, 2.0)
                    note(f"{victim} SIGKILL (back in {back:.1f} s)")
                    pause(back)
                    wanted.add(victim)
                    procs[victim].start()
                elif ev.kind == "join" and len(wanted) < opts.max_members:
                    new = next(s for s in slots if s not in wanted)
                    wanted.add(new)
                    procs[new].start()
                    note(f"{new} joins ({len(wanted)} members)")
                elif ev.kind == "leave" and len(wanted) > opts.min_members:
                    leaver = rng.choice(sorted(wanted))
                    wanted.discard(leaver)
                    took_s = procs[leaver].terminate()
                    stopped = "killed after a hang" if took_s is None else f"in {took_s:.2f} s"
                    note(f"{leaver} leaves (SIGTERM, exited {stopped}; {len(wanted)} members)")
                elif ev.kind == "burst":
                    publisher.burst(ev.size)
                    note(f"burst of {ev.size} alerts")
                elif ev.kind.startswith("raise-"):
                    kind = ev.kind.split("-", 1)[1]
                    publisher.raise_in([kind] * ev.size)
                    note(f"next {ev.size} alert(s) make the callback raise ({kind})")
                else:
                    note(f"{ev.kind}: nothing to do ({len(wanted)} members)")
            # the faults stop: everything comes back, the stream pauses, then drain
            publisher.set_step("drain")
            if not brokers.running(1):
                brokers.start(1)
            supervise()
            time.sleep(1.0)
            publisher.paused.set()
            wait_until(lambda: publisher.pending() == 0, 45, 0.2)
            acked = publisher.acked()
            note(
                f"faults over; {len(publisher.sent)} sent, {len(acked)} acknowledged; "
                "waiting for every acknowledged alert"
            )

            def all_in() -> bool:
                supervise()
                ledger.scan()
                return all(
                    ledger.delivered(s.uid) or ledger.skipped(s.uid) for s in publisher.acked()
                )

            drained = wait_until(all_in, opts.drain, 0.25)
            note("every acknowledged alert delivered" if drained else "drain deadline reached")
            time.sleep(1.0)  # a last chance for duplicates to show
        finally:
            publisher.stop()
            for s in sorted(wanted):
                procs[s].terminate()
        ledger.scan()
        stop_times = [t for p in procs.values() for t in p.stop_times]
        return_times = [t for p in procs.values() for t in p.listen_return_times]
        result = tally(f"schedule {index}", publisher.sent.values(), ledger)
        for e in publisher.errors[:5]:
            done.append(f"publisher: {e}")
        for s in slots:
            for line in procs[s].listen_raised():
                if "SoakPlainError" not in line:
                    done.append(f"{s}: listen() {line}")
    res = ScheduleResult(
        index,
        seed,
        done,
        result,
        incidents,
        time.monotonic() - t0,
        stop_times,
        listen_has_on_failure(),
        return_times,
    )
    report_schedule(res, ledger, wall0)
    return res


def report_schedule(res: ScheduleResult, ledger: Ledger, wall0: float) -> None:
    t = res.tally
    print(
        f"\nschedule {res.index} seed={res.seed} ({res.seconds:.0f} s): sent={t.sent} "
        f"acked={t.acked} delivered={t.delivered} lost={t.lost} duplicated={t.duplicated} "
        f"skipped={t.skipped} raised-on={t.raised}"
        + (f" (skipped by kind: {dict(t.skipped_kinds)})" if t.skipped else "")
    )
    for line in res.events:
        print(f"  {line}")
    for s in t.lost_alerts[:10]:
        raised = ",".join(ledger.raised.get(s.uid, [])) or "-"
        print(
            f"  LOST {s.uid} partition={s.partition} offset={s.offset} during={s.step} "
            f"fault={s.fault or '-'} raised-on={raised}"
        )
        for line in ledger.log_lines_near(s.uid)[:4]:
            print(f"       {line}")
    if t.lost > 10:
        print(f"  ... and {t.lost - 10} more lost")
    print_incidents(res.incidents, wall0)


def run(opts: Options) -> list[ScheduleResult]:
    """Run the soak: start the broker, run schedules within the budget, stop everything."""
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 10**6)
    from .listener import listen_has_on_failure

    say(f"fault soak: seed {seed} (replay one schedule: --seed S --schedules 1)")
    say(
        "failure policy: odd listeners pass a recording on_failure policy, even ones the default"
        if listen_has_on_failure()
        else "failure policy: this client's listen() has no on_failure= (hook unused)"
    )
    t_begin = time.monotonic()
    base = opts.workdir or Path(tempfile.mkdtemp(prefix="igwn-alert-soak-"))
    base.mkdir(parents=True, exist_ok=True)
    results: list[ScheduleResult] = []
    brokers = Brokers(1, base / "kafka", opts.heap)
    try:
        index = 0
        estimate = opts.events * 3.5 + 30.0
        while opts.schedules is None or index < opts.schedules:
            left = opts.budget - (time.monotonic() - t_begin)
            if results and left < estimate:
                break
            index += 1
            workdir = base / f"schedule-{index}"
            workdir.mkdir()
            res = run_schedule(brokers, index, seed + index - 1, opts, workdir)
            results.append(res)
            estimate = max(estimate, res.seconds)
    finally:
        brokers.close()
    print_summary(results, time.monotonic() - t_begin)
    if not opts.keep and not any(r.tally.lost or r.incidents for r in results):
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"records, listener logs and broker log kept in {base}")
    return results


def print_summary(results: list[ScheduleResult], seconds: float) -> None:
    print(f"\nfault soak: {len(results)} schedule(s) in {seconds:.0f} s")
    print(
        f"{'schedule':>8} {'seed':>8} {'sent':>6} {'acked':>6} {'delivered':>9} {'lost':>5} "
        f"{'dup':>5} {'skipped':>7} {'raised':>6} {'hangs':>5} {'crashes':>7} {'slow stops':>10}"
    )
    for r in results:
        t = r.tally
        hangs = sum(1 for i in r.incidents if i.what.startswith("HANG"))
        slow = sum(1 for i in r.incidents if i.what.startswith("SLOW STOP"))
        print(
            f"{r.index:>8} {r.seed:>8} {t.sent:>6} {t.acked:>6} {t.delivered:>9} {t.lost:>5} "
            f"{t.duplicated:>5} {t.skipped:>7} {t.raised:>6} {hangs:>5} "
            f"{len(r.incidents) - hangs - slow:>7} {slow:>10}"
        )
    stops = [s for r in results for s in r.stop_times]
    if stops:
        print(f"listener exit after SIGTERM: max {max(stops):.2f} s over {len(stops)} stops")
    returns = [s for r in results for s in r.return_times]
    if returns:
        print(
            f"listen() return after SIGTERM (client.stop()): max {max(returns):.2f} s, "
            f"over 0.5 s: {sum(1 for s in returns if s > 0.5)} of {len(returns)}"
        )


def failed(results: list[ScheduleResult]) -> bool:
    """Any loss, or a listener that did not stop after SIGTERM."""
    return any(r.tally.lost or any(i.what.startswith("HANG") for i in r.incidents) for r in results)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Options()
    p.add_argument("--budget", type=float, default=d.budget, help="seconds in all (300)")
    p.add_argument("--seed", type=int, default=None, help="first schedule's seed (random)")
    p.add_argument("--schedules", type=int, default=None, help="at most this many schedules")
    p.add_argument("--events", type=int, default=d.events, help="faults per schedule (12)")
    p.add_argument("--partitions", type=int, default=d.partitions)
    p.add_argument("--members", type=int, default=d.members, help="listeners at start (3)")
    p.add_argument("--rate", type=float, default=d.rate, help="steady alerts per second (20)")
    p.add_argument("--drain", type=float, default=d.drain, help="seconds to wait at the end")
    p.add_argument("--heap", default=d.heap, help="broker Java heap (384m)")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here")
    p.add_argument("--keep", action="store_true", help="keep the files even on success")
    p.add_argument(
        "--without",
        default="",
        help=f"comma-separated fault kinds to leave out (of {', '.join(WEIGHTS)})",
    )


def options_from(args: argparse.Namespace) -> Options:
    left_out = {k for k in args.without.split(",") if k}
    if left_out - set(WEIGHTS):
        raise SystemExit(
            f"--without: unknown fault kind(s) {sorted(left_out - set(WEIGHTS))}; "
            f"choose among {', '.join(WEIGHTS)}"
        )
    return Options(
        budget=args.budget,
        seed=args.seed,
        schedules=args.schedules,
        events=args.events,
        partitions=args.partitions,
        members=args.members,
        rate=args.rate,
        drain=args.drain,
        heap=args.heap,
        workdir=args.workdir,
        keep=args.keep,
        kinds=(
            [k for k in WEIGHTS if k not in set(args.without.split(","))] if args.without else None
        ),
    )
