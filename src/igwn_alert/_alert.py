"""What a failure handler (``listen(..., on_failure=...)``) learns about an alert."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Alert", "uid_of"]


def uid_of(payload: Any) -> Optional[str]:
    """Return the GraceDB ``uid`` of an alert payload, if it has one (never raising).

    Parameters
    ----------
    payload : object
        A dict, or a str/bytes holding a JSON object.

    Returns
    -------
    str or None
        The uid.
    """
    try:
        value = json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        uid = value.get("uid") if isinstance(value, dict) else None
    except Exception:  # noqa: BLE001 - only for messages
        return None
    return uid if isinstance(uid, str) else None


@dataclass(frozen=True)
class Alert:
    """One alert whose callback failed, as an ``on_failure`` handler receives it.

    Attributes
    ----------
    topic : str
        The short topic name (``superevent``), as the callback got it.
    full_topic : str
        The broker topic (``gracedb.superevent``).
    partition : int
        The Kafka partition.
    offset : int
        The Kafka offset.
    timestamp : int
        The broker timestamp, in milliseconds since the epoch.
    payload : object
        The payload, as the callback got it.
    attempts : int
        How many times the callback was called for it.
    """

    topic: str
    full_topic: str
    partition: int
    offset: int
    timestamp: int
    payload: Any
    attempts: int = 1

    @property
    def uid(self) -> Optional[str]:
        """The GraceDB uid of the alert (``S250101a``), if the payload has one."""
        return uid_of(self.payload)

    def describe(self) -> str:
        """Return ``topic[partition]@offset (uid ...)`` for log messages.

        Returns
        -------
        str
            The description.
        """
        uid = self.uid
        where = f"{self.full_topic}[{self.partition}]@{self.offset}"
        return f"{where} (uid {uid})" if uid else where
