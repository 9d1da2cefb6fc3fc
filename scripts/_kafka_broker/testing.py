"""Test-side helpers on top of :class:`~.admin.BrokerInfo`: unique topics, SCRAM
users with ACLs, hop ``auth.toml`` and netrc files. Used by ``tests/conftest.py``
(and usable from benchmarks); cleans up after itself through ``close()``."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .admin import BrokerInfo, Topic

TopicLike = Union[str, Topic]


def _name(t: TopicLike) -> str:
    return t.full if isinstance(t, Topic) else t


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return path


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def auth_toml_text(username: str, password: str, hostname: str) -> str:
    """A hop-client ``auth.toml`` with one SCRAM-SHA-512 credential for the plain
    SASL listener. ``hostname`` must be ``host:port`` exactly as in the kafka://
    URL: hop only matches a port-less hostname against port 9092."""
    fields = {
        "username": username,
        "password": password,
        "protocol": "SASL_PLAINTEXT",
        "mechanism": "SCRAM-SHA-512",
        "hostname": hostname,
    }
    body = "\n".join(f"{k} = {_toml_str(v)}" for k, v in fields.items())
    return f"[[auth]]\n{body}\n"


def netrc_text(
    username: str, password: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> str:
    return "".join(f"machine {h} login {username} password {password}\n" for h in hosts)


@dataclass
class KafkaUser:
    """A SCRAM-SHA-512 user of the test broker and its credential files (mode 0600)."""

    username: str
    password: str
    auth_toml: Path
    netrc: Path
    broker: BrokerInfo = field(repr=False)
    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)

    @property
    def hostname(self) -> str:
        """``host:port`` of the SASL listener (what hop's credential matches)."""
        return self.broker.sasl

    def scram_config(self) -> dict[str, Any]:
        """confluent_kafka settings to connect as this user."""
        return self.broker.scram_config(self.username, self.password)

    def hop_auth(self) -> Any:
        return hop_auth_for(self)


def hop_auth_for(user: KafkaUser) -> Any:
    """A ``hop.auth.Auth`` for ``user``: SASL_PLAINTEXT (no TLS), SCRAM-SHA-512,
    bound to the broker's SASL ``host:port``. (hop's default would be SASL_SSL.)"""
    from hop.auth import Auth, SASLMethod

    return Auth(
        user.username,
        user.password,
        host=user.hostname,
        ssl=False,
        method=SASLMethod.SCRAM_SHA_512,
    )


class TopicFactory:
    """``make_topic``: unique ``<group>.<short>`` topics, deleted on ``close()``.

    All topics made through one factory share one unique group unless a
    ``group`` is given, e.g. ``gracedb-test-3f9a1c.superevent``."""

    def __init__(self, broker: BrokerInfo, prefix: str = "gracedb") -> None:
        self.broker = broker
        self.group = f"{prefix}-test-{secrets.token_hex(3)}"
        self.created: list[Topic] = []

    def __call__(
        self,
        short: str = "superevent",
        *,
        group: Optional[str] = None,
        partitions: int = 1,
        replication: int = 1,
        config: Optional[dict[str, str]] = None,
    ) -> Topic:
        topic = Topic(group or self.group, short, partitions)
        self.broker.create_topics([topic.full], partitions, replication, config)
        self.created.append(topic)
        return topic

    def close(self) -> None:
        if self.created:
            with contextlib.suppress(Exception):
                self.broker.delete_topics([t.full for t in self.created], timeout=10)
            self.created.clear()


class UserFactory:
    """``make_user``: SCRAM users with exactly the ACLs asked for; files go in
    ``directory``; credentials and ACLs are removed on ``close()``."""

    def __init__(self, broker: BrokerInfo, directory: Path) -> None:
        self.broker = broker
        self.directory = Path(directory)
        self.created: list[KafkaUser] = []

    def __call__(
        self,
        read: Iterable[TopicLike] = (),
        write: Iterable[TopicLike] = (),
        *,
        describe: Iterable[TopicLike] = (),
        groups: Iterable[str] = ("*",),
        describe_configs: bool = True,
        username: Optional[str] = None,
        password: Optional[str] = None,
        group_prefixed: bool = False,
    ) -> KafkaUser:
        """READ+DESCRIBE on ``read``, WRITE+DESCRIBE (+DESCRIBE_CONFIGS, which hop's
        writer asks for) on ``write``, DESCRIBE on ``describe``, READ on consumer
        ``groups`` (``"*"`` = any; with ``group_prefixed``, every group whose name starts
        with one of ``groups``, as Hopskotch grants ``<user>-``). Nothing else: other
        topics are refused."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        group_pattern = (
            ResourcePatternType.PREFIXED if group_prefixed else ResourcePatternType.LITERAL
        )

        username = username or f"user-{secrets.token_hex(4)}"
        password = password or secrets.token_urlsafe(18)
        read_names = [_name(t) for t in read]
        write_names = [_name(t) for t in write]
        bindings = self.broker.acl_bindings(
            username,
            read=read_names,
            write=write_names,
            describe=[_name(t) for t in describe],
            groups=groups,
            group_pattern=group_pattern,
        )
        if describe_configs:
            bindings += [
                AclBinding(
                    ResourceType.TOPIC,
                    name,
                    ResourcePatternType.LITERAL,
                    f"User:{username}",
                    "*",
                    AclOperation.DESCRIBE_CONFIGS,
                    AclPermissionType.ALLOW,
                )
                for name in write_names
            ]
        # ACLs first: once the (later) credential authenticates, the broker has
        # applied the metadata records before it too; then confirm them anyway.
        self.broker.create_acls(bindings)
        self.broker.create_user(username, password, wait=0)
        self.directory.mkdir(parents=True, exist_ok=True)
        user = KafkaUser(
            username=username,
            password=password,
            auth_toml=_write_private(
                self.directory / f"{username}-auth.toml",
                auth_toml_text(username, password, self.broker.sasl),
            ),
            netrc=_write_private(
                self.directory / f"{username}.netrc", netrc_text(username, password)
            ),
            broker=self.broker,
            read=read_names,
            write=write_names,
        )
        self.created.append(user)
        self.broker.wait_authenticates(username, password, timeout=10.0)
        self.broker.wait_acls(username, len(bindings), timeout=10.0)
        return user

    def close(self) -> None:
        for user in self.created:
            with contextlib.suppress(Exception):
                self.broker.delete_acls_for(user.username)
            with contextlib.suppress(Exception):
                self.broker.delete_user(user.username)
        self.created.clear()
