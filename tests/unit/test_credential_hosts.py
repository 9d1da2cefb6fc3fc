"""Which credential a stream uses for which host, and hop's private group ids.

A credential made from a user name and password for a loopback broker speaks SASL without
TLS; it must never go to another host (that would send SCRAM over plain TCP to a remote
broker). Every non-loopback host keeps the TLS default.

Boundary: ``confluent_kafka.Consumer`` (``fake_consumer``) to see what a reader is given.
"""

from __future__ import annotations

import re

import pytest
from hop.auth import Auth

from igwn_alert import client
from igwn_alert._credentials import private_group_id

pytestmark = pytest.mark.usefixtures("isolated_home")

PASSWORD = "host-pw-61zz-secret"


def protocol(credential) -> str:
    return dict(credential())["security.protocol"]


@pytest.fixture(params=["kafka://127.0.0.1:9092/", "kafka://localhost/", "kafka://[::1]/"])
def loopback_client(request):
    return client(username="alice", password=PASSWORD, server=request.param)


def test_loopback_credential_is_plaintext_for_the_loopback_host(loopback_client):
    assert protocol(loopback_client.auth_obj) == "SASL_PLAINTEXT"
    for host in ("127.0.0.1:9092", "localhost:1234", "[::1]:9092", "127.0.0.1"):
        cred = loopback_client._credential_for(host)
        assert cred.username == "alice"
        assert protocol(cred) == "SASL_PLAINTEXT", host


@pytest.mark.parametrize(
    "host", ["kafka.scimma.org:9092", "kafka.scimma.org", "10.0.0.7:9092", "[2001:db8::1]:9092"]
)
def test_loopback_credential_never_used_without_tls_for_another_host(loopback_client, host):
    cred = loopback_client._credential_for(host)
    assert cred.username == "alice"
    assert cred.password == PASSWORD
    assert protocol(cred) == "SASL_SSL"


def test_open_on_a_remote_host_uses_tls(loopback_client, fake_consumer):
    reader = loopback_client.open("kafka://kafka.scimma.org/gracedb.superevent", "r")
    try:
        config = fake_consumer.instances[-1].config
        assert config["bootstrap.servers"] == "kafka.scimma.org:9092"
        assert config["security.protocol"] == "SASL_SSL"
    finally:
        reader.close()


def test_remote_client_keeps_tls_everywhere():
    c = client(username="alice", password=PASSWORD, server="kafka://kafka.scimma.org/")
    for host in ("kafka.scimma.org:9092", "other.example:9092", "127.0.0.1:9092"):
        assert protocol(c._credential_for(host)) == "SASL_SSL"


def test_loopback_netrc_credential_never_plaintext_for_another_host(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc", f"machine 127.0.0.1 login nina password {PASSWORD}\n"
    )
    c = client(server="kafka://127.0.0.1:9092/")
    assert c.auth_obj.username == "nina"
    assert protocol(c._credential_for("127.0.0.1:9092")) == "SASL_PLAINTEXT"
    assert protocol(c._credential_for("kafka.scimma.org:9092")) == "SASL_SSL"


def test_explicit_credential_bound_to_loopback_is_not_used_for_another_host():
    cred = Auth("alice", PASSWORD, host="127.0.0.1:9092", ssl=False)
    c = client(auth=cred, server="kafka://127.0.0.1:9092/")
    assert c._credential_for("127.0.0.1:9092") is cred
    with pytest.raises(RuntimeError) as info:
        c._credential_for("kafka.scimma.org:9092")
    assert PASSWORD not in str(info.value)


def test_explicit_credential_without_host_is_used_as_it_is():
    cred = Auth("alice", PASSWORD)
    c = client(auth=cred, server="kafka://127.0.0.1:9092/")
    assert c._credential_for("kafka.scimma.org:9092") is cred
    assert c._credential_for("127.0.0.1:9092") is cred


def test_credential_list_selected_by_host_and_user():
    local = Auth("alice", PASSWORD, host="127.0.0.1:9092", ssl=False)
    remote = Auth("alice", PASSWORD, host="kafka.scimma.org")
    other = Auth("bob", PASSWORD, host="kafka.scimma.org")
    c = client(auth=[local, remote, other], server="kafka://127.0.0.1:9092/")
    assert c._credential_for("127.0.0.1:9092") is local
    assert c._credential_for("kafka.scimma.org:9092", "alice") is remote
    assert c._credential_for("kafka.scimma.org:9092", "bob") is other


def test_user_in_server_url_selects_the_credential():
    alice = Auth("alice", PASSWORD)
    bob = Auth("bob", PASSWORD)
    c = client(auth=[alice, bob], server="kafka://bob@kafka.example.org/")
    assert c._credential_for("kafka.example.org:9092") is bob


def test_no_credential():
    c = client(noauth=True)
    assert c._credential_for("kafka.scimma.org:9092") is None


# -- private group ids follow hop ----------------------------------------------------------


def test_private_group_id_with_a_credential():
    group = private_group_id(Auth("alice", PASSWORD))
    assert re.fullmatch(r"alice-[A-Z0-9]{10}", group), group
    assert private_group_id(Auth("alice", PASSWORD)) != group


@pytest.mark.parametrize("credential", [None, False])
def test_private_group_id_without_a_credential(credential):
    group = private_group_id(credential)
    assert re.fullmatch(r"[A-Z0-9]{10}", group), group


def test_private_reader_joins_username_prefixed_group(fake_consumer):
    c = client(username="alice", password=PASSWORD, server="kafka://127.0.0.1:9092/", group="g")
    reader = c.open(c._construct_topic_url("t"), "r")
    try:
        assert re.fullmatch(r"alice-[A-Z0-9]{10}", fake_consumer.instances[-1].config["group.id"])
    finally:
        reader.close()


def test_given_consumer_group_is_used_as_it_is(fake_consumer):
    c = client(username="alice", password=PASSWORD, server="kafka://127.0.0.1:9092/", group="g")
    reader = c.open(c._construct_topic_url("t"), "r", group_id="my-pipeline")
    try:
        assert fake_consumer.instances[-1].config["group.id"] == "my-pipeline"
    finally:
        reader.close()
