"""Downstream code of every generation stops a listener its own way (issue 11 items 1-2).

Each idiom runs on the real broker: the listener receives an alert, is stopped the way that
generation of code stops it, ends within 1 s, and the same client listens again.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

from _helpers import plain_client, produce, wait_for
from _shared import Run

import igwn_alert


def _publish(bootstrap: str, topic: str, n: int) -> None:
    produce(bootstrap, topic, [{"n": n}])


def _listen_and_stop(client: Any, topic: Any, bootstrap: str, stop: Any, n: int) -> float:
    got: list[Any] = []
    run = Run(client, lambda topic, payload: got.append(payload), topic.short)
    run.ready(15)
    _publish(bootstrap, topic.full, n)
    assert wait_for(lambda: got == [{"n": n}], 15), got
    start = time.monotonic()
    stop(client)
    run.thread.join(2)
    took = time.monotonic() - start
    assert not run.thread.is_alive(), "the listener could not be stopped"
    assert run.error is None, run.error
    return took


def test_0_7_0_stop_through_the_listen_streams_consumer(kafka_broker, make_topic):
    topic = make_topic()
    c = plain_client(kafka_broker.plaintext, topic.group)

    def stop(client: Any) -> None:
        client.stop_listening.set()
        client._listen_stream._consumer.stop()

    for n in range(2):
        assert _listen_and_stop(c, topic, kafka_broker.plaintext, stop, n) < 1.0


def test_0_6_3_three_assignments(kafka_broker, make_topic):
    topic = make_topic()
    c = plain_client(kafka_broker.plaintext, topic.group)

    def stop(client: Any) -> None:
        client.fatal_restart_running = False
        client.listening = False
        client.listen_stream._consumer.stop()

    for n in range(2):
        took = _listen_and_stop(c, topic, kafka_broker.plaintext, stop, n)
        print(f"\n0.6.3 stop: {took * 1000:.0f} ms")
        assert took < 1.0
    assert not c.listening  # a readiness flag, false once stopped, still an Event
    assert hasattr(c.listening, "wait")


class Receiver(igwn_alert.client):
    """The shape of gwcelery 2.4.x's IGWN-alert client: its own listen loop."""

    def listen(self, callback: Any, topics: Any) -> None:  # type: ignore[override]
        self.stream_obj = self.open(self._construct_topic_url(topics), "r")
        with self.stream_obj as s:
            for payload, metadata in s.read(
                metadata=True, batch_size=1, batch_timeout=timedelta(seconds=0.2)
            ):
                callback(topic=metadata.topic.split(".", 1)[1], payload=payload)

    def stop(self) -> None:
        self.stream_obj._consumer.stop()


def test_gwcelery_2_4_subclass_with_its_own_loop(kafka_broker, make_topic):
    topic = make_topic()
    host, port = kafka_broker.plaintext.rsplit(":", 1)
    c = Receiver(noauth=True, server=f"kafka://{host}/", port=int(port), group=topic.group)
    for n in range(2):
        got: list[Any] = []
        thread = threading.Thread(
            target=c.listen,
            args=(lambda topic, payload, got=got: got.append(payload), [topic.short]),
            daemon=True,
        )
        thread.start()
        # its own loop has no readiness event: publish until one arrives
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            _publish(kafka_broker.plaintext, topic.full, n)
            wait_for(lambda got=got: bool(got), 1.0)
        assert got, "the subclass's loop received nothing"
        start = time.monotonic()
        c.stop()
        thread.join(2)
        assert not thread.is_alive(), "stream._consumer.stop() did not end its loop"
        assert time.monotonic() - start < 1.0


def test_hop_stream_settings_and_consumer_api_through_open(kafka_broker, make_topic):
    from hop.io import StartPosition

    topic = make_topic()
    for n in range(3):
        _publish(kafka_broker.plaintext, topic.full, n)
    c = plain_client(kafka_broker.plaintext, topic.group)
    c.start_at = StartPosition.EARLIEST  # hop's Stream settings, as hop users set them
    c.until_eos = True
    url = c._construct_topic_url(topic.short)
    start = time.monotonic()
    with c.open(url, "r") as s:
        payloads = [p.content for p in s.read()]  # replays, then ends at the end
    assert payloads == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert time.monotonic() - start < 15
    with c.open(url, "r") as s:
        raw = list(s.read_raw())
        assert [json.loads(m.value()) for m in raw] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert not any(s.is_test(m) for m in raw)
        assert topic.full in s.list_topics(timeout=10)
