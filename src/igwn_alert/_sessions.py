"""The writer map: the open writers of a client, by short topic name.

:class:`WriterMap` gives a client the reference's publishing API on top of one method,
``_open_writer(topic)``, that opens a writer (``write``, ``flush``, ``close``) for a short
topic name: :attr:`sessions` filled by ``connect()``, ``publish_to_topic()``,
``flush_by_topic()``, ``disconnect()``, and the writers that ``publish()`` keeps for reuse.
The real client and the in-memory client of :mod:`igwn_alert.testing` share it.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Optional

from ._topics import TopicSpec, normalize_topics

__all__ = ["WriterMap"]

log = logging.getLogger(__name__)

_NO_SESSIONS = "No active sessions. Please connect before publishing to a topic."

_INIT_LOCK = threading.Lock()


class WriterMap:
    """Publishing through open writers, as the reference client does it.

    Attributes
    ----------
    sessions : dict
        Short topic name -> open writer, filled by :meth:`connect`.
    """

    sessions: dict[str, Any]
    _publishers: dict[str, Any]

    def _open_writer(self, topic: str) -> Any:
        """Open a writer for one short topic name (implemented by the client)."""
        raise NotImplementedError

    def _writers_lock(self) -> threading.RLock:
        """The lock that guards :attr:`sessions` and the kept ``publish()`` writers."""
        lock = self.__dict__.get("_writer_map_lock")
        if lock is None:
            with _INIT_LOCK:
                lock = self.__dict__.setdefault("_writer_map_lock", threading.RLock())
        return lock  # type: ignore[no-any-return]

    def connect(self, topics: TopicSpec) -> None:
        """Open one writer per topic into :attr:`sessions`.

        Connecting to a topic that is already connected replaces its writer: the old one is
        flushed and closed.

        Parameters
        ----------
        topics : str or list of str
            Short topic names (you need write access to each).

        Raises
        ------
        ValueError
            If no topic is named, or a name breaks Kafka's topic-name rules.
        igwn_alert.exceptions.DeliveryError
            If a replaced writer's alerts could not be delivered (the new writer is in
            place all the same).
        """
        names = normalize_topics(topics, required=True)
        replaced = []
        for name in names:
            writer = self._open_writer(name)
            with self._writers_lock():
                old = self.sessions.get(name)
                self.sessions[name] = writer
            if old is not None and old is not writer:
                replaced.append(old)
        log.info("Connected to topics: %s", names)
        _close_all(replaced)

    def _session(self, topic: str) -> Any:
        if not self.sessions:
            raise RuntimeError(_NO_SESSIONS)
        try:
            return self.sessions[topic]
        except KeyError:
            raise RuntimeError(
                f"Not connected to topic {topic}. Please connect before publishing to a topic."
            ) from None

    def _publisher(self, topic: str) -> Any:
        """Return the writer ``publish()`` keeps for a topic, opening it the first time."""
        writer = self._publishers.get(topic)
        if writer is None:
            with self._writers_lock():  # one writer, even if threads publish at once
                writer = self._publishers.get(topic)
                if writer is None:
                    # entered like the reference's `with self.open(url, "w") as s: s.write(msg)`
                    writer = self._open_writer(topic).__enter__()
                    self._publishers[topic] = writer
        return writer

    def publish_to_topic(self, topic: str, msg: Any) -> None:
        """Publish an alert on a connected topic (see :meth:`connect`).

        Parameters
        ----------
        topic : str
            The short topic name.
        msg : str, dict or hop model
            The alert; GraceDB passes its JSON text as a str.

        Raises
        ------
        RuntimeError
            If nothing, or not that topic, is connected.
        igwn_alert.exceptions.DeliveryError
            Only if this alert cannot be queued (too large, say); never for an earlier one.
        """
        self._session(topic).write(msg)
        log.debug("Published an alert to topic %s", topic)

    def flush_by_topic(self, topic: str) -> None:
        """Wait until every alert published on a connected topic is delivered.

        Parameters
        ----------
        topic : str
            The short topic name.

        Raises
        ------
        RuntimeError
            If nothing, or not that topic, is connected.
        igwn_alert.exceptions.DeliveryError
            Once for the alerts published on that topic since the previous flush that were
            not delivered: how many, which (their ``uid``) and why.
        """
        self._session(topic).flush()
        log.debug("Flushed topic %s", topic)

    def disconnect(self, topics: Optional[TopicSpec] = None) -> None:
        """Close every writer, or the named ones.

        Parameters
        ----------
        topics : str or list of str, optional
            Short topic names; None closes all (also those ``publish()`` kept) and empties
            :attr:`sessions`. Naming a topic that is not connected warns.

        Raises
        ------
        Exception
            The first error met while closing (every writer is closed first).
        """
        with self._writers_lock():
            if not topics:
                names = list(self.sessions)
            else:
                names = []
                for name in normalize_topics(topics):
                    if name in self.sessions:
                        names.append(name)
                    else:
                        warnings.warn(f"Not currently connected to topic {name}", stacklevel=2)
            writers = [self.sessions.pop(name) for name in names]
            if not topics:
                writers.extend(self._publishers.values())
                self._publishers.clear()
        log.info("Disconnected from topics %s", names)
        _close_all(writers)


def _close_all(writers: list[Any]) -> None:
    """Close every writer, then raise the first error met (if any)."""
    failure: Optional[BaseException] = None
    for writer in writers:
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001 - close the rest, then report
            failure = failure or exc
    if failure is not None:
        raise failure
