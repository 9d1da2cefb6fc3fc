#!/usr/bin/env python
"""Benchmark this igwn-alert against the reference igwn-alert 0.7.0 and bare confluent-kafka.

Usage::

    python bench/run.py [--quick] [--out bench/results] [--bootstrap HOST:PORT]

Everything runs against the project's real Apache Kafka broker (``scripts/kafka up`` is run
if no ``--bootstrap`` is given; its plaintext listener is used). Three candidates are
measured side by side in one run, each in its own subprocess (``bench/worker.py``):

* ``ours``: this project, imported from ``src/`` with the interpreter running this script;
* ``reference``: igwn-alert 0.7.0 from PyPI, installed by this script into
  ``.cache/bench-reference-venv``;
* ``plain``: bare confluent-kafka loops (produce; consume + ``json.loads``).

The alerts are copies of ``bench/alert.json`` (a GraceDB superevent ``new`` alert, about
1.2 kB of JSON text) sent as a str, as GraceDB does. Results: a table on stdout,
``<out>/results.json`` and ``<out>/latency.png``. Numbers are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "worker.py"
ALERT = HERE / "alert.json"
REFERENCE_VENV = ROOT / ".cache" / "bench-reference-venv"
REFERENCE_SPEC = ["igwn-alert==0.7.0", "six"]  # hop-client 0.13 imports six undeclared
REFERENCE_VERSION = "0.7.0"

CANDIDATES = ("ours", "reference", "plain")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- sizes ----------------------------------------------------------------------------------

FULL = {
    "latency_n": 500,
    "latency_interval": 0.010,
    "backlog_n": 100_000,
    "reference_backlog_n": 100_000,
    "publish_n": 100_000,
    "oneshot_n": 500,
    "reference_oneshot_n": 100,
    "stop_trials": 20,
    "reference_stop_trials": 10,
    "first_trials": 10,
    "delay_trials": 3,
    "startup_runs": 15,
    "first_publish_runs": 15,
    "memory_n": 1_000_000,
}
QUICK = {
    "latency_n": 150,
    "latency_interval": 0.010,
    "backlog_n": 20_000,
    "reference_backlog_n": 10_000,
    "publish_n": 20_000,
    "oneshot_n": 100,
    "reference_oneshot_n": 20,
    "stop_trials": 5,
    "reference_stop_trials": 5,
    "first_trials": 3,
    "delay_trials": 2,
    "startup_runs": 5,
    "first_publish_runs": 15,
    "memory_n": 100_000,
}

# -- set-up ---------------------------------------------------------------------------------


def ensure_bench_deps() -> None:
    """matplotlib (and psutil) for the bench's own interpreter: the project's bench extra."""
    missing = []
    for mod, spec in (("matplotlib", "matplotlib>=3.5"), ("psutil", "psutil>=5")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(spec)
    if missing:
        log(f"installing {', '.join(missing)} into {sys.executable}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def ensure_broker(bootstrap: Optional[str]) -> dict[str, Any]:
    if bootstrap:
        return {"plaintext": bootstrap}
    env = dict(os.environ)
    env.setdefault("KAFKA_PYTHON", sys.executable)
    log("scripts/kafka up")
    out = subprocess.run(
        [str(ROOT / "scripts" / "kafka"), "up"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out.strip().splitlines()[-1])
    return info


def reference_python() -> str:
    """The reference's interpreter, creating its venv on first use."""
    py = REFERENCE_VENV / "bin" / "python"
    probe = "import igwn_alert; print(igwn_alert.__version__)"
    if py.exists():
        res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip() == REFERENCE_VERSION:
            return str(py)
        log("reference venv is stale; recreating it")
        shutil.rmtree(REFERENCE_VENV)
    log(f"creating {REFERENCE_VENV} with {' '.join(REFERENCE_SPEC)}")
    subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REFERENCE_SPEC],
        check=True,
    )
    res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True)
    if res.stdout.strip() != REFERENCE_VERSION:
        raise SystemExit(f"reference venv has igwn_alert {res.stdout.strip()}, not 0.7.0")
    return str(py)


OURS_SRC = ROOT / "src"


def candidate_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if name == "ours":
        env["PYTHONPATH"] = str(OURS_SRC)
    env["PYTHONHASHSEED"] = "0"
    return env


def interpreters(ref_py: str) -> dict[str, str]:
    return {"ours": sys.executable, "reference": ref_py, "plain": sys.executable}


def check_ours() -> dict[str, str]:
    code = (
        "import igwn_alert, json; print(json.dumps([igwn_alert.__version__, igwn_alert.__file__]))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=candidate_env("ours"), capture_output=True, text=True
    )
    if res.returncode != 0:
        raise SystemExit(
            "cannot import this project from src/ with this interpreter; install its "
            f"dependencies first (pip install -e '.[bench]'):\n{res.stderr}"
        )
    version, path = json.loads(res.stdout)
    if not path.startswith(str(OURS_SRC)):
        raise SystemExit(f"'ours' resolved to {path}, not {OURS_SRC}")
    return {"version": version, "path": path}


class Topics:
    """The run's topics: ``<group>.<name>``, created up front, deleted at the end."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.group = f"igwnbench-{uuid.uuid4().hex[:6]}"
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.names: list[str] = []

    def full(self, name: str) -> str:
        return f"{self.group}.{name}"

    def create(self, names: list[str]) -> None:
        from confluent_kafka.admin import NewTopic

        futures = self.admin.create_topics(
            [NewTopic(self.full(n), num_partitions=1, replication_factor=1) for n in names],
            operation_timeout=30,
        )
        for f in futures.values():
            f.result()
        self.names.extend(names)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until every topic has a leader
            md = self.admin.list_topics(timeout=10)
            if all(
                self.full(n) in md.topics
                and md.topics[self.full(n)].error is None
                and all(p.leader >= 0 for p in md.topics[self.full(n)].partitions.values())
                for n in names
            ):
                return
            time.sleep(0.2)

    def close(self) -> None:
        """Drop the admin client (so it stops logging once its broker is gone)."""
        self.admin = None
        gc.collect()

    def delete(self) -> None:
        if not self.names:
            return
        futures = self.admin.delete_topics([self.full(n) for n in self.names], operation_timeout=30)
        for f in futures.values():
            try:
                f.result()
            except Exception as exc:  # noqa: BLE001 - best effort clean-up
                log(f"could not delete a topic: {exc}")


# -- running workers ------------------------------------------------------------------------


class Runner:
    def __init__(self, bootstrap: str, topics: Topics, pythons: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.pythons = pythons

    def run(
        self,
        cand: str,
        scenario: str,
        timeout: float = 900,
        env: Optional[dict[str, str]] = None,
        **params: Any,
    ) -> Any:
        p = {
            "bootstrap": self.bootstrap,
            "group": self.topics.group,
            "alert_path": str(ALERT),
            **params,
        }
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                [self.pythons[cand], str(WORKER), cand, scenario, json.dumps(p)],
                env={**candidate_env(cand), **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            log(f"{cand} {scenario}: timed out after {timeout:.0f} s")
            return {"error": f"timed out after {timeout:.0f} s"}
        dt = time.monotonic() - t0
        if res.returncode != 0:
            tail = res.stderr.strip().splitlines()[-5:]
            log(f"{cand} {scenario}: FAILED ({res.returncode})\n  " + "\n  ".join(tail))
            return {"error": "\n".join(tail)}
        out = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"{cand} {scenario} {_brief(out)} ({dt:.1f} s)")
        return out

    def produce(self, topic: str, n: int) -> Any:
        return self.run("plain", "produce", full_topic=self.topics.full(topic), n=n)


def _brief(out: dict[str, Any]) -> str:
    for key in ("rate_per_s", "p50_ms", "growth_mb", "first_publish_ms"):
        if key in out and isinstance(out[key], (int, float)):
            return f"{key}={out[key]:.4g}"
    return ""


def time_startup(python: str, env: dict[str, str], code: str, runs: int) -> dict[str, Any]:
    """Median wall time of ``python -c code`` (a fresh interpreter each run)."""
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", code], env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return {"runs": runs, "median_ms": statistics.median(walls) * 1000, "min_ms": min(walls) * 1000}


def time_import(python: str, env: dict[str, str], module: str, runs: int) -> dict[str, Any]:
    """Median in-process import time of ``module`` (a fresh interpreter each run)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    vals = []
    for _ in range(runs):
        res = subprocess.run(
            [python, "-c", code], env=env, check=True, capture_output=True, text=True
        )
        vals.append(float(res.stdout.strip()))
    return {"runs": runs, "median_ms": statistics.median(vals) * 1000, "min_ms": min(vals) * 1000}


CLI = (
    "import sys; sys.argv = ['igwn-alert', '-V']; from igwn_alert.tool import main; "
    "sys.exit(main())"
)


def time_startups(pythons: dict[str, str], runs: int) -> dict[str, Any]:
    """(g), the candidates interleaved run by run, so that a busy spell hits them alike."""
    jobs = {
        "ours": (("import", "igwn_alert"), ("cli_version", CLI)),
        "reference": (("import", "igwn_alert"), ("cli_version", CLI)),
        "plain": (("import", "confluent_kafka"), ("cli_version", "pass")),
    }
    samples: dict[str, dict[str, list[float]]] = {
        c: {"import": [], "cli_version": []} for c in jobs
    }
    for _ in range(runs):
        for c, tasks in jobs.items():
            env = candidate_env(c)
            for kind, what in tasks:
                if kind == "import":
                    value = time_import(pythons[c], env, what, 1)["median_ms"]
                else:
                    value = time_startup(pythons[c], env, what, 1)["median_ms"]
                samples[c][kind].append(value)
    return {
        c: {
            k: {"runs": runs, "median_ms": statistics.median(v), "min_ms": min(v)}
            for k, v in kinds.items()
        }
        for c, kinds in samples.items()
    }


# -- the run --------------------------------------------------------------------------------


def measure(
    runner: Runner,
    topics: Topics,
    size: dict[str, Any],
    pythons: dict[str, str],
    only: Optional[set[str]],
    delay_broker: bool = True,
) -> dict[str, Any]:
    res: dict[str, Any] = {}

    def want(key: str) -> bool:
        return only is None or key in only

    names: list[str] = []
    for c in CANDIDATES:
        names += [
            f"lat-{c}",
            f"live-{c}",
            f"livewarm-{c}",
            f"liveg-{c}",
            f"livegwarm-{c}",
            f"pub-{c}",
            f"one-{c}",
            f"stop-{c}",
            f"first-{c}",
            f"firstpub-{c}",
        ]
    names += ["replay", "memory", "first-kip848"]
    topics.create(names)

    if want("a"):
        log("(a) latency: publish_to_topic + flush_by_topic -> callback")
        res["latency"] = {
            c: runner.run(
                c,
                "latency",
                topic=f"lat-{c}",
                n=size["latency_n"],
                interval=size["latency_interval"],
            )
            for c in CANDIDATES
        }
    if want("b"):
        log("(b) listen throughput")
        live: dict[str, Any] = {}
        for c in CANDIDATES:
            n = size["reference_backlog_n"] if c == "reference" else size["backlog_n"]
            live[c] = runner.run(
                c, "listen_live", topic=f"live-{c}", warm_topic=f"livewarm-{c}", n=n
            )
        liveg: dict[str, Any] = {}
        for c in CANDIDATES:
            n = size["reference_backlog_n"] if c == "reference" else size["backlog_n"]
            liveg[c] = runner.run(
                c,
                "listen_live",
                topic=f"liveg-{c}",
                warm_topic=f"livegwarm-{c}",
                n=n,
                consumer_group=True,
            )
        runner.produce("replay", size["backlog_n"])
        replay = {
            "ours": runner.run("ours", "listen_replay", topic="replay", n=size["backlog_n"]),
            "ours_group": runner.run(
                "ours", "listen_replay", topic="replay", n=size["backlog_n"], consumer_group=True
            ),
            "plain": runner.run("plain", "listen_replay", topic="replay", n=size["backlog_n"]),
            "plain_librdkafka_defaults": runner.run(
                "plain",
                "listen_replay",
                topic="replay",
                n=size["backlog_n"],
                env={"PLAIN_DEFAULTS": "1"},
            ),
        }
        res["listen_live"] = live
        res["listen_live_group"] = liveg
        res["listen_replay"] = replay
    if want("c"):
        log("(c) publish_to_topic throughput")
        res["publish_throughput"] = {
            c: runner.run(c, "publish_throughput", topic=f"pub-{c}", n=size["publish_n"])
            for c in CANDIDATES
        }
    if want("d"):
        log("(d) one-shot publish()")
        res["publish_oneshot"] = {
            c: runner.run(
                c,
                "publish_oneshot",
                topic=f"one-{c}",
                n=size["reference_oneshot_n"] if c == "reference" else size["oneshot_n"],
            )
            for c in CANDIDATES
        }
    if want("e"):
        log("(e) stop() -> listen() returns")
        res["stop"] = {
            c: runner.run(
                c,
                "stop",
                topic=f"stop-{c}",
                trials=size["reference_stop_trials"] if c == "reference" else size["stop_trials"],
            )
            for c in ("ours", "reference")
        }
    if want("f"):
        log("(f) listen() -> first alert")
        first: dict[str, Any] = {}
        for group in (False, True):
            key = "group" if group else "no_group"
            first[key] = {
                c: runner.run(
                    c,
                    "first_alert",
                    topic=f"first-{c}",
                    trials=size["first_trials"],
                    period=0.005,
                    consumer_group=group,
                )
                for c in CANDIDATES
            }
        first["group_kip848"] = {
            c: runner.run(
                c,
                "first_alert",
                topic="first-kip848",
                trials=size["first_trials"],
                period=0.005,
                consumer_group=True,
                group_protocol="consumer",
            )
            for c in ("ours", "plain")
        }
        res["first_alert"] = first
    if want("g"):
        log("(g) import and command-line start-up")
        startup = time_startups(pythons, size["startup_runs"])
        for c, v in startup.items():
            log(
                f"{c} import {v['import']['median_ms']:.0f} ms, "
                f"-V {v['cli_version']['median_ms']:.0f} ms"
            )
        res["startup"] = startup
    if want("i"):
        runs = size["first_publish_runs"]
        log(f"(i) first publish() of a fresh process, {runs} processes per candidate")
        res["first_publish"] = time_first_publish(runner, runs)
    if want("f") and delay_broker:
        res["first_alert_production_delay"] = measure_delay_broker(pythons, size)
    if want("h"):
        log(f"(h) memory over {size['memory_n']:,} alerts")
        runner.produce("memory", size["memory_n"])
        marks = [10_000, 100_000, 250_000, 500_000, 750_000, 1_000_000]
        res["memory"] = {
            c: runner.run(
                c, "memory", topic="memory", n=size["memory_n"], marks=marks, timeout=1200
            )
            for c in ("ours", "plain")
        }
    return res


def time_first_publish(runner: Runner, runs: int) -> dict[str, Any]:
    """(i) ``publish()`` once in each of ``runs`` fresh processes per candidate, interleaved
    run by run (so that a busy spell hits every candidate alike): median and worst."""
    samples: dict[str, list[float]] = {c: [] for c in CANDIDATES}
    for _ in range(runs):
        for c in CANDIDATES:
            out = runner.run(c, "first_publish", topic=f"firstpub-{c}")
            value = out.get("first_publish_ms")
            if isinstance(value, (int, float)):
                samples[c].append(value)
    return {
        c: {
            "runs": len(v),
            "median_ms": statistics.median(v) if v else None,
            "max_ms": max(v) if v else None,
            "min_ms": min(v) if v else None,
            "samples_ms": v,
        }
        for c, v in samples.items()
    }


def measure_delay_broker(pythons: dict[str, str], size: dict[str, Any]) -> dict[str, Any]:
    """(f) again on a second, temporary broker with production's 3 s initial re-balance delay.

    The project's test broker sets ``group.initial.rebalance.delay.ms=0``; Kafka's default
    (3000 ms) delays the first join of a new consumer group under the classic protocol. The
    KIP-848 protocol (``group.protocol=consumer``) has no such delay.
    """
    log("(f) listen() -> first alert on a broker with group.initial.rebalance.delay.ms=3000")
    try:
        sys.path.insert(0, str(ROOT / "scripts"))
        from _kafka_broker.broker import start_cluster
    except ImportError as exc:
        log(f"cannot start a second broker ({exc}); skipped")
        return {"skipped": str(exc)}
    finally:
        sys.path.pop(0)
    t0 = time.monotonic()
    cluster = start_cluster(
        n=1,
        heap="256m",
        extra_properties={"group.initial.rebalance.delay.ms": "3000"},
        log=lambda msg: None,
    )
    log(f"second broker {cluster.bootstrap} started in {time.monotonic() - t0:.1f} s")
    out: dict[str, Any] = {"group.initial.rebalance.delay.ms": 3000}
    try:
        topics = Topics(cluster.bootstrap)
        topics.create([f"first-{c}" for c in CANDIDATES] + ["first-kip848"])
        runner = Runner(cluster.bootstrap, topics, pythons)
        trials = size["delay_trials"]
        out["no_group"] = {
            c: runner.run(c, "first_alert", topic=f"first-{c}", trials=trials, period=0.005)
            for c in ("ours",)
        }
        out["group"] = {
            c: runner.run(
                c,
                "first_alert",
                topic=f"first-{c}",
                trials=trials,
                period=0.005,
                consumer_group=True,
            )
            for c in CANDIDATES
        }
        out["group_kip848"] = {
            c: runner.run(
                c,
                "first_alert",
                topic="first-kip848",
                trials=trials,
                period=0.005,
                consumer_group=True,
                group_protocol="consumer",
            )
            for c in ("ours", "plain")
        }
    finally:
        if "topics" in locals():
            topics.close()
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)
    return out


# -- report ---------------------------------------------------------------------------------


def g(d: Any, *path: str) -> Optional[float]:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d if isinstance(d, (int, float)) else None


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary table: one row per metric."""
    out: list[dict[str, Any]] = []

    def row(
        metric: str,
        unit: str,
        ours: Optional[float],
        ref: Optional[float],
        plain: Optional[float],
        better: str,
        target: str = "",
        ok: Optional[bool] = None,
    ) -> None:
        out.append(
            {
                "metric": metric,
                "unit": unit,
                "ours": ours,
                "reference": ref,
                "plain": plain,
                "better": better,
                "target": target,
                "met": ok,
            }
        )

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return a / b if a is not None and b is not None and a > 0 and b > 0 else None

    if "latency" in res:
        lat_r = res["latency"]
        o50, r50, p50 = (g(lat_r, c, "p50_ms") for c in CANDIDATES)
        o99, r99, p99 = (g(lat_r, c, "p99_ms") for c in CANDIDATES)
        row("(a) latency p50", "ms", o50, r50, p50, "lower")
        row(
            "(a) latency p99",
            "ms",
            o99,
            r99,
            p99,
            "lower",
            "<= reference and < 10 ms",
            None if o99 is None else (o99 < 10 and (r99 is None or o99 <= r99)),
        )
    if "listen_live" in res:
        lv, lg, rp = res["listen_live"], res["listen_live_group"], res["listen_replay"]
        o, r, p = (g(lv, c, "rate_per_s") for c in CANDIDATES)
        row(
            "(b) listen, live, no group",
            "alerts/s",
            o,
            r,
            p,
            "higher",
            ">= 5x reference",
            None if o is None or r is None else o >= 5 * r,
        )
        o, r, p = (g(lg, c, "rate_per_s") for c in CANDIDATES)
        row(
            "(b) listen, live, consumer group",
            "alerts/s",
            o,
            r,
            p,
            "higher",
            ">= 5x reference",
            None if o is None or r is None else o >= 5 * r,
        )
        o, p = g(rp, "ours", "rate_per_s"), g(rp, "plain", "rate_per_s")
        row(
            "(b) listen, replay, no group",
            "alerts/s",
            o,
            None,
            p,
            "higher",
            ">= 60% of plain",
            None if o is None or p is None else o >= 0.6 * p,
        )
        o = g(rp, "ours_group", "rate_per_s")
        row(
            "(b) listen, replay, consumer group",
            "alerts/s",
            o,
            None,
            p,
            "higher",
            ">= 60% of plain",
            None if o is None or p is None else o >= 0.6 * p,
        )
        row(
            "(b) plain loop with librdkafka's default fetch.queue.backoff.ms",
            "alerts/s",
            None,
            None,
            g(rp, "plain_librdkafka_defaults", "rate_per_s"),
            "higher",
        )
    if "publish_throughput" in res:
        pub_r = res["publish_throughput"]
        o, r, p = (g(pub_r, c, "rate_per_s") for c in CANDIDATES)
        row(
            "(c) publish_to_topic + flush",
            "alerts/s",
            o,
            r,
            p,
            "higher",
            ">= 80% of plain",
            None if o is None or p is None else o >= 0.8 * p,
        )
    if "publish_oneshot" in res:
        pub_r = res["publish_oneshot"]
        o, r, p = (g(pub_r, c, "p50_ms") for c in CANDIDATES)
        row(
            "(d) publish() p50",
            "ms",
            o,
            r,
            p,
            "lower",
            ">= 20x faster than reference",
            None if o is None or r is None else r >= 20 * o,
        )
        o, r, p = (g(pub_r, c, "p99_ms") for c in CANDIDATES)
        row("(d) publish() p99", "ms", o, r, p, "lower")
        o, r, p = (g(pub_r, c, "first_call_ms") for c in CANDIDATES)
        row("(d) publish() first call", "ms", o, r, p, "lower")
    if "stop" in res:
        st_r = res["stop"]
        o, r = g(st_r, "ours", "p50_ms"), g(st_r, "reference", "p50_ms")
        row("(e) stop() -> listen() returns, p50", "ms", o, r, None, "lower")
        o, r = g(st_r, "ours", "max_ms"), g(st_r, "reference", "max_ms")
        row(
            "(e) stop() -> listen() returns, max",
            "ms",
            o,
            r,
            None,
            "lower",
            "< 50 ms",
            None if o is None else o < 50,
        )
    if "first_alert" in res:
        fa_r = res["first_alert"]
        for key, label in (("no_group", "no group"), ("group", "consumer group")):
            o, r, p = (g(fa_r, key, c, "p50_ms") for c in CANDIDATES)
            row(
                f"(f) listen() -> first alert, {label}, p50",
                "ms",
                o,
                r,
                p,
                "lower",
                "<= reference",
                None if o is None or r is None else o <= r,
            )
        o, p = g(fa_r, "group_kip848", "ours", "p50_ms"), g(fa_r, "group_kip848", "plain", "p50_ms")
        row("(f) first alert, group, KIP-848 what-if, p50", "ms", o, None, p, "lower")
    if "first_alert_production_delay" in res and "group" in res["first_alert_production_delay"]:
        fa_r = res["first_alert_production_delay"]
        o, r, p = (g(fa_r, "group", c, "p50_ms") for c in CANDIDATES)
        row(
            "(f) first alert, group, 3 s initial re-balance delay, p50",
            "ms",
            o,
            r,
            p,
            "lower",
            "<= reference",
            None if o is None or r is None else o <= r,
        )
        o, p = g(fa_r, "group_kip848", "ours", "p50_ms"), g(fa_r, "group_kip848", "plain", "p50_ms")
        row("(f) ... same broker, KIP-848 what-if, p50", "ms", o, None, p, "lower")
        row(
            "(f) ... same broker, no group, p50",
            "ms",
            g(fa_r, "no_group", "ours", "p50_ms"),
            None,
            None,
            "lower",
        )
    if "first_publish" in res:
        fp = res["first_publish"]
        o, r, p = (g(fp, c, "median_ms") for c in CANDIDATES)
        row(
            "(i) first publish() of a fresh process, median",
            "ms",
            o,
            r,
            p,
            "lower",
            "<= reference",
            None if o is None or r is None else o <= r,
        )
        o, r, p = (g(fp, c, "max_ms") for c in CANDIDATES)
        row(
            f"(i) first publish() of a fresh process, worst of {g(fp, 'ours', 'runs') or 0:.0f}",
            "ms",
            o,
            r,
            p,
            "lower",
            "<= reference",
            None if o is None or r is None else o <= r,
        )
    if "startup" in res:
        st_r = res["startup"]
        o, r, p = (g(st_r, c, "import", "median_ms") for c in CANDIDATES)
        row("(g) import igwn_alert (plain: confluent_kafka)", "ms", o, r, p, "lower")
        o, r, p = (g(st_r, c, "cli_version", "median_ms") for c in CANDIDATES)
        row("(g) igwn-alert -V (plain: python -c pass)", "ms", o, r, p, "lower")
    if "memory" in res:
        mem_r = res["memory"]
        o, p = g(mem_r, "ours", "growth_mb"), g(mem_r, "plain", "growth_mb")
        n = mem_r.get("ours", {}).get("n", 0)
        row(
            f"(h) RSS growth, 10k -> {n:,} alerts (replay)",
            "MB",
            o,
            None,
            p,
            "lower",
            "< 20 MB",
            None if o is None else o < 20,
        )
        o, p = g(mem_r, "ours", "rss_mb", str(n)), g(mem_r, "plain", "rss_mb", str(n))
        row(f"(h) RSS after {n:,} alerts (replay)", "MB", o, None, p, "lower")
    if "listen_live_group" in res:
        lg = res["listen_live_group"]
        grow = {
            c: (g(lg, c, "rss_end_mb") or 0) - (g(lg, c, "rss_10k_mb") or 0)
            if g(lg, c, "rss_10k_mb") is not None
            else None
            for c in CANDIDATES
        }
        n = g(lg, "reference", "n")
        row(
            f"(h) RSS growth, 10k -> end of live group back-log (reference: {n or 0:,.0f})",
            "MB",
            grow["ours"],
            grow["reference"],
            grow["plain"],
            "lower",
        )
    for r in out:
        r["ours/reference"] = ratio(r["ours"], r["reference"])
        r["ours/plain"] = ratio(r["ours"], r["plain"])
    return out


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(out: list[dict[str, Any]]) -> str:
    head = [
        "metric",
        "unit",
        "ours",
        "reference",
        "plain",
        "ours/ref",
        "ours/plain",
        "target",
        "met",
    ]
    lines = [head]
    for r in out:
        met = {None: "", True: "yes", False: "NO"}[r["met"]]
        lines.append(
            [
                r["metric"],
                r["unit"],
                fmt(r["ours"]),
                fmt(r["reference"]),
                fmt(r["plain"]),
                fmt(r["ours/reference"]),
                fmt(r["ours/plain"]),
                r["target"],
                met,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for k, line in enumerate(lines):
        cells = [
            c.ljust(widths[i]) if i in (0, 1, 7) else c.rjust(widths[i]) for i, c in enumerate(line)
        ]
        text.append("  ".join(cells).rstrip())
        if k == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def _minor_label(value: float, _pos: int) -> str:
    """Label the 2s and 5s between the decades of a log axis."""
    mantissa = f"{value:.1e}"[:3]
    return f"{value:g}" if mantissa in ("2.0", "5.0") else ""


def plot(res: dict[str, Any], path: Path, machine: str) -> Optional[Path]:
    lat = res.get("latency")
    if not lat:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    every = [v for c in CANDIDATES for v in (lat.get(c, {}).get("samples_ms") or [])]
    lo, hi = max(min(every, default=0.1), 1e-2), max(every, default=10.0)
    bins = [lo * (hi / lo) ** (i / 80) for i in range(81)]
    colours = {"ours": "tab:blue", "reference": "tab:orange", "plain": "tab:gray"}
    labels = {
        "ours": "igwn-alert (this project)",
        "reference": "igwn-alert 0.7.0 (reference)",
        "plain": "plain confluent-kafka",
    }
    for c in CANDIDATES:
        samples = sorted(lat.get(c, {}).get("samples_ms") or [])
        if not samples:
            continue
        n = len(samples)
        label = f"{labels[c]}: p50 {lat[c]['p50_ms']:.2f} ms, p99 {lat[c]['p99_ms']:.2f} ms"
        ax1.plot(samples, [(i + 1) / n for i in range(n)], color=colours[c], label=label)
        ax2.hist(samples, bins=bins, color=colours[c], alpha=0.5, label=labels[c])
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_xlabel("publish_to_topic + flush -> callback (ms)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("fraction of alerts")
    ax1.set_title("Latency, cumulative")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.set_ylabel("alerts")
    ax2.set_title("Latency, histogram")
    ax2.legend(fontsize=7)
    fig.suptitle(f"End-to-end latency, alerts 10 ms apart ({machine})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine_info(broker: dict[str, Any]) -> dict[str, Any]:
    import confluent_kafka

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka": broker.get("kafka_version", "?"),
        "broker": broker.get("plaintext"),
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer alerts and trials (~3 min)")
    ap.add_argument("--out", default=str(HERE / "results"), help="output directory")
    ap.add_argument(
        "--bootstrap", help="host:port of a plaintext listener (default: scripts/kafka up)"
    )
    ap.add_argument("--only", help="comma-separated subset of a,b,c,d,e,f,g,h,i")
    ap.add_argument(
        "--no-delay-broker",
        action="store_true",
        help="skip (f) on a second, temporary broker with Kafka's default 3 s "
        "initial re-balance delay",
    )
    ap.add_argument(
        "--ours-src",
        help="directory holding the igwn_alert package to measure "
        "as 'ours' (default: this tree's src/), e.g. a copy of an older commit",
    )
    ap.add_argument(
        "--plot-only",
        metavar="RESULTS_JSON",
        help="only redraw <out>/latency.png from an earlier results.json",
    )
    args = ap.parse_args(argv)
    if args.plot_only:
        saved = json.loads(Path(args.plot_only).read_text())
        m = saved["machine"]
        png = plot(
            saved["raw"],
            Path(args.out) / "latency.png",
            f"{m['cores']} cores {m['cpu']}, Kafka {m['kafka']}",
        )
        print(png)
        return 0
    global OURS_SRC
    if args.ours_src:
        OURS_SRC = Path(args.ours_src).resolve()
    size = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else None
    t_start = time.monotonic()

    ensure_bench_deps()
    ours = check_ours()
    broker = ensure_broker(args.bootstrap)
    bootstrap = broker["plaintext"]
    ref_py = reference_python()
    pythons = interpreters(ref_py)
    machine = machine_info(broker)
    log(
        f"broker {bootstrap}; ours {ours['version']} from {ours['path']}; reference "
        f"{REFERENCE_VERSION} in {REFERENCE_VENV}"
    )
    topics = Topics(bootstrap)
    runner = Runner(bootstrap, topics, pythons)
    try:
        res = measure(runner, topics, size, pythons, only, delay_broker=not args.no_delay_broker)
    finally:
        topics.delete()
    elapsed = time.monotonic() - t_start
    summary = rows(res)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    short_machine = f"{machine['cores']} cores {machine['cpu']}, Kafka {machine['kafka']}"
    png = plot(res, out_dir / "latency.png", short_machine)
    result = {
        "quick": args.quick,
        "sizes": size,
        "seconds": elapsed,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "candidates": {
            "ours": ours,
            "reference": {"version": REFERENCE_VERSION, "python": ref_py},
            "plain": {"confluent_kafka": machine["confluent_kafka"]},
        },
        "summary": summary,
        "raw": res,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"igwn-alert benchmark ({'quick' if args.quick else 'full'} run, "
        f"{elapsed / 60:.1f} min) on {short_machine}, Python {machine['python']}, "
        f"confluent-kafka {machine['confluent_kafka']}"
    )
    print(table(summary))
    print(f"\nresults: {out_dir / 'results.json'}" + (f"; plot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
