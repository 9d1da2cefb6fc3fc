"""The server argument: ports inside the URL, bare hosts, IPv6 literals, secrets in the URL.

Boundary: ``confluent_kafka.Consumer`` (the ``fake_consumer`` fixture) where the test needs
the bootstrap address the client really connects to.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import warnings

import pytest

import igwn_alert
from igwn_alert import _topics, client

pytestmark = pytest.mark.usefixtures("isolated_home")

SECRET = "url-pw-93xq-secret"


# -- the port in the URL ---------------------------------------------------------------------


def test_port_in_url_is_honoured_when_port_not_given():
    c = client(noauth=True, server="kafka://127.0.0.1:46859/", group="g")
    assert c.port == 46859
    assert type(c.port) is int
    assert c.base_url_prefix == "kafka://127.0.0.1:46859/g"
    assert c._construct_base_url() == "kafka://127.0.0.1:46859/g"
    assert c._construct_topic_url("t") == "kafka://127.0.0.1:46859/g.t"


def test_port_in_url_agreeing_with_explicit_port_is_fine():
    c = client(noauth=True, server="kafka://h.example:1234/", port=1234, group="g")
    assert c.base_url_prefix == "kafka://h.example:1234/g"


@pytest.mark.parametrize("port", [9093, 9092], ids=["other", "explicit-default-value"])
def test_explicit_port_disagreeing_with_url_is_a_value_error(port):
    with pytest.raises(ValueError) as info:
        client(noauth=True, server="kafka://h.example:1234/", port=port)
    assert "1234" in str(info.value) and str(port) in str(info.value)


def test_signature_still_shows_9092_as_the_default():
    default = inspect.signature(client).parameters["port"].default
    assert default == 9092
    assert repr(default) == "9092"
    assert isinstance(default, int)
    assert igwn_alert.DEFAULT_PORT == 9092
    assert "port: 'int' = 9092" in str(inspect.signature(client))


def test_default_port_survives_copying_and_pickling():
    import copy

    for same in (
        copy.copy(igwn_alert.DEFAULT_PORT),
        pickle.loads(pickle.dumps(igwn_alert.DEFAULT_PORT)),
    ):
        c = client(noauth=True, server="kafka://h.example:1234/", port=same)
        assert c.port == 1234


def test_port_without_url_port_is_used():
    c = client(noauth=True, server="kafka://h.example/", port=9093, group="g")
    assert c.port == 9093
    assert c.base_url_prefix == "kafka://h.example:9093/g"


@pytest.mark.parametrize("server", ["kafka://h:0/", "kafka://h:65536/", "kafka://h:abc/"])
def test_bad_port_in_url_is_a_value_error(server):
    with pytest.raises(ValueError, match="port"):
        client(noauth=True, server=server)


@pytest.mark.parametrize("port", [0, -1, 70000])
def test_bad_port_argument_is_a_value_error(port):
    with pytest.raises(ValueError, match="port"):
        client(noauth=True, server="kafka://h.example/", port=port)


# -- bare hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "base"),
    [
        ("localhost", "kafka://localhost:9092/g"),
        ("localhost:1234", "kafka://localhost:1234/g"),
        ("kafka.example.org/", "kafka://kafka.example.org:9092/g"),
        ("[::1]:1234", "kafka://[::1]:1234/g"),
        ("::1", "kafka://[::1]:9092/g"),
    ],
)
def test_bare_host_is_taken_as_kafka_url(server, base):
    c = client(noauth=True, server=server, group="g")
    assert c.base_url_prefix == base
    assert "None" not in c.base_url_prefix


@pytest.mark.parametrize(
    ("server", "what"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://h.example/", "kafka://"),
        ("kafka:///", "host"),
        ("kafka://h1:1,h2:2/", "one broker"),
        ("kafka://bad host/", "host"),
    ],
)
def test_unusable_server_is_one_clear_value_error(server, what):
    with pytest.raises(ValueError, match=what):
        client(noauth=True, server=server)


# -- IPv6 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["kafka://[::1]/", "kafka://[::1]:9092/", "kafka://[::1]"])
def test_ipv6_literal(server, fake_consumer):
    c = client(noauth=True, server=server, group="g")
    assert c.base_url_prefix == "kafka://[::1]:9092/g"
    assert _topics.server_address(server, igwn_alert.DEFAULT_PORT) == ("[::1]", 9092)
    reader = c.open(c._construct_topic_url("t"), "r")
    try:
        assert fake_consumer.instances[-1].config["bootstrap.servers"] == "[::1]:9092"
    finally:
        reader.close()


def test_ipv6_url_without_port_in_open_gets_the_client_port(fake_consumer):
    c = client(noauth=True, server="kafka://[::1]/", port=1234, group="g")
    reader = c.open("kafka://[::1]/g.t", "r")
    try:
        assert fake_consumer.instances[-1].config["bootstrap.servers"] == "[::1]:1234"
    finally:
        reader.close()


def test_host_without_port_in_open_gets_the_client_port(fake_consumer):
    c = client(noauth=True, server="kafka://h.example/", port=1234, group="g")
    reader = c.open("kafka://other.example/g.t", "r")
    try:
        assert fake_consumer.instances[-1].config["bootstrap.servers"] == "other.example:1234"
    finally:
        reader.close()


# -- secrets in the URL ---------------------------------------------------------------------


def _log_text(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


def test_password_in_server_url_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        c = client(noauth=True, server=f"kafka://alice:{SECRET}@h.example:1234/", group="g")
    assert c.base_url_prefix == "kafka://h.example:1234/g"
    for text in (repr(c), str(c), c.server, c.base_url_prefix, _log_text(caplog)):
        assert SECRET not in text
    assert all(SECRET not in str(w.message) for w in record)
    # the user is told the password is not used, without being shown it
    assert any("password" in str(w.message) for w in record)


@pytest.mark.parametrize(
    "server",
    [
        f"kafka://alice:{SECRET}@h.example:1234/",  # port conflict below
        f"kafka://alice:{SECRET}@/",  # no host
        f"kafka://alice:{SECRET}@h.example:abc/",  # bad port
        f"http://alice:{SECRET}@h.example/",  # wrong scheme
        f"alice:{SECRET}@h.example:99999",  # bare, bad port
    ],
)
def test_password_in_server_url_not_in_error_messages(server, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client(noauth=True, server=server, port=5555)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert SECRET not in _log_text(caplog)
    assert "***" in str(info.value)


def test_redact_url():
    assert _topics.redact_url(f"kafka://alice:{SECRET}@h:1/x") == "kafka://***@h:1/x"
    assert _topics.redact_url(f"alice:{SECRET}@h:1") == "***@h:1"
    assert _topics.redact_url("kafka://h:1/x") == "kafka://h:1/x"


# -- the helpers ----------------------------------------------------------------------------


def test_parse_server_parts():
    s = _topics.parse_server("kafka://Alice@H.Example:1234/sub/", igwn_alert.DEFAULT_PORT)
    assert (s.host, s.port, s.path, s.username) == ("h.example", 1234, "/sub/", "Alice")
    assert (
        _topics.base_url("kafka://h.example:1234/sub/", 1234, "g") == "kafka://h.example:1234/sub/g"
    )
