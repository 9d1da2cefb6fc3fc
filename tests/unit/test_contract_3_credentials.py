"""Contract section 3: credentials, first match wins; secrets never leak.

Boundary: real files in an isolated HOME, or the ``hop.auth`` module attribute.
"""

from __future__ import annotations

import logging
import warnings
from unittest import mock

import hop
import pytest
from hop.auth import Auth

from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")

PASSWORD = "pw-Zq81-topsecret"
NETRC_PASSWORD = "netrc-pw-77aa-secret"
TOML_PASSWORD = "toml-pw-42bb-secret"


def failing_hop_auth():
    """A replacement for the ``hop.auth`` module whose default load_auth() fails."""
    fake = mock.MagicMock(name="hop.auth")
    fake.load_auth = mock.MagicMock(side_effect=Exception("no auth.toml"))
    return fake


# -- 1. auth as is -------------------------------------------------------------------------


def test_3_1_auth_object_used_as_is():
    cred = Auth("alice", PASSWORD)
    c = client(auth=cred)
    assert c.auth_obj is cred
    assert c.auth == [cred]


def test_3_1_auth_list_used_as_is():
    creds = [Auth("alice", PASSWORD), Auth("bob", PASSWORD)]
    c = client(auth=creds)
    assert c.auth_obj is creds
    assert c.auth is creds


def test_3_1_auth_wins_over_everything_else(tmp_path):
    cred = Auth("alice", PASSWORD)
    c = client(
        auth=cred,
        noauth=True,
        username="bob",  # alone would be an error
        authfile=str(tmp_path / "missing.toml"),  # would be FileNotFoundError
    )
    assert c.auth_obj is cred


# -- 2. noauth -------------------------------------------------------------------------------


def test_3_2_noauth_gives_auth_obj_false_and_auth_none():
    c = client(noauth=True)
    assert c.auth_obj is False
    assert c.auth is None


def test_3_2_noauth_wins_over_username_password_and_authfile(tmp_path):
    c = client(noauth=True, username="bob", authfile=str(tmp_path / "missing.toml"))
    assert c.auth_obj is False
    assert c.auth is None


def test_3_2_noauth_never_reads_hop_auth():
    fake = failing_hop_auth()
    with mock.patch("hop.auth", fake), warnings.catch_warnings():
        warnings.simplefilter("error")
        c = client(noauth=True)
    assert c.auth_obj is False
    fake.load_auth.assert_not_called()


# -- 3. username and password -------------------------------------------------------------


def test_3_3_username_and_password_make_an_auth():
    c = client(username="alice", password=PASSWORD)
    assert isinstance(c.auth_obj, Auth)
    assert c.auth_obj.username == "alice"
    assert c.auth_obj.password == PASSWORD


def test_3_3_username_password_win_over_authfile(tmp_path):
    c = client(username="alice", password=PASSWORD, authfile=str(tmp_path / "missing.toml"))
    assert c.auth_obj.username == "alice"


# -- 4. only one of them ---------------------------------------------------------------------

ONLY_ONE = "You must provide both a username and a password for basic authentication."


@pytest.mark.parametrize(
    "kwargs", [{"username": "alice"}, {"password": PASSWORD}], ids=["username", "password"]
)
def test_3_4_only_one_of_username_password_runtime_error(kwargs):
    with pytest.raises(RuntimeError) as info:
        client(**kwargs)
    assert str(info.value) == ONLY_ONE
    assert PASSWORD not in str(info.value)


# -- 5. authfile -----------------------------------------------------------------------------


def test_3_5_authfile_loaded_with_hop(tmp_path, fakes):
    path = fakes.write_private(
        tmp_path / "auth.toml", f'[[auth]]\nusername = "alice"\npassword = "{TOML_PASSWORD}"\n'
    )
    c = client(authfile=str(path))
    assert isinstance(c.auth_obj, list)
    assert [(a.username, a.password) for a in c.auth_obj] == [("alice", TOML_PASSWORD)]


def test_3_5_authfile_missing_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        client(authfile=str(tmp_path / "missing.toml"))


def test_3_5_authfile_unsafe_permissions_runtime_error(tmp_path, fakes):
    path = fakes.write_private(
        tmp_path / "auth.toml",
        f'[[auth]]\nusername = "alice"\npassword = "{TOML_PASSWORD}"\n',
        mode=0o644,
    )
    with pytest.raises(RuntimeError) as info:
        client(authfile=str(path))
    assert TOML_PASSWORD not in str(info.value)


def test_3_5_authfile_wins_over_default_hop_auth(tmp_path, isolated_home, fakes):
    fakes.write_hop_auth(isolated_home, [{"username": "default-user", "password": "x"}])
    path = fakes.write_private(
        tmp_path / "other.toml", '[[auth]]\nusername = "file-user"\npassword = "y"\n'
    )
    c = client(authfile=str(path))
    assert [a.username for a in c.auth_obj] == ["file-user"]


# -- 6. hop's default credential file --------------------------------------------------------


def test_3_6_default_hop_auth_file_is_used(isolated_home, fakes):
    fakes.write_hop_auth(isolated_home, [{"username": "alice", "password": TOML_PASSWORD}])
    fakes.write_private(
        isolated_home / ".netrc", f"machine kafka.scimma.org login bob password {NETRC_PASSWORD}\n"
    )
    c = client()
    assert [(a.username, a.password) for a in c.auth_obj] == [("alice", TOML_PASSWORD)]


def test_3_6_hop_auth_load_auth_looked_up_at_call_time():
    cred = Auth("patched-user", PASSWORD)
    fake = mock.MagicMock(name="hop.auth")
    fake.load_auth = mock.MagicMock(return_value=[cred])
    with mock.patch("hop.auth", fake):
        c = client(server="kafka://test.server/", port=1234, group="test")
    fake.load_auth.assert_called_once_with()
    assert c.auth_obj == [cred]


def test_3_6_authfile_goes_through_hop_auth_at_call_time(tmp_path):
    cred = Auth("patched-user", PASSWORD)
    fake = mock.MagicMock(name="hop.auth")
    fake.load_auth = mock.MagicMock(return_value=[cred])
    with mock.patch("hop.auth", fake):
        c = client(authfile=str(tmp_path / "any.toml"))
    fake.load_auth.assert_called_once_with(str(tmp_path / "any.toml"))
    assert c.auth_obj == [cred]


# -- 7. netrc --------------------------------------------------------------------------------


def test_3_7_netrc_by_exact_server_string(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc",
        f"machine kafka://kafka.test/ login user-asdf password {NETRC_PASSWORD}\n",
    )
    with mock.patch("hop.auth", failing_hop_auth()):
        c = client(server="kafka://kafka.test/", port=1234, group="test")
    assert c.auth_obj.username == "user-asdf"
    assert c.auth_obj.password == NETRC_PASSWORD


def test_3_7_netrc_by_host_name(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc",
        f"machine kafka.scimma.org login user-host password {NETRC_PASSWORD}\n",
    )
    with mock.patch("hop.auth", failing_hop_auth()):
        c = client()
    assert c.auth_obj.username == "user-host"
    assert c.auth_obj.password == NETRC_PASSWORD


def test_3_7_netrc_by_host_name_with_custom_server(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc",
        "machine other.example login nobody password nope\n"
        f"machine kafka.test login user-host password {NETRC_PASSWORD}\n",
    )
    with mock.patch("hop.auth", failing_hop_auth()):
        c = client(server="kafka://kafka.test", port=9093, group="test")
    assert c.auth_obj.username == "user-host"


def test_3_7_default_hop_auth_missing_for_real_falls_back_to_netrc(isolated_home, fakes):
    """No patching at all: the isolated HOME has no auth.toml, only a netrc."""
    fakes.write_private(
        isolated_home / ".netrc",
        f"machine kafka.scimma.org login user-host password {NETRC_PASSWORD}\n",
    )
    c = client()
    assert c.auth_obj.username == "user-host"


def test_3_7_netrc_env_var_honoured(isolated_home, tmp_path, fakes, monkeypatch):
    fakes.write_private(
        isolated_home / ".netrc",
        "machine kafka.scimma.org login home-user password home-pw\n",
    )
    other = fakes.write_private(
        tmp_path / "elsewhere" / "netrc",
        f"machine kafka.scimma.org login env-user password {NETRC_PASSWORD}\n",
    )
    monkeypatch.setenv("NETRC", str(other))
    with mock.patch("hop.auth", failing_hop_auth()):
        c = client()
    assert c.auth_obj.username == "env-user"
    assert c.auth_obj.password == NETRC_PASSWORD


def test_3_7_netrc_entry_for_another_host_is_not_used(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc", "machine other.example login nobody password nope\n"
    )
    with mock.patch("hop.auth", failing_hop_auth()), pytest.warns(UserWarning):
        c = client()
    assert c.auth_obj is False


# -- 8. nothing found ------------------------------------------------------------------------


def test_3_8_nothing_found_warns_and_is_unauthenticated():
    with mock.patch("hop.auth", failing_hop_auth()), pytest.warns(Warning) as record:
        c = client(server="kafka://test.server", port=1234, group="test")
    assert c.auth_obj is False
    assert c.auth is None
    assert any("unauthenticated" in str(w.message).lower() for w in record)


def test_3_8_nothing_found_for_real_warns(isolated_home):
    """No patching: an empty HOME has neither auth.toml nor netrc."""
    with pytest.warns(UserWarning, match="(?i)unauthenticated"):
        c = client()
    assert c.auth_obj is False


def test_3_8_malformed_netrc_is_not_fatal_and_not_leaked(isolated_home, fakes):
    fakes.write_private(
        isolated_home / ".netrc",
        f"machine kafka.scimma.org login alice password {NETRC_PASSWORD} bogus-token\n",
    )
    with mock.patch("hop.auth", failing_hop_auth()), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = client()
    assert c.auth_obj is False
    assert w, "an unauthenticated session must warn"
    assert all(NETRC_PASSWORD not in str(x.message) for x in w)


# -- secrets ---------------------------------------------------------------------------------


def _all_log_text(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


def test_3_secrets_not_in_repr_or_str():
    c = client(username="alice", password=PASSWORD)
    assert PASSWORD not in repr(c)
    assert PASSWORD not in str(c)
    assert PASSWORD not in format(c)


def test_3_secrets_not_in_logs_or_warnings_username_password(caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = client(username="alice", password=PASSWORD, server="kafka://test.server/")
        repr(c)
    assert PASSWORD not in _all_log_text(caplog)
    assert all(PASSWORD not in str(x.message) for x in w)


def test_3_secrets_not_in_logs_or_warnings_netrc(isolated_home, fakes, caplog):
    fakes.write_private(
        isolated_home / ".netrc",
        f"machine kafka.scimma.org login user-host password {NETRC_PASSWORD}\n",
    )
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = client()
    assert c.auth_obj.password == NETRC_PASSWORD  # it really was read
    assert NETRC_PASSWORD not in repr(c)
    assert NETRC_PASSWORD not in _all_log_text(caplog)
    assert all(NETRC_PASSWORD not in str(x.message) for x in w)


def test_3_secrets_not_in_logs_or_warnings_default_hop_auth(isolated_home, fakes, caplog):
    fakes.write_hop_auth(isolated_home, [{"username": "alice", "password": TOML_PASSWORD}])
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = client()
    assert c.auth_obj[0].password == TOML_PASSWORD
    assert TOML_PASSWORD not in repr(c)
    assert TOML_PASSWORD not in _all_log_text(caplog)
    assert all(TOML_PASSWORD not in str(x.message) for x in w)


def test_3_secrets_not_in_publishing_logs(fake_producer, caplog):
    caplog.set_level(logging.DEBUG)
    c = client(username="alice", password=PASSWORD, server="kafka://test.server/")
    c.connect("superevent")
    c.publish_to_topic("superevent", {"a": 1})
    c.flush_by_topic("superevent")
    c.publish("superevent", "{}")
    c.disconnect()
    assert fake_producer.instances, "the fake producer was not used"
    assert PASSWORD not in _all_log_text(caplog)


def test_3_hop_module_untouched_by_tests():
    """Guard: the patches above restore ``hop.auth`` (a leak would break later tests)."""
    import sys

    assert hop.auth is sys.modules["hop.auth"]
    assert not isinstance(hop.auth, mock.Mock)
