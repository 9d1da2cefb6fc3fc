"""Contract section 5: publishing.

Boundary: ``igwn_alert.client.client.open`` (MagicMock writers), or, for the bytes on the
wire, ``confluent_kafka.Producer`` in the publishing module.
"""

from __future__ import annotations

import json
import warnings

import pytest
from hop.io import Producer as HopProducer
from hop.models import JSONBlob

from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")

NO_SESSIONS = "No active sessions. Please connect before publishing to a topic."


def not_connected(topic: str) -> str:
    return f"Not connected to topic {topic}. Please connect before publishing to a topic."


@pytest.fixture
def c():
    return client(noauth=True, server="kafka://test.server", port=1234, group="test")


def _writers(patched_open):
    """Make each open() call return a distinct MagicMock writer."""
    from unittest import mock

    made = []

    def open_(url, mode="r", *args, **kwargs):
        writer = mock.MagicMock(name=f"writer:{url}")
        writer.url = url
        made.append(writer)
        return writer

    patched_open.side_effect = open_
    return made


# -- connect ---------------------------------------------------------------------------------


def test_5_1_connect_str_opens_one_writer(c, patched_open):
    made = _writers(patched_open)
    c.connect("topic1")
    patched_open.assert_called_once_with("kafka://test.server:1234/test.topic1", "w")
    assert c.sessions == {"topic1": made[0]}


def test_5_1_connect_list_opens_one_writer_per_topic(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2"])
    assert [call.args for call in patched_open.call_args_list] == [
        ("kafka://test.server:1234/test.topic1", "w"),
        ("kafka://test.server:1234/test.topic2", "w"),
    ]
    assert c.sessions == {"topic1": made[0], "topic2": made[1]}


# -- publish_to_topic ------------------------------------------------------------------------


def test_5_2_publish_to_topic_writes_on_connected_writer(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2"])
    c.publish_to_topic("topic2", '{"a": 1}')
    made[1].write.assert_called_once_with('{"a": 1}')
    made[0].write.assert_not_called()


def test_5_2_publish_to_topic_no_sessions_runtime_error(c, patched_open):
    with pytest.raises(RuntimeError) as info:
        c.publish_to_topic("topic1", "msg")
    assert str(info.value) == NO_SESSIONS
    patched_open.assert_not_called()


def test_5_2_publish_to_topic_other_topic_runtime_error(c, patched_open):
    _writers(patched_open)
    c.connect("test")
    with pytest.raises(RuntimeError) as info:
        c.publish_to_topic("test2", "msg")
    assert str(info.value) == not_connected("test2")


# -- flush_by_topic --------------------------------------------------------------------------


def test_5_3_flush_by_topic_flushes_that_writer(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2"])
    c.flush_by_topic("topic1")
    made[0].flush.assert_called_once_with()
    made[1].flush.assert_not_called()


def test_5_3_flush_by_topic_no_sessions_runtime_error(c, patched_open):
    with pytest.raises(RuntimeError) as info:
        c.flush_by_topic("topic1")
    assert str(info.value) == NO_SESSIONS


def test_5_3_flush_by_topic_other_topic_runtime_error(c, patched_open):
    _writers(patched_open)
    c.connect("test")
    with pytest.raises(RuntimeError) as info:
        c.flush_by_topic("test2")
    assert str(info.value) == not_connected("test2")


# -- disconnect ------------------------------------------------------------------------------


def test_5_4_disconnect_all_closes_every_writer_and_empties_sessions(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2"])
    c.disconnect()
    assert all(w.close.call_count == 1 for w in made)
    assert c.sessions == {}


def test_5_4_disconnect_named_topic_closes_only_it(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2"])
    c.disconnect("topic1")
    made[0].close.assert_called_once_with()
    made[1].close.assert_not_called()
    assert c.sessions == {"topic2": made[1]}


def test_5_4_disconnect_list_of_topics(c, patched_open):
    made = _writers(patched_open)
    c.connect(["topic1", "topic2", "topic3"])
    c.disconnect(["topic1", "topic3"])
    assert c.sessions == {"topic2": made[1]}
    assert made[0].close.called and made[2].close.called and not made[1].close.called


def test_5_4_disconnect_unknown_topic_warns_not_raises(c, patched_open):
    made = _writers(patched_open)
    c.connect("topic1")
    with pytest.warns(UserWarning, match="topic2"):
        c.disconnect("topic2")
    assert c.sessions == {"topic1": made[0]}
    made[0].close.assert_not_called()


def test_5_4_disconnect_when_nothing_connected_warns(c, patched_open):
    with pytest.warns(UserWarning):
        c.disconnect("topic1")


def test_5_4_disconnect_mixed_known_and_unknown_closes_known_and_warns(c, patched_open):
    made = _writers(patched_open)
    c.connect("topic1")
    with pytest.warns(UserWarning, match="nope"):
        c.disconnect(["topic1", "nope"])
    made[0].close.assert_called_once_with()
    assert c.sessions == {}


def test_5_4_disconnect_all_when_nothing_connected_is_quiet(c, patched_open):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.disconnect()
    assert c.sessions == {}


def test_5_4_connect_again_after_disconnect(c, patched_open):
    made = _writers(patched_open)
    c.connect("topic1")
    c.disconnect()
    c.connect("topic1")
    c.publish_to_topic("topic1", "x")
    assert c.sessions == {"topic1": made[1]}
    made[1].write.assert_called_once_with("x")


# -- publish ---------------------------------------------------------------------------------


def test_5_5_publish_without_connect_writes_and_flushes(c, patched_open):
    made = _writers(patched_open)
    c.publish("topic1", '{"a": 1}')
    patched_open.assert_called_once_with("kafka://test.server:1234/test.topic1", "w")
    # like the reference's `with self.open(...) as s: s.write(msg)`: the entered stream
    writer = made[0].__enter__.return_value
    names = [name for name, _, _ in writer.mock_calls]
    assert names.index("write") < names.index("flush"), names
    writer.write.assert_called_once_with('{"a": 1}')


def test_5_5_publish_reuses_writers(c, patched_open):
    made = _writers(patched_open)
    c.publish("topic1", "one")
    c.publish("topic1", "two")
    assert patched_open.call_count == 1
    writer = made[0].__enter__.return_value  # the stream as the reference's `with` enters it
    assert [call.args for call in writer.write.call_args_list] == [("one",), ("two",)]
    assert writer.flush.call_count == 2  # each publish() returns once delivered


def test_5_5_publish_does_not_touch_sessions(c, patched_open):
    _writers(patched_open)
    c.publish("topic1", "one")
    assert c.sessions == {}
    with pytest.raises(RuntimeError):
        c.publish_to_topic("topic1", "x")


def test_5_5_publish_reuses_one_producer_and_one_topic_check(c, fake_producer):
    for i in range(5):
        c.publish("topic1", {"n": i})
    assert len(fake_producer.instances) == 1
    producer = fake_producer.instances[0]
    assert producer.list_topics_calls == ["test.topic1"]
    assert [json.loads(value) for _, value, _ in producer.produced] == [{"n": i} for i in range(5)]


def test_5_5_publish_returns_once_delivered(c, fake_producer, monkeypatch):
    """publish() waits for its own delivery report, however late librdkafka serves it."""
    from igwn_alert import _publishing as publishing

    class LateProducer(fake_producer):
        polls = 0

        def poll(self, timeout=0):
            type(self).polls += 1
            if type(self).polls < 5:  # nothing served for the first polls
                return 0
            return self._deliver()

        def flush(self, timeout=-1):  # librdkafka's flush serves callbacks as poll does
            self.poll(0)
            return len(self._pending)

    monkeypatch.setattr(publishing.confluent_kafka, "Producer", LateProducer)
    delivered = []
    original = LateProducer._deliver

    def recording_deliver(self):
        delivered.append(len(self._pending))
        return original(self)

    monkeypatch.setattr(LateProducer, "_deliver", recording_deliver)
    c.publish("topic1", "x")
    producer = LateProducer.instances[-1]
    assert producer.produced and len(producer) == 0
    assert 1 in delivered
    assert LateProducer.polls >= 5


# -- encoding: the bytes on the wire are hop's ----------------------------------------------


def _format(headers):
    return dict(headers)["_format"]


@pytest.mark.parametrize(
    ("msg", "value", "fmt"),
    [
        ({"a": 1}, b'{"a": 1}', b"json"),
        ([1, 2], b"[1, 2]", b"json"),
        ('{"a": 1}', b'"{\\"a\\": 1}"', b"json"),
        (b"raw bytes", b"raw bytes", b"blob"),
        (JSONBlob(content={"b": 2}), b'{"b": 2}', b"json"),
    ],
    ids=["dict", "list", "str-as-json-string", "bytes-as-blob", "hop-model"],
)
def test_5_6_encoding_is_hops(c, fake_producer, msg, value, fmt):
    c.publish("superevent", msg)
    c.connect("superevent")
    c.publish_to_topic("superevent", msg)
    c.flush_by_topic("superevent")
    produced = [p for f in fake_producer.instances for p in f.produced]
    assert len(produced) == 2
    expected_value, expected_headers = HopProducer.pack(msg)
    for topic, wire_value, headers in produced:
        assert topic == "test.superevent"
        assert wire_value == value == expected_value
        assert _format(headers) == fmt == _format(expected_headers)


def test_5_6_str_goes_out_as_json_string_not_decoded(c, fake_producer):
    """GraceDB passes the alert's JSON text as a str: a listener gets that str back."""
    text = json.dumps({"superevent_id": "S1", "alert_type": "new"})
    c.publish("superevent", text)
    (_, value, _) = fake_producer.instances[0].produced[0]
    assert json.loads(value) == text
    assert isinstance(json.loads(value), str)


def test_5_delivery_timeout_is_settable_and_checked(c):
    from datetime import timedelta

    assert c.delivery_timeout == timedelta(seconds=30)
    c.delivery_timeout = timedelta(seconds=3)
    assert c.delivery_timeout == timedelta(seconds=3)
    with pytest.raises(ValueError, match="positive timedelta"):
        c.delivery_timeout = 3
    with pytest.raises(ValueError, match="positive timedelta"):
        c.delivery_timeout = timedelta(0)
