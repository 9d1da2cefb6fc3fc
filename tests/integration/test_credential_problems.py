"""Credential problems name their cause and file, on the real broker.

* hop's default ``auth.toml`` readable by others: the CLI and the library say which file,
  which mode and how to fix it, instead of "No authentication found" and "cannot reach".
* ``-u NAME`` finds NAME in hop's default ``auth.toml`` (the port coming from ``-s``).
* A TLS credential on the broker's SASL listener without TLS: "does not speak TLS; set
  protocol = SASL_PLAINTEXT", not "Broker transport failure".
* A SASL credential on the listener without SASL: "does not use SASL".
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli

import igwn_alert
from igwn_alert.exceptions import AuthenticationError, KafkaException


def write_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def toml_entry(user: Any, hostname: str, protocol: str = "SASL_PLAINTEXT") -> str:
    lines = [
        "[[auth]]",
        f'username = "{user.username}"',
        f'password = "{user.password}"',
        'mechanism = "SCRAM-SHA-512"',
        f'hostname = "{hostname}"',
    ]
    if protocol:
        lines.append(f'protocol = "{protocol}"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    return home


def default_auth(home: Path) -> Path:
    return home / ".config" / "hop" / "auth.toml"


def stderr_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_cli_user_option_finds_the_user_in_the_default_auth_toml(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    other = make_user(read=[topic])
    write_file(
        default_auth(home),
        toml_entry(other, kafka_broker.sasl) + toml_entry(user, kafka_broker.sasl),
    )
    url = f"kafka://{kafka_broker.sasl}"
    result = run_cli(["-s", url, "-u", user.username, "-g", topic.group, "topics"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["superevent"]
    assert user.password not in result.stderr + result.stdout


def test_cli_user_option_with_unsafe_default_auth_toml_says_why(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    path = write_file(default_auth(home), toml_entry(user, kafka_broker.sasl), mode=0o644)
    url = f"kafka://{kafka_broker.sasl}"
    result = run_cli(["-s", url, "-u", user.username, "-g", topic.group, "topics"], home)
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "0644" in lines[0] and f"chmod 600 {path}" in lines[0]
    assert user.password not in result.stderr


def test_unsafe_default_auth_toml_is_reported_not_skipped(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    path = write_file(default_auth(home), toml_entry(user, kafka_broker.sasl), mode=0o644)
    url = f"kafka://{kafka_broker.sasl}"
    result = run_cli(["-s", url, "-g", topic.group, "topics"], home)
    assert result.returncode == 1
    assert any(str(path) in line and "0644" in line for line in stderr_lines(result)), result.stderr
    assert user.password not in result.stderr


def test_broken_default_auth_toml_names_file_and_line(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    text = toml_entry(user, kafka_broker.sasl).replace(
        f'password = "{user.password}"', f"password = {user.password}"
    )
    path = write_file(default_auth(home), text)
    result = run_cli(["-s", f"kafka://{kafka_broker.sasl}", "-g", topic.group, "topics"], home)
    assert result.returncode == 1
    assert any(str(path) in line and "line 3" in line for line in stderr_lines(result)), (
        result.stderr
    )
    assert user.password not in result.stderr


def test_cli_tls_credential_on_listener_without_tls(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    write_file(default_auth(home), toml_entry(user, kafka_broker.sasl, protocol=""))
    t0 = time.monotonic()
    result = run_cli(["-s", f"kafka://{kafka_broker.sasl}", "-g", topic.group, "topics"], home)
    elapsed = time.monotonic() - t0
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "does not speak TLS" in lines[0] and "SASL_PLAINTEXT" in lines[0], lines[0]
    assert "transport failure" not in lines[0]
    assert user.password not in result.stderr
    print(f"TLS-on-plaintext reported by the CLI after {elapsed:.2f} s")


@pytest.mark.parametrize("how", ["connect", "listen"])
def test_library_tls_credential_on_listener_without_tls_names_the_cause(
    kafka_broker: Any, make_topic: Any, make_user: Any, tmp_path: Path, how: str
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic], write=[topic])
    path = write_file(tmp_path / "auth.toml", toml_entry(user, kafka_broker.sasl, protocol=""))
    client = igwn_alert.client(
        authfile=str(path), server=f"kafka://{kafka_broker.sasl}/", group=topic.group
    )
    with pytest.raises(KafkaException) as info:
        if how == "connect":
            client.connect("superevent")
        else:  # open(url, "r") connects lazily: the reader's start-up inside listen()
            client.listen(lambda topic, payload: None, "superevent")
    text = str(info.value)
    assert "does not speak TLS" in text and "SASL_PLAINTEXT" in text, text
    assert user.password not in text


def test_sasl_credential_on_listener_without_sasl(
    kafka_broker: Any, make_topic: Any, make_user: Any, home: Path
) -> None:
    topic = make_topic("superevent")
    user = make_user(read=[topic])
    write_file(default_auth(home), toml_entry(user, kafka_broker.plaintext))
    url = f"kafka://{kafka_broker.plaintext}"
    result = run_cli(["-s", url, "-g", topic.group, "topics"], home)
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert "does not use SASL" in lines[0], lines[0]
    assert user.password not in result.stderr
    # the library names it too (an AuthenticationError: retrying cannot help)
    client = igwn_alert.client(
        username=user.username, password=user.password, server=url, group=topic.group
    )
    with pytest.raises(AuthenticationError, match="does not use SASL"):
        client.connect("superevent")
