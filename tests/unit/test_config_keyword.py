"""client(config=...): librdkafka settings merged last, the client's own ones refused."""

from __future__ import annotations

import threading
import time

import pytest

from igwn_alert import client


@pytest.mark.parametrize(
    "name",
    [
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "bootstrap.servers",
        "sasl.password",
        "security.protocol",
        "error_cb",
    ],
)
def test_owned_settings_are_refused_by_name(name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        client(noauth=True, config={name: "x"})


def test_config_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        client(noauth=True, config=[("session.timeout.ms", 1)])


def _listen_briefly(c):
    t = threading.Thread(target=c.listen, args=(lambda topic, payload: None, "topic1"))
    t.start()
    assert c.listening.wait(5)
    c.stop()
    t.join(5)
    assert not t.is_alive()


def test_settings_reach_the_reader_last(fake_consumer):
    c = client(
        noauth=True,
        group="test",
        consumer_group="cg",
        config={"session.timeout.ms": 45000, "fetch.wait.max.ms": 7},
    )
    _listen_briefly(c)
    config = fake_consumer.instances[0].config
    assert config["session.timeout.ms"] == 45000 and config["fetch.wait.max.ms"] == 7
    assert config["enable.auto.offset.store"] is False  # still the client's


def test_kip848_drops_the_classic_protocols_settings(fake_consumer):
    c = client(
        noauth=True, group="test", consumer_group="cg", config={"group.protocol": "consumer"}
    )
    _listen_briefly(c)
    config = fake_consumer.instances[0].config
    assert config["group.protocol"] == "consumer"
    for key in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"):
        assert key not in config


def test_a_stopped_listen_opens_nothing_slowly(fake_consumer):
    c = client(noauth=True, group="test")
    c.stop()
    start = time.monotonic()
    c.listen(lambda topic, payload: None, "topic1")
    assert time.monotonic() - start < 0.5
