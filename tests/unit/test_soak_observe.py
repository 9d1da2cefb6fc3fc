"""The scale-out run's watchers (``soak/observe.py``): the duplicate bound and the scrape."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from soak.harness import Delivery, LagSample, Ledger  # noqa: E402
from soak.observe import check_duplicates, parse_metrics  # noqa: E402


def ledger(tmp_path: Path, *deliveries: tuple[int, int, int, float]) -> Ledger:
    """A ledger of ``(partition, offset, pid, time)`` deliveries."""
    out = Ledger(tmp_path)
    for part, off, pid, wall in deliveries:
        uid = f"A-{part:02d}{off:05d}"
        out.by_uid[uid].append(Delivery(uid, "t", part, off, pid, f"L{pid}", wall))
        out.deliveries[uid] += 1
    return out


def sample(wall: float, **committed: int) -> LagSample:
    parts = {int(k[1:]): v for k, v in committed.items()}
    return LagSample(wall, {}, {}, 0, wall, parts)


def test_no_replay_no_bound(tmp_path: Path) -> None:
    led = ledger(tmp_path, *[(0, o, 1, 10.0 + o) for o in range(5)])
    d = check_duplicates(led, [sample(11.5, p0=2)])
    assert (d.handovers, d.bound, d.below_committed) == (0, 0, [])


def test_a_replay_from_the_committed_offset_is_bounded_by_what_was_in_flight(
    tmp_path: Path,
) -> None:
    # pid 1 delivers 0..9 and had committed 7 when pid 2 took over: 7, 8, 9 come again
    first = [(0, o, 1, 10.0 + o) for o in range(10)]
    again = [(0, o, 2, 30.0 + o) for o in range(7, 12)]
    led = ledger(tmp_path, *first, *again)
    d = check_duplicates(led, [sample(12.0, p0=2), sample(25.0, p0=7), sample(40.0, p0=12)])
    assert d.handovers == 1
    assert d.bound == 3  # offsets 7, 8, 9: delivered, not committed
    assert d.below_committed == []


def test_a_replay_from_before_a_commit_is_reported(tmp_path: Path) -> None:
    first = [(3, o, 1, 10.0 + o) for o in range(10)]
    again = [(3, o, 2, 30.0 + o) for o in range(4, 10)]  # committed 7, replayed from 4
    led = ledger(tmp_path, *first, *again)
    d = check_duplicates(led, [sample(25.0, p3=7)])
    assert d.handovers == 1 and d.bound == 3
    assert d.below_committed == [
        "partition 3: replay from offset 4 by pid 2, committed 7 before it"
    ]


def test_two_hand_overs_in_a_row(tmp_path: Path) -> None:
    # pid 2 replays 5.. and is itself replaced before it committed: pid 3 replays from 5
    first = [(1, o, 1, 10.0 + o) for o in range(8)]
    second = [(1, o, 2, 20.0 + (o - 5)) for o in range(5, 9)]
    third = [(1, o, 3, 30.0 + (o - 5)) for o in range(5, 10)]
    led = ledger(tmp_path, *first, *second, *third)
    d = check_duplicates(led, [sample(19.0, p1=5), sample(29.0, p1=5)])
    assert d.handovers == 2
    assert d.bound == (8 - 5) + (9 - 5)
    assert d.below_committed == []


def test_parse_metrics_reads_the_client_exposition() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from igwn_alert import _metrics
    from igwn_alert.testing import InMemoryClient

    client = InMemoryClient(group="gracedb")
    registry = CollectorRegistry()
    _metrics.register(client, registry)
    assert parse_metrics(generate_latest(registry).decode()) == ("stopped", 0, None, 0)

    for n in range(3):
        client.publish("superevent", {"n": n})
    client.listen(lambda topic, payload: None, "superevent", max_messages=3)
    state, _, _, delivered = parse_metrics(generate_latest(registry).decode())
    assert delivered == 3
    assert state == "stopped"  # listen() returned
