"""One measurement of one candidate; prints one JSON object on its last stdout line.

``bench/run.py`` runs this script once per (candidate, scenario), each in its own
process and with the candidate's own interpreter, so that this project and the reference
(both import as ``igwn_alert``) never meet in one process::

    python bench/worker.py CANDIDATE SCENARIO '{"bootstrap": ..., ...}'

Candidates:

``ours``
    this project (``bench/run.py`` puts ``src/`` first on ``PYTHONPATH``);
``reference``
    igwn-alert 0.7.0, run with ``.cache/bench-reference-venv/bin/python``;
``plain``
    bare confluent-kafka loops (produce; consume + ``json.loads``): the limit of the
    machine.

Only the standard library, confluent-kafka and (for ``ours``/``reference``) ``igwn_alert``
are imported, so the script runs in any of the interpreters.
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Optional

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

now = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across threads

# -- helpers --------------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident set size of this process, in MiB (from /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000.0 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p90_ms": pct(ms, 90),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def hop_json(text: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A str encoded as hop (and so both clients) put it on the wire."""
    return json.dumps(text).encode("utf-8"), [("_id", uuid.uuid4().bytes), ("_format", b"json")]


class PlainProducer:
    """A bare confluent producer, for warm-up markers and back-logs."""

    def __init__(self, bootstrap: str, **extra: Any) -> None:
        config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
        }
        config.update(extra)
        self.producer = confluent_kafka.Producer(config)

    def send(self, topic: str, text: str) -> None:
        value, headers = hop_json(text)
        while True:
            try:
                self.producer.produce(topic, value, headers=headers)
                break
            except BufferError:
                self.producer.poll(0.01)
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)


def warm_until(
    event: threading.Event,
    bootstrap: str,
    topic: str,
    text: str = "warm-up",
    period: float = 0.05,
    timeout: float = 120.0,
) -> int:
    """Publish markers to ``topic`` until ``event`` is set; return how many were sent."""
    pub = PlainProducer(bootstrap, **{"linger.ms": 0})
    deadline = now() + timeout
    sent = 0
    while not event.is_set():
        if now() > deadline:
            raise RuntimeError(f"no warm-up alert arrived on {topic} within {timeout} s")
        pub.send(topic, text)
        pub.flush()
        sent += 1
        event.wait(period)
    return sent


def produce_backlog(bootstrap: str, topic: str, n: int, text: str) -> dict[str, Any]:
    """Produce ``n`` hop-encoded copies of ``text`` as fast as a plain producer can."""
    pub = PlainProducer(
        bootstrap,
        **{
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        },
    )
    value = json.dumps(text).encode("utf-8")
    produce = pub.producer.produce
    poll = pub.producer.poll
    fmt = ("_format", b"json")
    t0 = now()
    for i in range(n):
        headers = [("_id", uuid.uuid4().bytes), fmt]
        while True:
            try:
                produce(topic, value, headers=headers)
                break
            except BufferError:
                poll(0.01)
        if i % 1000 == 0:
            poll(0)
    remaining = pub.producer.flush(300)
    t1 = now()
    if remaining:
        raise RuntimeError(f"{remaining} back-log alerts not delivered")
    return {"n": n, "seconds": t1 - t0, "rate_per_s": n / (t1 - t0)}


def spawn_backlog(bootstrap: str, topic: str, n: int, alert_path: str) -> subprocess.Popen:
    """Produce a back-log from a separate process (so it does not share our GIL)."""
    params = json.dumps(
        {"bootstrap": bootstrap, "full_topic": topic, "n": n, "alert_path": alert_path}
    )
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "plain", "produce", params],
        stdout=subprocess.PIPE,
        text=True,
    )


def last_json(text: str) -> Any:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return json.loads(lines[-1])


# -- candidates -----------------------------------------------------------------------------


class ClientCandidate:
    """This project or the reference: both have the same ``igwn_alert.client`` API."""

    def __init__(self, name: str, p: dict[str, Any]) -> None:
        import igwn_alert

        self.name = name
        self.mod = igwn_alert
        self.version = igwn_alert.__version__
        self.module_file = igwn_alert.__file__
        self.p = p
        host, port = p["bootstrap"].rsplit(":", 1)
        self.kw = {
            "noauth": True,
            "group": p["group"],
            "server": f"kafka://{host}/",
            "port": int(port),
        }
        if name == "ours" and p.get("group_protocol"):  # what-if: KIP-848, through config=
            self.kw["config"] = {"group.protocol": p["group_protocol"]}

    def make(self, consumer_group: Optional[str] = None) -> Any:
        return self.mod.client(consumer_group=consumer_group, **self.kw)

    def full(self, topic: str) -> str:
        return f"{self.p['group']}.{topic}"

    def start_listener(
        self, client: Any, callback: Callable[..., Any], topics: list[str], replay: bool = False
    ) -> threading.Thread:
        kwargs = {"since": "earliest"} if replay else {}
        th = threading.Thread(
            target=client.listen, args=(callback, topics), kwargs=kwargs, daemon=True
        )
        th.start()
        return th

    def stop_listener(self, client: Any, th: threading.Thread) -> None:
        client.stop()
        th.join(30)


#: The plain loop's librdkafka settings beyond the defaults. librdkafka's default
#: ``fetch.queue.backoff.ms`` (1000) stalls a consumer that is catching up for up to a second
#: each time its 64 MB pre-fetch queue fills; the limit of the machine is measured without
#: that stall (``PLAIN_DEFAULTS=1`` in the environment measures the defaults).
PLAIN_CONSUMER = {"fetch.queue.backoff.ms": 10}


class PlainListener:
    """A bare consume loop: take what is buffered (consume(500, 0)), else wait (poll(0.1));
    json.loads; callback."""

    def __init__(self, bootstrap: str, group: Optional[str], protocol: str = "classic") -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"bench-plain-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": group is not None,
            "auto.offset.reset": "latest",
        }
        if not os.environ.get("PLAIN_DEFAULTS"):
            config.update(PLAIN_CONSUMER)
        if group is not None and protocol == "consumer":
            config["group.protocol"] = "consumer"
        self.group = group
        self.consumer = confluent_kafka.Consumer(config)
        self.stopped = threading.Event()

    def listen(self, callback: Callable[..., Any], topics: list[str], replay: bool = False) -> None:
        c = self.consumer
        if self.group is None:
            start = OFFSET_BEGINNING if replay else OFFSET_END
            tps = []
            md = c.list_topics(timeout=10)
            for t in topics:
                tps.extend(TopicPartition(t, p, start) for p in md.topics[t].partitions)
            c.assign(tps)
        else:
            c.subscribe(topics)
        loads = json.loads
        consume = c.consume
        poll = c.poll
        stopped = self.stopped
        try:
            while not stopped.is_set():
                batch = consume(500, 0)
                if not batch:
                    m = poll(0.1)
                    if m is None:
                        continue
                    batch = [m]
                for m in batch:
                    if m.error() is not None:
                        continue
                    callback(topic=m.topic(), payload=loads(m.value()))
        finally:
            c.close()


class PlainCandidate:
    name = "plain"

    def __init__(self, p: dict[str, Any]) -> None:
        self.p = p
        self.version = confluent_kafka.__version__
        self.module_file = confluent_kafka.__file__

    def make(self, consumer_group: Optional[str] = None) -> PlainListener:
        return PlainListener(
            self.p["bootstrap"], consumer_group, self.p.get("group_protocol") or "classic"
        )

    def full(self, topic: str) -> str:
        return f"{self.p['group']}.{topic}"

    def start_listener(
        self,
        listener: PlainListener,
        callback: Callable[..., Any],
        topics: list[str],
        replay: bool = False,
    ) -> threading.Thread:
        full = [self.full(t) for t in topics]
        th = threading.Thread(target=listener.listen, args=(callback, full, replay), daemon=True)
        th.start()
        return th

    def stop_listener(self, listener: PlainListener, th: threading.Thread) -> None:
        listener.stopped.set()
        th.join(30)


def candidate(name: str, p: dict[str, Any]) -> Any:
    if name == "plain":
        return PlainCandidate(p)
    return ClientCandidate(name, p)


def short(cand: Any, topic: str) -> str:
    """The topic name a callback of this candidate receives."""
    return cand.full(topic) if cand.name == "plain" else topic


# -- scenarios ------------------------------------------------------------------------------


def sc_produce(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Helper: produce a back-log (plain producer)."""
    with open(p["alert_path"]) as fh:
        text = fh.read().strip()
    return produce_backlog(p["bootstrap"], p["full_topic"], p["n"], text)


def sc_latency(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(a) publish + flush -> callback, alerts ``interval`` s apart.

    ``start_at`` (a ``time.perf_counter()`` value, CLOCK_MONOTONIC on Linux, so the same
    clock in every process) and ``offset``: send on the ticks ``start_at + offset + k *
    interval``, so that workers run side by side on one schedule, each in its own slot
    (``late_s``: how late this worker was ready; it then starts at its next slot).

    ``plain_publisher``: publish with the plain producer whatever the candidate, so that
    only the listener's side differs between candidates; ``plain_listener``: listen with
    the plain loop whatever the candidate, so that only the publishing side differs.
    """
    topic, n, interval, text = p["topic"], p["n"], p["interval"], p["alert"]
    recv: list[float] = []
    arrived = threading.Event()

    def callback(topic: str, payload: Any) -> None:
        recv.append(now())
        arrived.set()

    lcand = PlainCandidate(p) if p.get("plain_listener") else cand
    listener = lcand.make()
    th = lcand.start_listener(listener, callback, [topic])
    if cand.name == "plain" or p.get("plain_publisher"):  # the listener's side alone
        pub = PlainProducer(p["bootstrap"], **{"linger.ms": 0})
        full = cand.full(topic)

        def send() -> None:
            pub.send(full, text)
            pub.flush()
    else:
        publisher = cand.make()
        publisher.connect(topic)

        def send() -> None:
            publisher.publish_to_topic(topic, text)
            publisher.flush_by_topic(topic)

    deadline = now() + 120
    while not arrived.is_set():  # warm-up: the listener is positioned once one arrives
        if now() > deadline:
            raise RuntimeError("latency: no warm-up alert arrived")
        send()
        arrived.wait(0.05)
    time.sleep(0.5)
    base = len(recv)
    sent: list[float] = []
    tick = now()
    late = 0.0
    if p.get("start_at") is not None:  # side by side: ticks on a schedule shared by workers
        first = float(p["start_at"]) + float(p.get("offset", 0.0))
        late = max(0.0, tick - first)
        skipped = -(-late // interval) if late else 0  # whole intervals missed
        tick = first + skipped * interval - interval
    for _ in range(n):
        tick += interval
        delay = tick - now()
        if delay > 0:
            time.sleep(delay)
        t = now()
        send()
        sent.append(t)
    deadline = now() + 30
    while len(recv) < base + n and now() < deadline:
        time.sleep(0.01)
    got = recv[base : base + n]
    lat = [r - s for r, s in zip(got, sent)]
    lcand.stop_listener(listener, th)
    if cand.name != "plain" and not p.get("plain_publisher"):
        publisher.disconnect()
    out = summary_ms(lat)
    out.update(
        {
            "received": len(got),
            "sent": n,
            "interval_s": interval,
            "late_s": late,
            "samples_ms": [v * 1000.0 for v in lat],
        }
    )
    return out


def _throughput(cand: Any, p: dict[str, Any], replay: bool) -> dict[str, Any]:
    topic, n = p["topic"], p["n"]
    warm_topic = p.get("warm_topic")
    warm_name = short(cand, warm_topic) if warm_topic else None
    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0}
    warmed = threading.Event()
    done = threading.Event()

    def callback(topic: str, payload: Any) -> None:
        if topic == warm_name:
            warmed.set()
            return
        c = state["count"] + 1
        state["count"] = c
        if c == 1:
            state["first"] = now()
        elif c == 10_000:
            state["rss_10k"] = rss_mb()
        if c == n:
            state["last"] = now()
            state["rss_end"] = rss_mb()
            done.set()

    group = f"bench-{uuid.uuid4().hex[:10]}" if p.get("consumer_group") else None
    listener = cand.make(consumer_group=group)
    topics = [topic] + ([warm_topic] if warm_topic else [])
    producer_stats = None
    t_listen = now()
    th = cand.start_listener(listener, callback, topics, replay=replay)
    if not replay:
        warm_until(warmed, p["bootstrap"], cand.full(warm_topic))
        proc = spawn_backlog(p["bootstrap"], cand.full(topic), n, p["alert_path"])
    finished = done.wait(p.get("timeout", 600))
    t_end = now()
    if not replay:
        out_text, _ = proc.communicate(timeout=600)
        producer_stats = last_json(out_text)
    cand.stop_listener(listener, th)
    count, first, last = state["count"], state["first"], state["last"]
    if not finished:
        last = t_end
    elapsed = last - first
    return {
        "n": n,
        "received": count,
        "complete": finished,
        "consumer_group": group is not None,
        "seconds_first_to_last": elapsed,
        "rate_per_s": (count - 1) / elapsed if elapsed > 0 else float("nan"),
        "seconds_from_listen_call": last - t_listen,
        "producer": producer_stats,
        "rss_10k_mb": state.get("rss_10k"),
        "rss_end_mb": state.get("rss_end"),
    }


def sc_listen_live(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(b) listener positioned, then a back-log produced as fast as possible."""
    return _throughput(cand, p, replay=False)


def sc_listen_replay(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(b) replay of an existing back-log from the beginning (not possible for the reference)."""
    return _throughput(cand, p, replay=True)


def sc_publish_throughput(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(c) N alerts then one flush."""
    topic, n, text = p["topic"], p["n"], p["alert"]
    if cand.name == "plain":
        prod = confluent_kafka.Producer(
            {"bootstrap.servers": p["bootstrap"], "enable.idempotence": True, "acks": "all"}
        )
        full = cand.full(topic)
        value, headers = hop_json(text)
        prod.produce(full, value, headers=headers)  # connection set up before timing
        prod.flush(30)
        produce, poll, dumps, uuid4 = prod.produce, prod.poll, json.dumps, uuid.uuid4
        t0 = now()
        for _ in range(n):
            value = dumps(text).encode("utf-8")
            headers = [("_id", uuid4().bytes), ("_format", b"json")]
            while True:
                try:
                    produce(full, value, headers=headers)
                    break
                except BufferError:
                    poll(0.01)
            poll(0)
        t1 = now()
        prod.flush(60)
        t2 = now()
    else:
        c = cand.make()
        c.connect(topic)
        c.publish_to_topic(topic, text)  # connection set up before timing
        c.flush_by_topic(topic)
        t0 = now()
        for _ in range(n):
            c.publish_to_topic(topic, text)
        t1 = now()
        c.flush_by_topic(topic)
        t2 = now()
        c.disconnect()
    return {"n": n, "seconds": t2 - t0, "rate_per_s": n / (t2 - t0), "seconds_enqueue": t1 - t0}


def sc_publish_oneshot(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(d) ``publish()`` called many times; each returns once (or, for the reference,
    after) the alert is sent."""
    topic, n, text = p["topic"], p["n"], p["alert"]
    times: list[float] = []
    if cand.name == "plain":
        pub = PlainProducer(p["bootstrap"], **{"linger.ms": 0})
        full = cand.full(topic)

        def once() -> None:
            pub.send(full, text)
            pub.flush()
    else:
        c = cand.make()

        def once() -> None:
            c.publish(topic, text)

    t = now()
    once()
    first = now() - t
    for _ in range(n):
        t = now()
        once()
        times.append(now() - t)
    out = summary_ms(times)
    out["first_call_ms"] = first * 1000.0
    return out


def sc_first_publish(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(i) the first ``publish()`` of a fresh process (``bench/run.py`` starts one per run).

    The client is made first (not timed); the time is that of the one ``publish()`` call, as
    ``igwn-alert send`` or a short script pays it. ``plain`` is a new idempotent
    confluent-kafka producer's first send + flush.
    """
    topic, text = p["topic"], p["alert"]
    if cand.name == "plain":
        t = now()
        pub = PlainProducer(p["bootstrap"], **{"linger.ms": 0})
        pub.send(cand.full(topic), text)
        pub.flush()
        return {"first_publish_ms": (now() - t) * 1000.0}
    c = cand.make()
    t = now()
    c.publish(topic, text)
    return {"first_publish_ms": (now() - t) * 1000.0}


def sc_stop(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(e) an idle listener: ``stop()`` until ``listen()`` returns."""
    topic, trials = p["topic"], p["trials"]
    client = cand.make()
    times: list[float] = []
    hung = 0
    for _ in range(trials):
        arrived = threading.Event()

        def callback(topic: str, payload: Any, arrived: threading.Event = arrived) -> None:
            arrived.set()

        th = cand.start_listener(client, callback, [topic])
        warm_until(arrived, p["bootstrap"], cand.full(topic))
        time.sleep(0.3 + random.random() * 0.2)  # idle, at a random phase of any poll loop
        t0 = now()
        client.stop()
        th.join(30)
        dt = now() - t0
        if th.is_alive():
            hung += 1
        times.append(dt)
    out = summary_ms(times)
    out["hung"] = hung
    return out


def sc_first_alert(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(f) ``listen()`` call -> first callback, alerts published every ``period`` s."""
    topic, trials, period = p["topic"], p["trials"], p["period"]
    full = cand.full(topic)
    times: list[float] = []
    for _ in range(trials):
        group = f"bench-{uuid.uuid4().hex[:10]}" if p.get("consumer_group") else None
        listener = cand.make(consumer_group=group)
        stop_pub = threading.Event()
        got = threading.Event()
        state = {"t": 0.0}

        pub = PlainProducer(p["bootstrap"], **{"linger.ms": 0})
        pub.send(full, "tick")
        pub.flush()  # the producer is connected and has its producer id before timing

        def publisher(stop_pub: threading.Event = stop_pub, pub: PlainProducer = pub) -> None:
            while not stop_pub.is_set():
                pub.send(full, "tick")
                stop_pub.wait(period)
            pub.flush()

        pt = threading.Thread(target=publisher, daemon=True)
        pt.start()
        time.sleep(0.3)  # the publisher is running

        def callback(
            topic: str, payload: Any, got: threading.Event = got, state: dict[str, float] = state
        ) -> None:
            if not got.is_set():
                state["t"] = now()
                got.set()

        t0 = now()
        th = cand.start_listener(listener, callback, [topic])
        if not got.wait(120):
            raise RuntimeError("first_alert: nothing arrived in 120 s")
        times.append(state["t"] - t0)
        cand.stop_listener(listener, th)
        stop_pub.set()
        pt.join(10)
    out = summary_ms(times)
    out["consumer_group"] = bool(p.get("consumer_group"))
    out["group_protocol"] = p.get("group_protocol") or "classic"
    return out


def sc_memory(cand: Any, p: dict[str, Any]) -> dict[str, Any]:
    """(h) RSS while ``n`` alerts go through listen (replay, or live for the reference)."""
    topic, n = p["topic"], p["n"]
    marks = sorted({m for m in p.get("marks", []) if m <= n} | {10_000, n})
    rss: dict[int, float] = {}
    warm_topic = p.get("warm_topic")
    warm_name = short(cand, warm_topic) if warm_topic else None
    state = {"count": 0}
    done = threading.Event()
    warmed = threading.Event()
    next_marks = list(marks)

    def callback(topic: str, payload: Any) -> None:
        if topic == warm_name:
            warmed.set()
            return
        c = state["count"] + 1
        state["count"] = c
        if c == next_marks[0]:
            rss[c] = rss_mb()
            next_marks.pop(0)
            if not next_marks:
                done.set()

    gc.collect()
    before = rss_mb()
    listener = cand.make()
    replay = p.get("replay", True)
    topics = [topic] + ([warm_topic] if warm_topic else [])
    t0 = now()
    th = cand.start_listener(listener, callback, topics, replay=replay)
    proc = None
    if not replay:
        warm_until(warmed, p["bootstrap"], cand.full(warm_topic))
        proc = spawn_backlog(p["bootstrap"], cand.full(topic), n, p["alert_path"])
    finished = done.wait(p.get("timeout", 900))
    t1 = now()
    if proc is not None:
        proc.communicate(timeout=600)
    cand.stop_listener(listener, th)
    after_stop = rss_mb()
    first = rss.get(10_000, float("nan"))
    end = rss.get(n, rss_mb())
    return {
        "n": n,
        "received": state["count"],
        "complete": finished,
        "replay": replay,
        "rss_before_mb": before,
        "rss_mb": {str(k): v for k, v in rss.items()},
        "rss_after_stop_mb": after_stop,
        "growth_mb": end - first,
        "seconds": t1 - t0,
    }


SCENARIOS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "produce": sc_produce,
    "latency": sc_latency,
    "listen_live": sc_listen_live,
    "listen_replay": sc_listen_replay,
    "publish_throughput": sc_publish_throughput,
    "publish_oneshot": sc_publish_oneshot,
    "first_publish": sc_first_publish,
    "stop": sc_stop,
    "first_alert": sc_first_alert,
    "memory": sc_memory,
}


def main() -> int:
    name, scenario, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    p = json.loads(raw)
    if "alert_path" in p and "alert" not in p:
        with open(p["alert_path"]) as fh:
            p["alert"] = fh.read().strip()
    cand = candidate(name, p) if scenario != "produce" else None
    result = SCENARIOS[scenario](cand, p)
    if cand is not None:
        result["candidate_version"] = cand.version
        result["module"] = cand.module_file
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
