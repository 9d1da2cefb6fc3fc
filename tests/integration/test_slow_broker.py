"""Metadata slices (``_errors.list_topics``) against slow and silent brokers.

A broker of its own advertises a delaying TCP proxy (every answer held back ``delay``
seconds, the requests forwarded at once), so every connection librdkafka makes goes through
it: a broker that answers, but slowly (a loaded broker, a long distance). And a local socket
that accepts and never answers (a hung broker).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest
from _delivery_helpers import create_topic
from _helpers import plain_client, produce, wait_for
from _shared import Run
from confluent_kafka import Consumer

pytestmark = pytest.mark.timeout(150)


class DelayProxy:
    """Forward TCP to the broker found in ``config`` (its PLAINTEXT listener); hold answers.

    ``delay`` seconds are added to every chunk the broker sends back (order kept);
    requests go through at once. ``delay`` may be changed at any time.
    """

    def __init__(self, config: Path, delay: float = 0.0) -> None:
        self.config = config
        self.delay = delay
        self.first_free = False  # the first answer on a connection (ApiVersion) not held
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _upstream(self) -> Optional[int]:
        try:
            text = self.config.read_text()
        except OSError:
            return None
        m = re.search(r"^listeners=PLAINTEXT://127\.0\.0\.1:(\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            port = self._upstream()
            try:
                up = socket.create_connection(("127.0.0.1", port or 1), timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            self.conns += [down, up]
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        import queue

        q: queue.Queue[Any] = queue.Queue()

        def writer() -> None:
            while True:
                due, data = q.get()
                if data is None:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

        threading.Thread(target=writer, daemon=True).start()
        first = True
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                q.put((0, None))
                return
            hold = delayed and not (first and self.first_free)
            first = False
            q.put((time.monotonic() + (self.delay if hold else 0.0), data))

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def slow_broker(tmp_path: Path) -> Any:
    """(proxy address, proxy, cluster): a broker whose every answer goes through a proxy."""
    from _delivery_helpers import start_dedicated_broker

    base = tmp_path / "slow"
    proxy = DelayProxy(base / "node-1" / "server.properties")
    cluster = start_dedicated_broker(
        base,
        1,
        extra_properties={"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"},
    )
    try:
        yield f"127.0.0.1:{proxy.port}", proxy, cluster
    finally:
        cluster.kill()
        proxy.close()


SLOW = 1.0  # seconds the broker takes to answer anything


def test_private_listen_starts_on_a_broker_answering_in_one_second(slow_broker: Any) -> None:
    """A broker that answers every request, but after 1 s, must still be listened to.

    ``_errors.list_topics`` promises "a slow answer over a long distance still arrives"; a
    request it cut off after a 0.5 s slice is never answered to it (the next slice sends a
    new request), so a broker slower than 0.5 s is never described.
    """
    address, proxy, _ = slow_broker
    topic = f"slow-{uuid.uuid4().hex[:6]}"
    create_topic(address, f"gracedb.{topic}")
    proxy.delay = SLOW
    # the broker is usable: librdkafka itself, given the time, gets its answer
    plain = Consumer({"bootstrap.servers": address, "group.id": "x"})
    try:
        assert f"gracedb.{topic}" in plain.list_topics(timeout=10).topics
    finally:
        plain.close()
    got: list[Any] = []
    client = plain_client(address, "gracedb")
    run = Run(client, lambda topic, payload: got.append(payload), topic)
    try:
        run.ready(timeout=40)
        produce(address, f"gracedb.{topic}", [{"n": i} for i in range(5)])
        assert wait_for(lambda: len(got) == 5, 30), got
    finally:
        run.stop()
    assert run.error is None, repr(run.error)
    assert [p["n"] for p in got] == list(range(5))


def test_get_topics_on_a_broker_answering_in_one_second(slow_broker: Any) -> None:
    """get_topics() (also ``_errors.list_topics``) against a broker that answers after 1 s."""
    address, proxy, _ = slow_broker
    topic = f"slow-{uuid.uuid4().hex[:6]}"
    create_topic(address, f"gracedb.{topic}")
    proxy.delay = SLOW
    client = plain_client(address, "gracedb")
    assert topic in client.get_topics()


def test_stop_while_a_slow_broker_is_being_described_is_prompt(slow_broker: Any) -> None:
    """stop() while the start-up's metadata request is in flight ends listen() within 0.5 s."""
    address, proxy, _ = slow_broker
    topic = f"slow-{uuid.uuid4().hex[:6]}"
    create_topic(address, f"gracedb.{topic}")
    proxy.delay = 30.0  # a hung broker: the connection is up, nothing more is answered
    proxy.first_free = True  # ApiVersion answered: librdkafka sends the metadata request
    took = []
    for _ in range(6):
        client = plain_client(address, "gracedb")
        run = Run(client, lambda topic, payload: None, topic)
        time.sleep(2.5)  # in _describe, its metadata request unanswered
        took.append(run.stop(timeout=10))
        assert run.error is None, repr(run.error)
    print("stop took", took)
    assert max(took) < 0.5, took


def test_stop_while_the_broker_accepts_and_never_answers_is_prompt() -> None:
    """A socket that accepts connections and never answers: stop() within 0.5 s."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    closed = threading.Event()

    def accept() -> None:
        while not closed.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        took = []
        for group in (None, f"cg-{uuid.uuid4().hex[:6]}"):
            client = plain_client(f"127.0.0.1:{port}", "gracedb", consumer_group=group)
            run = Run(client, lambda topic, payload: None, "superevent")
            time.sleep(2.0)
            took.append(run.stop(timeout=10))
            assert run.error is None, repr(run.error)
        print("stop took", took)
        assert max(took) < 0.5, took
    finally:
        closed.set()
        srv.close()
        for s in held:
            s.close()
