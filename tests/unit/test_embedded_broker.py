"""The embedded broker (librdkafka's mock cluster): life cycle, topics, clients, serve()."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator

import confluent_kafka
import pytest

from igwn_alert.testing._embedded_broker import (
    AUTO_CREATED_PARTITIONS,
    DEFAULT_SERVE_TOPICS,
    EmbeddedBroker,
    EmbeddedBrokerError,
    serve,
)

QUIET = logging.getLogger("tests.librdkafka")
QUIET.setLevel(logging.CRITICAL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def produce(bootstrap: str, topic: str, value: bytes, count: int = 1) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "logger": QUIET})
    for _ in range(count):
        producer.produce(topic, value)
    assert producer.flush(10) == 0


def consume(bootstrap: str, topic: str, partitions: int, count: int, **config: object) -> list:
    """Read ``count`` messages from the start of a topic by manual assignment."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests", "logger": QUIET, **config}
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                got.append(message.value())
        return got
    finally:
        consumer.close()


@pytest.fixture(params=["native", "config"])
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(backend=request.param) as running:
        yield running


def test_addresses(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.host == "127.0.0.1"
    assert isinstance(broker.port, int) and broker.port > 0
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.server == "kafka://127.0.0.1"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert str(broker.port) in repr(broker)


def test_native_backend_is_available_with_the_confluent_kafka_wheel() -> None:
    with EmbeddedBroker() as running:
        assert running.native


def test_produce_and_consume_with_plain_kafka_clients(broker: EmbeddedBroker) -> None:
    produce(broker.bootstrap, "gracedb.superevent", b'{"uid": "S1"}', count=3)
    partitions = broker.list_topics()["gracedb.superevent"]
    assert partitions == AUTO_CREATED_PARTITIONS  # auto-created on produce
    assert consume(broker.bootstrap, "gracedb.superevent", partitions, 3) == [b'{"uid": "S1"}'] * 3


def test_create_topics_native_honours_partitions() -> None:
    with EmbeddedBroker(backend="native") as running:
        created = running.create_topics(["g.one", "g.two"], partitions=2)
        assert created == ["g.one", "g.two"]
        assert running.create_topics("g.one") == []  # existing topics are left alone
        topics = running.list_topics()
        assert topics["g.one"] == 2 and topics["g.two"] == 2
        running.create_topics("g.three")
        assert running.list_topics()["g.three"] == 1


def test_create_topics_config_backend_auto_creates(caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedBroker(backend="config") as running:
        with caplog.at_level(logging.WARNING, logger="igwn_alert.testing._embedded_broker"):
            assert running.create_topics(["g.one"], partitions=1) == ["g.one"]
        assert "4 partitions" in caplog.text
        assert running.list_topics()["g.one"] == AUTO_CREATED_PARTITIONS
        assert running.create_topics(["g.one"]) == []


def test_create_topics_rejects_zero_partitions(broker: EmbeddedBroker) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        broker.create_topics(["x"], partitions=0)


def test_assigned_consumer_sees_pre_created_topic(broker: EmbeddedBroker) -> None:
    broker.create_topics(["gracedb.cbc_gstlal"])
    partitions = broker.list_topics()["gracedb.cbc_gstlal"]
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "x", "logger": QUIET}
    )
    try:
        high = [
            consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition("gracedb.cbc_gstlal", p), timeout=5
            )
            for p in range(partitions)
        ]
        assert high == [(0, 0)] * partitions
    finally:
        consumer.close()


def test_consumer_group_joins_quickly_with_native_backend() -> None:
    with EmbeddedBroker(backend="native") as running:
        running.create_topics(["t"])
        produce(running.bootstrap, "t", b"m")
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": running.bootstrap,
                "group.id": "quick",
                "auto.offset.reset": "earliest",
                "logger": QUIET,
            }
        )
        try:
            start = time.monotonic()
            consumer.subscribe(["t"])
            message = None
            while message is None and time.monotonic() - start < 10:
                message = consumer.poll(0.05)
                if message is not None and message.error() is not None:
                    message = None
            assert message is not None and message.value() == b"m"
            assert time.monotonic() - start < 2.5  # the mock's default delay is 3 s
            consumer.commit(message, asynchronous=False)
            committed = consumer.committed([confluent_kafka.TopicPartition("t", 0)], timeout=5)
            assert committed[0].offset == 1
        finally:
            consumer.close()


def test_not_running_raises() -> None:
    broker = EmbeddedBroker()
    assert not broker.running
    assert "stopped" in repr(broker)
    with pytest.raises(EmbeddedBrokerError, match="not running"):
        _ = broker.port
    with pytest.raises(EmbeddedBrokerError):
        broker.create_topics(["x"])
    broker.stop()  # a no-op


def test_start_and_stop_are_idempotent() -> None:
    broker = EmbeddedBroker()
    assert broker.start() is broker
    port = broker.port
    broker.start()
    assert broker.port == port
    broker.stop()
    broker.stop()
    assert not broker.running


def test_restart_gives_an_empty_broker() -> None:
    broker = EmbeddedBroker().start()
    try:
        broker.create_topics(["x"])
        broker.stop()
        broker.start()
        assert "x" not in broker.list_topics()
    finally:
        broker.stop()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        EmbeddedBroker(backend="kraft")
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


@pytest.mark.parametrize("backend", ["native", "config"])
def test_fixed_port(backend: str) -> None:
    port = free_port()
    with EmbeddedBroker(port, backend=backend) as running:
        assert running.port == port
        assert running.bootstrap == f"127.0.0.1:{port}"
        produce(running.bootstrap, "fixed", b"hello")
        assert running.list_topics()["fixed"] >= 1
        assert consume(running.bootstrap, "fixed", running.list_topics()["fixed"], 1) == [b"hello"]
    # The port is free again once the broker stopped.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_fixed_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(
            EmbeddedBrokerError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use$"
        ):
            EmbeddedBroker(port).start()


def test_nothing_is_printed_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    for backend in ("native", "config"):
        with EmbeddedBroker(backend=backend) as running:
            running.create_topics(["quiet"])
            running.list_topics()
    out, err = capfd.readouterr()
    assert out == ""
    # What the mock cluster's owner would print without our log routing. (Other lines
    # could come from clients that other tests left behind.)
    for marker in ("MOCK|", "Mock cluster", "CONFWARN", "embedded broker"):
        assert marker not in err


def test_librdkafka_lines_go_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="igwn_alert.testing._embedded_broker"):
        with EmbeddedBroker(backend="native"):
            pass
    assert any("librdkafka" in r.getMessage() for r in caplog.records)


def test_serve_prints_address_and_stops_on_event() -> None:
    out = io.StringIO()
    stop = threading.Event()
    port = free_port()
    thread = threading.Thread(
        target=serve, kwargs={"port": port, "stream": out, "stop_event": stop}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while "Listen with" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert lines == [
        f"igwn-alert embedded broker listening on kafka://127.0.0.1:{port}",
        f"Listen with: igwn-alert -s kafka://127.0.0.1 -p {port} --no-auth listen",
    ]
    # The default topics exist, so `igwn-alert listen` without topics finds them.
    producer = confluent_kafka.Producer({"bootstrap.servers": f"127.0.0.1:{port}", "logger": QUIET})
    names = set(producer.list_topics(timeout=5).topics)
    assert {f"gracedb.{t}" for t in DEFAULT_SERVE_TOPICS} <= names
    del producer
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_serve_with_group_and_topics() -> None:
    out = io.StringIO()
    stop = threading.Event()
    stop.set()  # returns as soon as it has printed
    serve(stream=out, topics=["superevent"], group="gracedb-playground", stop_event=stop)
    first, hint = out.getvalue().splitlines()
    assert first.startswith("igwn-alert embedded broker listening on kafka://127.0.0.1:")
    assert hint.endswith(" -g gracedb-playground --no-auth listen")


def test_serve_returns_on_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class Interrupting(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            calls.append(timeout)
            raise KeyboardInterrupt

    serve(stream=io.StringIO(), topics=[], stop_event=Interrupting())
    assert calls


def test_serve_returns_on_sigterm() -> None:
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    out = io.StringIO()

    def terminate_once_serving() -> None:
        deadline = time.monotonic() + 10
        while "Listen with" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler is installed before printing

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_once_serving, daemon=True)
    killer.start()
    serve(stream=out, topics=[])
    killer.join(5)
    assert "listening on" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) == previous
