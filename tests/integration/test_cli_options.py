"""The command line's options and configuration paths, end to end against the real broker.

Each test runs ``igwn-alert`` (or ``python -m igwn_alert``) as a subprocess, as
``test_cli.py`` does, and checks what it printed, what reached the broker or what the
broker saw: ``listen --json/--count/--until-eos/--timeout``, the status line on stderr,
``send`` with several files and with standard input, ``-X key=value``, ``--auth-file``,
the ``IGWN_ALERT_*`` environment variables and their precedence, ``-p`` for ``serve``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import test_cli
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from test_cli import (
    COMMAND_TIMEOUT,
    READY_TIMEOUT,
    CliListener,
    assert_one_line_error,
    cli_command,
    cli_env,
    plain_args,
    run_cli,
    sasl_args,
)

import igwn_alert

home = test_cli.home  # the fixtures of test_cli.py
listeners = test_cli.listeners

STATUS = "igwn-alert: listening to "


def wait_for_stderr(listener: CliListener, fragment: str, timeout: float = READY_TIMEOUT) -> str:
    """Wait until the listener's stderr holds ``fragment``; return stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        err = "".join(listener.stderr)
        if fragment in err:
            return err
        if listener.proc.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"no {fragment!r} on stderr within {timeout} s: {''.join(listener.stderr)!r}")


def raw_produce(bootstrap: str, topic: str, values: list[bytes], partition: int = -1) -> None:
    """Publish raw values as a non-hop producer does."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        if partition >= 0:
            producer.produce(topic, value, partition=partition)
        else:
            producer.produce(topic, value)
    assert producer.flush(10) == 0


def send_files(kafka_broker: Any, group: str, home: Path, *texts: str) -> None:
    paths = []
    for text in texts:
        path = home / f"alert-{uuid.uuid4().hex[:6]}.json"
        path.write_text(text)
        paths.append(str(path))
    result = run_cli([*plain_args(kafka_broker, group), "send", "superevent", *paths], home)
    assert result.returncode == 0, result.stderr


def read_json(kafka_broker: Any, group: str, home: Path, count: int) -> list[dict[str, Any]]:
    """Every alert of ``<group>.superevent`` from the start, through ``listen --json``."""
    args = [*plain_args(kafka_broker, group), "listen", "--json", "--from-beginning"]
    result = run_cli([*args, "--count", str(count), "superevent"], home)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------------------- listen


def test_listen_json_count_prints_one_object_a_line_then_exits(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    gracedb = json.dumps({"uid": "S1", "alert_type": "new"})
    send_files(kafka_broker, topic.group, home, gracedb)
    raw_produce(kafka_broker.plaintext, topic.full, [b'{"uid": "RAW1"}', b"not json", b"\xff\xfe"])
    t0 = time.time()

    args = [*plain_args(kafka_broker, topic.group), "listen", "--json", "--from-beginning"]
    result = run_cli([*args, "--count", "4", "superevent"], home)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4, result.stdout
    for offset, record in enumerate(records):
        assert set(record) - {"payload", "payload_base64"} == {
            "topic",
            "partition",
            "offset",
            "timestamp",
        }
        assert record["topic"] == topic.full
        # partition, offset and timestamp come from the listen loop's per-alert metadata,
        # which the public callback API does not pass yet: null until it does
        if record["partition"] is not None:
            assert (record["partition"], record["offset"]) == (0, offset)
            assert abs(record["timestamp"] / 1000 - t0) < 120
    assert records[0]["payload"] == {"uid": "S1", "alert_type": "new"}
    assert records[1]["payload"] == {"uid": "RAW1"}  # JSON, not a Python dict's repr
    assert records[2]["payload"] == "not json"
    assert "payload" not in records[3] and records[3]["payload_base64"] == "//4="
    # stderr: the status line only
    assert result.stderr.startswith(STATUS), result.stderr
    assert f"{topic.full}" in result.stderr and "after 4 alert(s)" in result.stderr


def test_listen_count_keeps_the_reference_format(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    texts = [json.dumps({"uid": f"S{i}"}) for i in range(3)]
    send_files(kafka_broker, topic.group, home, *texts)
    args = [*plain_args(kafka_broker, topic.group), "listen", "--from-beginning", "--count", "2"]
    result = run_cli([*args, "superevent"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(
        f"New message from topic {topic.full}:\n{text}\n" for text in texts[:2]
    )


def test_listen_until_eos_reads_every_partition_then_exits(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent", partitions=3)
    for partition in (0, 2):
        raw_produce(
            kafka_broker.plaintext, topic.full, [f'{{"p": {partition}}}'.encode()], partition
        )
    args = [*plain_args(kafka_broker, topic.group), "listen", "--json", "--from-beginning"]
    result = run_cli([*args, "--until-eos", "superevent"], home)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["payload"]["p"] for r in records) == [0, 2]
    assert all(r["partition"] in (None, r["payload"]["p"]) for r in records)
    assert "at the end of each partition" in result.stderr


def test_listen_until_eos_on_an_empty_topic_exits_at_once(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    args = [*plain_args(kafka_broker, topic.group), "listen", "--until-eos", "superevent"]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_listen_timeout_exits_quietly_and_status_line_says_where(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    args = [*plain_args(kafka_broker, topic.group), "-c", f"cli-{uuid.uuid4().hex[:6]}"]
    result = run_cli([*args, "listen", "--timeout", "3", "superevent"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    host, port = kafka_broker.plaintext.rsplit(":", 1)
    assert lines[0].startswith(f"{STATUS}{topic.full} on {host}:{port} (consumer group cli-")
    assert lines[0].endswith("after 3 s")


def test_status_line_comes_once_listening_and_then_alerts_are_seen(
    kafka_broker: Any, make_topic: Any, home: Path, listeners: list[CliListener]
) -> None:
    """The status line is the readiness signal: what is sent after it is printed."""
    topic = make_topic("superevent")
    listener = CliListener([*plain_args(kafka_broker, topic.group), "listen", "superevent"], home)
    listeners.append(listener)
    err = wait_for_stderr(listener, STATUS)
    assert "no consumer group" in err and "from now" in err and "until Ctrl-C" in err
    send_files(kafka_broker, topic.group, home, '{"uid": "after-status"}')
    assert listener.wait_for_output('"after-status"', 15), listener.output()
    assert listener.finish(signal.SIGINT) == 0
    assert listener.output() == (
        f'New message from topic {topic.full}:\n{{"uid": "after-status"}}\n'
    )


@pytest.mark.parametrize(
    "args",
    [["--count", "0"], ["--count", "two"], ["--timeout", "0"], ["--timeout", "-1"]],
    ids=["count-0", "count-word", "timeout-0", "timeout-negative"],
)
def test_listen_bad_stop_option_is_a_usage_error(home: Path, args: list[str]) -> None:
    result = run_cli(["--no-auth", "listen", *args], home)
    assert result.returncode == 2
    assert "usage" in result.stderr.lower() and args[0] in result.stderr


# ---------------------------------------------------------------------------- send


def test_send_several_files_one_alert_each(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    texts = [json.dumps({"uid": "A1"}) + "\n", json.dumps({"uid": "A2"}, indent=2)]
    send_files(kafka_broker, topic.group, home, *texts)
    assert [r["payload"] for r in read_json(kafka_broker, topic.group, home, 2)] == [
        {"uid": "A1"},
        {"uid": "A2"},
    ]


def test_send_a_bad_file_among_several_sends_nothing(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    good = home / "good.json"
    good.write_text('{"uid": "G"}')
    args = [*plain_args(kafka_broker, topic.group), "send", "superevent", str(good)]
    result = run_cli([*args, str(home / "missing.json")], home)
    assert_one_line_error(result, "missing.json")
    timeout = run_cli(
        [
            *plain_args(kafka_broker, topic.group),
            *("listen", "--from-beginning", "--until-eos", "--json", "superevent"),
        ],
        home,
    )
    assert timeout.returncode == 0, timeout.stderr
    assert timeout.stdout == ""


def run_with_stdin(args: list[str], home: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command() + args,
        env=cli_env(home),
        input=text,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def test_send_stdin_one_alert(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    text = json.dumps({"uid": "STDIN", "object": {"far": 1e-9}}, indent=2) + "\n"
    args = [*plain_args(kafka_broker, topic.group), "send", "superevent", "-"]
    result = run_with_stdin(args, home, text)
    assert result.returncode == 0, result.stderr
    listened = run_cli(
        [
            *plain_args(kafka_broker, topic.group),
            *("listen", "--from-beginning", "--count", "1", "superevent"),
        ],
        home,
    )
    assert listened.stdout == f"New message from topic {topic.full}:\n{text}\n"


def test_send_stdin_lines_one_alert_per_line(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    lines = [json.dumps({"uid": f"L{i}"}) for i in range(3)]
    args = [*plain_args(kafka_broker, topic.group), "send", "--lines", "superevent", "-"]
    result = run_with_stdin(args, home, "\n".join([lines[0], "", *lines[1:]]) + "\n")
    assert result.returncode == 0, result.stderr
    got = read_json(kafka_broker, topic.group, home, 3)
    assert [r["payload"] for r in got] == [{"uid": "L0"}, {"uid": "L1"}, {"uid": "L2"}]


def test_send_empty_stdin_is_an_error(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    args = [*plain_args(kafka_broker, topic.group), "send", "superevent", "-"]
    result = run_with_stdin(args, home, "")
    assert result.returncode == 1
    assert assert_one_line_error(result, "standard input")


# ---------------------------------------------------------------------------- -X settings


def group_members(kafka_broker: Any, group_id: str, timeout: float = 15.0) -> list[Any]:
    """The members of a consumer group, as the broker describes them."""
    admin = AdminClient({"bootstrap.servers": kafka_broker.plaintext})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = admin.describe_consumer_groups([group_id])[group_id].result(10)
        if described.members:
            return list(described.members)
        time.sleep(0.2)
    return []


def test_x_setting_reaches_librdkafka(
    kafka_broker: Any, make_topic: Any, home: Path, listeners: list[CliListener]
) -> None:
    """``-X client.id=...``: the broker sees the group member under that client id."""
    topic = make_topic("superevent")
    group_id = f"cli-x-{uuid.uuid4().hex[:6]}"
    client_id = f"igwn-alert-cli-test-{uuid.uuid4().hex[:6]}"
    args = [*plain_args(kafka_broker, topic.group), "-c", group_id, "-X", f"client.id={client_id}"]
    listener = CliListener([*args, "-X", "session.timeout.ms=7000", "listen", "superevent"], home)
    listeners.append(listener)
    wait_for_stderr(listener, STATUS)
    members = group_members(kafka_broker, group_id)
    assert [m.client_id for m in members] == [client_id]
    assert listener.finish(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("enable.auto.commit=false", "enable.auto.commit"),
        ("sasl.password=x", "sasl.password"),
        ("session.timeout.ms=soon", "session.timeout.ms"),
        ("no.such.setting=1", "no.such.setting"),
    ],
    ids=["owned", "credential", "bad-value", "unknown"],
)
def test_x_refused_setting_is_one_line(
    kafka_broker: Any, make_topic: Any, home: Path, setting: str, named: str
) -> None:
    topic = make_topic("superevent")
    args = [*plain_args(kafka_broker, topic.group), "-X", setting, "listen", "--timeout", "5"]
    result = run_cli([*args, "superevent"], home)
    line = assert_one_line_error(result, named)
    assert "password=x" not in line


def test_x_without_equals_is_a_usage_error(home: Path) -> None:
    result = run_cli(["--no-auth", "-X", "session.timeout.ms", "topics"], home)
    assert result.returncode == 2
    assert "key=value" in result.stderr


# ---------------------------------------------------------------------------- environment


def test_environment_server_and_group(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("cbc_gstlal")
    env = {
        "IGWN_ALERT_SERVER": f"kafka://{kafka_broker.plaintext}",  # port in the URL
        "IGWN_ALERT_GROUP": topic.group,
    }
    result = run_cli(["--no-auth", "topics"], home, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Topics for group {topic.group} associated with the current credential:",
        "cbc_gstlal",
    ]
    # an option beats the variable
    other = make_topic("superevent", group=f"{topic.group}-other")
    result = run_cli(["--no-auth", "-g", other.group, "topics"], home, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"]
    wrong = {**env, "IGWN_ALERT_SERVER": "kafka://127.0.0.1:1"}
    host, port = kafka_broker.plaintext.rsplit(":", 1)
    result = run_cli(["--no-auth", "-s", f"kafka://{host}", "-p", port, "topics"], home, **wrong)
    assert result.returncode == 0, result.stderr


def test_environment_consumer_group(
    kafka_broker: Any, make_topic: Any, home: Path, listeners: list[CliListener]
) -> None:
    topic = make_topic("superevent")
    from_env = f"cli-env-{uuid.uuid4().hex[:6]}"
    from_arg = f"cli-arg-{uuid.uuid4().hex[:6]}"
    env = {"IGWN_ALERT_CONSUMER_GROUP": from_env}
    for args, expected in (([], from_env), (["-c", from_arg], from_arg)):
        cmd = [*plain_args(kafka_broker, topic.group), *args, "listen", "superevent"]
        listener = CliListener(cmd, home, **env)
        listeners.append(listener)
        err = wait_for_stderr(listener, STATUS)
        assert f"(consumer group {expected})" in err
        assert len(group_members(kafka_broker, expected)) == 1
        assert listener.finish(signal.SIGTERM) == 0


def test_auth_file_option_and_environment(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    first = make_topic("superevent")
    second = make_topic("cbc_gstlal")
    alice = make_user(read=[first])
    bob = make_user(read=[second])
    both = home / "both-auth.toml"
    both.write_text(alice.auth_toml.read_text() + "\n" + bob.auth_toml.read_text())
    os.chmod(both, 0o600)
    args = sasl_args(kafka_broker, first.group)

    result = run_cli([*args, "--auth-file", str(alice.auth_toml), "topics"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"]
    env = {"IGWN_ALERT_AUTH_FILE": str(both)}
    result = run_cli([*args, "-u", bob.username, "topics"], home, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["cbc_gstlal"]
    # the option beats the variable
    result = run_cli([*args, "--auth-file", str(alice.auth_toml), "topics"], home, **env)
    assert result.stdout.splitlines()[1:] == ["superevent"]
    for user in (alice, bob):
        assert user.password not in result.stdout + result.stderr
    missing = run_cli([*args, "topics"], home, IGWN_ALERT_AUTH_FILE=str(home / "nope.toml"))
    assert_one_line_error(missing, "nope.toml")
    nobody = run_cli([*args, "-u", "nobody", "topics"], home, **env)
    assert_one_line_error(nobody, "nobody")


def test_environment_log_level(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    args = [*plain_args(kafka_broker, topic.group), "listen", "--timeout", "1", "superevent"]
    logged = " INFO igwn_alert.client: Listening to 1 topic(s)"
    quiet = run_cli(args, home)
    assert quiet.returncode == 0 and logged not in quiet.stderr, quiet.stderr
    loud = run_cli(args, home, IGWN_ALERT_LOG_LEVEL="INFO")
    assert loud.returncode == 0, loud.stderr
    assert logged in loud.stderr
    beaten = run_cli(["-l", "error", *args], home, IGWN_ALERT_LOG_LEVEL="info")
    assert logged not in beaten.stderr
    bad = run_cli(args, home, IGWN_ALERT_LOG_LEVEL="loud")
    assert bad.returncode == 2
    assert "IGWN_ALERT_LOG_LEVEL" in bad.stderr


# ---------------------------------------------------------------------------- serve, -m


def test_global_port_is_honoured_by_serve(home: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*cli_command(), "-p", str(port), "serve"],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first, first
        topics = run_cli(["-s", "kafka://127.0.0.1", "-p", str(port), "--no-auth", "topics"], home)
        assert topics.returncode == 0, topics.stderr
        assert "superevent" in topics.stdout.splitlines()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert rc == 0


def test_python_dash_m(kafka_broker: Any, make_topic: Any, home: Path) -> None:
    topic = make_topic("superevent")
    version = subprocess.run(
        [sys.executable, "-m", "igwn_alert", "-V"],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"igwn-alert client {igwn_alert.__version__}"
    result = subprocess.run(
        [sys.executable, "-m", "igwn_alert", *plain_args(kafka_broker, topic.group), "topics"],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"]
