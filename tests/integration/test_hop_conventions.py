"""Hopskotch's conventions on the real broker: prefixed group ACLs, ports in server URLs.

A private listener's group is ``<user>-<random>`` as hop names it, so a user whose only
group ACL is READ on groups PREFIXED ``<user>-`` can listen. The port of a
``kafka://host:port`` server URL is the one used, by the library and by ``igwn-alert -s``.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

from _helpers import Listening, plain_client
from test_cli import run_cli
from test_client_credentials import listen_raises, sasl_client

import igwn_alert
from igwn_alert.exceptions import AuthorizationError


def test_private_listener_with_only_a_prefixed_group_acl(
    kafka_broker: Any, make_topic: Any, make_user: Any
) -> None:
    topic = make_topic("superevent")
    username = f"pfx-{secrets.token_hex(4)}"
    user = make_user(read=[topic], groups=[f"{username}-"], group_prefixed=True, username=username)
    listener = sasl_client(
        kafka_broker, topic.group, username=user.username, password=user.password
    )
    token = uuid.uuid4().hex
    with Listening(listener, "superevent") as listening:
        plain_client(kafka_broker.plaintext, topic.group).publish("superevent", {"token": token})
        assert listening.wait_for(1) == [("superevent", {"token": token})]

    # the ACL is really enforced: a consumer group outside the prefix is refused
    outsider = sasl_client(
        kafka_broker,
        topic.group,
        username=user.username,
        password=user.password,
        consumer_group=f"other-{secrets.token_hex(3)}",
    )
    exc = listen_raises(outsider, "superevent")
    assert isinstance(exc, AuthorizationError), repr(exc)
    # ... and a given consumer group inside it is used as it is
    member = sasl_client(
        kafka_broker,
        topic.group,
        username=user.username,
        password=user.password,
        consumer_group=f"{username}-pipeline",
    )
    token = uuid.uuid4().hex
    with Listening(member, "superevent") as listening:
        plain_client(kafka_broker.plaintext, topic.group).publish("superevent", {"token": token})
        assert listening.wait_for(1) == [("superevent", {"token": token})]


def test_port_in_server_url_is_used(kafka_broker: Any, make_topic: Any) -> None:
    topic = make_topic("superevent")
    url = f"kafka://{kafka_broker.plaintext}/"
    listener = igwn_alert.client(noauth=True, server=url, group=topic.group)
    publisher = igwn_alert.client(noauth=True, server=kafka_broker.plaintext, group=topic.group)
    assert listener.port == publisher.port == int(kafka_broker.plaintext.rsplit(":", 1)[1])
    token = uuid.uuid4().hex
    with Listening(listener, "superevent") as listening:
        publisher.publish("superevent", {"token": token})
        assert listening.wait_for(1) == [("superevent", {"token": token})]
    assert listener.get_topics() == ["superevent"]


def test_cli_server_url_with_port(kafka_broker: Any, make_topic: Any, tmp_path: Path) -> None:
    topic = make_topic("superevent")
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    url = f"kafka://{kafka_broker.plaintext}"
    result = run_cli(["-s", url, "--no-auth", "-g", topic.group, "topics"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"], result.stdout
    # a bare host:port is taken as kafka://host:port
    result = run_cli(["-s", kafka_broker.plaintext, "--no-auth", "-g", topic.group, "topics"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"], result.stdout
    # a password in the URL is ignored (with a warning) and never printed or logged
    secret = f"pw-{secrets.token_hex(6)}"
    with_password = f"kafka://someone:{secret}@{kafka_broker.plaintext}/"
    args = ["-l", "debug", "-s", with_password, "--no-auth", "-g", topic.group, "topics"]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr
    assert "password in the server URL is ignored" in result.stderr
    assert secret not in result.stderr + result.stdout
    # an explicit -p that disagrees with the URL is one clear error
    result = run_cli(["-s", url, "-p", "1", "--no-auth", "-g", topic.group, "topics"], home)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "give the port in one place" in result.stderr
