"""The metadata watcher of a private reader: topics created and partitions added later.

A consumer-group reader gets new topics and partitions from the group (librdkafka
re-balances); a private reader assigns its partitions itself, so a thread looks for new
ones. It never touches the reader's consumer (with confluent-kafka 2.x a call on a
consumer from another thread waits while the reading thread polls it): it asks a metadata
client of its own and leaves what it found for the reading thread to assign between polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, Callable

__all__ = ["PartitionWatcher"]

log = logging.getLogger(__name__)

_FAST = 1.0  # seconds between checks while a topic is missing
_SLOW = 10.0  # ... and once every topic exists
_TIMEOUT = 5.0  # one metadata request


def _ignore(error: Any) -> None:
    """error_cb of the watcher's metadata client: the consumer reports errors itself."""
    log.debug("metadata client: %s", error.str())


class PartitionWatcher:
    """Finds partitions of ``topics`` that the reader does not hold yet.

    Parameters
    ----------
    topics : list of str
        Broker topic names.
    config : callable
        Returns the librdkafka settings of the metadata client (called once, lazily).
    """

    def __init__(self, topics: list[str], config: Callable[[dict[str, Any]], dict[str, Any]]):
        self._topics = list(topics)
        self._config = config
        self._lock = threading.Lock()
        self._known: set[tuple[str, int]] = set()
        self._found: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="igwn-alert-metadata", daemon=True)

    def start(self, held: Iterable[tuple[str, int]]) -> None:
        """Start watching; ``held`` are the partitions already assigned."""
        with self._lock:
            self._known |= set(held)
        self._thread.start()

    def take(self) -> set[tuple[str, int]]:
        """Return (and forget) the new partitions found since the last call."""
        if not self._found:  # read without the lock: the common case is cheap
            return set()
        with self._lock:
            found, self._found = self._found, set()
            self._known |= found
        return found

    def stop(self) -> None:
        """Stop the thread (it ends within one metadata request)."""
        self._stop.set()

    def _missing(self) -> bool:
        with self._lock:
            topics = {key[0] for key in self._known | self._found}
        return any(t not in topics for t in self._topics)

    def _run(self) -> None:
        admin: Any = None
        while not self._stop.wait(_FAST if self._missing() else _SLOW):
            try:
                if admin is None:
                    import confluent_kafka.admin

                    admin = confluent_kafka.admin.AdminClient(self._config({"error_cb": _ignore}))
                md = admin.list_topics(timeout=_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - keep watching through outages
                log.debug("metadata check failed: %s", exc)
                continue
            seen = set()
            for topic in self._topics:
                meta = md.topics.get(topic)
                if meta is not None and meta.error is None:
                    seen |= {(topic, p) for p in meta.partitions}
            with self._lock:
                new = seen - self._known - self._found
                if new:
                    log.info("new partitions to read: %s", sorted(new))
                    self._found |= new
