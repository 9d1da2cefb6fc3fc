"""Classify librdkafka errors: which are transient, and which deserve a clear exception."""

from __future__ import annotations

from typing import Any, Optional

from confluent_kafka import KafkaError

from .exceptions import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnreachableError,
    KafkaException,
    TopicNotFoundError,
)

__all__ = ["TRANSIENT", "UNKNOWN_TOPIC", "exception_for"]

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
        The exception to raise.
    """
    return BrokerUnreachableError(f"cannot reach the Kafka broker at {server}: {detail}")
