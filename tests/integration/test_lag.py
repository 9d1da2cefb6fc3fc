"""``igwn-alert lag`` as a subprocess on the real broker: values, Nagios exit codes, JSON.

Each test makes a topic, publishes a known number of alerts to known partitions and has a
consumer group commit known offsets (a plain confluent_kafka consumer committing explicit
offsets, without joining the group), so the lag is known exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import igwn_alert

SRC = Path(igwn_alert.__file__).resolve().parent.parent
TIMEOUT = 60.0


def cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("igwn-alert", path=str(Path(sys.executable).parent))
    command = (
        [script]
        if script
        else [
            sys.executable,
            "-c",
            "import sys; from igwn_alert.tool import main; sys.exit(main())",
        ]
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.pop("NETRC", None)
    return subprocess.run(
        command + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home" / ".config").mkdir(parents=True)
    return tmp_path / "home"


def plain(broker: Any, group: str) -> list[str]:
    host, port = broker.plaintext.rsplit(":", 1)
    return ["-s", f"kafka://{host}", "-p", port, "--no-auth", "-g", group]


def sasl(broker: Any, group: str) -> list[str]:
    host, port = broker.sasl.rsplit(":", 1)
    return ["-s", f"kafka://{host}", "-p", port, "-g", group]


def publish(broker: Any, full: str, per_partition: dict[int, int]) -> None:
    producer = Producer({"bootstrap.servers": broker.plaintext})
    for partition, n in per_partition.items():
        for i in range(n):
            producer.produce(full, value=json.dumps({"n": i}).encode(), partition=partition)
    assert producer.flush(30) == 0


def commit(broker: Any, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer(
        {"bootstrap.servers": broker.plaintext, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        done = consumer.commit(offsets=tps, asynchronous=False)
        assert all(tp.error is None for tp in done), done
    finally:
        consumer.close()


def committed(broker: Any, group: str, tps: list[tuple[str, int]]) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": broker.plaintext, "group.id": group, "enable.auto.commit": False}
    )
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=20)
        return [tp.offset for tp in got]
    finally:
        consumer.close()


@pytest.fixture
def backlog(kafka_broker: Any, make_topic: Any) -> tuple[Any, str]:
    """A 2-partition topic with 20 + 10 alerts; the group committed 15 and 10: lag 5."""
    topic = make_topic("superevent", partitions=2)
    publish(kafka_broker, topic.full, {0: 20, 1: 10})
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    commit(kafka_broker, group, {(topic.full, 0): 15, (topic.full, 1): 10})
    return topic, group


def test_table_per_partition_and_total(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, group = backlog
    result = cli([*plain(kafka_broker, topic.group), "lag", "-c", group], home)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]
    assert ["superevent", "0", "15", "20", "5"] in lines
    assert ["superevent", "1", "10", "10", "0"] in lines
    assert result.stdout.splitlines()[-1] == (
        f"total lag 5 for consumer group {group} over 2 partition(s)"
    )
    assert result.stderr == ""


def test_the_command_neither_joins_nor_commits(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, group = backlog
    assert cli([*plain(kafka_broker, topic.group), "lag", "-c", group], home).returncode == 0
    assert committed(kafka_broker, group, [(topic.full, 0), (topic.full, 1)]) == [15, 10]
    admin = kafka_broker.admin()
    described = admin.describe_consumer_groups([group])[group].result(timeout=20)
    assert list(described.members) == []


@pytest.mark.parametrize(
    ("thresholds", "status", "code"),
    [
        (["--warn", "10", "--critical", "20"], "OK", 0),
        (["--warn", "5", "--critical", "20"], "OK", 0),  # at the threshold: still OK
        (["--warn", "4", "--critical", "20"], "WARNING", 1),
        (["--warn", "1", "--critical", "4"], "CRITICAL", 2),
        (["--critical", "4"], "CRITICAL", 2),
        (["--warn", "4"], "WARNING", 1),
    ],
)
def test_nagios_exit_codes(
    kafka_broker: Any,
    backlog: Any,
    home: Path,
    thresholds: list[str],
    status: str,
    code: int,
) -> None:
    topic, group = backlog
    result = cli([*plain(kafka_broker, topic.group), "lag", "-c", group, *thresholds], home)
    assert result.returncode == code, (result.stdout, result.stderr)
    warn = thresholds[thresholds.index("--warn") + 1] if "--warn" in thresholds else ""
    crit = thresholds[thresholds.index("--critical") + 1] if "--critical" in thresholds else ""
    assert result.stdout == f"IGWN-ALERT LAG {status} - total lag 5 | lag=5;{warn};{crit};0\n"


def test_json(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, group = backlog
    result = cli(
        [*plain(kafka_broker, topic.group), "lag", "-c", group, "--json", "--warn", "3"], home
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["consumer_group"] == group
    assert report["total"] == 5
    assert report["status"] == "WARNING"
    assert report["partitions"] == [
        {"topic": "superevent", "partition": 0, "committed": 15, "end": 20, "lag": 5},
        {"topic": "superevent", "partition": 1, "committed": 10, "end": 10, "lag": 0},
    ]


def test_every_topic_of_the_group_or_the_ones_named(
    kafka_broker: Any, make_topic: Any, home: Path
) -> None:
    a = make_topic("superevent")
    b = make_topic("em_bright")
    publish(kafka_broker, a.full, {0: 3})
    publish(kafka_broker, b.full, {0: 7})
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    commit(kafka_broker, group, {(a.full, 0): 1, (b.full, 0): 7})
    base = [*plain(kafka_broker, a.group), "lag", "-c", group, "--json"]
    everything = json.loads(cli(base, home).stdout)
    assert {(r["topic"], r["lag"]) for r in everything["partitions"]} == {
        ("superevent", 2),
        ("em_bright", 0),
    }
    assert everything["total"] == 2
    one = json.loads(cli([*base, "em_bright"], home).stdout)
    assert [(r["topic"], r["lag"]) for r in one["partitions"]] == [("em_bright", 0)]
    assert one["total"] == 0


def test_the_global_consumer_group_option_works_too(
    kafka_broker: Any, backlog: Any, home: Path
) -> None:
    topic, group = backlog
    result = cli([*plain(kafka_broker, topic.group), "-c", group, "lag", "--json"], home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 5


def test_no_consumer_group_is_an_error(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, _ = backlog
    result = cli([*plain(kafka_broker, topic.group), "lag"], home)
    assert result.returncode == 1
    assert "consumer group" in result.stderr and "-c GROUP" in result.stderr


def test_a_group_without_commits_is_unknown(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, _ = backlog
    nobody = f"never-committed-{uuid.uuid4().hex[:6]}"
    args = [*plain(kafka_broker, topic.group), "lag", "-c", nobody]
    result = cli([*args, "--warn", "1", "--critical", "2"], home)
    assert result.returncode == 3, result.stdout
    assert result.stdout.startswith("IGWN-ALERT LAG UNKNOWN - ")
    assert f"consumer group {nobody} has no committed offset" in result.stdout
    table = cli(args, home)  # without thresholds: shown, with no lag
    assert table.returncode == 0
    assert ["superevent", "0", "-", "20", "-"] in [ln.split() for ln in table.stdout.splitlines()]


def test_unknown_topic(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, group = backlog
    args = [*plain(kafka_broker, topic.group), "lag", "-c", group, "nosuchtopic"]
    result = cli([*args, "--critical", "9"], home)
    assert result.returncode == 3
    assert result.stdout.startswith("IGWN-ALERT LAG UNKNOWN - ")
    assert f"{topic.group}.nosuchtopic" in result.stdout
    plain_result = cli(args, home)
    assert plain_result.returncode == 1
    assert f"{topic.group}.nosuchtopic" in plain_result.stderr


def test_the_groups_own_credential_is_enough(
    kafka_broker: Any, backlog: Any, make_user: Any, home: Path
) -> None:
    topic, group = backlog
    user = make_user(read=[topic], groups=[group])  # READ on the topic and the group only
    args = [*sasl(kafka_broker, topic.group), "-n", str(user.netrc), "lag", "-c", group]
    result = cli([*args, "--warn", "10", "--critical", "20"], home)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout == "IGWN-ALERT LAG OK - total lag 5 | lag=5;10;20;0\n"


def test_a_refused_credential_is_unknown(
    kafka_broker: Any, backlog: Any, make_user: Any, home: Path
) -> None:
    topic, group = backlog
    user = make_user(read=[topic], groups=[group])
    host = kafka_broker.sasl.rsplit(":", 1)[0]
    netrc = home / "bad.netrc"
    netrc.write_text(f"machine {host} login {user.username} password not-{user.password}\n")
    os.chmod(netrc, 0o600)
    args = [*sasl(kafka_broker, topic.group), "-n", str(netrc), "lag", "-c", group]
    result = cli([*args, "--warn", "10", "--critical", "20"], home)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout.startswith("IGWN-ALERT LAG UNKNOWN - ")
    assert "refused the credential" in result.stdout
    assert user.password not in result.stdout + result.stderr


def test_a_group_the_credential_may_not_read_is_unknown(
    kafka_broker: Any, backlog: Any, make_user: Any, home: Path
) -> None:
    topic, group = backlog
    user = make_user(read=[topic], groups=["some-other-group"])
    args = [*sasl(kafka_broker, topic.group), "-n", str(user.netrc), "lag", "-c", group]
    result = cli([*args, "--critical", "20"], home)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert f"not authorized for consumer group {group}" in result.stdout


def test_an_unreachable_broker_is_unknown(home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["-s", "kafka://127.0.0.1", "-p", str(port), "--no-auth", "-g", "g"]
    result = cli(
        [*args, "lag", "-c", "grp", "--warn", "1", "--critical", "2", "--timeout", "2"], home
    )
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout.startswith("IGWN-ALERT LAG UNKNOWN - cannot reach the Kafka broker")


def test_bad_thresholds(kafka_broker: Any, backlog: Any, home: Path) -> None:
    topic, group = backlog
    base = [*plain(kafka_broker, topic.group), "lag", "-c", group]
    result = cli([*base, "--warn", "20", "--critical", "10"], home)
    assert result.returncode == 3
    assert "--warn (20) must not be above --critical (10)" in result.stdout
