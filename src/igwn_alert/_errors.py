"""Classify librdkafka errors: which are transient, and which deserve a clear exception."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from confluent_kafka import KafkaError
from confluent_kafka import KafkaException as KafkaException_

from .exceptions import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnreachableError,
    KafkaException,
    TopicNotFoundError,
)

__all__ = ["TRANSIENT", "UNKNOWN_TOPIC", "exception_for", "protocol_mismatch", "unreachable"]

#: Error codes that mean "the broker is (for now) out of reach": retried by librdkafka.
TRANSIENT = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._WAIT_COORD,
        KafkaError._NO_OFFSET,
        KafkaError._PARTITION_EOF,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError._MAX_POLL_EXCEEDED,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)

#: Error codes that mean "this topic does not exist (yet)".
UNKNOWN_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})

_AUTHENTICATION = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})

# A protocol mismatch seen lately, per broker, so that a later "cannot reach the broker"
# names it instead of librdkafka's "Broker transport failure" (see unreachable()).
_MISMATCH_MEMORY = 60.0
_mismatches: dict[str, tuple[float, str]] = {}
_mismatch_lock = threading.Lock()


def _text(error: Any) -> str:
    return str(error.str()) if hasattr(error, "str") else str(error)


def protocol_mismatch(error: Any, server: str = "") -> Optional[str]:
    """Say what is wrong when the credential's protocol does not match the listener's.

    librdkafka reports a TLS credential used on a listener without TLS as a transport
    error ("SSL handshake failed ... connecting to a PLAINTEXT broker listener?", or "SSL
    connection closed by peer ... in state SSL_HANDSHAKE"), and a SASL credential used on a
    listener without SASL as an authentication error with an empty list of mechanisms.

    Parameters
    ----------
    error : confluent_kafka.KafkaError or str
        The error (or its text).
    server : str, optional
        ``host:port`` of the broker, named in the message.

    Returns
    -------
    str or None
        The cause and the fix, or None if ``error`` is not such a mismatch.
    """
    text = _text(error)
    where = f" at {server}" if server else ""
    in_handshake = "SSL_HANDSHAKE" in text or "SSL handshake failed" in text
    if in_handshake and ("PLAINTEXT broker listener" in text or "closed by peer" in text):
        return (
            f"the listener{where} does not speak TLS (it closed the connection during "
            'the TLS handshake); set protocol = "SASL_PLAINTEXT" in auth.toml, or pass '
            "hop.auth.Auth(..., ssl=False)"
        )
    if "connecting to a SSL listener?" in text:
        return (
            f"the listener{where} closed the connection at once; it may expect TLS: remove "
            'protocol = "SASL_PLAINTEXT" from auth.toml'
        )
    if "broker's supported mechanisms:" in text and not text.split(
        "broker's supported mechanisms:", 1
    )[1].split("(", 1)[0].strip(" ,"):
        return (
            f"the listener{where} does not use SASL (it offers no SASL mechanism): connect "
            "without a credential (noauth=True, --no-auth) or to the broker's SASL port"
        )
    return None


def _remember_mismatch(server: str, message: str) -> None:
    with _mismatch_lock:
        _mismatches[server] = (time.monotonic(), message)


def _recent_mismatch(server: str) -> Optional[str]:
    with _mismatch_lock:
        seen = _mismatches.get(server)
    if seen is None or time.monotonic() - seen[0] > _MISMATCH_MEMORY:
        return None
    return seen[1]


def exception_for(
    error: Any, *, topic: Optional[str] = None, group: Optional[str] = None, server: str = ""
) -> Optional[KafkaException]:
    """Return the exception a client should raise for a librdkafka error, or None.

    None means the error is transient or harmless: log it and carry on.

    Parameters
    ----------
    error : confluent_kafka.KafkaError
        The error.
    topic : str, optional
        The topic concerned, named in the message.
    group : str, optional
        The consumer group concerned, named in the message.
    server : str, optional
        ``host:port`` of the broker, named in the message.

    Returns
    -------
    adc.errors.KafkaException or None
        A clear exception, or None.
    """
    code = error.code()
    where = f" at {server}" if server else ""
    mismatch = protocol_mismatch(error, server)
    if mismatch is not None:
        if code in _AUTHENTICATION:
            return AuthenticationError(mismatch, error)
        # Not decisive on its own: TLS load balancers produce the same text now and then
        # (confluent-kafka-dotnet#1402), so a running client keeps retrying; but a later
        # "cannot reach the broker" names this cause.
        _remember_mismatch(server, mismatch)
        return None
    if code in _AUTHENTICATION:
        return AuthenticationError(
            f"the broker{where} refused the credential (check the user name and password): "
            f"{error.str()}",
            error,
        )
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        what = f"topic {topic}" if topic else "a topic"
        return AuthorizationError(
            f"the credential is not authorized for {what}{where} (missing ACL)", error
        )
    if code in (
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    ):
        what = f"writing to topic {topic}" if topic else "writing"
        return AuthorizationError(
            f"the credential is not authorized for {what}{where} (missing WRITE ACL)", error
        )
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        what = f"consumer group {group}" if group else "the consumer group"
        return AuthorizationError(
            f"the credential is not authorized for {what}{where} (missing ACL)", error
        )
    if code in UNKNOWN_TOPIC:
        if topic is None:
            return None
        return TopicNotFoundError(f"topic {topic} does not exist{where}", error)
    if error.fatal():
        return KafkaException(error)  # type: ignore[no-any-return]
    if code in TRANSIENT:
        return None
    return None


#: a metadata request's slice while librdkafka has no broker up to send it to
_NO_BROKER_SLICE = 0.1
#: a metadata request's first slice once one could be sent (then doubled each time)
_REQUEST_SLICE = 0.5


def list_topics(
    handle: Any,
    *,
    topic: Optional[str] = None,
    timeout: float,
    serve: Optional[Callable[[], object]] = None,
    failed: Callable[[], Optional[BaseException]],
    server: str,
    stopped: Optional[threading.Event] = None,
) -> Any:
    """Request metadata in short slices, serving callbacks in between, failing fast.

    ``list_topics`` alone does not run ``error_cb``, so a refused credential would only
    show up as a time-out; between slices ``serve`` runs the callbacks and ``failed`` tells
    whether one of them recorded an error, which is then raised.

    A slice is :data:`_NO_BROKER_SLICE` long while librdkafka has no broker to send the
    request to (``_TRANSPORT``: nothing is in flight, so nothing is cut short). Once a
    request was sent and not answered in its slice, the next slice is
    :data:`_REQUEST_SLICE`, then twice as long each time (1, 2, 4 s ...): each slice
    sends the request again and drops the answer to the one before, so a broker that
    answers slower than a fixed slice would never be heard. ``stopped`` is looked at
    between slices: a stop is seen within 0.1 s while the broker is unreachable, and
    within the slice in flight while a slow broker is being asked.

    Parameters
    ----------
    handle : confluent_kafka.Producer, Consumer or AdminClient
        The client to ask.
    topic : str, optional
        One topic, or None for all.
    timeout : float
        Seconds in all.
    serve : callable, optional
        Runs the client's callbacks (``poll(0)``); None when that is not allowed.
    failed : callable
        Returns the error a callback recorded, if any.
    server : str
        ``host:port``, for the message.
    stopped : threading.Event, optional
        Once set, give up (returns None).

    Returns
    -------
    confluent_kafka.admin.ClusterMetadata or None
        The answer; None if ``stopped`` was set first.

    Raises
    ------
    adc.errors.KafkaException
        The recorded error, or :class:`BrokerUnreachableError` at the time-out.
    """
    deadline = time.monotonic() + timeout
    detail = "no answer"
    piece = _NO_BROKER_SLICE  # until a request could be sent
    while stopped is None or not stopped.is_set():
        wait = max(0.05, min(piece, deadline - time.monotonic()))
        try:
            if topic is None:
                return handle.list_topics(timeout=wait)
            return handle.list_topics(topic=topic, timeout=wait)
        except KafkaException_ as exc:
            error = exc.args[0]
            detail = error.str()
            if getattr(error, "code", lambda: None)() != KafkaError._TRANSPORT:
                # sent, not answered in time: the next request gets longer
                piece = _REQUEST_SLICE if piece < _REQUEST_SLICE else piece * 2
        if serve is not None:
            serve()
        error = failed()
        if error is not None:
            raise error
        if time.monotonic() >= deadline:
            raise unreachable(server, detail)
    return None


def unreachable(server: str, detail: str) -> BrokerUnreachableError:
    """Return the error for a broker that did not answer.

    Parameters
    ----------
    server : str
        ``host:port`` of the broker.
    detail : str
        What librdkafka said.

    Returns
    -------
    BrokerUnreachableError
        The exception to raise. If the broker lately answered with a protocol mismatch
        (see :func:`protocol_mismatch`), that cause replaces ``detail``.
    """
    detail = _recent_mismatch(server) or detail
    return BrokerUnreachableError(f"cannot reach the Kafka broker at {server}: {detail}")
