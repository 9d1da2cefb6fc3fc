"""The ``igwn-alert`` command line end to end, as subprocesses against the real broker.

The command is the console script next to ``sys.executable`` if there is one, else
``python -c 'from igwn_alert.tool import main ...'``; either way PYTHONPATH puts the
``igwn_alert`` under test first, and ``-V`` checks that it is the one running. HOME and
XDG_CONFIG_HOME point into tmp_path, so no real credential is ever read.

A ``listen`` subprocess is ready once it prints a probe alert that the test keeps
publishing until it shows up; everything published after that is seen.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import plain_client

import igwn_alert

DATA = Path(__file__).resolve().parent.parent / "data"
SRC = Path(igwn_alert.__file__).resolve().parent.parent
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 20.0
ERROR_TIMEOUT = 15.0


# ---------------------------------------------------------------------------- helpers


def cli_command() -> list[str]:
    script = shutil.which("igwn-alert", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from igwn_alert.tool import main; sys.exit(main())"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    return home


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NETRC", None)
    env.update(extra)
    return env


def run_cli(
    args: list[str], home: Path, timeout: float = COMMAND_TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command() + args,
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def plain_args(broker: Any, group: str) -> list[str]:
    host, port = broker.plaintext.rsplit(":", 1)
    return ["-s", f"kafka://{host}", "-p", port, "--no-auth", "-g", group]


def sasl_args(broker: Any, group: str) -> list[str]:
    host, port = broker.sasl.rsplit(":", 1)
    return ["-s", f"kafka://{host}", "-p", port, "-g", group]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CliListener:
    """An ``igwn-alert ... listen`` subprocess whose output is read as it comes."""

    def __init__(self, args: list[str], home: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            cli_command() + args,
            env=cli_env(home, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            # a background job of a non-interactive shell ignores SIGINT, and so would
            # its children: give the command line the default, as in a terminal
            preexec_fn=_default_sigint,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, True)),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, False)),
        ]
        for t in self._readers:
            t.daemon = True
            t.start()

    def _pump(self, stream: Any, sink: list[str], notify: bool) -> None:
        for line in stream:
            sink.append(line)
            if notify:
                self._lines.put(line)

    def output(self) -> str:
        return "".join(self.stdout)

    def wait_for_output(self, fragment: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while fragment not in self.output():
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                return fragment in self.output()
            try:
                self._lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                pass
        return True

    def wait_ready(self, publisher: igwn_alert.client, topic: str) -> None:
        """Publish probes until the listener prints one."""
        token = f"probe-{uuid.uuid4().hex}"
        deadline = time.monotonic() + READY_TIMEOUT
        n = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"listen exited early ({self.proc.returncode}): {''.join(self.stderr)}")
            publisher.publish(topic, json.dumps({"probe": token, "n": n}))
            n += 1
            if self.wait_for_output(token, 0.5):
                return
        pytest.fail(
            f"listen did not print a probe within {READY_TIMEOUT} s: {''.join(self.stderr)}"
        )

    def finish(self, sig: int, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"listen did not exit within {timeout} s of signal {sig}")
        for t in self._readers:
            t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def listeners() -> Iterator[list[CliListener]]:
    started: list[CliListener] = []
    yield started
    for listener in started:
        listener.kill()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------------------- basics


def test_version_is_ours(home: Path) -> None:
    result = run_cli(["-V"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"igwn-alert client {igwn_alert.__version__}"


def test_topics(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    names = ["superevent", "cbc_gstlal", "external.fermi"]
    for name in names:
        make_topic(name)
    group = make_topic.group
    make_topic("superevent", group=f"test-{group}")  # another group's topic

    result = run_cli([*plain_args(kafka_broker, group), "topics"], home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Topics for group {group} associated with the current credential:"
    assert sorted(lines[1:]) == sorted(names)
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- send and listen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_send_reaches_listen_which_exits_quietly(
    kafka_broker: Any, make_topic: Any, home: Path, listeners: list[CliListener], sig: int
) -> None:
    topic = make_topic("superevent")
    text = (DATA / "superevent_new.json").read_text()
    alert_file = home / "alert.json"
    alert_file.write_text(text)
    publisher = plain_client(kafka_broker.plaintext, topic.group)

    listener = CliListener([*plain_args(kafka_broker, topic.group), "listen", "superevent"], home)
    listeners.append(listener)
    listener.wait_ready(publisher, "superevent")

    sent = run_cli(
        [*plain_args(kafka_broker, topic.group), "send", "superevent", str(alert_file)], home
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.strip() == ""
    assert listener.wait_for_output('"superevent_id": "MS250115ab"', 15), listener.output()
    time.sleep(0.2)

    rc = listener.finish(sig)
    publisher.disconnect()
    out, err = listener.output(), "".join(listener.stderr)
    assert rc == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # stderr: the one status line printed once listening, nothing else
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"igwn-alert: listening to {topic.full} "), err
    # the file's text exactly, under the header; not JSON-encoded a second time
    assert f"New message from topic {topic.full}:\n{text}\n" in out
    assert json.dumps(text) not in out
    assert out.count(text) == 1


def test_listen_from_beginning_prints_what_send_sent(
    kafka_broker: Any, make_topic: Any, home: Path, listeners: list[CliListener]
) -> None:
    topic = make_topic("superevent")
    text = json.dumps({"alert_type": "new", "uid": uuid.uuid4().hex}) + "\n"
    alert_file = home / "alert.json"
    alert_file.write_text(text)
    sent = run_cli(
        [*plain_args(kafka_broker, topic.group), "send", "superevent", str(alert_file)], home
    )
    assert sent.returncode == 0, sent.stderr

    args = [*plain_args(kafka_broker, topic.group), "listen", "--from-beginning", "superevent"]
    listener = CliListener(args, home)
    listeners.append(listener)
    assert listener.wait_for_output(text, READY_TIMEOUT), listener.output()
    assert listener.finish(signal.SIGTERM) == 0
    assert listener.output() == f"New message from topic {topic.full}:\n{text}\n"


# ---------------------------------------------------------------------------- SCRAM credentials


def test_netrc_option(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path, listeners: list[CliListener]
) -> None:
    topic = make_topic("superevent")
    make_topic("cbc_gstlal")  # not readable by the user: not listed
    user = make_user(read=[topic], write=[topic])
    args = [*sasl_args(kafka_broker, topic.group), "-n", str(user.netrc)]

    result = run_cli([*args, "topics"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"]

    # send and listen over SCRAM with that credential
    alert_file = home / "alert.json"
    alert_file.write_text('{"uid": "S1", "via": "netrc"}')
    listener = CliListener([*args, "listen", "superevent"], home)
    listeners.append(listener)
    listener.wait_ready(plain_client(kafka_broker.plaintext, topic.group), "superevent")
    sent = run_cli([*args, "send", "superevent", str(alert_file)], home)
    assert sent.returncode == 0, sent.stderr
    assert listener.wait_for_output('"via": "netrc"', 15), listener.output()
    assert listener.finish(signal.SIGINT) == 0
    assert f'New message from topic {topic.full}:\n{{"uid": "S1", "via": "netrc"}}\n' in (
        listener.output()
    )


def test_username_option_picks_that_users_credential(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    first = make_topic("superevent")
    second = make_topic("cbc_gstlal")
    alice = make_user(read=[first])
    bob = make_user(read=[second])
    auth_toml = home / ".config" / "hop" / "auth.toml"
    auth_toml.parent.mkdir(parents=True)
    auth_toml.write_text(alice.auth_toml.read_text() + "\n" + bob.auth_toml.read_text())
    os.chmod(auth_toml, 0o600)
    args = sasl_args(kafka_broker, first.group)

    for user, expected in ((alice, ["superevent"]), (bob, ["cbc_gstlal"])):
        result = run_cli([*args, "-u", user.username, "topics"], home)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == expected
        assert user.password not in result.stdout + result.stderr

    result = run_cli([*args, "-u", "nobody-here", "topics"], home)
    assert_one_line_error(result, "nobody-here")


def test_bad_password(kafka_broker: Any, make_topic: Any, make_user: Any, home: Path) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    host = kafka_broker.sasl.rsplit(":", 1)[0]
    netrc = home / "bad.netrc"
    netrc.write_text(f"machine {host} login {user.username} password not-{user.password}\n")
    os.chmod(netrc, 0o600)
    args = [*sasl_args(kafka_broker, topic.group), "-n", str(netrc)]
    alert_file = home / "alert.json"
    alert_file.write_text("{}")

    for command in (["topics"], ["listen", "superevent"], ["send", "superevent", str(alert_file)]):
        t0 = time.monotonic()
        result = run_cli([*args, *command], home, timeout=ERROR_TIMEOUT + 5)
        elapsed = time.monotonic() - t0
        line = assert_one_line_error(result)
        assert elapsed < ERROR_TIMEOUT, f"{command}: {elapsed:.1f} s"
        assert user.password not in line
        assert "credential" in line or "authentic" in line.lower(), line


def test_unreachable_server(kafka_broker: Any, home: Path) -> None:
    port = closed_port()
    t0 = time.monotonic()
    result = run_cli(
        ["-s", "kafka://127.0.0.1", "-p", str(port), "--no-auth", "topics"],
        home,
        timeout=ERROR_TIMEOUT + 5,
    )
    assert time.monotonic() - t0 < ERROR_TIMEOUT
    assert_one_line_error(result, f"127.0.0.1:{port}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_still_connecting_exits_quietly(
    kafka_broker: Any, home: Path, listeners: list[CliListener], sig: int
) -> None:
    """Stopped while it is still trying to reach the server (not yet listening)."""
    port = closed_port()
    args = ["-s", "kafka://127.0.0.1", "-p", str(port), "--no-auth", "-l", "info", "listen"]
    listener = CliListener([*args, "superevent"], home)
    listeners.append(listener)
    # started (past its imports, which take seconds on a loaded machine) and connecting:
    # its first log line says so; the connection time-out is 10 s
    deadline = time.monotonic() + READY_TIMEOUT
    while f"checking the broker at 127.0.0.1:{port}" not in "".join(listener.stderr):
        assert listener.proc.poll() is None, "".join(listener.stderr)
        assert time.monotonic() < deadline, "".join(listener.stderr)
        time.sleep(0.05)
    time.sleep(0.5)
    assert listener.proc.poll() is None, "".join(listener.stderr)
    t0 = time.monotonic()
    rc = listener.finish(sig)
    err = "".join(listener.stderr)
    assert rc == 0, (rc, err)
    assert time.monotonic() - t0 < 3.0
    assert "Traceback" not in err, err
    assert all(" INFO igwn_alert" in line for line in err.splitlines()), err


def test_unknown_topic(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    alert_file = home / "alert.json"
    alert_file.write_text("{}")
    args = plain_args(kafka_broker, topic.group)
    for command in (["send", "no_such_topic", str(alert_file)], ["listen", "no_such_topic"]):
        result = run_cli([*args, *command], home)
        assert_one_line_error(result, f"{topic.group}.no_such_topic")
    # a missing alert file is one line too
    result = run_cli([*args, "send", "superevent", str(alert_file) + ".missing"], home)
    assert_one_line_error(result, "alert.json.missing")
