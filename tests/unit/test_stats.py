"""ListenerStats / PublisherStats / health against known call sequences (no broker)."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from igwn_alert import _stats
from igwn_alert._stats import STATES, WINDOW, ListenerStats, PublisherStats, health


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_fresh_listener_is_stopped_and_empty() -> None:
    s = ListenerStats()
    snap = s.snapshot()
    json.dumps(snap)  # plain data
    assert snap["state"] == "stopped"
    assert snap["partitions"] == []
    assert snap["topics"] == {}
    assert snap["alerts_total"] == 0
    assert snap["last_alert"] is None
    assert snap["latency_s"] == {"p50": None, "p99": None, "samples": 0, "count": 0, "sum": 0.0}
    assert snap["callback_s"]["p50"] is None
    assert snap["lag"] == {"partitions": [], "total": None, "updated": None}
    assert snap["reconnects"] == 0
    assert snap["errors"] == {}


def test_counts_per_topic_and_last_alert() -> None:
    s = ListenerStats()
    ts = _now_ms() - 2000
    before = time.time()
    for _ in range(3):
        s.alert_done("superevent", s.alert_started("superevent", 0, ts))
    token = s.alert_started("em_bright", 1, ts + 5)  # callback raised: never done
    assert isinstance(token, float)
    s.error("callback")
    snap = s.snapshot()
    assert snap["topics"]["superevent"]["received"] == 3
    assert snap["topics"]["superevent"]["delivered"] == 3
    assert snap["topics"]["em_bright"] == {
        "received": 1,
        "delivered": 0,
        "last_broker_timestamp": (ts + 5) / 1000,
        "last_arrival": snap["topics"]["em_bright"]["last_arrival"],
    }
    assert snap["alerts_total"] == 3
    last = snap["last_alert"]
    assert (last["topic"], last["partition"]) == ("em_bright", 1)
    assert last["broker_timestamp"] == (ts + 5) / 1000
    assert before <= last["arrival"] <= time.time()
    assert snap["errors"] == {"callback": 1}
    # latency: arrival - broker time, about 2 s for each of the 4
    lat = snap["latency_s"]
    assert lat["samples"] == lat["count"] == 4
    assert 1.9 < lat["p50"] <= lat["p99"] < 60
    assert snap["callback_s"]["samples"] == 3


def test_no_broker_timestamp_is_no_latency_sample() -> None:
    s = ListenerStats()
    s.alert_done("t", s.alert_started("t", 0, -1))
    s.alert_done("t", s.alert_started("t", 0, 0))
    snap = s.snapshot()
    assert snap["topics"]["t"]["delivered"] == 2
    assert snap["latency_s"]["samples"] == 0
    assert snap["topics"]["t"]["last_broker_timestamp"] is None
    assert snap["last_alert"]["broker_timestamp"] is None
    assert snap["callback_s"]["samples"] == 2


def test_percentiles_nearest_rank_over_known_samples() -> None:
    s = ListenerStats()
    # feed latencies 1..100 s and durations 1..100 ms through the rings directly
    for i in range(1, 101):
        s._record_latency(float(i))
        s._record_duration(i / 1000)
    snap = s.snapshot()
    assert snap["latency_s"]["p50"] == 50.0
    assert snap["latency_s"]["p99"] == 99.0
    assert snap["latency_s"]["sum"] == sum(range(1, 101))
    assert snap["callback_s"]["p50"] == 0.05
    assert snap["callback_s"]["p99"] == 0.099


def test_window_is_fixed_size_and_recent() -> None:
    s = ListenerStats()
    for _ in range(WINDOW):
        s._record_latency(100.0)
    for _ in range(WINDOW):
        s._record_latency(1.0)  # the old samples are overwritten
    snap = s.snapshot()["latency_s"]
    assert snap["samples"] == WINDOW
    assert snap["count"] == 2 * WINDOW
    assert snap["p50"] == snap["p99"] == 1.0
    assert snap["sum"] == 101.0 * WINDOW
    assert len(s._latency) == WINDOW  # no growth


def test_state_transitions_and_time_in_state() -> None:
    s = ListenerStats()
    t0 = time.time()
    s.set_state("starting")
    snap = s.snapshot()
    assert snap["state"] == "starting"
    assert t0 <= snap["since"] <= time.time()
    assert snap["in_state_s"] >= 0
    s.set_state("listening")
    since = s.snapshot()["since"]
    s.set_state("listening")  # the same state again keeps its start time
    assert s.snapshot()["since"] == since
    s.set_state("reconnecting")
    s.reconnect()
    s.reconnect()
    snap = s.snapshot()
    assert snap["state"] == "reconnecting"
    assert snap["reconnects"] == 2
    assert snap["transitions"] == {"starting": 1, "listening": 1, "reconnecting": 1}
    s.set_state("stopped")
    assert s.snapshot()["state"] == "stopped"


def test_bad_state_and_kind_are_named() -> None:
    s = ListenerStats()
    with pytest.raises(ValueError, match=r"'listning'.*starting, listening, reconnecting"):
        s.set_state("listning")
    with pytest.raises(ValueError, match="error kind"):
        s.error("")


def test_partitions_and_lag() -> None:
    s = ListenerStats()
    s.set_partitions([("superevent", 1), ("superevent", 0), ("em_bright", 0)])
    before = time.time()
    s.set_lag(
        {("superevent", 0): (10, 15), ("superevent", 1): (7, 7), ("em_bright", 0): (-1001, 4)}
    )
    snap = s.snapshot()
    assert snap["partitions"] == [
        {"topic": "em_bright", "partition": 0},
        {"topic": "superevent", "partition": 0},
        {"topic": "superevent", "partition": 1},
    ]
    lag = snap["lag"]
    assert lag["partitions"] == [
        {"topic": "em_bright", "partition": 0, "position": None, "end": 4, "lag": None},
        {"topic": "superevent", "partition": 0, "position": 10, "end": 15, "lag": 5},
        {"topic": "superevent", "partition": 1, "position": 7, "end": 7, "lag": 0},
    ]
    assert lag["total"] == 5
    assert before <= lag["updated"] <= time.time()
    s.set_partitions([])
    s.set_lag({})
    snap = s.snapshot()
    assert snap["partitions"] == []
    assert snap["lag"]["partitions"] == [] and snap["lag"]["total"] is None


def test_snapshot_is_a_copy() -> None:
    s = ListenerStats()
    s.alert_done("a", s.alert_started("a", 0, _now_ms()))
    snap = s.snapshot()
    s.alert_done("a", s.alert_started("a", 0, _now_ms()))
    assert snap["topics"]["a"]["delivered"] == 1
    assert s.snapshot()["topics"]["a"]["delivered"] == 2


def test_thread_safety_exact_counts_under_contention() -> None:
    """One listen loop on the hot path; error/reconnect/state/lag writers and snapshot
    readers in other threads at the same time: every count exact, every snapshot valid."""
    s = ListenerStats()
    alerts, others_n, per_other = 60000, 4, 3000
    ts = _now_ms()
    go = threading.Barrier(1 + others_n + 2 + 1, timeout=30)
    failures: list[BaseException] = []

    def listen_loop() -> None:
        go.wait()
        for i in range(alerts):
            topic = f"t{i % 3}"  # new topics appear while snapshots run
            s.alert_done(topic, s.alert_started(topic, i % 2, ts))

    def other(k: int) -> None:
        go.wait()
        for i in range(per_other):
            s.error("decode" if k % 2 else "transient")
            s.reconnect()
            s.set_state(STATES[i % 4])
            s.set_lag({("t0", k): (i, i + k)})
            s.set_partitions([("t0", k)])

    def reader() -> None:
        go.wait()
        last = 0
        try:
            for _ in range(400):
                snap = s.snapshot()
                json.dumps(snap)
                total = snap["alerts_total"]
                assert total >= last
                assert snap["latency_s"]["samples"] <= WINDOW
                last = total
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=listen_loop)]
    threads += [threading.Thread(target=other, args=(k,)) for k in range(others_n)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        go.wait()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(old)
    assert not failures, failures
    snap = s.snapshot()
    assert snap["alerts_total"] == alerts
    assert snap["topics"]["t0"]["received"] == snap["topics"]["t0"]["delivered"] == alerts // 3
    assert snap["latency_s"]["count"] == snap["callback_s"]["count"] == alerts
    assert snap["latency_s"]["samples"] == WINDOW
    assert snap["reconnects"] == others_n * per_other
    assert snap["errors"] == {"decode": 2 * per_other, "transient": 2 * per_other}


def test_publisher_counts_and_in_flight() -> None:
    p = PublisherStats()
    assert p.snapshot() == {"written": 0, "delivered": 0, "failed": 0, "in_flight": 0}
    for _ in range(5):
        p.written()
    p.delivered()
    p.delivered()
    p.failed()
    assert p.snapshot() == {"written": 5, "delivered": 2, "failed": 1, "in_flight": 2}


def test_publisher_thread_safety() -> None:
    p = PublisherStats()
    n = 20000

    def write() -> None:
        for _ in range(n):
            p.written()

    def deliver() -> None:
        for _ in range(n):
            p.delivered()

    threads = [threading.Thread(target=f) for f in (write, write, deliver, deliver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.snapshot() == {"written": 2 * n, "delivered": 2 * n, "failed": 0, "in_flight": 0}


# ------------------------------------------------------------------------------- health


def _listening(**lag: int) -> ListenerStats:
    s = ListenerStats()
    s.set_state("starting")
    s.set_state("listening")
    s.set_lag({(k, 0): (0, v) for k, v in lag.items()})
    return s


def test_health_ok_when_listening() -> None:
    ok, reason = health(_listening(superevent=3).snapshot(), max_lag=10)
    assert ok, reason
    assert "listening" in reason and "lag 3" in reason


def test_health_accepts_the_client_stats_dict() -> None:
    combined = {"listener": _listening().snapshot(), "publisher": PublisherStats().snapshot()}
    assert health(combined)[0]


def test_health_lag_above_the_limit() -> None:
    ok, reason = health(_listening(superevent=11).snapshot(), max_lag=10)
    assert not ok
    assert reason == "lag 11 above 10"


def test_health_reconnecting_too_long() -> None:
    s = ListenerStats()
    s.set_state("reconnecting")
    snap = s.snapshot()
    assert health(snap, max_reconnecting_s=60)[0]
    snap["in_state_s"] = 61.5  # as it would read a minute later
    ok, reason = health(snap, max_reconnecting_s=60)
    assert not ok
    assert reason == "reconnecting for 62 s (more than 60 s)"
    snap["state"] = "starting"
    assert health(snap, max_reconnecting_s=60) == (False, "starting for 62 s (more than 60 s)")


def test_health_stopped_is_unhealthy() -> None:
    assert health(ListenerStats().snapshot()) == (False, "the listener is stopped")


def test_health_silence() -> None:
    s = _listening()
    snap = s.snapshot()
    # no alert yet: silence counts from the time the listener started listening
    snap["in_state_s"] = 7200.0
    ok, reason = health(snap, max_silence_s=3600)
    assert not ok and "no alert for 7200 s" in reason
    s.alert_done("x", s.alert_started("x", 0, _now_ms()))
    assert health(s.snapshot(), max_silence_s=3600)[0]


def test_health_bad_arguments() -> None:
    snap = _listening().snapshot()
    with pytest.raises(ValueError, match="max_lag"):
        health(snap, max_lag=-1)
    with pytest.raises(ValueError, match="max_reconnecting_s"):
        health(snap, max_reconnecting_s=-1)
    with pytest.raises(TypeError, match="snapshot"):
        health({"nope": 1})


def test_module_names() -> None:
    assert _stats.STATES == ("starting", "listening", "reconnecting", "stopped")
