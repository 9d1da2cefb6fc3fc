"""Credentials over SCRAM-SHA-512 on the broker's SASL listener, where ACLs are enforced.

Every way the client finds a credential (``auth.toml`` given, hop's default ``auth.toml``,
netrc, user name and password) is checked by a real round trip; ACLs and wrong passwords
must give clear errors quickly. The client reaches a loopback broker with SASL_PLAINTEXT.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest
from _helpers import Listening, plain_client
from hop.auth import Auth

import igwn_alert
from igwn_alert.exceptions import (
    AuthenticationError,
    AuthorizationError,
    DeliveryError,
    KafkaException,
)

READY_TIMEOUT = 15.0
RECEIVE_TIMEOUT = 15.0
REFUSAL_TIMEOUT = 15.0


# ---------------------------------------------------------------------------- helpers


def sasl_client(broker: Any, group: str, **kwargs: Any) -> igwn_alert.client:
    """A client of the broker's SASL listener (server given by host, port separately)."""
    host, port = broker.sasl.rsplit(":", 1)
    return igwn_alert.client(server=f"kafka://{host}/", port=int(port), group=group, **kwargs)


def listen_raises(
    client: igwn_alert.client, topic: str, timeout: float = REFUSAL_TIMEOUT
) -> Optional[BaseException]:
    """Run listen() until it raises; return the exception, or None if it was still
    running after ``timeout`` seconds (it is then stopped)."""
    box: list[BaseException] = []

    def run() -> None:
        try:
            client.listen(lambda topic, payload: None, topic)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        client.stop()
        thread.join(5)
        assert not thread.is_alive(), "listen() did not return after stop()"
        return None
    assert box, "listen() returned without an error"
    return box[0]


def assert_round_trip(publisher: igwn_alert.client, listener: igwn_alert.client) -> None:
    """Publish over ``publisher`` and receive over ``listener`` (both via SCRAM)."""
    token = uuid.uuid4().hex
    with Listening(listener, "superevent") as listening:
        publisher.connect("superevent")
        publisher.publish_to_topic("superevent", {"token": token})
        publisher.flush_by_topic("superevent")
        got = listening.wait_for(1)
    publisher.disconnect()
    assert got == [("superevent", {"token": token})]


def assert_secret_hidden(client: igwn_alert.client, password: str) -> None:
    assert password not in repr(client)
    assert password not in str(client.__dict__.get("base_url_prefix"))


@pytest.fixture
def no_default_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG_CONFIG_HOME point at empty directories, and NETRC is unset."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("NETRC", raising=False)
    return home


def _private_copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o600)
    return dest


# ---------------------------------------------------------------------------- credential sources


def test_authfile(kafka_broker: Any, make_topic: Any, make_user: Any) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    client = sasl_client(kafka_broker, topic.group, authfile=str(user.auth_toml))
    assert isinstance(client.auth_obj, list)
    assert [a.username for a in client.auth_obj] == [user.username]
    assert_secret_hidden(client, user.password)
    assert_round_trip(client, sasl_client(kafka_broker, topic.group, authfile=str(user.auth_toml)))


@pytest.mark.parametrize("where", ["XDG_CONFIG_HOME", "HOME"])
def test_hops_default_auth_toml(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    no_default_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    if where == "XDG_CONFIG_HOME":
        xdg = tmp_path / "xdg"
        monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
        _private_copy(user.auth_toml, xdg / "hop" / "auth.toml")
    else:
        monkeypatch.delenv("XDG_CONFIG_HOME")
        _private_copy(user.auth_toml, no_default_credentials / ".config" / "hop" / "auth.toml")

    client = sasl_client(kafka_broker, topic.group)
    assert [a.username for a in client.auth_obj] == [user.username]
    assert_round_trip(client, sasl_client(kafka_broker, topic.group))


@pytest.mark.parametrize("machine", ["host", "host:port", "server string"])
def test_netrc(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    no_default_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    machine: str,
) -> None:
    """No auth.toml anywhere: the client falls back to $NETRC, matched by host name (or
    ``host:port``, or the exact server string as the reference requires)."""
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    host, port = kafka_broker.sasl.rsplit(":", 1)
    name = {"host": host, "host:port": f"{host}:{port}", "server string": f"kafka://{host}/"}[
        machine
    ]
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine unrelated.example login someone password nothing\n"
        f"machine {name} login {user.username} password {user.password}\n"
    )
    os.chmod(netrc, 0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    client = sasl_client(kafka_broker, topic.group)
    assert isinstance(client.auth_obj, Auth)
    assert client.auth_obj.username == user.username
    assert_secret_hidden(client, user.password)
    assert_round_trip(client, sasl_client(kafka_broker, topic.group))


def test_netrc_file_of_the_fixture(
    kafka_broker: Any,
    make_topic: Any,
    make_user: Any,
    no_default_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    monkeypatch.setenv("NETRC", str(user.netrc))
    assert_round_trip(
        sasl_client(kafka_broker, topic.group), sasl_client(kafka_broker, topic.group)
    )


def test_username_and_password(
    kafka_broker: Any, make_topic: Any, make_user: Any, no_default_credentials: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    client = sasl_client(kafka_broker, topic.group, username=user.username, password=user.password)
    assert isinstance(client.auth_obj, Auth)
    assert_secret_hidden(client, user.password)
    listener = sasl_client(
        kafka_broker, topic.group, username=user.username, password=user.password
    )
    assert_round_trip(client, listener)
    # get_topics over SCRAM lists what this credential may see
    assert client.get_topics() == ["superevent"]


def test_explicit_auth_object(
    kafka_broker: Any, make_topic: Any, make_user: Any, hop_auth_for: Any
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    auth = hop_auth_for(user)
    client = sasl_client(kafka_broker, topic.group, auth=auth)
    assert client.auth_obj is auth
    assert_round_trip(client, sasl_client(kafka_broker, topic.group, auth=[auth]))


# ---------------------------------------------------------------------------- ACLs


def test_read_only_user_can_listen(kafka_broker: Any, make_topic: Any, make_user: Any) -> None:
    topic = make_topic("superevent")
    hidden = make_topic("cbc_gstlal")
    reader = make_user(read=[topic])
    token = uuid.uuid4().hex
    for consumer_group in (None, f"{reader.username}-listeners"):
        listener = sasl_client(
            kafka_broker,
            topic.group,
            username=reader.username,
            password=reader.password,
            consumer_group=consumer_group,
        )
        with Listening(listener, "superevent") as listening:
            plain_client(kafka_broker.plaintext, topic.group).publish(
                "superevent", {"token": token}
            )
            assert listening.wait_for(1) == [("superevent", {"token": token})]
    # the reader sees only its own topic
    assert listener.get_topics() == ["superevent"]
    assert hidden.short not in listener.get_topics()


def test_user_without_read_acl_gets_authorization_error_on_listen(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    allowed = make_topic("superevent")
    forbidden = make_topic("cbc_gstlal")
    user = make_user(read=[allowed])
    client = sasl_client(
        kafka_broker, allowed.group, username=user.username, password=user.password
    )
    t0 = time.monotonic()
    exc = listen_raises(client, "cbc_gstlal")
    assert isinstance(exc, AuthorizationError), repr(exc)
    assert time.monotonic() - t0 < REFUSAL_TIMEOUT
    assert forbidden.full in str(exc)
    assert user.password not in str(exc)


def test_user_without_group_acl_gets_authorization_error_on_listen(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], groups=[f"only-this-{uuid.uuid4().hex[:6]}"])
    client = sasl_client(
        kafka_broker,
        topic.group,
        username=user.username,
        password=user.password,
        consumer_group=f"another-{uuid.uuid4().hex[:6]}",
    )
    t0 = time.monotonic()
    exc = listen_raises(client, "superevent")
    assert exc is not None, "listen() kept retrying a consumer group it may not use"
    assert time.monotonic() - t0 < REFUSAL_TIMEOUT
    assert isinstance(exc, AuthorizationError), repr(exc)
    assert "consumer group" in str(exc)


def test_user_without_any_acl_on_the_topic_cannot_connect(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    allowed = make_topic("superevent")
    forbidden = make_topic("cbc_gstlal")
    user = make_user(read=[allowed], write=[allowed])
    client = sasl_client(
        kafka_broker, allowed.group, username=user.username, password=user.password
    )
    t0 = time.monotonic()
    with pytest.raises(AuthorizationError, match=forbidden.full):
        client.connect("cbc_gstlal")
    with pytest.raises(AuthorizationError, match=forbidden.full):
        client.publish("cbc_gstlal", {"x": 1})
    assert time.monotonic() - t0 < REFUSAL_TIMEOUT
    assert client.sessions == {}


def test_read_only_user_cannot_publish(kafka_broker: Any, make_topic: Any, make_user: Any) -> None:
    topic = make_topic("superevent")
    reader = make_user(read=[topic])
    t0 = time.monotonic()
    client = sasl_client(
        kafka_broker, topic.group, username=reader.username, password=reader.password
    )
    # librdkafka's idempotent producer fails fatally (CLUSTER_AUTHORIZATION_FAILED); when
    # confluent-kafka reports that from flush() without its cause, the client can only say
    # that delivery failed (DeliveryError) — still a clear, prompt KafkaException.
    with pytest.raises((AuthorizationError, DeliveryError)) as info:
        client.connect("superevent")
        client.publish_to_topic("superevent", {"x": 1})
        client.flush_by_topic("superevent")
    assert time.monotonic() - t0 < REFUSAL_TIMEOUT
    if isinstance(info.value, AuthorizationError):
        assert topic.full in str(info.value) or "authoriz" in str(info.value).lower()
    assert reader.password not in str(info.value)
    client2 = sasl_client(
        kafka_broker, topic.group, username=reader.username, password=reader.password
    )
    with pytest.raises((AuthorizationError, DeliveryError)):
        client2.publish("superevent", {"x": 1})


# ---------------------------------------------------------------------------- wrong password


def test_wrong_password(kafka_broker: Any, make_topic: Any, make_user: Any) -> None:
    """An AuthenticationError within 15 s (never a hang, never "cannot reach the broker"),
    without the secret in it, from connect(), publish() and listen()."""
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    wrong = "not-" + user.password
    client = sasl_client(kafka_broker, topic.group, username=user.username, password=wrong)
    raised: dict[str, BaseException] = {}

    for name, call in (
        ("connect", lambda: client.connect("superevent")),
        ("publish", lambda: client.publish("superevent", {"x": 1})),
    ):
        t0 = time.monotonic()
        with pytest.raises(KafkaException) as info:
            call()
        assert time.monotonic() - t0 < REFUSAL_TIMEOUT, name
        raised[name] = info.value

    t0 = time.monotonic()
    exc = listen_raises(client, "superevent")
    assert exc is not None, "listen() with a wrong password did not fail within 15 s"
    assert time.monotonic() - t0 < REFUSAL_TIMEOUT
    raised["listen"] = exc

    for exc in raised.values():
        assert wrong not in str(exc) and user.password not in str(exc)
    kinds = {name: type(exc).__name__ for name, exc in raised.items()}
    assert all(isinstance(exc, AuthenticationError) for exc in raised.values()), kinds
    assert client.sessions == {}
