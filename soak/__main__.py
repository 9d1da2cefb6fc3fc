"""``python -m soak faults|scaleout ...``: see :mod:`soak`."""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    from . import faults

    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    faults.add_arguments(sub.add_parser("faults", help="randomized fault soak (issue 9)"))
    from . import scaleout

    scaleout.add_arguments(sub.add_parser("scaleout", help="scale-out run (issue 13)"))
    args = p.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every process started is stopped on the way out

    signal.signal(signal.SIGTERM, interrupt)
    if args.command == "faults":
        return 1 if faults.failed(faults.run(faults.options_from(args))) else 0
    return 1 if scaleout.failed(scaleout.run(scaleout.options_from(args))) else 0


if __name__ == "__main__":
    sys.exit(main())
