"""No acknowledged alert is lost when the partition leader dies (three-node KRaft cluster).

The topic has replication factor 3 and ``min.insync.replicas=2``; the client's producer
sends with ``acks=all``, so an alert the broker acknowledged is on at least two replicas
and survives the leader's death (SIGKILL) in the middle of a burst of publishes.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from _delivery_helpers import (
    Listener,
    Tally,
    admin_for,
    alert,
    create_topic,
    listening,
    plain_client,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

#: Fail over quickly: the controller fences a silent broker after 3 s instead of 9 s.
FAST_FAILOVER = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


def test_leader_killed_during_burst_loses_no_acknowledged_alert(make_cluster: Any) -> None:
    cluster = make_cluster(3, extra_properties=FAST_FAILOVER)
    group, short = "gracedb-cluster", "superevent"
    full = f"{group}.{short}"
    create_topic(cluster.bootstrap, full, 1, 3, {"min.insync.replicas": "2"})
    admin = admin_for(cluster.bootstrap)

    def leader() -> int:
        md = admin.list_topics(topic=full, timeout=5)
        return int(md.topics[full].partitions[0].leader)

    victim = cluster.node(leader())
    # the client bootstraps from a node that survives
    survivor = next(n for n in cluster.nodes if n is not victim)
    tally = Tally("leader killed during a burst (acknowledged alerts)")
    total, rate = 2000, 1000.0
    acked: list[int] = []
    failed: list[Any] = []
    progress = [0]
    errors: list[BaseException] = []

    def publish() -> None:
        client = plain_client(survivor.plaintext, group)
        try:
            client.connect(short)
            writer = client.sessions[short]
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

                def on_delivery(err: Any, msg: Any, i: int = i) -> None:
                    if err is None:
                        acked.append(i)
                    else:
                        failed.append((i, err.str()))

                writer.write(alert(i), delivery_callback=on_delivery)
                progress[0] = i + 1
            try:
                writer.flush(timedelta(seconds=60))
            except Exception as exc:  # noqa: BLE001 - unacknowledged alerts are allowed
                errors.append(exc)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    publisher = threading.Thread(target=publish, name="burst", daemon=True)
    publisher.start()
    assert wait_for(lambda: progress[0] >= total // 3, 20)
    killed_at = progress[0]
    victim.kill()
    t0 = time.monotonic()
    publisher.join(120)
    assert not publisher.is_alive(), "the burst never finished"
    new_leader = leader()
    print(
        f"\nkilled leader node {victim.node_id} after {killed_at} writes; new leader {new_leader}; "
        f"burst done {time.monotonic() - t0:.1f} s later; acknowledged {len(acked)} of {total}, "
        f"failed {len(failed)} {failed[:2]}, errors {[str(e) for e in errors][:1]}"
    )
    assert new_leader not in (victim.node_id, -1)
    for i in acked:
        tally.send(i)

    # read everything back from the beginning, from the surviving nodes
    reader = Listener(plain_client(survivor.plaintext, group), short, tally, since="earliest")
    with listening(reader):
        assert wait_for(lambda: not tally.lost_ids(), 60, 0.2), f"missing {tally.lost_ids()[:20]}"
        time.sleep(1.0)
    assert reader.error is None, repr(reader.error)
    stored = [p["id"] for _, p in reader.payloads]
    print(f"read back {len(stored)} alerts ({len(set(stored))} distinct) from the log")
    lost, _dup = tally.report()
    assert lost == 0, "an acknowledged alert was lost"
    assert len(stored) == len(set(stored)), "the idempotent producer wrote an alert twice"
    assert len(acked) >= killed_at * 0.9
