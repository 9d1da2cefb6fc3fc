"""systemd notifications from the health rule, received on a real Unix datagram socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import igwn_alert
from igwn_alert import _watchdog

WAIT = 10.0


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(WAIT)

    def next(self) -> str:
        return self.sock.recv(4096).decode()

    def until(self, wanted: str) -> list[str]:
        """Messages up to and including the first that starts with ``wanted``."""
        seen = []
        while True:
            message = self.next()
            seen.append(message)
            if message.startswith(wanted):
                return seen


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.sock.close()


@pytest.fixture
def alert_client() -> igwn_alert.client:
    return igwn_alert.client(noauth=True, server="kafka://127.0.0.1/", port=9, group="grp")


def test_ready_then_pings_while_healthy_then_silence(
    notify_socket: NotifySocket, alert_client: igwn_alert.client
) -> None:
    stats = alert_client._listener_stats
    dog = _watchdog.Watchdog(alert_client, notify_socket.path, 0.02, max_reconnecting_s=0)
    try:
        assert notify_socket.next() == "STATUS=unhealthy: the listener is stopped"
        stats.set_state("listening")
        got = notify_socket.until("READY=1")
        assert "WATCHDOG=1" not in got  # no ping before it is listening
        got = notify_socket.until("STATUS=ok: listening")
        pings = notify_socket.until("WATCHDOG=1") + notify_socket.until("WATCHDOG=1")
        assert pings.count("WATCHDOG=1") == 2
        stats.set_state("reconnecting")
        time.sleep(0.01)  # more than max_reconnecting_s=0
        got = notify_socket.until("STATUS=unhealthy: reconnecting")
        time.sleep(0.2)  # several periods pass while unhealthy
    finally:
        dog.close()
    after = notify_socket.until("STOPPING=1")
    assert after == ["STOPPING=1"]  # no ping while unhealthy


def test_abstract_socket_name(alert_client: igwn_alert.client) -> None:
    name = f"igwn-alert-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(WAIT)
        assert _watchdog.notify("READY=1", "@" + name)
        assert s.recv(100) == b"READY=1"


def test_no_socket_no_watchdog(alert_client: igwn_alert.client, tmp_path: Path) -> None:
    assert _watchdog.start_from_environment(alert_client, {}) is None
    assert not _watchdog.notify("READY=1", str(tmp_path / "nobody-listens"))


def test_environment(notify_socket: NotifySocket, alert_client: igwn_alert.client) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "30000000"}
    dog = _watchdog.start_from_environment(alert_client, env)
    assert dog is not None
    try:
        assert dog._interval == 15.0
    finally:
        dog.close()
    other = dict(env, WATCHDOG_PID=str(os.getpid() + 1))  # meant for another process
    dog = _watchdog.start_from_environment(alert_client, other)
    assert dog is not None
    try:
        assert dog._interval is None
    finally:
        dog.close()
