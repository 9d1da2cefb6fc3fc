"""The ``igwn-alert`` command line.

Options and sub-commands are those of the reference client (``listen``, ``topics``,
``send``, ``subscriptions``, ``unsubscribe``), with numbers parsed as numbers, ``-n FILE``
and ``-u NAME`` honoured, replay options for ``listen``, and two additions: ``serve`` (an
offline broker) and ``demo``. Errors print one line on stderr and give a non-zero status;
Ctrl-C and SIGTERM end quietly with status 0.
"""

from __future__ import annotations

import argparse
import logging
import netrc
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Any, Optional

from adc.errors import KafkaException

from . import _lag, _metrics, _watchdog
from ._credentials import credential_for_user, netrc_credential
from ._probe import probe
from ._topics import full_name, group_topics, server_address
from .client import (
    DEFAULT_GROUP,
    DEFAULT_LISTEN_RETRIES,
    DEFAULT_PORT,
    DEFAULT_RETRY_WAIT,
    DEFAULT_SERVER,
    client,
)
from .version import __version__

__all__ = ["main", "parser"]

log = logging.getLogger(__name__)

VERSION_STRING = f"igwn-alert client {__version__}"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CommandError(Exception):
    """A problem to report on one line of stderr."""


def _since(text: str) -> datetime:
    """Parse ``--since``: an ISO 8601 time (UTC if no zone) or a duration ago (``15m``)."""
    match = _DURATION.match(text)
    if match:
        return datetime.now(timezone.utc) - timedelta(
            seconds=float(match.group(1)) * _UNITS[match.group(2)]
        )
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time or a duration such as 90s, 15m, 2h, 1d: {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``igwn-alert``.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(
        prog="igwn-alert", description="Listen to and send GraceDB alerts over Kafka."
    )
    p.add_argument("--no-auth", action="store_true", help="disable authentication")
    p.add_argument(
        "-g", "--group", default=DEFAULT_GROUP, help="GraceDB group (gracedb, gracedb-playground)"
    )
    p.add_argument("-c", "--consumer-group", help="Kafka consumer group to resume and share")
    p.add_argument("-j", "--jsonpp", action="store_true", help="pretty-print JSON alerts")
    p.add_argument(
        "-l",
        "--log",
        default="error",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: error)",
    )
    p.add_argument("-n", "--netrc", metavar="FILE", help="read the credential from this netrc")
    p.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="server port")
    p.add_argument(
        "-r", "--retry-on-fatal", action="store_true", help="reconnect after fatal errors"
    )
    p.add_argument("-s", "--server", default=DEFAULT_SERVER, help="server URL (kafka://host)")
    p.add_argument(
        "-t",
        "--listen_retries",
        type=_positive_int,
        default=DEFAULT_LISTEN_RETRIES,
        help="reconnection attempts after fatal errors",
    )
    p.add_argument("-u", "--username", help="use this user's credential (from auth.toml or netrc)")
    p.add_argument(
        "-w",
        "--retry_wait",
        type=float,
        default=DEFAULT_RETRY_WAIT,
        help="seconds to wait before reconnecting",
    )
    p.add_argument("-V", "--version", action="version", version=VERSION_STRING)

    sub = p.add_subparsers(dest="action", metavar="COMMAND")
    sub.required = True
    listen = sub.add_parser("listen", help="print alerts as they arrive")
    listen.add_argument("topics", nargs="*", help="short topic names (default: all)")
    replay = listen.add_mutually_exclusive_group()
    replay.add_argument(
        "--from-beginning", action="store_true", help="replay every retained alert first"
    )
    replay.add_argument(
        "--since",
        type=_since,
        metavar="TIME",
        help="replay from an ISO 8601 time (UTC if no zone) or a duration ago (15m, 2h, 1d)",
    )
    _metrics.add_option(listen)
    sub.add_parser("topics", help="list the group's topics")
    send = sub.add_parser("send", help="publish the contents of a file, as GraceDB does")
    send.add_argument("topic", nargs="+", help="short topic name")
    send.add_argument("alertfile", nargs="+", help="file holding the alert (JSON text)")
    sub.add_parser("subscriptions", help="deprecated")
    sub.add_parser("unsubscribe", help="deprecated")
    serve = sub.add_parser("serve", help="run an offline broker in the foreground")
    serve.add_argument("--port", dest="serve_port", type=int, default=None, help="port to use")
    sub.add_parser("demo", help="run a short demonstration on an offline broker")
    _lag.add_parser(sub)
    return p


def _credential(opts: argparse.Namespace) -> Any:
    if opts.no_auth:
        return False
    if opts.username:
        try:
            return credential_for_user(opts.username, opts.server, opts.port, opts.netrc)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
    if opts.netrc:
        try:
            found = netrc_credential(opts.server, opts.port, opts.netrc)
        except FileNotFoundError:
            raise CommandError(f"netrc file {opts.netrc} does not exist") from None
        except Exception as exc:  # noqa: BLE001 - netrc.NetrcParseError and friends
            raise CommandError(
                f"cannot read netrc file {opts.netrc}: {type(exc).__name__}"
            ) from None
        if found is None:
            host, _ = server_address(opts.server, opts.port)
            raise CommandError(f"netrc file {opts.netrc} has no entry for {host}")
        return found
    return None


def _check(lv: client, topics: Sequence[str]) -> None:
    """Fail early, with one clear line, on a bad credential, server or topic."""
    host, port = server_address(lv.server, lv.port)
    bootstrap = f"{host}:{port}"
    found = probe(bootstrap, lv._credential_for(bootstrap) if lv.auth else None)
    known = group_topics(found, lv.group_prefix)
    missing = [t for t in topics if t not in known]
    if missing:
        names = ", ".join(full_name(lv.group_prefix, t) for t in missing)
        raise CommandError(
            f"unknown topic(s) {names} on {bootstrap} (the group {lv.group_prefix} has: "
            f"{', '.join(known) or 'no topics visible to this credential'})"
        )


def _run(opts: argparse.Namespace) -> int:
    if opts.action == "serve":
        from .testing._embedded_broker import serve

        serve(port=opts.serve_port, stream=sys.stdout)
        return 0
    if opts.action == "demo":
        from .testing._demo import run_demo

        run_demo(stream=sys.stdout, jsonpp=opts.jsonpp)
        return 0
    if opts.action in ("subscriptions", "unsubscribe"):
        raise CommandError(
            f"'{opts.action}' is deprecated: topics are granted by SCIMMA's auth service; "
            "use 'igwn-alert topics' to list them and 'igwn-alert listen' to read them"
        )
    lv = client(
        server=opts.server,
        port=opts.port,
        group=opts.group,
        auth=_credential(opts),
        noauth=opts.no_auth,
        consumer_group=opts.consumer_group,
        retry_on_fatal=opts.retry_on_fatal,
        listen_retries=opts.listen_retries,
        retry_wait=opts.retry_wait,
        jsonpp_on=opts.jsonpp,
    )
    if opts.action == "topics":
        _check(lv, [])
        print(f"Topics for group {opts.group} associated with the current credential:")
        print(*lv.get_topics(), sep="\n")
        return 0
    if opts.action == "lag":
        return _lag.run(lv, opts)
    if opts.action == "send":
        _check(lv, opts.topic)
        for path in opts.alertfile:
            try:
                with open(path, encoding="utf-8") as f:
                    alert = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read alert file {path}: {exc}") from None
            lv.publish(topic=opts.topic, msg=alert)
        lv.disconnect()
        return 0
    # listen
    _check(lv, opts.topics)
    since = "earliest" if opts.from_beginning else opts.since
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        lv.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    services = _watchdog.start_for_listen(lv, opts)  # --metrics-port, systemd watchdog
    try:
        lv.listen(callback=None, topic=opts.topics or None, since=since)
    finally:
        signal.signal(signal.SIGTERM, previous)
        services.close()
    return 0


def _sigterm_to_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _quit_on_sigterm() -> Any:
    """Until ``listen`` installs its graceful handler, SIGTERM ends the command like Ctrl-C
    (quietly, status 0) instead of killing it. Returns the previous handler, or None when
    not on the main thread (where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the ``igwn-alert`` command line.

    Parameters
    ----------
    args : sequence of str, optional
        The arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success or Ctrl-C, 1 on an error (reported on stderr).
    """
    opts = parser().parse_args(args)
    logging.basicConfig(
        level=opts.log.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    previous = _quit_on_sigterm()
    try:
        return _run(opts)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. `igwn-alert listen | head`: the reader went away
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter exit quiet
        except OSError:
            pass
        return 0
    except (
        CommandError,
        KafkaException,
        OSError,
        ValueError,
        RuntimeError,
        LookupError,
        netrc.NetrcParseError,
    ) as exc:
        print(f"igwn-alert: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
