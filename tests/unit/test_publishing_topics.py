"""Topic arguments of publish(), connect() and listen(): Kafka's rules, before anything is sent.

Boundary: ``igwn_alert.client.client.open`` (MagicMock writers) and, where bytes would be
sent, ``confluent_kafka.Producer`` (the ``fake_producer`` fixture).
"""

from __future__ import annotations

from unittest import mock

import pytest

from igwn_alert import client
from igwn_alert._topics import MAX_TOPIC_NAME_LENGTH, check_topic_name, normalize_topics

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def c() -> client:
    return client(noauth=True, server="kafka://test.server", port=1234, group="test")


@pytest.mark.parametrize("empty", [None, [], (), ""], ids=["None", "list", "tuple", "str"])
def test_publish_and_connect_refuse_no_topic(c, fake_producer, empty):
    with pytest.raises(ValueError, match="topic"):
        c.publish(empty, {"a": 1})
    with pytest.raises(ValueError, match="topic"):
        c.connect(empty)
    assert fake_producer.instances == [] and c.sessions == {}


@pytest.mark.parametrize(
    "name", ["t1#frag", "t1?x", "t1,other.secret", "a/b", "a b", "ü", "t1\n"], ids=repr
)
def test_bad_characters_are_refused_everywhere(c, fake_producer, patched_open, name):
    with pytest.raises(ValueError, match="not allowed"):
        c.publish(name, {"a": 1})
    with pytest.raises(ValueError, match="not allowed"):
        c.connect(["ok", name])
    with pytest.raises(ValueError, match="not allowed"):
        c.listen(lambda topic, payload: None, name)
    with pytest.raises(ValueError, match="not allowed"):
        c._construct_topic_url(name)
    patched_open.assert_not_called()
    assert c.sessions == {}


def test_length_limit_counts_the_group_prefix(c, patched_open):
    longest = "x" * (MAX_TOPIC_NAME_LENGTH - len("test."))
    assert c._construct_topic_url(longest).endswith("/test." + longest)
    with pytest.raises(ValueError, match="at most 249"):
        c._construct_topic_url(longest + "x")
    with pytest.raises(ValueError, match="at most 249"):
        c.connect(longest + "x")
    patched_open.assert_not_called()


def test_valid_names_pass_unchanged():
    for name in ("superevent", "cbc_gstlal", "cbc.gstlal-mdc", "A-Z_0.9"):
        assert check_topic_name(name, "gracedb-playground") == name
    assert normalize_topics(["a", "b", "a"]) == ["a", "b"]


def test_listen_keeps_its_every_topic_meanings():
    """None and empty collections still mean every topic for listen() (contract 6)."""
    assert normalize_topics(None) == []
    assert normalize_topics([]) == []
    assert normalize_topics("") == [""]
    with pytest.raises(TypeError):
        normalize_topics([1])  # type: ignore[list-item]


# -- connect() twice -------------------------------------------------------------------------


def test_connect_twice_closes_the_old_writer(c, patched_open):
    made = []

    def open_(url, mode="r", *args, **kwargs):
        writer = mock.MagicMock(name=f"writer{len(made)}")
        made.append(writer)
        return writer

    patched_open.side_effect = open_
    c.connect(["superevent", "other"])
    c.connect("superevent")
    assert made[0].close.call_count == 1  # replaced: flushed and closed
    made[1].close.assert_not_called()
    assert c.sessions == {"superevent": made[2], "other": made[1]}
    c.disconnect()
    assert [w.close.call_count for w in made] == [1, 1, 1]


def test_connect_twice_on_real_writers_leaves_no_producer(c, fake_producer):
    c.connect("superevent")
    c.connect("superevent")
    c.publish("superevent", "x")
    assert c._producers.running() == 1
    c.disconnect()
    assert c._producers.running() == 0
