"""Exceptions raised by the client, and fake Kafka exceptions for tests.

Every error the client raises because of Kafka is an :class:`adc.errors.KafkaException`,
as in the reference client, so ``except KafkaException`` keeps catching them. The
subclasses below say more precisely what went wrong.

:data:`FakeFatalKafkaException` and :data:`FakeNonFatalKafkaException` are ready-made
exception *instances* (as in the reference client) for test suites that want a listener's
callback or stream to raise a Kafka error.
"""

from __future__ import annotations

import builtins
from typing import Any

from adc.errors import KafkaException

__all__ = [
    "AlertTooLargeError",
    "AuthenticationError",
    "AuthorizationError",
    "BrokerUnreachableError",
    "DeliveryAuthorizationError",
    "DeliveryError",
    "FakeFatalKafkaException",
    "FakeNonFatalKafkaException",
    "KafkaException",
    "TopicNotFoundError",
]


class _SyntheticError:
    """A stand-in for :class:`confluent_kafka.KafkaError` with the methods adc reads."""

    def __init__(self, code: Any, reason: str, fatal: bool, retriable: bool) -> None:
        self._code = code
        self._reason = reason
        self._fatal = fatal
        self._retriable = retriable

    def code(self) -> Any:
        return self._code

    def name(self) -> str:
        return str(self._code)

    def fatal(self) -> bool:
        return self._fatal

    def retriable(self) -> bool:
        return self._retriable

    def __repr__(self) -> str:
        return f"KafkaError(code={self._code!r}, reason={self._reason!r}, fatal={self._fatal})"

    def str(self) -> builtins.str:
        return self._reason


class _ClientKafkaException(KafkaException):  # type: ignore[misc]
    """Base of the client's own Kafka errors: an adc ``KafkaException`` with a clear message.

    Parameters
    ----------
    message : str
        What went wrong, for people.
    error : object, optional
        The :class:`confluent_kafka.KafkaError` behind it, if any.
    fatal : bool, optional
        Whether the error is fatal, when ``error`` is not given.
    """

    def __init__(self, message: str, error: Any = None, *, fatal: bool = False) -> None:
        if error is None:
            error = _SyntheticError(type(self).__name__, message, fatal, not fatal)
        super().__init__(error)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])


class _CredentialError(_ClientKafkaException):
    """A credential problem: retrying cannot help, so it counts as fatal (``.fatal``)."""

    def __init__(self, message: str, error: Any = None, *, fatal: bool = True) -> None:
        super().__init__(message, error, fatal=True)
        self.fatal = True


class AuthenticationError(_CredentialError):
    """The broker refused the credential (wrong user name or password, or wrong mechanism)."""


class AuthorizationError(_CredentialError):
    """The credential is valid but lacks an ACL for a topic, a consumer group or the cluster."""


class TopicNotFoundError(_ClientKafkaException):
    """A topic does not exist on the broker."""


class BrokerUnreachableError(_ClientKafkaException):
    """No broker answered within the time allowed."""


class DeliveryError(_ClientKafkaException):
    """An alert could not be delivered to the broker; the message says which and why.

    Every way an alert can fail once it has been handed to the client raises this class or
    one of its subclasses: a time-out, a broker that refused it, a producer that failed.
    ``publish()`` raises it only for its own alert; ``flush_by_topic()`` for the alerts of
    that topic written since the previous flush (how many, and their ``uid``).
    """


class AlertTooLargeError(DeliveryError):
    """The encoded alert is larger than a single Kafka message may be.

    The limit is the client's (librdkafka's ``message.max.bytes``, 1,000,000 bytes) or the
    topic's on the broker (``max.message.bytes``); the message says which. The alert was
    not sent; alerts after it are not affected.
    """


class DeliveryAuthorizationError(AuthorizationError, DeliveryError):
    """The broker refused an alert because the credential may not write to its topic.

    Both an :class:`AuthorizationError` (a missing WRITE ACL: retrying cannot help) and a
    :class:`DeliveryError` (that alert was not delivered).
    """


#: A fatal :class:`adc.errors.KafkaException` (``.fatal`` is True), for tests.
FakeFatalKafkaException = KafkaException(
    _SyntheticError(code=100, reason="fake fatal error", fatal=True, retriable=False)
)

#: A non-fatal :class:`adc.errors.KafkaException` (``.fatal`` is False), for tests.
FakeNonFatalKafkaException = KafkaException(
    _SyntheticError(code=101, reason="fake nonfatal error", fatal=False, retriable=True)
)
