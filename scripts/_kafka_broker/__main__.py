"""``scripts/kafka up|down|status|logs``: see ``scripts/kafka --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Optional

from .broker import SINGLE_LOG, STATE_FILE, BrokerError
from .service import ensure_broker, running_broker, stop_broker


def _up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        cluster, started = ensure_broker(timeout=args.timeout)
    except BrokerError as exc:
        print(f"kafka: could not start the broker: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(
            f"kafka: {exc}: `up` needs confluent-kafka in {sys.executable}; "
            "install it or set KAFKA_PYTHON to a Python that has it",
            file=sys.stderr,
        )
        return 1
    if started:
        print(f"kafka: broker started in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    print(json.dumps(cluster.info()), flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    was_running = stop_broker(timeout=args.timeout)
    print("kafka: stopped" if was_running else "kafka: was not running", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = running_broker()
    if cluster is None:
        print(json.dumps({"running": False, "state_file": str(STATE_FILE)}))
        return 3
    print(json.dumps({"running": True, **cluster.info()}))
    return 0


def _logs(args: argparse.Namespace) -> int:
    log_file = SINGLE_LOG
    if args.path:
        print(log_file)
        return 0
    print(f"==> {log_file} <==")
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        print("(no log yet)")
        return 1
    print("\n".join(lines[-args.lines :]))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/kafka",
        description="The project's Apache Kafka test broker (KRaft, 127.0.0.1 only).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or find) the broker; print its JSON description")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the broker (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    down.set_defaults(func=_down)
    status = sub.add_parser("status", help="print JSON; exit 0 if running, 3 if not")
    status.set_defaults(func=_status)
    logs = sub.add_parser("logs", help="print the tail of the broker log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--path", action="store_true", help="print only the log file path")
    logs.set_defaults(func=_logs)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
