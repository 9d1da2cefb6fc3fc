"""The writer ``open(url, "w")`` returns offers hop's ``hop.io.Producer`` API (issue 11, 6).

Boundary: ``confluent_kafka.Producer`` in the publishing module (``fake_producer``, which
delivers at once, or a producer that never answers).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hop.io import Producer as HopProducer
from hop.models import JSONBlob

from igwn_alert import client
from igwn_alert._publishing import AlertWriter, ProducerPool
from igwn_alert.exceptions import DeliveryError

pytestmark = pytest.mark.usefixtures("isolated_home")

URL = "kafka://test.server:1234/test.superevent"


@pytest.fixture
def c() -> client:
    return client(noauth=True, server="kafka://test.server", port=1234, group="test")


def _payloads(fake_producer):
    return [(t, v) for p in fake_producer.instances for t, v, _ in p.produced]


def test_pack_is_hops_and_static(fake_producer, c):
    for msg in ({"a": 1}, '{"a": 1}', b"raw", JSONBlob(content=[1])):
        ours = AlertWriter.pack(msg)
        theirs = HopProducer.pack(msg)
        assert ours[0] == theirs[0]
        assert [k for k, _ in ours[1]] == [k for k, _ in theirs[1]]
    with c.open(URL, "w") as writer:
        _, headers = writer.pack({"b": 2}, headers={"x": b"1"}, test=True)
    assert dict(headers)["_test"] == b"true" and dict(headers)["x"] == b"1"


def test_write_raw_sends_what_pack_made(fake_producer, c):
    with c.open(URL, "w") as writer:
        payload, headers = writer.pack({"uid": "S1"})
        got = []
        writer.write_raw(payload, headers, delivery_callback=lambda e, m: got.append(e))
        writer.write({"uid": "S2"}, headers={"h": b"v"}, key=b"k")
        assert writer.flush(timedelta(seconds=1)) == 0
    assert got == [None]
    values = [json.loads(v) for _, v in _payloads(fake_producer)]
    assert values == [{"uid": "S1"}, {"uid": "S2"}]
    produced_headers = fake_producer.instances[0].produced[1][2]
    assert ("h", b"v") in produced_headers


def test_context_manager_closes_and_closed_writer_refuses(fake_producer, c):
    with c.open(URL, "w") as writer:
        writer.write("x")
    assert writer.close() == 0  # closing again is harmless
    with pytest.raises(ValueError, match="closed"):
        writer.write("y")
    assert c._producers.running() == 0


def test_multi_topic_writer_needs_the_topic(fake_producer, c):
    with c.open("kafka://test.server:1234/test.a,test.b", "w") as writer:
        with pytest.raises(ValueError, match="name the topic"):
            writer.write("x")
        writer.write("x", topic="test.b")
    assert [t for t, _ in _payloads(fake_producer)] == ["test.b"]


class _Silent:
    """A producer whose broker never answers: nothing is ever delivered."""

    def __init__(self, config):
        self.config = config
        self.pending = 0

    def list_topics(self, topic=None, timeout=-1):
        from types import SimpleNamespace

        return SimpleNamespace(orig_broker_id=1, topics={topic: SimpleNamespace(error=None)})

    def produce(self, *args, **kwargs):
        self.pending += 1

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=-1):
        return self.pending

    def purge(self, **kwargs):
        self.pending = 0

    def __len__(self):
        return self.pending


def test_produce_timeout_is_the_default_flush_wait(monkeypatch):
    from igwn_alert import _publishing

    monkeypatch.setattr(_publishing.confluent_kafka, "Producer", _Silent)
    pool = ProducerPool()
    writer = AlertWriter(
        pool, "test.server:1234", ["test.t"], None, produce_timeout=timedelta(seconds=0.2)
    )
    writer.write("x")
    with pytest.raises(DeliveryError, match=r"not delivered within 0\.2 s"):
        writer.flush()
    with pytest.raises(DeliveryError, match=r"not delivered within 0\.1 s"):
        writer.flush(timedelta(seconds=0.1))  # an explicit timeout wins
    with pytest.raises(ValueError, match="produce_timeout"):
        AlertWriter(pool, "test.server:1234", ["test.t"], None, produce_timeout=5)
