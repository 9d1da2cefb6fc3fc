"""systemd readiness and watchdog notifications driven by the health rule.

Under a ``Type=notify`` unit, systemd sets ``NOTIFY_SOCKET`` (and, with ``WatchdogSec=``,
``WATCHDOG_USEC``). :class:`Watchdog` then sends ``READY=1`` once the listener is
listening, and ``WATCHDOG=1`` every half watchdog period for as long as
:func:`igwn_alert._stats.health` says the listener is healthy; when it is not, it stops
pinging and reports why in ``STATUS=``, so systemd restarts the service when the period
runs out. The protocol is sd_notify(3): one datagram on a Unix socket.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any, Optional

__all__ = ["Watchdog", "notify", "start_for_listen", "start_from_environment"]

log = logging.getLogger(__name__)


def notify(message: str, socket_path: Optional[str] = None) -> bool:
    """Send one sd_notify message (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``).

    Parameters
    ----------
    message : str
        The message.
    socket_path : str, optional
        The socket (default ``$NOTIFY_SOCKET``; ``@name`` is an abstract socket).

    Returns
    -------
    bool
        False when there is no socket to send to (not run by systemd) or sending failed.
    """
    path = socket_path or os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd on %s: %s", path, exc)
        return False
    return True


class Watchdog:
    """A thread that tells systemd the listener is ready, then healthy, until stopped.

    Parameters
    ----------
    client : igwn_alert.client
        The listening client (its ``health()`` is asked).
    socket_path : str
        The notification socket.
    interval : float, optional
        Seconds between ``WATCHDOG=1`` pings (half the watchdog period); None sends only
        ``READY=1`` (a ``Type=notify`` unit without ``WatchdogSec=``), checking every second.
    **health_options
        Limits of the health rule (``max_reconnecting_s``, ``max_lag``, ``max_silence_s``).
    """

    def __init__(
        self,
        client: Any,
        socket_path: str,
        interval: Optional[float] = None,
        **health_options: Any,
    ) -> None:
        self._client = client
        self._socket = socket_path
        self._interval = interval
        self._options = health_options
        self._stop = threading.Event()
        self._ready = False
        self._thread = threading.Thread(target=self._run, name="igwn-alert-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self._interval if self._interval is not None else 1.0
        last_reason = None
        while True:
            ok, reason = self._client.health(**self._options)
            state = self._client.stats()["listener"]["state"]
            if not self._ready and state == "listening":
                self._ready = notify("READY=1", self._socket)
            if ok and self._interval is not None:
                notify("WATCHDOG=1", self._socket)
            if reason != last_reason:
                notify(f"STATUS={'ok' if ok else 'unhealthy'}: {reason}", self._socket)
                last_reason = reason
            if self._stop.wait(period):
                return

    def close(self) -> None:
        """Stop pinging and tell systemd the service is stopping."""
        self._stop.set()
        self._thread.join()
        notify("STOPPING=1", self._socket)


def start_from_environment(
    client: Any, environ: Optional[Mapping[str, str]] = None, **health_options: Any
) -> Optional[Watchdog]:
    """Start a :class:`Watchdog` if systemd asked for notifications, else return None.

    Parameters
    ----------
    client : igwn_alert.client
        The listening client.
    environ : mapping, optional
        Default ``os.environ``: ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID``.
    **health_options
        Limits of the health rule.

    Returns
    -------
    Watchdog or None
        The running watchdog.
    """
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    pid = env.get("WATCHDOG_PID")
    usec = env.get("WATCHDOG_USEC")
    interval: Optional[float] = None
    if usec and (not pid or pid == str(os.getpid())):
        try:
            interval = max(0.05, int(usec) / 1e6 / 2)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not a whole number", usec)
    return Watchdog(client, path, interval, **health_options)


class _Services:
    def __init__(self, *parts: Any) -> None:
        self._parts = [p for p in parts if p is not None]

    def close(self) -> None:
        for part in reversed(self._parts):
            part.close()


def start_for_listen(client: Any, opts: Any) -> _Services:
    """What ``igwn-alert listen`` runs beside the listener: metrics and the systemd watchdog.

    Parameters
    ----------
    client : igwn_alert.client
        The client.
    opts : argparse.Namespace
        The parsed options (``--metrics-port``).

    Returns
    -------
    object
        Its ``close()`` stops them.
    """
    from ._metrics import serve_from_options

    server = serve_from_options(client, opts)
    try:
        watchdog = start_from_environment(client)
    except BaseException:
        if server is not None:
            server.close()
        raise
    return _Services(server, watchdog)
