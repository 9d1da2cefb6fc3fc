"""The project's real Kafka broker behaves like SCIMMA Hopskotch where it matters:
SCRAM-SHA-512 logins, ACL-only access for ordinary users, no topic auto-creation,
plus an unrestricted PLAINTEXT listener for fast tests and benchmarks."""

from __future__ import annotations

import json
import netrc
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _helpers import read_from_start
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def superevent() -> dict[str, Any]:
    alert: dict[str, Any] = json.loads((DATA / "superevent_new.json").read_text())
    return alert


def _produce(conf: dict[str, Any], topic: str, values: list[bytes]) -> list[Any]:
    """Produce and return the per-message delivery errors (None = delivered)."""
    results: list[Any] = []
    producer = Producer({"message.timeout.ms": 15000, **conf})
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: results.append(err))
    producer.flush(30)
    return results


# ------------------------------------------------------------------ fixtures themselves


def test_broker_info(kafka_broker: Any) -> None:
    assert kafka_broker.mechanism == "SCRAM-SHA-512"
    assert kafka_broker.plaintext.startswith("127.0.0.1:")
    assert kafka_broker.sasl.startswith("127.0.0.1:")
    assert kafka_broker.plaintext != kafka_broker.sasl
    assert (Path(kafka_broker.log_dir) / "kafka.log").exists()


def test_make_topic_names_and_metadata(kafka_broker: Any, make_topic: Any) -> None:
    t1 = make_topic("superevent", partitions=3)
    t2 = make_topic("cbc_gstlal")
    assert t1.group == t2.group and t1.group.startswith("gracedb-test-")
    assert t1.full == f"{t1.group}.superevent"
    md = kafka_broker.admin().list_topics(timeout=10)
    assert len(md.topics[t1.full].partitions) == 3
    assert t2.full in md.topics


def test_user_files_work_with_hop_and_netrc(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    from hop.auth import load_auth, select_matching_auth

    topic = make_topic()
    user = make_user(read=[topic.full])
    for path in (user.auth_toml, user.netrc):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    creds = load_auth(str(user.auth_toml))
    cred = select_matching_auth(creds, kafka_broker.sasl)
    assert (cred.username, cred.password) == (user.username, user.password)
    assert cred.protocol == "SASL_PLAINTEXT" and not cred.ssl
    assert cred.mechanism == "SCRAM-SHA-512"
    assert cred == hop_auth_for(user)
    for host in ("127.0.0.1", "localhost"):
        login, _, password = netrc.netrc(str(user.netrc)).authenticators(host) or ("", "", "")
        assert (login, password) == (user.username, user.password)


# ------------------------------------------------------------------ (a) an alert goes through


def test_hop_alert_over_scram_reaches_reader(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any, superevent: Any
) -> None:
    from hop.io import StartPosition, Stream

    topic = make_topic("superevent")
    writer = make_user(write=[topic])
    reader = make_user(read=[topic])
    url = f"kafka://{kafka_broker.sasl}/{topic.full}"

    with Stream(auth=hop_auth_for(writer)).open(url, "w") as stream:
        stream.write(superevent)

    # hop reader over SCRAM (its generated consumer group is allowed by groups=("*",))
    received = []
    read_stream = Stream(auth=hop_auth_for(reader), start_at=StartPosition.EARLIEST, until_eos=True)
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        with read_stream.open(url, "r") as s:
            received = [m.content for m in s.read()]
    assert received == [superevent]

    # a plain confluent consumer with the reader's SCRAM credentials sees the same bytes
    (msg,) = read_from_start(reader.scram_config(), topic.full, 1, timeout=30.0)
    assert json.loads(msg.value()) == superevent
    assert 1000 < len(msg.value()) < 2000


def test_new_consumer_group_protocol_over_scram(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    """KIP-848 (group.protocol=consumer) is on in Kafka 4 and works for ACL'd users."""
    topic = make_topic("test")
    user = make_user(read=[topic], write=[topic])
    assert _produce(user.scram_config(), topic.full, [b"one", b"two"]) == [None, None]
    msgs = read_from_start(
        {**user.scram_config(), "group.protocol": "consumer"}, topic.full, 2, timeout=30.0
    )
    assert [m.value() for m in msgs] == [b"one", b"two"]


# ------------------------------------------------------------------ (b) wrong password


def test_wrong_password_is_refused_quickly(kafka_broker: Any, make_user: Any) -> None:
    user = make_user()
    errors: list[KafkaError] = []
    t0 = time.monotonic()
    producer = Producer(
        {
            **kafka_broker.scram_config(user.username, "not-" + user.password),
            "error_cb": errors.append,
        }
    )
    while not errors and time.monotonic() - t0 < 15:
        producer.poll(0.1)
    elapsed = time.monotonic() - t0
    assert errors, "no error within 15 s for a wrong SCRAM password"
    assert errors[0].code() == KafkaError._AUTHENTICATION, errors[0]
    assert elapsed < 15
    print(f"wrong password refused after {elapsed:.2f}s: {errors[0].str()}")

    # the right password, same user, works
    assert AdminClient(user.scram_config()).list_topics(timeout=10) is not None


def test_unknown_user_is_refused(kafka_broker: Any) -> None:
    errors: list[KafkaError] = []
    consumer = Consumer(
        {
            **kafka_broker.scram_config("nobody-" + uuid.uuid4().hex[:6], "x"),
            "group.id": "g",
            "error_cb": errors.append,
        }
    )
    try:
        consumer.subscribe(["anything"])
        t0 = time.monotonic()
        while not errors and time.monotonic() - t0 < 15:
            consumer.poll(0.1)
    finally:
        consumer.close()
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors


# ------------------------------------------------------------------ (c) ACLs are enforced


def test_user_without_acl_gets_topic_authorization_failed(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    allowed = make_topic("superevent")
    forbidden = make_topic("test")
    user = make_user(read=[allowed], write=[allowed])

    # write: delivery fails with TOPIC_AUTHORIZATION_FAILED
    (err,) = _produce(user.scram_config(), forbidden.full, [b"x"])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # while the granted topic works
    assert _produce(user.scram_config(), allowed.full, [b"ok"]) == [None]

    # read: the consumer reports TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as info:
        read_from_start(user.scram_config(), forbidden.full, 1, timeout=15)
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # metadata only shows what the user may describe
    visible = AdminClient(user.scram_config()).list_topics(timeout=10).topics
    assert allowed.full in visible and forbidden.full not in visible


def test_read_only_user_cannot_write(kafka_broker: Any, make_topic: Any, make_user: Any) -> None:
    topic = make_topic()
    reader = make_user(read=[topic])
    (err,) = _produce(reader.scram_config(), topic.full, [b"x"])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_ordinary_user_cannot_create_topics(kafka_broker: Any, make_user: Any) -> None:
    user = make_user()
    name = f"gracedb-test-{uuid.uuid4().hex[:6]}.nope"
    admin = AdminClient(user.scram_config())
    fut = admin.create_topics([NewTopic(name, 1, 1)])[name]
    with pytest.raises(KafkaException) as info:
        fut.result(timeout=30)
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_no_topic_auto_creation(kafka_broker: Any) -> None:
    name = f"gracedb-test-{uuid.uuid4().hex[:6]}.absent"
    (err,) = _produce({**kafka_broker.plaintext_config(), "message.timeout.ms": 2000}, name, [b"x"])
    assert err is not None
    assert name not in kafka_broker.list_topics()


# ------------------------------------------------------------------ (d) PLAINTEXT is open


def test_plaintext_listener_is_unrestricted(kafka_broker: Any) -> None:
    conf = kafka_broker.plaintext_config()
    name = f"plain-{uuid.uuid4().hex[:8]}.superevent"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(timeout=30)
    try:
        kafka_broker.wait_topics([name], partitions=2)
        assert _produce(conf, name, [b"a", b"b", b"c"]) == [None, None, None]
        msgs = read_from_start(conf, name, 3, timeout=30.0)
        assert sorted(m.value() for m in msgs) == [b"a", b"b", b"c"]
        assert kafka_broker.acls_for("ANONYMOUS") == []  # no ACL involved: super user
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


# ------------------------------------------------------------------ process control


def test_restart_keeps_ports_credentials_and_data(
    kafka_private_broker: Any, tmp_path: Path
) -> None:
    from _kafka_broker.testing import TopicFactory, UserFactory

    broker = kafka_private_broker
    make_topic, make_user = TopicFactory(broker), UserFactory(broker, tmp_path)
    topic = make_topic()
    user = make_user(read=[topic], write=[topic])
    assert _produce(user.scram_config(), topic.full, [b"before"]) == [None]
    ports = (broker.plaintext, broker.sasl)
    old_pid = broker.pid

    broker.stop()
    assert not broker.is_running()
    errors: list[KafkaError] = []
    producer = Producer({**broker.plaintext_config(), "error_cb": errors.append})
    t0 = time.monotonic()
    while not errors and time.monotonic() - t0 < 15:
        producer.poll(0.1)
    del producer
    assert errors, "a stopped broker must be noticed by clients"

    t0 = time.monotonic()
    broker.start()
    print(f"broker start after stop took {time.monotonic() - t0:.1f}s")
    assert (broker.plaintext, broker.sasl) == ports
    assert broker.pid != old_pid and broker.is_running()
    broker.wait_authenticates(user.username, user.password)
    assert _produce(user.scram_config(), topic.full, [b"after"]) == [None]
    msgs = read_from_start(user.scram_config(), topic.full, 2, timeout=30.0)
    assert [m.value() for m in msgs] == [b"before", b"after"]

    broker.kill()
    assert not broker.is_running()
    broker.restart()
    assert _produce(user.scram_config(), topic.full, [b"after crash"]) == [None]


def test_three_node_cluster_survives_leader_kill(make_cluster: Any) -> None:
    cluster = make_cluster(3)
    conf = {"bootstrap.servers": cluster.bootstrap}
    admin = AdminClient(conf)
    name = "gracedb-cluster.superevent"
    admin.create_topics([NewTopic(name, 1, 3)])[name].result(timeout=30)
    assert _produce({**conf, "acks": "all"}, name, [b"1"]) == [None]

    def leader() -> int:
        md = admin.list_topics(topic=name, timeout=10)
        return int(md.topics[name].partitions[0].leader)

    victim = cluster.node(leader())
    victim.kill()
    assert not victim.is_running()
    deadline = time.monotonic() + 60
    while leader() in (victim.node_id, -1):
        assert time.monotonic() < deadline, "no new leader elected"
        time.sleep(0.2)
    assert _produce({**conf, "acks": "all"}, name, [b"2"]) == [None]
    victim.start()
    assert victim.is_running()
    msgs = read_from_start(conf, name, 2, timeout=30.0)
    assert [m.value() for m in msgs] == [b"1", b"2"]
