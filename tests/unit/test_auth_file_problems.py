"""A credential file that exists but cannot be used is never skipped silently.

hop's default ``auth.toml`` with unsafe permissions, or one that does not parse, gives a
warning naming the file and the cause (the mode and how to fix it; the line of a parse
error), never the secret; ``-u NAME``'s lookup says why it found nothing.

Boundary: real files in an isolated HOME.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from igwn_alert import client
from igwn_alert._credentials import credential_for_user

pytestmark = pytest.mark.usefixtures("isolated_home")

SECRET = "toml-pw-5599-secret"
GOOD = f'[[auth]]\nusername = "alice"\npassword = "{SECRET}"\n'
UNBALANCED = f'[[auth]]\nusername = "alice"\npassword = "{SECRET}\n'  # line 3
UNQUOTED = f"[[auth]]\nusername = 'alice'\npassword = {SECRET}\n"  # line 3
NO_PASSWORD = '[[auth]]\nusername = "alice"\n'
NO_AUTH = 'title = "nothing here"\n'


def default_file(home: Path) -> Path:
    return home / ".config" / "hop" / "auth.toml"


def messages(record) -> list[str]:
    return [str(w.message) for w in record]


def make(*args, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        c = client(*args, **kwargs)
    return c, messages(record)


def _log_text(caplog) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_default_auth_toml_readable_by_others_warns_with_mode_and_fix(
    isolated_home, fakes, caplog, mode
):
    path = fakes.write_private(default_file(isolated_home), GOOD, mode=mode)
    caplog.set_level(logging.DEBUG)
    c, said = make()
    assert c.auth_obj is False  # hop refuses it, and so do we
    problem = [m for m in said if str(path) in m]
    assert len(problem) == 1, said
    assert f"{mode:04o}" in problem[0]
    assert f"chmod 600 {path}" in problem[0]
    assert all(SECRET not in m for m in said)
    assert SECRET not in _log_text(caplog)


def test_default_auth_toml_bad_permissions_still_falls_back_to_netrc(isolated_home, fakes):
    path = fakes.write_private(default_file(isolated_home), GOOD, mode=0o644)
    fakes.write_private(
        isolated_home / ".netrc", "machine kafka.scimma.org login bob password netrc-pw\n"
    )
    c, said = make()
    assert c.auth_obj.username == "bob"
    assert any(str(path) in m and "0644" in m for m in said), said


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (UNBALANCED, "line 3"),
        (UNQUOTED, "line 3"),
        (NO_PASSWORD, "password"),
        (NO_AUTH, "auth"),
    ],
    ids=["unbalanced-quote", "unquoted-value", "no-password", "no-auth-section"],
)
def test_default_auth_toml_that_does_not_parse_warns_with_cause(
    isolated_home, fakes, caplog, text, cause
):
    path = fakes.write_private(default_file(isolated_home), text)
    caplog.set_level(logging.DEBUG)
    c, said = make()
    assert c.auth_obj is False
    problem = [m for m in said if str(path) in m]
    assert len(problem) == 1, said
    assert cause in problem[0]
    assert all(SECRET not in m and SECRET[:8] not in m for m in said)
    assert SECRET not in _log_text(caplog)


def test_no_default_auth_toml_adds_no_warning():
    c, said = make()
    assert c.auth_obj is False
    assert len(said) == 1 and "unauthenticated" in said[0].lower(), said


def test_explicit_authfile_readable_by_others_names_mode_and_fix(tmp_path, fakes):
    path = fakes.write_private(tmp_path / "auth.toml", GOOD, mode=0o644)
    with pytest.raises(RuntimeError) as info:
        client(authfile=str(path))
    assert str(path) in str(info.value)
    assert "0644" in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("text", [UNBALANCED, UNQUOTED])
def test_explicit_authfile_that_does_not_parse_names_the_line_not_the_secret(tmp_path, fakes, text):
    path = fakes.write_private(tmp_path / "auth.toml", text)
    with pytest.raises(RuntimeError) as info:
        client(authfile=str(path))
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)
    assert SECRET not in str(info.value) and SECRET[:8] not in str(info.value)
    assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)
    assert info.value.__suppress_context__


# -- -u NAME --------------------------------------------------------------------------------


def test_user_lookup_finds_the_user_of_the_default_file(isolated_home, fakes):
    fakes.write_private(
        default_file(isolated_home),
        f'[[auth]]\nusername = "alice"\npassword = "{SECRET}"\nhostname = "127.0.0.1:46859"\n'
        '[[auth]]\nusername = "bob"\npassword = "x"\nhostname = "127.0.0.1:46859"\n',
    )
    found = credential_for_user("alice", "kafka://127.0.0.1/", 46859)
    assert found.username == "alice"
    # the port comes from the URL when none is given
    from igwn_alert._topics import DEFAULT_PORT

    assert credential_for_user("bob", "kafka://127.0.0.1:46859/", DEFAULT_PORT).username == "bob"


def test_user_lookup_in_an_unreadable_default_file_says_why(isolated_home, fakes):
    from igwn_alert._topics import DEFAULT_PORT

    path = fakes.write_private(default_file(isolated_home), GOOD, mode=0o644)
    with pytest.raises(LookupError) as info:
        credential_for_user("alice", "kafka://kafka.scimma.org/", DEFAULT_PORT)
    text = str(info.value)
    assert str(path) in text and "0644" in text and "chmod 600" in text
    assert SECRET not in text


def test_user_lookup_not_in_file_names_the_file(isolated_home, fakes):
    from igwn_alert._topics import DEFAULT_PORT

    path = fakes.write_private(default_file(isolated_home), GOOD)
    with pytest.raises(LookupError) as info:
        credential_for_user("carol", "kafka://kafka.scimma.org/", DEFAULT_PORT)
    assert "carol" in str(info.value) and str(path) in str(info.value)
