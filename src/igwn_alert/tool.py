"""The ``igwn-alert`` command line (also ``python -m igwn_alert``).

Options and sub-commands are those of the reference client (``listen``, ``topics``,
``send``, ``subscriptions``, ``unsubscribe``), with numbers parsed as numbers, ``-n FILE``
and ``-u NAME`` honoured, and additions: ``-X key=value`` librdkafka settings,
``--auth-file``, environment variables for the per-deployment settings, replay and
stopping options and a ``--json`` output for ``listen``, several files or standard input
for ``send``, and the ``serve`` (an offline broker) and ``demo`` sub-commands. Errors
print one line on stderr and give a non-zero status; Ctrl-C and SIGTERM end quietly with
status 0.

Environment variables (an option given on the command line wins over the variable, the
variable over the default):

``IGWN_ALERT_SERVER``
    ``-s/--server``, such as ``kafka://kafka.scimma.org/`` (a port in the URL is used).
``IGWN_ALERT_GROUP``
    ``-g/--group``.
``IGWN_ALERT_CONSUMER_GROUP``
    ``-c/--consumer-group``.
``IGWN_ALERT_AUTH_FILE``
    ``--auth-file``: a hop ``auth.toml`` to take the credential from.
``IGWN_ALERT_LOG_LEVEL``
    ``-l/--log``.
"""

from __future__ import annotations

import argparse
import base64
import json
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
from urllib.parse import urlparse

import confluent_kafka
import hop.auth
from adc.errors import KafkaException
from hop.models import Blob

from . import _lag, _metrics, _watchdog
from ._argtypes import count
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

__all__ = ["ENVIRONMENT", "main", "parser"]

log = logging.getLogger(__name__)

VERSION_STRING = f"igwn-alert client {__version__}"

#: Environment variable -> the option (``dest``) it sets when the option is not given.
ENVIRONMENT = {
    "IGWN_ALERT_SERVER": "server",
    "IGWN_ALERT_GROUP": "group",
    "IGWN_ALERT_CONSUMER_GROUP": "consumer_group",
    "IGWN_ALERT_AUTH_FILE": "auth_file",
    "IGWN_ALERT_LOG_LEVEL": "log",
}
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_DEFAULTS: dict[str, Any] = {
    "server": DEFAULT_SERVER,
    "port": DEFAULT_PORT,
    "group": DEFAULT_GROUP,
    "consumer_group": None,
    "auth_file": None,
    "log": "error",
}

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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def _setting(text: str) -> tuple[str, str]:
    """Parse ``-X key=value`` (kcat's convention for librdkafka settings)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected a librdkafka setting as key=value, such as session.timeout.ms=6000: {text!r}"
        )
    return key.strip(), value


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
        "-g",
        "--group",
        help="GraceDB group: gracedb, gracedb-playground, ... (default: $IGWN_ALERT_GROUP, "
        "else gracedb)",
    )
    p.add_argument(
        "-c",
        "--consumer-group",
        help="Kafka consumer group to resume and share (default: $IGWN_ALERT_CONSUMER_GROUP)",
    )
    p.add_argument("-j", "--jsonpp", action="store_true", help="pretty-print JSON alerts")
    p.add_argument(
        "-l",
        "--log",
        choices=_LOG_LEVELS,
        help="log level (default: $IGWN_ALERT_LOG_LEVEL, else error)",
    )
    p.add_argument("-n", "--netrc", metavar="FILE", help="read the credential from this netrc")
    p.add_argument(
        "--auth-file",
        metavar="FILE",
        help="read the credential from this hop auth.toml (default: $IGWN_ALERT_AUTH_FILE, "
        "else hop's own auth.toml, then netrc)",
    )
    p.add_argument(
        "-p",
        "--port",
        type=int,
        help=f"server port (default {DEFAULT_PORT}); for serve, the port to listen on",
    )
    p.add_argument(
        "-r", "--retry-on-fatal", action="store_true", help="reconnect after fatal errors"
    )
    p.add_argument(
        "-s",
        "--server",
        help="server URL, kafka://host[:port] (default: $IGWN_ALERT_SERVER, else "
        f"{DEFAULT_SERVER})",
    )
    p.add_argument(
        "-t",
        "--listen_retries",
        type=count(0),
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
    p.add_argument(
        "-X",
        dest="settings",
        metavar="KEY=VALUE",
        type=_setting,
        action="append",
        default=[],
        help="a librdkafka setting for every reader and writer, such as "
        "-X session.timeout.ms=6000 (repeatable)",
    )
    p.add_argument("-V", "--version", action="version", version=VERSION_STRING)

    sub = p.add_subparsers(dest="action", metavar="COMMAND")
    sub.required = True
    listen = sub.add_parser("listen", help="print alerts as they arrive")
    listen.add_argument("topics", nargs="*", help="short topic names (default: all)")
    listen.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object a line: topic, partition, offset, timestamp (ms since "
        "the epoch), payload (decoded when it is JSON)",
    )
    listen.add_argument(
        "--count", type=count(1), metavar="N", help="exit after N alerts (status 0)"
    )
    listen.add_argument(
        "--until-eos",
        action="store_true",
        help="exit once every partition has been read to its end (status 0)",
    )
    listen.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="exit after this many seconds (status 0)",
    )
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
    send = sub.add_parser("send", help="publish the contents of files, as GraceDB does")
    send.add_argument("topic", help="short topic name")
    send.add_argument(
        "alertfile",
        nargs="+",
        help="file holding an alert (JSON text), one alert per file; - reads standard input",
    )
    send.add_argument(
        "--lines", action="store_true", help="one alert per line (blank lines are skipped)"
    )
    sub.add_parser("subscriptions", help="deprecated")
    sub.add_parser("unsubscribe", help="deprecated")
    serve = sub.add_parser("serve", help="run an offline broker in the foreground")
    serve.add_argument("--port", dest="serve_port", type=int, default=None, help="port to use")
    sub.add_parser("demo", help="run a short demonstration on an offline broker")
    _lag.add_parser(sub)
    return p


def _apply_environment(
    opts: argparse.Namespace, p: argparse.ArgumentParser, environ: Any = None
) -> None:
    """Fill the options not given from ``IGWN_ALERT_*`` variables, then from the defaults."""
    environ = os.environ if environ is None else environ
    for name, dest in ENVIRONMENT.items():
        if getattr(opts, dest, None) is not None:
            continue  # given on the command line
        value = (environ.get(name) or "").strip()
        if value and dest == "log":
            value = value.lower()
            if value not in _LOG_LEVELS:
                p.error(f"{name}={value!r} is not one of {', '.join(_LOG_LEVELS)}")
        setattr(opts, dest, value or _DEFAULTS[dest])
    if opts.port is None:  # no -p: a port in the server URL, else the default
        try:
            in_url = urlparse(opts.server if "//" in opts.server else f"kafka://{opts.server}").port
        except ValueError:
            p.error(f"bad port in the server URL {opts.server!r}")
        opts.port = in_url or DEFAULT_PORT


def _credential(opts: argparse.Namespace) -> Any:
    if opts.no_auth:
        return False
    if opts.auth_file and not opts.netrc:
        return _auth_file_credential(opts)
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


def _auth_file_credential(opts: argparse.Namespace) -> Any:
    """The credential(s) of ``--auth-file`` (or ``IGWN_ALERT_AUTH_FILE``); with ``-u``,
    that user's."""
    path = opts.auth_file
    if not os.path.exists(path):
        raise CommandError(f"auth file {path} does not exist")
    try:
        creds = hop.auth.load_auth(path)
    except Exception as exc:  # noqa: BLE001 - hop raises RuntimeError, KeyError, TOML errors
        # hop's messages name the file and the problem, never a password
        reason = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
        raise CommandError(f"cannot use auth file {path}: {reason}") from None
    if not opts.username:
        return creds
    host, port = server_address(opts.server, opts.port)
    for target in (f"{host}:{port}", host):
        try:
            return hop.auth.select_matching_auth(creds, target, opts.username)
        except RuntimeError:
            continue
    raise CommandError(f"auth file {path} has no credential for user {opts.username!r} and {host}")


def _check(lv: client, topics: Sequence[str]) -> None:
    """Fail early, with one clear line, on a bad credential, server or topic."""
    host, port = server_address(lv.server, lv.port)
    bootstrap = f"{host}:{port}"
    log.info("checking the broker at %s", bootstrap)
    found = probe(bootstrap, lv._credential_for(bootstrap) if lv.auth else None)
    known = group_topics(found, lv.group_prefix)
    missing = [t for t in topics if t not in known]
    if missing:
        names = ", ".join(full_name(lv.group_prefix, t) for t in missing)
        raise CommandError(
            f"unknown topic(s) {names} on {bootstrap} (the group {lv.group_prefix} has: "
            f"{', '.join(known) or 'no topics visible to this credential'})"
        )


def _read_alerts(paths: Sequence[str], lines: bool) -> list[str]:
    """Read every alert before publishing any, so that a bad file sends nothing."""
    alerts: list[str] = []
    for path in paths:
        where = "standard input" if path == "-" else f"alert file {path}"
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {where}: {exc}") from None
        if lines:
            alerts += [line for line in text.splitlines() if line.strip()]
        elif path == "-" and not text.strip():
            raise CommandError("no alert on standard input")
        else:
            alerts.append(text)
    return alerts


def _json_line(full_topic: str, payload: Any, metadata: Any) -> str:
    """One ``listen --json`` line: the alert and where it was read from (partition, offset
    and timestamp when the listen loop passes the alert's metadata, else null)."""
    record: dict[str, Any] = {
        "topic": getattr(metadata, "topic", None) or full_topic,
        "partition": getattr(metadata, "partition", None),
        "offset": getattr(metadata, "offset", None),
        "timestamp": getattr(metadata, "timestamp", None),
    }
    if isinstance(payload, Blob):  # raw bytes from a non-hop producer
        payload = payload.content
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(payload).decode("ascii")
            return json.dumps(record)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            pass  # not JSON: the text itself
    try:
        record["payload"] = payload
        return json.dumps(record)
    except (TypeError, ValueError):
        record["payload"] = str(payload)  # a hop model or another object: its text
        return json.dumps(record)


def _status_line(lv: client, opts: argparse.Namespace, topics: Sequence[str]) -> str:
    host, port = server_address(lv.server, lv.port)
    names = ", ".join(full_name(lv.group_prefix, t) for t in topics) or (
        f"every {lv.group_prefix} topic"
    )
    who = f"consumer group {lv.consumer_group}" if lv.consumer_group else "no consumer group"
    if opts.from_beginning:
        start = "from the earliest retained alert"
    elif opts.since is not None:
        start = f"from {opts.since.isoformat(timespec='seconds')}"
    elif lv.consumer_group:
        start = "from where the group left off"
    else:
        start = "from now"
    stops = [f"after {opts.count} alert(s)"] if opts.count else []
    if opts.until_eos:
        stops.append("at the end of each partition")
    if opts.timeout:
        stops.append(f"after {opts.timeout:g} s")
    until = " or ".join(stops) if stops else "until Ctrl-C"
    return f"igwn-alert: listening to {names} on {host}:{port} ({who}), {start}, {until}"


def _listen(lv: client, opts: argparse.Namespace) -> int:
    _check(lv, opts.topics)
    since = "earliest" if opts.from_beginning else opts.since
    options: dict[str, Any] = {}
    if opts.count:
        options["max_messages"] = opts.count
    if opts.until_eos:
        options["until_eos"] = True
    callback = None
    if opts.json:

        def callback(topic: str, payload: Any, metadata: Any = None) -> None:
            print(_json_line(full_name(lv.group_prefix, topic), payload, metadata), flush=True)

    done = threading.Event()
    status = _status_line(lv, opts, opts.topics)

    def announce() -> None:
        while not done.is_set():
            if lv.listening.wait(0.1):
                print(status, file=sys.stderr, flush=True)
                return

    announcer = threading.Thread(target=announce, name="igwn-alert-status", daemon=True)
    timer = threading.Timer(opts.timeout, lv.stop) if opts.timeout else None
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        lv.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    services = _watchdog.start_for_listen(lv, opts)  # --metrics-port, systemd watchdog
    announcer.start()
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        lv.listen(callback, opts.topics or None, since=since, **options)
    finally:
        done.set()
        if timer is not None:
            timer.cancel()
        signal.signal(signal.SIGTERM, previous)
        services.close()
        announcer.join()
    return 0


def _run(opts: argparse.Namespace) -> int:
    if opts.action == "serve":
        from .testing._embedded_broker import serve

        port = opts.serve_port if opts.serve_port is not None else opts.given_port
        serve(port=port, stream=sys.stdout)
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
    alerts = _read_alerts(opts.alertfile, opts.lines) if opts.action == "send" else []
    extra: dict[str, Any] = {}
    if opts.settings:
        extra["config"] = dict(opts.settings)
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
        **extra,
    )
    if opts.action == "topics":
        _check(lv, [])
        print(f"Topics for group {opts.group} associated with the current credential:")
        print(*lv.get_topics(), sep="\n")
        return 0
    if opts.action == "lag":
        return _lag.run(lv, opts)
    if opts.action == "send":
        _check(lv, [opts.topic])
        try:
            for alert in alerts:
                lv.publish(topic=opts.topic, msg=alert)
        finally:
            lv.disconnect()
        return 0
    return _listen(lv, opts)


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
    p = parser()
    opts = p.parse_args(args)
    opts.given_port = opts.port
    _apply_environment(opts, p)
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
    except confluent_kafka.KafkaException as exc:  # librdkafka refused a setting (-X)
        error: Any = exc.args[0] if exc.args else None
        reason = error.str() if hasattr(error, "str") else str(exc)
        print(f"igwn-alert: error: {reason}", file=sys.stderr)
        return 1
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
