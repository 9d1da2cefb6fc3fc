"""Helpers shared by the integration tests: clients, a listener in a thread, raw writes
and reads, waiting for a condition.

A listener in a thread that unit tests use as well is :class:`_shared.Run`
(``tests/_shared.py``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Optional

from confluent_kafka import Consumer, KafkaException, Producer

import igwn_alert

READY_TIMEOUT = 15.0
RECEIVE_TIMEOUT = 15.0


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed.

    Parameters
    ----------
    predicate : callable
        Called without arguments; its truth value is what counts.
    timeout : float
        Seconds to wait in all.
    interval : float, optional
        Seconds between two calls.

    Returns
    -------
    bool
        Whether it became true in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def n_of(payload: Any) -> Any:
    """The ``"n"`` of an alert ``{"n": ...}``; anything else (raw bytes) as it is."""
    if isinstance(payload, dict):
        return payload.get("n")
    return payload


def produce(
    bootstrap: str,
    topic: str,
    values: list[Any],
    partition: Optional[int] = None,
    fmt: Optional[bytes] = b"json",
) -> None:
    """Write raw values with a plain producer and wait until the broker has them all.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of a PLAINTEXT listener.
    topic : str
        The broker topic (its full name).
    values : list
        What to write: bytes as they are, anything else as JSON.
    partition : int, optional
        The partition to write to (default: librdkafka's partitioner).
    fmt : bytes or None, optional
        hop's ``_format`` header (none if None).
    """
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    headers = [("_format", fmt)] if fmt else None
    for value in values:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        if partition is None:
            p.produce(topic, data, headers=headers)
        else:
            p.produce(topic, data, headers=headers, partition=partition)
        p.poll(0)
    assert p.flush(30) == 0


def host_port(bootstrap: str) -> tuple[str, int]:
    """``(host, port)`` of the first address of a bootstrap string."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    return host, int(port)


def plain_client(bootstrap: str, group: str, **kwargs: Any) -> igwn_alert.client:
    """An unauthenticated client of a PLAINTEXT listener (``host:port``)."""
    host, port = host_port(bootstrap)
    return igwn_alert.client(
        noauth=True, server=f"kafka://{host}/", port=port, group=group, **kwargs
    )


class Listening:
    """Run ``client.listen(callback, topic)`` in a thread and collect what it delivers.

    Entering waits until the listener is positioned (``client.listening``); leaving stops it
    and checks that ``listen()`` returned within 2 s and did not raise.

    Parameters
    ----------
    client : igwn_alert.client
        The listening client.
    topic : object
        What ``listen()`` is given as its topic.
    quiet : bool, optional
        Silence warnings in the listening thread (raw bytes warn "not valid json").
    """

    def __init__(self, client: igwn_alert.client, topic: Any, *, quiet: bool = False) -> None:
        self.client = client
        self.topic = topic
        self.quiet = quiet
        self.received: list[tuple[str, Any]] = []
        self.error: Optional[BaseException] = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="test-listen", daemon=True)

    def _callback(self, topic: str, payload: Any) -> None:
        with self._cond:
            self.received.append((topic, payload))
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            with warnings.catch_warnings():
                if self.quiet:
                    warnings.simplefilter("ignore")
                self.client.listen(self._callback, self.topic)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc

    def __enter__(self) -> Listening:
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.client.listening.wait(0.05):
            if not self._thread.is_alive():
                raise AssertionError(f"listen() ended before it was ready: {self.error!r}")
            if time.monotonic() > deadline:
                self.client.stop()
                raise AssertionError(f"listen() not ready within {READY_TIMEOUT} s")
        return self

    def wait_for(self, count: int, timeout: float = RECEIVE_TIMEOUT) -> list[tuple[str, Any]]:
        """Wait for ``count`` alerts; assert ``listen()`` did not raise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    break
                self._cond.wait(min(left, 0.1))
            got = list(self.received)
        assert self.error is None, f"listen() raised {self.error!r}"
        assert len(got) >= count, f"expected {count} alerts within {timeout} s, got {got!r}"
        return got

    def __exit__(self, *exc: object) -> None:
        t0 = time.monotonic()
        self.client.stop()
        self._thread.join(5)
        assert not self._thread.is_alive(), "listen() did not return after stop()"
        assert time.monotonic() - t0 < 2.0
        if exc[0] is None and self.error is not None:
            raise AssertionError(f"listen() raised {self.error!r}")


def read_from_start(
    conf: dict[str, Any],
    topic: str,
    count: int,
    timeout: float = 15.0,
    keep: Optional[Callable[[Any], bool]] = None,
) -> list[Any]:
    """Read up to ``count`` raw messages from the start of ``topic``; raise on any error.

    Parameters
    ----------
    conf : dict
        librdkafka settings (at least ``bootstrap.servers``).
    topic : str
        The broker topic.
    count : int
        How many messages to collect.
    timeout : float, optional
        Seconds to wait in all; fewer messages may come back.
    keep : callable, optional
        Collect only the messages for which it is true.

    Returns
    -------
    list of confluent_kafka.Message
        The messages, in order.
    """
    consumer = Consumer(
        {
            **conf,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            if keep is None or keep(msg):
                got.append(msg)
        return got
    finally:
        consumer.close()
