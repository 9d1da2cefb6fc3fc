"""librdkafka's words for a credential whose protocol does not match the listener's.

The texts are those librdkafka 2.x gives (the first three seen on the project's broker; the
last is its hint for a plaintext client on a TLS listener). Boundary: plain strings and a
synthetic ``KafkaError``.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from igwn_alert import _errors
from igwn_alert.exceptions import AuthenticationError, BrokerUnreachableError

TLS_ON_SASL_PLAINTEXT = (
    "sasl_ssl://127.0.0.1:57777/bootstrap: SSL handshake failed: Disconnected: SSL connection"
    " closed by peer: connecting to a PLAINTEXT broker listener? (after 107ms in state"
    " SSL_HANDSHAKE)"
)
TLS_ON_PLAINTEXT = (
    "sasl_ssl://127.0.0.1:43315/bootstrap: Disconnected: SSL connection closed by peer (after"
    " 1ms in state SSL_HANDSHAKE)"
)
SASL_ON_PLAINTEXT = (
    "sasl_plaintext://127.0.0.1:43315/bootstrap: SASL SCRAM-SHA-512 mechanism handshake failed:"
    " Broker: Request not valid in current SASL state: broker's supported mechanisms:  (after"
    " 0ms in state AUTH_HANDSHAKE)"
)
PLAINTEXT_ON_TLS = (
    "sasl_plaintext://h:9092/bootstrap: Disconnected while requesting ApiVersion: might be"
    " caused by incorrect security.protocol configuration (connecting to a SSL listener?) or"
    " broker version is < 0.10 (see api.version.request) (after 3ms in state APIVERSION_QUERY)"
)
WRONG_PASSWORD = (
    "sasl_plaintext://127.0.0.1:57777/bootstrap: SASL authentication error: Authentication"
    " failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
)
REFUSED = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"


@pytest.mark.parametrize("text", [TLS_ON_SASL_PLAINTEXT, TLS_ON_PLAINTEXT])
def test_tls_on_a_listener_without_tls(text):
    said = _errors.protocol_mismatch(text, "h:1")
    assert said is not None
    assert "at h:1 does not speak TLS" in said and 'protocol = "SASL_PLAINTEXT"' in said


def test_sasl_on_a_listener_without_sasl():
    said = _errors.protocol_mismatch(SASL_ON_PLAINTEXT, "h:1")
    assert said is not None and "does not use SASL" in said


def test_plaintext_on_a_tls_listener():
    said = _errors.protocol_mismatch(PLAINTEXT_ON_TLS, "h:1")
    assert said is not None and "may expect TLS" in said


@pytest.mark.parametrize("text", [WRONG_PASSWORD, REFUSED, "Broker transport failure"])
def test_other_errors_are_no_mismatch(text):
    assert _errors.protocol_mismatch(text, "h:1") is None


def test_mismatch_is_retried_but_named_when_the_broker_is_unreachable():
    server = "mismatch.example:9093"
    error = KafkaError(KafkaError._TRANSPORT, TLS_ON_SASL_PLAINTEXT)
    assert _errors.exception_for(error, server=server) is None  # not fatal on its own
    exc = _errors.unreachable(server, "Failed to get metadata: Local: Broker transport failure")
    assert isinstance(exc, BrokerUnreachableError)
    assert "does not speak TLS" in str(exc) and "transport failure" not in str(exc)
    # another broker is not concerned
    other = _errors.unreachable("other.example:9093", "no answer")
    assert str(other) == "cannot reach the Kafka broker at other.example:9093: no answer"


def test_sasl_mismatch_is_an_authentication_error():
    error = KafkaError(KafkaError._AUTHENTICATION, SASL_ON_PLAINTEXT)
    exc = _errors.exception_for(error, server="h:1")
    assert isinstance(exc, AuthenticationError)
    assert "does not use SASL" in str(exc)
    assert "check the user name and password" not in str(exc)


def test_wrong_password_stays_an_authentication_error():
    error = KafkaError(KafkaError._AUTHENTICATION, WRONG_PASSWORD)
    exc = _errors.exception_for(error, server="h:1")
    assert isinstance(exc, AuthenticationError)
    assert "check the user name and password" in str(exc)
