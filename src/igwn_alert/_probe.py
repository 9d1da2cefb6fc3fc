"""A quick check that a broker answers and accepts a credential, naming what is wrong."""

from __future__ import annotations

import logging
from typing import Any

import confluent_kafka
import confluent_kafka.admin

from . import _errors
from ._kafka_config import base_config
from .exceptions import AuthenticationError, KafkaException

__all__ = ["probe"]

log = logging.getLogger(__name__)

# a TLS credential on a listener without TLS fails each attempt the same way (~0.1 s each)
_DECISIVE_MISMATCHES = 3


def probe(bootstrap: str, credential: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Connect to a broker and list the topics the credential may see.

    Unlike a bare metadata request, a refused credential is reported as such within a second
    or two instead of as a time-out.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    credential : hop.auth.Auth or None
        The credential.
    timeout : float, optional
        Seconds to wait for an answer.

    Returns
    -------
    dict
        Topic name -> :class:`confluent_kafka.admin.TopicMetadata`.

    Raises
    ------
    igwn_alert.exceptions.AuthenticationError
        If the broker refused the credential, or the credential's protocol does not match
        the listener's (TLS to a listener without it: the message says what to set).
    igwn_alert.exceptions.BrokerUnreachableError
        If the broker did not answer in time.
    """
    refused: list[KafkaException] = []
    mismatches = [0]

    def on_error(error: Any) -> None:
        exc = _errors.exception_for(error, server=bootstrap)
        if exc is None:
            mismatch = _errors.protocol_mismatch(error, bootstrap)
            if mismatch is None:
                return
            # before any answer, the same mismatch again and again is the real cause
            mismatches[0] += 1
            if mismatches[0] < _DECISIVE_MISMATCHES:
                return
            exc = AuthenticationError(mismatch, error)
        refused.append(exc)

    admin = confluent_kafka.admin.AdminClient(
        base_config(bootstrap, credential, {"error_cb": on_error})
    )
    md = _errors.list_topics(
        admin,
        timeout=timeout,
        serve=lambda: admin.poll(0),
        failed=lambda: refused[0] if refused else None,
        server=bootstrap,
    )
    return {name: meta for name, meta in md.topics.items() if meta.error is None}
