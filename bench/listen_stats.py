"""Listen throughput of this client with its stats on (as shipped) and off, side by side.

    python bench/listen_stats.py [--alerts 100000] [--trials 5]

Uses the project's running broker (``scripts/kafka up``). A back-log of GraceDB alerts
(bench/alert.json) is replayed with ``listen(..., since="earliest", until_eos=True)``, the
two modes interleaved trial by trial so that a busy spell hits both alike; "off" replaces
the client's ListenerStats by an object whose methods do nothing. Prints alerts/s for each
trial, the medians and the ratio. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class NoStats:
    """ListenerStats' methods, doing nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: 0.0


def bootstrap() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka"), "status"], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit("bench: start the broker first: scripts/kafka up")
    return json.loads(out.stdout.strip().splitlines()[-1])["plaintext"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    import igwn_alert

    server = bootstrap()
    group = f"bench-stats-{uuid.uuid4().hex[:6]}"
    topic = f"{group}.superevent"
    admin = AdminClient({"bootstrap.servers": server})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    text = (HERE / "alert.json").read_text()
    value = json.dumps(text).encode()
    producer = Producer({"bootstrap.servers": server, "linger.ms": 20})
    for _ in range(args.alerts):
        while True:
            try:
                producer.produce(topic, value, headers=[("_format", b"json")])
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    host, port = server.rsplit(":", 1)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for trial in range(args.trials):
        for mode in ("on", "off") if trial % 2 == 0 else ("off", "on"):
            c = igwn_alert.client(
                noauth=True, server=f"kafka://{host}/", port=int(port), group=group
            )
            if mode == "off":
                c._listener_stats = NoStats()
            count = [0]

            def callback(topic: str, payload: Any, count: list[int] = count) -> None:
                count[0] += 1

            start = time.perf_counter()
            c.listen(callback, "superevent", since="earliest", until_eos=True)
            took = time.perf_counter() - start
            assert count[0] == args.alerts, (mode, count[0])
            rates[mode].append(args.alerts / took)
            print(f"trial {trial} stats {mode:3}: {args.alerts / took:9.0f} alerts/s")
    admin.delete_topics([topic])
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(f"median: stats on {on:.0f}/s, off {off:.0f}/s, on/off = {on / off:.3f}")
    json.dump(
        {"on": rates["on"], "off": rates["off"], "ratio": on / off},
        (HERE / "results" / "listen_stats.json").open("w"),
        indent=1,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
