"""Contract section 6: listening.

Boundary: ``igwn_alert.client.client.open`` returning MagicMock streams whose
``__enter__().read()`` yields ``(payload, metadata)`` pairs (listing all topics also needs
``client.get_topics``, the other patch point the contract names), or, for the bytes on the
wire and the real reader, ``confluent_kafka.Consumer`` in the reading module.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from unittest import mock

import pytest
from adc.errors import KafkaException
from hop.models import Blob, JSONBlob

import igwn_alert
from igwn_alert import client
from igwn_alert.exceptions import FakeFatalKafkaException, FakeNonFatalKafkaException

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def c():
    return client(noauth=True, server="kafka://test.server", port=1234, group="test")


class Recorder:
    """A keyword-only callback that records what it gets and can stop the client."""

    def __init__(self, stop_client=None, after=None):
        self.calls = []
        self._client = stop_client
        self._after = after

    def __call__(self, *, topic, payload):
        self.calls.append((topic, payload))
        if self._client is not None and len(self.calls) == self._after:
            self._client.stop()


def run_in_thread(target, *args, **kwargs):
    """Run ``target`` in a daemon thread; return (thread, outcome dict)."""
    outcome = {}

    def body():
        try:
            outcome["result"] = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test looks at whatever it was
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def listen_url(patched_open):
    return patched_open.call_args_list[0].args[0]


# -- 6.1 the topic argument ------------------------------------------------------------------


def test_6_1_topic_str(c, patched_open, fakes):
    patched_open.return_value = fakes.fake_stream(c.stop)
    c.listen(Recorder(), "topic1")
    assert listen_url(patched_open) == "kafka://test.server:1234/test.topic1"
    assert patched_open.call_args_list[0].args[1] == "r"


def test_6_1_topic_list(c, patched_open, fakes):
    patched_open.return_value = fakes.fake_stream(c.stop)
    c.listen(Recorder(), ["topic1", "topic2"])
    assert listen_url(patched_open) == "kafka://test.server:1234/test.topic1,test.topic2"


@pytest.mark.parametrize(
    "make", [set, tuple, lambda names: (n for n in names)], ids=["set", "tuple", "generator"]
)
def test_6_1_topic_any_iterable(c, patched_open, fakes, make):
    patched_open.return_value = fakes.fake_stream(c.stop)
    c.listen(Recorder(), make(["topic1", "topic2"]))
    url = listen_url(patched_open)
    prefix = "kafka://test.server:1234/"
    assert url.startswith(prefix)
    assert sorted(url[len(prefix) :].split(",")) == ["test.topic1", "test.topic2"]


def test_6_1_topic_none_means_every_topic_of_the_group(c, patched_open, fakes):
    patched_open.return_value = fakes.fake_stream(c.stop)
    with mock.patch.object(igwn_alert.client, "get_topics", return_value=["a", "b.c"]) as gt:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            c.listen(Recorder())
    gt.assert_called_once_with()
    assert listen_url(patched_open) == "kafka://test.server:1234/test.a,test.b.c"


@pytest.mark.parametrize("empty", [[], set(), ()], ids=["list", "set", "tuple"])
def test_6_1_empty_collection_warns_and_means_every_topic(c, patched_open, fakes, empty):
    patched_open.return_value = fakes.fake_stream(c.stop)
    with mock.patch.object(igwn_alert.client, "get_topics", return_value=["a"]):
        with pytest.warns(UserWarning):
            c.listen(Recorder(), empty)
    assert listen_url(patched_open) == "kafka://test.server:1234/test.a"


def test_6_1_empty_str_topic_warns_and_means_every_topic(c, patched_open, fakes):
    """``topic=""`` is empty too: the reference (``if topic:``) listens to every topic.

    Listening to the broker topic ``test.`` instead would silently deliver nothing.
    """
    patched_open.return_value = fakes.fake_stream(c.stop)
    with mock.patch.object(igwn_alert.client, "get_topics", return_value=["a"]) as gt:
        with pytest.warns(UserWarning):
            c.listen(Recorder(), "")
    gt.assert_called_once_with()
    assert listen_url(patched_open) == "kafka://test.server:1234/test.a"


def test_6_1_consumer_group_is_the_streams_group_id(patched_open, fakes):
    c = client(noauth=True, server="kafka://test.server", port=1234, group="t", consumer_group="cg")
    patched_open.return_value = fakes.fake_stream(c.stop)
    c.listen(Recorder(), "a")
    assert patched_open.call_args_list[0].kwargs.get("group_id") == "cg"


def test_6_1_no_consumer_group_opens_private_stream(c, patched_open, fakes):
    patched_open.return_value = fakes.fake_stream(c.stop)
    c.listen(Recorder(), "a")
    assert patched_open.call_args_list[0].kwargs.get("group_id") is None


# -- 6.2 decoding ----------------------------------------------------------------------------


def deliver(c, patched_open, fakes, payload, topic="test.topic1"):
    """Listen until one alert is delivered; return what the callback got."""
    rec = Recorder(stop_client=c, after=1)
    patched_open.return_value = fakes.fake_stream((payload, fakes.meta(topic)), c.stop)
    c.listen(rec, "topic1")
    assert len(rec.calls) == 1
    return rec.calls[0][1]


def test_6_2_hop_json_dict_stays_dict(c, patched_open, fakes):
    content = {"superevent_id": "S1", "n": [1, 2]}
    got = deliver(c, patched_open, fakes, JSONBlob(content=content))
    assert got == content
    assert isinstance(got, dict)


def test_6_2_hop_json_str_stays_str_not_decoded_twice(c, patched_open, fakes):
    text = json.dumps({"superevent_id": "S1", "alert_type": "new"})
    got = deliver(c, patched_open, fakes, JSONBlob(content=text))
    assert got == text
    assert isinstance(got, str)


def test_6_2_hop_json_str_that_is_not_json_stays_str_without_warning(c, patched_open, fakes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = deliver(c, patched_open, fakes, JSONBlob(content="plain words"))
    assert got == "plain words"


def test_6_2_raw_json_bytes_decoded(c, patched_open, fakes):
    got = deliver(c, patched_open, fakes, b'{"test_key": "test_value"}')
    assert got == {"test_key": "test_value"}


def test_6_2_raw_json_str_decoded(c, patched_open, fakes):
    got = deliver(c, patched_open, fakes, '{"test_key": "test_value"}')
    assert got == {"test_key": "test_value"}


@pytest.mark.parametrize("payload", ["test message", b"\xff\xfe not json"], ids=["str", "bytes"])
def test_6_2_non_json_warns_and_passes_as_is(c, patched_open, fakes, payload):
    with pytest.warns(UserWarning):
        got = deliver(c, patched_open, fakes, payload)
    assert got == payload
    assert type(got) is type(payload)


def _wire_listen(c, fake_consumer, fakes, messages, topic="topic1"):
    fake_consumer.queue = list(messages)
    rec = Recorder(stop_client=c, after=len(messages))
    thread, outcome = run_in_thread(c.listen, rec, topic)
    thread.join(5)
    assert not thread.is_alive(), "listen() did not return"
    assert "error" not in outcome, outcome
    return rec.calls


def test_6_2_wire_str_published_arrives_as_the_same_str(c, fake_consumer, fakes):
    text = json.dumps({"superevent_id": "S1"})
    calls = _wire_listen(c, fake_consumer, fakes, [fakes.wire_message("test.topic1", text)])
    assert calls == [("topic1", text)]
    assert isinstance(calls[0][1], str)


def test_6_2_wire_dict_arrives_as_dict(c, fake_consumer, fakes):
    calls = _wire_listen(
        c, fake_consumer, fakes, [fakes.wire_message("test.topic1", {"a": [1, 2]})]
    )
    assert calls == [("topic1", {"a": [1, 2]})]


def test_6_2_wire_plain_json_without_hop_headers_decoded(c, fake_consumer, fakes):
    message = fakes.FakeMessage("test.topic1", b'{"a": 1}', None)
    calls = _wire_listen(c, fake_consumer, fakes, [message])
    assert calls == [("topic1", {"a": 1})]


def test_6_2_wire_raw_bytes_not_json_warn_and_pass(c, fake_consumer, fakes):
    message = fakes.wire_message("test.topic1", b"\x00\x01 not json")
    with pytest.warns(UserWarning):
        calls = _wire_listen(c, fake_consumer, fakes, [message])
    ((topic, payload),) = calls
    assert topic == "topic1"
    assert getattr(payload, "content", payload) == b"\x00\x01 not json"


def test_6_2_wire_hop_test_messages_skipped_and_bad_json_label_not_fatal(c, fake_consumer, fakes):
    bad = fakes.FakeMessage("test.topic1", b"{not json", [("_format", b"json")], offset=0)
    good = fakes.wire_message("test.topic1", {"ok": True}, offset=1)
    fake_consumer.queue = [bad, good]
    rec = Recorder(stop_client=c, after=2)
    with pytest.warns(UserWarning):
        thread, outcome = run_in_thread(c.listen, rec, "topic1")
        thread.join(5)
    assert "error" not in outcome, outcome
    assert rec.calls[-1] == ("topic1", {"ok": True})
    assert isinstance(rec.calls[0][1], Blob) or rec.calls[0][1] == b"{not json"


# -- 6.3 the callback ------------------------------------------------------------------------


def test_6_3_callback_called_by_keyword_with_short_topic(c, patched_open, fakes):
    rec = Recorder()
    patched_open.return_value = fakes.fake_stream(
        (JSONBlob(content={"n": 1}), fakes.meta("test.topic1")),
        (JSONBlob(content={"n": 2}), fakes.meta("test.topic2")),
        c.stop,
    )
    c.listen(rec, ["topic1", "topic2"])
    assert rec.calls == [("topic1", {"n": 1}), ("topic2", {"n": 2})]


@pytest.mark.parametrize(
    ("group", "full", "short"),
    [
        ("gracedb", "gracedb.cbc.gstlal", "cbc.gstlal"),
        ("gracedb", "gracedb.superevent", "superevent"),
        ("gracedb-playground", "gracedb-playground.cbc.pycbc.mdc", "cbc.pycbc.mdc"),
        ("igwn.alerts", "igwn.alerts.superevent", "superevent"),
    ],
)
def test_6_3_exact_group_prefix_stripped(patched_open, fakes, group, full, short):
    c = client(noauth=True, group=group)
    rec = Recorder()
    patched_open.return_value = fakes.fake_stream(
        (JSONBlob(content="{}"), fakes.meta(full)), c.stop
    )
    c.listen(rec, short)
    assert rec.calls == [(short, "{}")]


# -- 6.4 no callback: print ------------------------------------------------------------------


def test_6_4_print_format_dict(c, patched_open, fakes, capsys):
    patched_open.return_value = fakes.fake_stream(
        (json.dumps({"test_key": "test_value"}), fakes.meta("test.topic1")), c.stop
    )
    c.listen(topic="topic1")
    out = capsys.readouterr().out
    assert out == "New message from topic test.topic1:\n{'test_key': 'test_value'}\n"


def test_6_4_print_format_str_as_is(c, patched_open, fakes, capsys):
    text = '{"a": 1}'
    patched_open.return_value = fakes.fake_stream(
        (JSONBlob(content=text), fakes.meta("test.topic1")), c.stop
    )
    c.listen(topic="topic1")
    assert capsys.readouterr().out == 'New message from topic test.topic1:\n{"a": 1}\n'


def test_6_4_jsonpp_on_decoded_dict(patched_open, fakes, capsys):
    c = client(noauth=True, group="test", jsonpp_on=True)
    content = {"a": 1, "b": {"c": [1, 2]}}
    patched_open.return_value = fakes.fake_stream(
        (JSONBlob(content=content), fakes.meta("test.topic1")), c.stop
    )
    c.listen(topic="topic1")
    out = capsys.readouterr().out
    assert out == f"New message from topic test.topic1:\n{json.dumps(content, indent=4)}\n"


def test_6_4_jsonpp_on_json_str(patched_open, fakes, capsys):
    c = client(noauth=True, group="test", jsonpp_on=True)
    content = {"superevent_id": "S1", "alert_type": "new"}
    patched_open.return_value = fakes.fake_stream(
        (JSONBlob(content=json.dumps(content)), fakes.meta("test.topic1")), c.stop
    )
    c.listen(topic="topic1")
    out = capsys.readouterr().out
    assert out == f"New message from topic test.topic1:\n{json.dumps(content, indent=4)}\n"


# -- 6.5 Kafka errors ------------------------------------------------------------------------


def test_6_5_fatal_from_stream_without_retry_raises_and_closes(c, patched_open, fakes):
    stream = fakes.fake_stream(FakeFatalKafkaException)
    patched_open.return_value = stream
    with pytest.raises(KafkaException) as info:
        c.listen(Recorder(), "topic1")
    assert info.value.fatal is True
    assert fakes.was_closed(stream)
    assert patched_open.call_count == 1


def test_6_5_fatal_from_callback_without_retry_raises_and_closes(c, patched_open, fakes):
    stream = fakes.fake_stream(
        (b"{}", fakes.meta("test.topic1")), (b"{}", fakes.meta("test.topic1"))
    )
    patched_open.return_value = stream

    def callback(topic, payload):
        raise FakeFatalKafkaException

    with pytest.raises(KafkaException):
        c.listen(callback, "topic1")
    assert fakes.was_closed(stream)
    assert patched_open.call_count == 1


@pytest.mark.parametrize("retries", [1, 2, 3, 5])
def test_6_5_retry_on_fatal_at_most_listen_retries_in_a_row(patched_open, fakes, retries):
    c = client(noauth=True, group="test", retry_on_fatal=True, listen_retries=retries, retry_wait=0)
    streams = [fakes.fake_stream(FakeFatalKafkaException) for _ in range(retries + 5)]
    patched_open.side_effect = streams
    with pytest.raises(KafkaException):
        c.listen(Recorder(), "topic1")
    # the reference's count: listen_retries attempts in all, then the exception leaves
    assert patched_open.call_count == retries
    assert all(fakes.was_closed(s) for s in streams[:retries])


@pytest.mark.parametrize("consumer_group", [None, "cg"])
def test_6_5_a_replay_that_failed_before_it_began_is_not_dropped_on_retry(
    patched_open, fakes, consumer_group
):
    from hop.io import StartPosition

    from igwn_alert.exceptions import BrokerUnreachableError

    c = client(
        noauth=True, group="test", consumer_group=consumer_group, retry_on_fatal=True, retry_wait=0
    )
    m = (b'{"n": 1}', fakes.meta("test.topic1"))
    patched_open.side_effect = [
        BrokerUnreachableError("no broker yet"),  # before the stream was positioned
        fakes.fake_stream(m, FakeFatalKafkaException),  # positioned, one alert, then fails
        fakes.fake_stream(c.stop),
    ]
    c.listen(Recorder(), "topic1", since="earliest")
    starts = [call.kwargs.get("start_at") for call in patched_open.call_args_list]
    # the replay is asked for again until a stream was positioned; after that a group
    # resumes where it is (what its members committed) and a private listener where it was
    assert starts[:2] == [StartPosition.EARLIEST, StartPosition.EARLIEST]
    assert starts[2] != StartPosition.EARLIEST


def test_6_5_retry_waits_retry_wait(patched_open, fakes):
    c = client(noauth=True, group="test", retry_on_fatal=True, listen_retries=3, retry_wait=0.15)
    patched_open.side_effect = [fakes.fake_stream(FakeFatalKafkaException) for _ in range(3)]
    start = time.monotonic()
    with pytest.raises(KafkaException):
        c.listen(Recorder(), "topic1")
    assert time.monotonic() - start >= 2 * 0.15 - 0.01


def test_6_5_delivered_message_resets_retry_count(patched_open, fakes):
    c = client(noauth=True, group="test", retry_on_fatal=True, listen_retries=2, retry_wait=0)
    m = (b'{"n": 1}', fakes.meta("test.topic1"))
    patched_open.side_effect = [
        fakes.fake_stream(FakeFatalKafkaException),  # attempt 1 fails
        # delivers, so the count starts again: this failure is the 1st in a row ...
        fakes.fake_stream(m, FakeFatalKafkaException),
        fakes.fake_stream(FakeFatalKafkaException),  # ... and this the 2nd: retries spent
        fakes.fake_stream(FakeFatalKafkaException),
    ]
    rec = Recorder()
    with pytest.raises(KafkaException):
        c.listen(rec, "topic1")
    assert rec.calls == [("topic1", {"n": 1})]
    # without the reset, the failure after the delivery would be the 3rd in a row (2 opens)
    assert patched_open.call_count == 3


def test_6_5_retry_then_success_delivers(patched_open, fakes):
    c = client(noauth=True, group="test", retry_on_fatal=True, listen_retries=3, retry_wait=0)
    rec = Recorder(stop_client=c, after=1)
    patched_open.side_effect = [
        fakes.fake_stream(FakeFatalKafkaException),
        fakes.fake_stream((b'{"n": 1}', fakes.meta("test.topic1")), c.stop),
    ]
    c.listen(rec, "topic1")
    assert rec.calls == [("topic1", {"n": 1})]


def test_6_5_periodic_fatal_from_callback_with_retry_keeps_listening(patched_open, fakes):
    c = client(noauth=True, group="test", retry_on_fatal=True, listen_retries=2, retry_wait=0)
    m = (b"{}", fakes.meta("test.topic1"))
    patched_open.side_effect = [fakes.fake_stream(m, m, m, m, m) for _ in range(10)]
    count = 0

    def callback(topic, payload):
        nonlocal count
        count += 1
        if count == 12:
            c.stop()
        elif count % 3 == 0:
            raise FakeFatalKafkaException

    c.listen(callback, "topic1")
    assert count == 12


def test_6_5_nonfatal_from_stream_logged_and_listening_goes_on(c, patched_open, fakes, caplog):
    rec = Recorder(stop_client=c, after=1)
    patched_open.side_effect = [
        fakes.fake_stream(FakeNonFatalKafkaException),
        fakes.fake_stream((b'{"n": 1}', fakes.meta("test.topic1")), c.stop),
    ]
    with caplog.at_level(logging.WARNING):
        c.listen(rec, "topic1")
    assert rec.calls == [("topic1", {"n": 1})]
    assert any(r.levelno >= logging.WARNING for r in caplog.records)


def test_6_5_nonfatal_from_callback_logged_retried_and_next_alert_delivered(
    c, patched_open, fakes, caplog
):
    stream = fakes.fake_stream(
        (b'{"n": 1}', fakes.meta("test.topic1", offset=0)),
        (b'{"n": 2}', fakes.meta("test.topic1", offset=1)),
        c.stop,
    )
    patched_open.return_value = stream
    seen = []

    def callback(topic, payload):
        seen.append(payload)
        if payload == {"n": 1} and len(seen) == 1:
            raise FakeNonFatalKafkaException  # a transient failure: the retry succeeds

    with caplog.at_level(logging.WARNING):
        c.listen(callback, "topic1")
    assert seen == [{"n": 1}, {"n": 1}, {"n": 2}]  # delivered again, never skipped
    done = [call.args[0].offset for call in stream.__enter__().mark_done.call_args_list]
    assert done == [0, 1]  # each marked done only after its callback returned
    assert any(r.levelno >= logging.WARNING for r in caplog.records)


# -- 6.6 stop() ------------------------------------------------------------------------------


def test_6_6_stop_from_another_thread_returns_within_half_second(c, patched_open, fakes):
    stream = fakes.blocking_stream()
    patched_open.return_value = stream
    thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
    time.sleep(0.2)
    assert thread.is_alive()
    start = time.monotonic()
    c.stop()
    thread.join(2)
    assert not thread.is_alive(), "listen() did not return after stop()"
    assert time.monotonic() - start < 0.5
    assert "error" not in outcome, outcome
    assert fakes.was_closed(stream)


def test_6_6_stop_real_reader_returns_within_half_second(c, fake_consumer):
    thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
    time.sleep(0.3)
    assert thread.is_alive()
    start = time.monotonic()
    c.stop()
    thread.join(2)
    assert not thread.is_alive(), "listen() did not return after stop()"
    assert time.monotonic() - start < 0.5
    assert "error" not in outcome, outcome
    assert fake_consumer.instances and fake_consumer.instances[0].closed


def test_6_6_stop_before_listen_is_not_lost(c, patched_open, fakes):
    patched_open.return_value = fakes.blocking_stream((b"{}", fakes.meta("test.topic1")))
    rec = Recorder()
    c.stop()
    thread, outcome = run_in_thread(c.listen, rec, "topic1")
    thread.join(0.5)
    assert not thread.is_alive(), "a stop() before listen() was lost"
    assert rec.calls == []
    assert "error" not in outcome, outcome


def test_6_6_stop_while_listen_is_opening_is_not_lost(c, patched_open, fakes):
    stream = fakes.blocking_stream((b"{}", fakes.meta("test.topic1")))

    def opening(*args, **kwargs):
        c.stop()  # lands while listen() is still starting
        return stream

    patched_open.side_effect = opening
    rec = Recorder()
    thread, outcome = run_in_thread(c.listen, rec, "topic1")
    thread.join(0.5)
    assert not thread.is_alive(), "a stop() during start-up was lost"
    assert "error" not in outcome, outcome
    assert rec.calls == []


def test_6_6_listen_again_after_stop(c, patched_open, fakes):
    rec = Recorder()
    patched_open.side_effect = [
        fakes.fake_stream((b'{"n": 1}', fakes.meta("test.topic1")), c.stop),
        fakes.fake_stream((b'{"n": 2}', fakes.meta("test.topic1")), c.stop),
    ]
    c.listen(rec, "topic1")
    c.listen(rec, "topic1")
    assert rec.calls == [("topic1", {"n": 1}), ("topic1", {"n": 2})]


# -- 6.7 Ctrl-C ------------------------------------------------------------------------------


def test_6_7_keyboard_interrupt_from_stream_propagates_and_closes(c, patched_open, fakes):
    stream = fakes.fake_stream((b"{}", fakes.meta("test.topic1")), KeyboardInterrupt)
    patched_open.return_value = stream
    with pytest.raises(KeyboardInterrupt):
        c.listen(Recorder(), "topic1")
    assert fakes.was_closed(stream)
    assert patched_open.call_count == 1


def test_6_7_keyboard_interrupt_from_callback_propagates_and_closes(c, patched_open, fakes):
    stream = fakes.fake_stream((b"{}", fakes.meta("test.topic1")))
    patched_open.return_value = stream

    def callback(topic, payload):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.listen(callback, "topic1")
    assert fakes.was_closed(stream)


def test_6_7_keyboard_interrupt_from_print_propagates(c, patched_open, fakes):
    stream = fakes.fake_stream((b"{}", fakes.meta("test.topic1")))
    patched_open.return_value = stream
    with mock.patch("builtins.print", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            c.listen(topic="topic1")
    assert fakes.was_closed(stream)


# -- 6.8 delivery: an alert is done only after the callback returned -------------------------


def test_6_8_callback_exception_propagates_and_that_alert_not_marked_done(patched_open, fakes):
    c = client(noauth=True, group="test", consumer_group="cg")
    m1, m2, m3 = (fakes.meta("test.topic1", offset=i) for i in range(3))
    stream = fakes.fake_stream((b'{"n": 1}', m1), (b'{"n": 2}', m2), (b'{"n": 3}', m3))
    patched_open.return_value = stream
    reader = stream.__enter__.return_value
    order = []
    reader.mark_done.side_effect = lambda meta, *a, **k: order.append(("done", meta.offset))

    class CallbackError(Exception):
        pass

    def callback(topic, payload):
        order.append(("callback", payload["n"]))
        if payload["n"] == 2:
            raise CallbackError

    with pytest.raises(CallbackError):
        c.listen(callback, "topic1")
    assert order == [("callback", 1), ("done", 0), ("callback", 2)]
    assert [call.args[0] for call in reader.mark_done.call_args_list] == [m1]
    assert fakes.was_closed(stream)


def test_6_8_every_returned_alert_is_marked_done(patched_open, fakes):
    c = client(noauth=True, group="test", consumer_group="cg")
    metas = [fakes.meta("test.topic1", offset=i) for i in range(3)]
    stream = fakes.fake_stream(*[(b"{}", m) for m in metas], c.stop)
    patched_open.return_value = stream
    c.listen(Recorder(), "topic1")
    reader = stream.__enter__.return_value
    assert [call.args[0] for call in reader.mark_done.call_args_list] == metas
    # the stream is read without hop's autocommit (which marks an alert done early)
    assert reader.read.call_args.kwargs.get("autocommit") is False


def test_6_8_real_reader_stores_offset_only_after_callback_returned(fake_consumer, fakes):
    c = client(noauth=True, group="test", consumer_group="cg")
    fake_consumer.queue = [fakes.wire_message("test.topic1", {"n": i}, offset=i) for i in range(3)]

    class CallbackError(Exception):
        pass

    def callback(topic, payload):
        if payload["n"] == 1:
            raise CallbackError

    with pytest.raises(CallbackError):
        c.listen(callback, "topic1")
    consumer = fake_consumer.instances[0]
    assert consumer.config["group.id"] == "cg"
    assert consumer.subscribed == ["test.topic1"]
    assert [m.offset() for m in consumer.stored] == [0]
    assert consumer.closed


# -- 6.9 where a listener starts; missing topics ---------------------------------------------


def test_6_9_private_listener_starts_at_the_newest_alert(c, fake_consumer):
    thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
    time.sleep(0.3)
    c.stop()
    thread.join(2)
    assert not thread.is_alive() and "error" not in outcome, outcome
    consumer = fake_consumer.instances[0]
    assert consumer.subscribed == []  # no group join
    assert [(tp.topic, tp.offset) for tp in consumer.assigned] == [
        ("test.topic1", fake_consumer.END)
    ]


def test_6_9_consumer_group_position_is_left_to_librdkafka(fake_consumer, monkeypatch):
    from confluent_kafka import OFFSET_INVALID

    monkeypatch.setattr(fake_consumer, "COMMITTED", 17)
    c = client(noauth=True, group="test", consumer_group="cg")
    thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
    time.sleep(0.3)
    c.stop()
    thread.join(2)
    assert not thread.is_alive() and "error" not in outcome, outcome
    consumer = fake_consumer.instances[0]
    assert consumer.config["group.id"] == "cg"
    assert consumer.subscribed == ["test.topic1"]  # a real group join: partitions are shared
    # assigned as librdkafka gave them: it resolves the committed position (17) itself
    # (looked up once before the join, only to tell a brand-new group), and nothing was
    # committed by hand
    assert [(tp.topic, tp.offset) for tp in consumer.assigned] == [("test.topic1", OFFSET_INVALID)]
    assert consumer.committed_calls == []


def test_6_9_missing_topic_is_not_fatal(c, fake_consumer, caplog):
    fake_consumer.missing = {"test.nosuch"}
    with caplog.at_level(logging.WARNING):
        thread, outcome = run_in_thread(c.listen, Recorder(), "nosuch")
        time.sleep(0.3)
        assert thread.is_alive(), outcome
        c.stop()
        thread.join(2)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    assert any("test.nosuch" in r.getMessage() for r in caplog.records)


# -- issue 9, scenario 8: a credential error reported non-fatal while listening ---------------


def _auth_error():
    from confluent_kafka import KafkaError

    return KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error", fatal=False)


def test_credential_error_at_start_up_fails_fast(c, fake_consumer):
    fake_consumer.queue = []
    original = fake_consumer.__init__

    def init(self, config):
        from confluent_kafka import KafkaError
        from confluent_kafka import KafkaException as RawKafkaException

        original(self, config)
        self.pending_errors = [_auth_error()]

        def refused(*args, **kwargs):  # as librdkafka: no metadata without a session
            raise RawKafkaException(KafkaError(KafkaError._TRANSPORT))

        self.list_topics = refused

    with mock.patch.object(fake_consumer, "__init__", init):
        start = time.monotonic()
        with pytest.raises(igwn_alert.exceptions.AuthenticationError):
            c.listen(Recorder(), "topic1")
    assert time.monotonic() - start < 2


def test_transient_credential_error_while_listening_is_logged_and_retried(
    fake_consumer, fakes, caplog
):
    c = client(noauth=True, group="test", consumer_group="cg")
    got = Recorder()
    thread, outcome = run_in_thread(c.listen, got, "topic1")
    assert c.listening.wait(5)
    consumer = fake_consumer.instances[0]
    with caplog.at_level(logging.WARNING):
        consumer.pending_errors = [_auth_error()]  # as when a SCIMMA broker restarts
        time.sleep(0.3)
        assert thread.is_alive(), outcome
        consumer.queue.append(fakes.wire_message("test.topic1", {"n": 1}))
        deadline = time.monotonic() + 5
        while not got.calls and time.monotonic() < deadline:
            time.sleep(0.02)
    c.stop()
    thread.join(2)
    assert "error" not in outcome, outcome
    assert got.calls == [("topic1", {"n": 1})]
    assert any("retrying" in r.getMessage() for r in caplog.records)


def _listening_group(fake_consumer, monkeypatch, grace):
    """A group listener in a thread, refusals reported after ``grace`` seconds."""
    from igwn_alert import _reading

    monkeypatch.setattr(_reading, "_REFUSED_FOR", grace)
    c = client(noauth=True, group="test", consumer_group="cg")
    got = Recorder()
    thread, outcome = run_in_thread(c.listen, got, "topic1")
    assert c.listening.wait(5)
    return c, got, thread, outcome, fake_consumer.instances[0]


def test_credential_refused_for_long_while_listening_is_reported(
    fake_consumer, fakes, caplog, monkeypatch
):
    from igwn_alert.exceptions import AuthenticationError

    c, _got, thread, outcome, consumer = _listening_group(fake_consumer, monkeypatch, 0.5)
    with caplog.at_level(logging.WARNING):
        consumer.pending_errors = [_auth_error()]
        time.sleep(0.2)
        assert thread.is_alive(), outcome  # a short refusal is retried
        assert c.stats()["listener"]["state"] == "reconnecting"
        thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), AuthenticationError), outcome
    assert any("still refused" in r.getMessage() for r in caplog.records)


def test_an_alert_through_ends_a_refusal(fake_consumer, fakes, monkeypatch):
    c, got, thread, outcome, consumer = _listening_group(fake_consumer, monkeypatch, 0.6)
    consumer.pending_errors = [_auth_error()]
    time.sleep(0.3)
    consumer.queue.append(fakes.wire_message("test.topic1", {"n": 1}))
    time.sleep(0.8)  # past the grace: the alert ended the refusal, nothing is reported
    assert thread.is_alive(), outcome
    assert got.calls == [("topic1", {"n": 1})]
    assert c.stats()["listener"]["state"] == "listening"
    c.stop()
    thread.join(2)
    assert "error" not in outcome, outcome


def test_a_refused_topic_is_reported_though_another_topic_flows(fake_consumer, fakes, monkeypatch):
    from confluent_kafka import KafkaError

    from igwn_alert import _reading
    from igwn_alert.exceptions import AuthorizationError

    monkeypatch.setattr(_reading, "_REFUSED_FOR", 0.6)
    c = client(noauth=True, group="test", consumer_group="cg")
    got = Recorder()
    thread, outcome = run_in_thread(c.listen, got, ["topic1", "topic2"])
    assert c.listening.wait(5)
    consumer = fake_consumer.instances[0]
    refused = KafkaError(
        KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed", fatal=False
    )
    consumer.queue.append(fakes.FakeMessage("test.topic2", None, error=refused))
    for n in range(12):  # topic1 keeps delivering: that does not end topic2's refusal
        consumer.queue.append(fakes.wire_message("test.topic1", {"n": n}, offset=n))
        time.sleep(0.1)
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), AuthorizationError), outcome
    assert "test.topic2" in str(outcome["error"])
    assert ("topic1", {"n": 0}) in got.calls


def test_stop_is_prompt_while_librdkafka_takes_long_to_leave_the_group(fake_consumer):
    # librdkafka's close() can take seconds during a re-balance (found by the fault soak)
    released = threading.Event()

    def slow_close(self):
        released.wait(5)
        self.closed = True

    c = client(noauth=True, group="test", consumer_group="cg")
    with mock.patch.object(fake_consumer, "close", slow_close):
        thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
        assert c.listening.wait(5)
        start = time.monotonic()
        c.stop()
        thread.join(2)
        took = time.monotonic() - start
        consumer = fake_consumer.instances[0]
        assert not consumer.closed  # still closing, in the background
        released.set()
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert took < 0.5, took
    deadline = time.monotonic() + 2
    while not consumer.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert consumer.closed  # and the close (with its final commit) did finish


def test_stop_during_the_reopen_after_a_callback_fatal_error_returns_quietly(fake_consumer, fakes):
    # found by the fault soak: the private _Failed signal escaped listen()
    c = client(noauth=True, group="test", consumer_group="cg", retry_on_fatal=True, retry_wait=5)
    fake_consumer.queue = [fakes.wire_message("test.topic1", {"n": 1})]

    def fatal(topic, payload):
        raise FakeFatalKafkaException

    thread, outcome = run_in_thread(c.listen, fatal, "topic1")
    time.sleep(0.5)  # the callback failed; listen() waits retry_wait before reopening
    start = time.monotonic()
    c.stop()
    thread.join(2)
    assert not thread.is_alive()
    assert time.monotonic() - start < 0.5
    assert "error" not in outcome, outcome


def test_a_brand_new_group_gets_its_start_committed_before_it_joins(fake_consumer, monkeypatch):
    from confluent_kafka import OFFSET_INVALID

    monkeypatch.setattr(fake_consumer, "COMMITTED", OFFSET_INVALID)  # no position anywhere
    c = client(noauth=True, group="test", consumer_group="new")
    thread, _outcome = run_in_thread(c.listen, Recorder(), "topic1")
    assert c.listening.wait(5)
    c.stop()
    thread.join(2)
    consumer = fake_consumer.instances[0]
    [commit] = consumer.committed_calls
    assert [(tp.topic, tp.offset) for tp in commit] == [("test.topic1", fake_consumer.END)]
    assert consumer.config["auto.offset.reset"] == "earliest"  # for partitions new to it


def test_a_group_whose_positions_cannot_be_looked_up_joins_without_guessing(
    fake_consumer, monkeypatch
):
    monkeypatch.setattr(fake_consumer, "COMMITTED_TIMES_OUT", True)
    from igwn_alert import _reading

    monkeypatch.setattr(_reading, "_GROUP_LOOKUP", 0.5)
    c = client(noauth=True, group="test", consumer_group="cg")
    thread, outcome = run_in_thread(c.listen, Recorder(), "topic1")
    assert c.listening.wait(5), outcome
    c.stop()
    thread.join(2)
    consumer = fake_consumer.instances[0]
    assert consumer.committed_calls == []  # nothing guessed, nothing moved
    assert consumer.subscribed == ["test.topic1"]  # librdkafka resumes the group itself
