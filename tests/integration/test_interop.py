"""Interoperability with the REFERENCE client (igwn-alert 0.7.0 from PyPI) over the real
broker: what one writes, the other reads exactly as the reference itself would.

The reference runs in its own virtual environment, ``<repo>/.cache/reference-venv``
(created once, then reused), as small scripts in subprocesses. Its listener prints one
JSON line per alert: the short topic, the payload's type, ``repr()`` and value. Our
listener's view is described the same way in-process, and the two are compared.

The reference's listener starts at the newest alert and positions itself lazily, so the
test publishes probe alerts until it prints one; everything after that is seen.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from _helpers import plain_client, read_from_start

import igwn_alert

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
REFERENCE_VENV = REPO / ".cache" / "reference-venv"
REFERENCE_VERSION = "0.7.0"
READY_TIMEOUT = 30.0
RECEIVE_TIMEOUT = 20.0


# ---------------------------------------------------------------------------- the reference


def _reference_env(home: Optional[Path] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if home is not None:
        env["HOME"] = str(home)
        env["XDG_CONFIG_HOME"] = str(home / ".config")
        env.pop("NETRC", None)
    return env


def _reference_version(python: Path) -> Optional[str]:
    if not python.exists():
        return None
    probe = (
        "import os, igwn_alert, hop, confluent_kafka; "
        "assert os.path.realpath(igwn_alert.__file__).startswith(os.path.realpath(os.sys.prefix)); "
        "print(igwn_alert.__version__)"
    )
    result = subprocess.run(
        [str(python), "-c", probe],
        env=_reference_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    return result.stdout.strip() if result.returncode == 0 else result.stderr[-1000:] or None


@pytest.fixture(scope="session")
def reference_python() -> Path:
    """The Python of a virtual environment holding the reference igwn-alert 0.7.0."""
    python = REFERENCE_VENV / "bin" / "python"
    REFERENCE_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REFERENCE_VENV.parent / "reference-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _reference_version(python) != REFERENCE_VERSION:
            shutil.rmtree(REFERENCE_VENV, ignore_errors=True)
            steps = [
                [sys.executable, "-m", "venv", str(REFERENCE_VENV)],
                # hop-client 0.13 imports six without declaring it
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    f"igwn-alert=={REFERENCE_VERSION}",
                    "six",
                ],
            ]
            for step in steps:
                result = subprocess.run(
                    step, env=_reference_env(), capture_output=True, text=True, timeout=600
                )
                if result.returncode != 0:
                    pytest.fail(
                        f"cannot build the reference venv ({' '.join(step)}):\n"
                        f"{result.stdout}\n{result.stderr}",
                        pytrace=False,
                    )
        version = _reference_version(python)
    assert version == REFERENCE_VERSION, f"reference venv has igwn-alert {version}"
    return python


# Shared by the reference's scripts and by our side: how a payload is reported.
DESCRIBE = r"""
import base64


def describe(topic, payload):
    kind = type(payload)
    if isinstance(payload, (dict, list, str, int, float, bool)) or payload is None:
        value = payload
    elif isinstance(getattr(payload, "content", None), bytes):
        value = {"blob": base64.b64encode(payload.content).decode()}
    else:
        value = {"unknown": repr(payload)}
    return {
        "topic": topic,
        "type": kind.__module__ + "." + kind.__qualname__,
        "repr": repr(payload),
        "value": value,
    }
"""

REFERENCE_LISTENER = (
    DESCRIBE
    + r"""
import json, os, sys, threading, warnings
warnings.simplefilter("ignore")
import igwn_alert

server, port, group, topics, end = sys.argv[1:6]
client = igwn_alert.client(noauth=True, server=server, port=int(port), group=group)


def callback(topic, payload):
    print(json.dumps(describe(topic, payload)), flush=True)
    if isinstance(payload, dict) and payload.get("end") == end:
        sys.stdout.flush()
        os._exit(0)


threading.Timer(90, lambda: os._exit(3)).start()  # never outlive the test
print("listening", igwn_alert.__version__, igwn_alert.__file__, flush=True)
client.listen(callback, topics.split(","))
"""
)

REFERENCE_PUBLISHER = r"""
import base64, json, sys, warnings
warnings.simplefilter("ignore")
import igwn_alert

server, port, group, topic, mode, path = sys.argv[1:7]
client = igwn_alert.client(noauth=True, server=server, port=int(port), group=group)
messages = []
for item in json.load(open(path)):
    if item["kind"] == "bytes":
        messages.append(base64.b64decode(item["value"]))
    else:
        messages.append(item["value"])
if mode == "connect":
    client.connect(topic)
    for msg in messages:
        client.publish_to_topic(topic, msg)
    client.flush_by_topic(topic)
    client.disconnect()
else:
    for msg in messages:
        client.publish(topic, msg)
print("published", len(messages), igwn_alert.__version__, flush=True)
"""

_namespace: dict[str, Any] = {}
exec(DESCRIBE, _namespace)  # our side describes payloads with the very same code
describe = _namespace["describe"]


def encode_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out = []
    for msg in messages:
        if isinstance(msg, bytes):
            out.append({"kind": "bytes", "value": base64.b64encode(msg).decode()})
        else:
            out.append({"kind": type(msg).__name__, "value": msg})
    return out


class ReferenceListener:
    """The reference client's listen(), in a subprocess, reporting JSON lines."""

    def __init__(
        self, python: Path, workdir: Path, broker: Any, group: str, topics: list[str]
    ) -> None:
        script = workdir / "reference_listener.py"
        script.write_text(REFERENCE_LISTENER)
        self.end = f"end-{uuid.uuid4().hex}"
        host, port = broker.plaintext.rsplit(":", 1)
        self.proc = subprocess.Popen(
            [str(python), str(script), f"kafka://{host}/", port, group, ",".join(topics), self.end],
            env=_reference_env(workdir),
            cwd=str(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.records: list[dict[str, Any]] = []
        self.header: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_out, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.records.append(json.loads(line))
            else:
                self.header.append(line)
            self.lines.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _wait_record(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(predicate(r) for r in list(self.records)):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                return any(predicate(r) for r in list(self.records))
            try:
                self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                pass
        return True

    def wait_ready(self, publisher: igwn_alert.client, topic: str) -> None:
        """Publish probes (with our client) until the reference prints one."""
        token = f"probe-{uuid.uuid4().hex}"
        deadline = time.monotonic() + READY_TIMEOUT
        n = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"reference listener exited: {''.join(self.stderr)[-2000:]}")
            publisher.publish(topic, {"probe": token, "n": n})
            n += 1
            if self._wait_record(lambda r: _is_probe(r["value"]), 0.5):
                return
        pytest.fail(f"the reference listener printed no probe within {READY_TIMEOUT} s")

    def wait_end(self, timeout: float = RECEIVE_TIMEOUT) -> list[dict[str, Any]]:
        """Wait for the end marker (the script then exits); return the non-probe records."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"reference listener got no end marker within {timeout} s: {self.records}")
        for t in self._threads:
            t.join(5)
        assert rc == 0, "".join(self.stderr)[-2000:]
        assert self.header and REFERENCE_VERSION in self.header[0], self.header
        assert str(REFERENCE_VENV) in self.header[0], self.header
        return [r for r in self.records if not _is_probe(r["value"])]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _is_probe(value: Any) -> bool:
    return isinstance(value, dict) and "probe" in value


def run_reference_publisher(
    python: Path, workdir: Path, broker: Any, group: str, topic: str, messages: list[Any], mode: str
) -> None:
    script = workdir / "reference_publisher.py"
    script.write_text(REFERENCE_PUBLISHER)
    payload = workdir / f"messages-{uuid.uuid4().hex[:6]}.json"
    payload.write_text(json.dumps(encode_messages(messages)))
    host, port = broker.plaintext.rsplit(":", 1)
    result = subprocess.run(
        [str(python), str(script), f"kafka://{host}/", port, group, topic, mode, str(payload)],
        env=_reference_env(workdir),
        cwd=str(workdir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"published {len(messages)} {REFERENCE_VERSION}"), result.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "reference"
    (path / ".config").mkdir(parents=True)
    return path


@pytest.fixture
def reference_listeners() -> Iterator[list[ReferenceListener]]:
    started: list[ReferenceListener] = []
    yield started
    for listener in started:
        listener.kill()


# ---------------------------------------------------------------------------- our side


class OurListener:
    """Our client's listen() in a thread, describing payloads as the reference script does."""

    def __init__(self, client: igwn_alert.client, topics: list[str], end: str) -> None:
        self.client = client
        self.end = end
        self.records: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(topics,), daemon=True)

    def _callback(self, topic: str, payload: Any) -> None:
        self.records.append(describe(topic, payload))
        if isinstance(payload, dict) and payload.get("end") == self.end:
            self.done.set()

    def _run(self, topics: list[str]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.client.listen(self._callback, topics)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.done.set()

    def __enter__(self) -> OurListener:
        self._thread.start()
        if not self.client.listening.wait(READY_TIMEOUT):
            self.client.stop()
            pytest.fail(f"our listener not ready within {READY_TIMEOUT} s: {self.error!r}")
        return self

    def wait_end(self, timeout: float = RECEIVE_TIMEOUT) -> list[dict[str, Any]]:
        assert self.done.wait(timeout), f"our listener got no end marker: {self.records}"
        assert self.error is None, repr(self.error)
        return [r for r in self.records if not _is_probe(r["value"])]

    def __exit__(self, *exc: object) -> None:
        self.client.stop()
        self._thread.join(5)
        assert not self._thread.is_alive()


def raw_alerts(broker: Any, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """The first ``count`` raw messages of ``topic`` that are not probes."""

    def not_probe(msg: Any) -> bool:
        try:
            value = json.loads(msg.value())
        except ValueError:
            value = None
        return not _is_probe(value)

    got = read_from_start({"bootstrap.servers": broker.plaintext}, topic, count, timeout, not_probe)
    assert len(got) == count
    return got


def wire(msg: Any) -> tuple[bytes, dict[str, bytes]]:
    """What a message is on the wire, minus hop's per-message UUID."""
    headers = {k: v for k, v in (msg.headers() or []) if k != "_id"}
    return msg.value(), headers


@pytest.fixture(scope="module")
def alert_text() -> str:
    return (DATA / "superevent_new.json").read_text()


# ---------------------------------------------------------------------------- (a) reference writes


@pytest.mark.parametrize("mode", ["connect", "publish"])
def test_reference_publisher_reaches_our_listener_as_it_reaches_its_own(
    reference_python: Path,
    workdir: Path,
    reference_listeners: list[ReferenceListener],
    kafka_broker: Any,
    make_topic: Any,
    alert_text: str,
    mode: str,
) -> None:
    topic = make_topic("superevent")
    alert = json.loads(alert_text)
    raw = b"\x00\x01raw bytes, not json \xfe\xff"
    reference = ReferenceListener(
        reference_python, workdir, kafka_broker, topic.group, ["superevent"]
    )
    reference_listeners.append(reference)
    ours_client = plain_client(kafka_broker.plaintext, topic.group)
    with OurListener(ours_client, ["superevent"], reference.end) as ours:
        reference.wait_ready(plain_client(kafka_broker.plaintext, topic.group), "superevent")
        messages = [alert_text, alert, raw, {"end": reference.end}]
        run_reference_publisher(
            reference_python, workdir, kafka_broker, topic.group, "superevent", messages, mode
        )
        theirs_seen = reference.wait_end()
        ours_seen = ours.wait_end()

    assert ours_seen == theirs_seen
    assert [r["topic"] for r in ours_seen] == ["superevent"] * 4
    assert [r["type"] for r in ours_seen] == [
        "builtins.str",
        "builtins.dict",
        "hop.models.Blob",
        "builtins.dict",
    ]
    assert ours_seen[0]["value"] == alert_text  # GraceDB's text, decoded once only
    assert ours_seen[1]["value"] == alert
    assert base64.b64decode(ours_seen[2]["value"]["blob"]) == raw


# ---------------------------------------------------------------------------- (b) we write


def test_our_publisher_reaches_the_reference_listener_as_its_own_publishing_does(
    reference_python: Path,
    workdir: Path,
    reference_listeners: list[ReferenceListener],
    kafka_broker: Any,
    make_topic: Any,
    alert_text: str,
) -> None:
    topic = make_topic("superevent")
    alert = json.loads(alert_text)
    messages = [alert_text, alert, ["a", 1, None]]
    reference = ReferenceListener(
        reference_python, workdir, kafka_broker, topic.group, ["superevent"]
    )
    reference_listeners.append(reference)
    publisher = plain_client(kafka_broker.plaintext, topic.group)
    reference.wait_ready(publisher, "superevent")

    # 1. the reference publishes, 2. we do with connect/publish_to_topic, 3. with publish()
    run_reference_publisher(
        reference_python, workdir, kafka_broker, topic.group, "superevent", messages, "connect"
    )
    publisher.connect("superevent")
    for msg in messages:
        publisher.publish_to_topic("superevent", msg)
    publisher.flush_by_topic("superevent")
    for msg in messages:
        publisher.publish("superevent", msg)
    publisher.publish("superevent", {"end": reference.end})
    publisher.disconnect()

    seen = reference.wait_end()
    n = len(messages)
    by_reference, by_us, by_our_publish = seen[:n], seen[n : 2 * n], seen[2 * n : 3 * n]
    assert by_us == by_reference
    assert by_our_publish == by_reference
    assert seen[3 * n]["value"] == {"end": reference.end}
    assert [r["type"] for r in by_reference] == ["builtins.str", "builtins.dict", "builtins.list"]
    assert by_reference[0]["value"] == alert_text
    assert by_reference[1]["value"] == alert

    # the same bytes and headers on the wire (hop's _id aside)
    on_wire = raw_alerts(kafka_broker, topic.full, 3 * n + 1)
    theirs = [wire(m) for m in on_wire[:n]]
    assert [wire(m) for m in on_wire[n : 2 * n]] == theirs
    assert [wire(m) for m in on_wire[2 * n : 3 * n]] == theirs
