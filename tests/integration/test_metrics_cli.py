"""``igwn-alert listen --metrics-port``: the exporter of a real listener, scraped over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import igwn_alert

SRC = Path(igwn_alert.__file__).resolve().parent.parent


def command() -> list[str]:
    script = shutil.which("igwn-alert", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from igwn_alert.tool import main; sys.exit(main())"]


def env_for(home: Path, *first: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [*map(str, first), str(SRC), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.pop("NETRC", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def plain(broker: Any, group: str) -> list[str]:
    host, port = broker.plaintext.rsplit(":", 1)
    return ["-s", f"kafka://{host}", "-p", port, "--no-auth", "-g", group]


def test_listen_serves_metrics_until_it_ends(
    kafka_broker: Any, make_topic: Any, tmp_path: Path
) -> None:
    topic = make_topic("superevent")
    port = free_port()
    proc = subprocess.Popen(
        [
            *command(),
            *plain(kafka_broker, topic.group),
            "listen",
            "--metrics-port",
            f"127.0.0.1:{port}",
            "superevent",
        ],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, text = get(port, "/metrics")
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {
            "igwn_alert_listener_state",
            "igwn_alert_latency_seconds",
            "igwn_alert_reconnects",
            "igwn_alert_publish_in_flight",
            "igwn_alert_healthy",
        } <= names
        status, body = get(port, "/healthz")
        assert status in (200, 503)
        assert body.startswith("ok: " if status == 200 else "unhealthy: ")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with pytest.raises(OSError):
        get(port, "/metrics")  # the server went with the listener


def test_missing_prometheus_client_is_one_line(
    kafka_broker: Any, make_topic: Any, tmp_path: Path
) -> None:
    topic = make_topic("superevent")
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no prometheus_client here')\n")
    result = subprocess.run(
        [*command(), *plain(kafka_broker, topic.group), "listen", "--metrics-port", "0"],
        env=env_for(tmp_path, shadow.parent),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "pip install 'igwn-alert[metrics]'" in lines[0]


def test_bad_metrics_port_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*command(), "listen", "--metrics-port", "localhost:http"],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "not a port or HOST:PORT: 'localhost:http'" in result.stderr
