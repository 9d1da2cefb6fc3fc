"""``igwn-alert demo``: GraceDB alerts flowing through a broker, with nothing to set up.

:func:`run_demo` starts an :class:`~igwn_alert.testing._embedded_broker.EmbeddedBroker`, listens to
it with :class:`igwn_alert.client` exactly as ``igwn-alert listen`` does (no callback, so
each alert is printed as ``New message from topic <topic>:`` and its payload), and
publishes a realistic sequence of GraceDB alerts the way GraceDB does: one writer per
topic (``connect``), the alert's JSON text passed as a ``str`` to ``publish_to_topic``,
then ``flush_by_topic``.

The alerts ship with the package (``igwn_alert/data/*.json``) and are also available to
your own tests through :func:`demo_alerts`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional, TextIO

__all__ = [
    "DEMO_GROUP",
    "DemoAlert",
    "DemoError",
    "demo_alerts",
    "run_demo",
]

log = logging.getLogger(__name__)

#: The GraceDB group (topic prefix) the demo publishes to.
DEMO_GROUP = "gracedb-demo"

_PREFIX = "New message from topic "


class DemoError(RuntimeError):
    """The demo did not complete (for example, not every alert arrived in time)."""


@dataclass(frozen=True)
class DemoAlert:
    """One alert of the demo sequence.

    Attributes
    ----------
    topic : str
        The short topic name it is published to (``superevent``, ``cbc_gstlal``).
    name : str
        The name of its data file, without ``.json``.
    text : str
        The alert as GraceDB sends it: compact JSON text.
    """

    topic: str
    name: str
    text: str

    @property
    def alert(self) -> dict[str, Any]:
        """dict: The alert decoded from :attr:`text`."""
        value: dict[str, Any] = json.loads(self.text)
        return value


def demo_alerts() -> list[DemoAlert]:
    """Return the demo's GraceDB alerts, in the order they are published.

    The alerts describe one mock (MDC) gravitational-wave candidate: a gstlal event, its
    superevent, the ``EM_READY`` label, the sky map upload, the preliminary VOEvent, the
    ``ADVOK`` label and a data-quality log message. Each file is named
    ``<order>-<topic>-<what>.json``.

    Returns
    -------
    list of DemoAlert
        The alerts, each with its short topic name and its JSON text.
    """
    folder = resources.files("igwn_alert").joinpath("data")
    alerts = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        stem = entry.name[: -len(".json")]
        parts = stem.split("-")
        if len(parts) != 3:
            continue
        text = json.dumps(json.loads(entry.read_text(encoding="utf-8")))
        alerts.append(DemoAlert(topic=parts[1], name=stem, text=text))
    return alerts


class _AlertCounter:
    """A text stream that forwards to another one and counts printed alerts."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._at_line_start = True
        self._count = 0
        self._aborted = False
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        found = 0
        start = 0
        if not self._at_line_start:
            newline = text.find("\n")
            start = len(text) if newline < 0 else newline + 1
        while start < len(text):
            if text.startswith(_PREFIX, start):
                found += 1
            newline = text.find("\n", start)
            if newline < 0:
                break
            start = newline + 1
        if text:
            self._at_line_start = text.endswith("\n")
        written = self._target.write(text)
        if found:
            with self._changed:
                self._count += found
                self._changed.notify_all()
        return written

    def flush(self) -> None:
        self._target.flush()

    def abort(self) -> None:
        """Wake up :meth:`wait_for`: no more alerts will come."""
        with self._changed:
            self._aborted = True
            self._changed.notify_all()

    def wait_for(self, count: int, deadline: float) -> bool:
        """Wait until ``count`` alerts were printed, :meth:`abort` or ``deadline`` (monotonic)."""
        with self._changed:
            while self._count < count:
                if self._aborted:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    @property
    def count(self) -> int:
        return self._count


class _ThreadStdout:
    """Stands in for ``sys.stdout``: one thread's output goes elsewhere."""

    def __init__(self, default: TextIO, thread_id: int, target: _AlertCounter) -> None:
        self._default = default
        self._thread_id = thread_id
        self._target = target

    def _stream(self) -> Any:
        if threading.get_ident() == self._thread_id:
            return self._target
        return self._default

    def write(self, text: str) -> int:
        result: int = self._stream().write(text)
        return result

    def flush(self) -> None:
        self._stream().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._default, name)


def run_demo(
    stream: Optional[TextIO] = None,
    timeout: float = 30.0,
    *,
    jsonpp: bool = False,
    pause: float = 0.0,
) -> None:
    """Run the demo: start a broker, publish GraceDB alerts, print them as a listener.

    Prints a header line, then each alert exactly as ``listen()`` without a callback prints
    it, then a summary line. Finishes in a few seconds.

    Parameters
    ----------
    stream : text file, optional
        Where to print (default: ``sys.stdout`` at call time).
    timeout : float, optional
        Seconds allowed for the whole demo (default 30).
    jsonpp : bool, optional
        Pretty-print the alerts, as ``igwn-alert -j listen`` does.
    pause : float, optional
        Extra seconds to wait between alerts, for a slower show (default 0).

    Raises
    ------
    DemoError
        If not every alert arrived within ``timeout`` seconds, or the listener failed.
    BrokenPipeError
        If ``stream`` was closed by its reader.
    """
    from .. import client as Client  # the class; imported here so the CLI starts fast
    from ._embedded_broker import EmbeddedBroker

    out = sys.stdout if stream is None else stream
    deadline = time.monotonic() + timeout
    alerts = demo_alerts()
    topics = sorted({a.topic for a in alerts})
    started = time.monotonic()

    with EmbeddedBroker() as broker:
        broker.create_topics([f"{DEMO_GROUP}.{t}" for t in topics], partitions=1)
        out.write(
            f"igwn-alert demo: embedded broker at {broker.url}; publishing {len(alerts)} "
            f"GraceDB alerts to group {DEMO_GROUP} and listening to them\n"
        )
        out.flush()
        options: dict[str, Any] = {
            "server": broker.server,
            "port": broker.port,
            "noauth": True,
            "group": DEMO_GROUP,
        }
        listener = Client(jsonpp_on=jsonpp, **options)
        publisher = Client(**options)
        counter = _AlertCounter(out)
        failure: list[BaseException] = []

        def listen() -> None:
            try:
                listener.listen(None, topics)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failure.append(exc)
                counter.abort()

        thread = threading.Thread(target=listen, name="igwn-alert-demo-listener", daemon=True)
        saved_stdout = sys.stdout
        try:
            thread.start()
            assert thread.ident is not None
            sys.stdout = _ThreadStdout(saved_stdout, thread.ident, counter)  # type: ignore[assignment]
            _wait_listening(listener, thread, deadline, failure)
            publisher.connect(topics)
            try:
                previous = None
                # Kafka keeps the order within a partition only: before switching topic
                # (or before every alert, if topics have several partitions), wait until
                # what was sent has been printed.
                one_by_one = pause > 0 or not broker.native
                for number, alert in enumerate(alerts, start=1):
                    if previous is not None and (one_by_one or alert.topic != previous):
                        _wait_printed(counter, number - 1, len(alerts), deadline, timeout, failure)
                        if pause > 0:
                            time.sleep(pause)
                    publisher.publish_to_topic(alert.topic, alert.text)
                    publisher.flush_by_topic(alert.topic)
                    previous = alert.topic
                _wait_printed(counter, len(alerts), len(alerts), deadline, timeout, failure)
            finally:
                publisher.disconnect()
        finally:
            listener.stop()
            thread.join(max(1.0, deadline - time.monotonic()))
            sys.stdout = saved_stdout
            out.flush()
        _check(failure)
        elapsed = time.monotonic() - started
        out.write(
            f"igwn-alert demo: {counter.count} of {len(alerts)} alerts received in "
            f"{elapsed:.1f} s. Try it live: igwn-alert serve\n"
        )
        out.flush()


def _wait_listening(
    listener: Any, thread: threading.Thread, deadline: float, failure: list[BaseException]
) -> None:
    """Wait until the listener reads its topics (its ``listening`` event is set)."""
    ready = getattr(listener, "listening", None)
    while True:
        _check(failure)
        if ready is None:  # a client without the event: give it a moment
            time.sleep(0.5)
            return
        if ready.wait(0.05):
            return
        if not thread.is_alive():
            _check(failure)
            raise DemoError("the demo listener stopped before it started listening")
        if time.monotonic() >= deadline:
            raise DemoError("the demo listener did not start in time")


def _wait_printed(
    counter: _AlertCounter,
    number: int,
    total: int,
    deadline: float,
    timeout: float,
    failure: list[BaseException],
) -> None:
    """Wait until ``number`` alerts were printed; raise DemoError at the deadline."""
    if not counter.wait_for(number, deadline):
        _check(failure)
        raise DemoError(f"only {counter.count} of {total} demo alerts arrived within {timeout:g} s")


def _check(failure: list[BaseException]) -> None:
    if failure:
        if isinstance(failure[0], BrokenPipeError):
            raise failure[0]  # the output was closed (``igwn-alert demo | head``)
        raise DemoError(f"the demo listener failed: {failure[0]!r}") from failure[0]
