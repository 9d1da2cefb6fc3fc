"""Administration of the test broker through confluent_kafka's AdminClient.

Topics, SCRAM users and ACLs are created over the admin's SCRAM connection
(SASL_PLAINTEXT, SCRAM-SHA-512), the way an operator of SCIMMA Hopskotch would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from .broker import MECHANISM, STATE_FILE, KafkaCluster

if TYPE_CHECKING:
    from .broker import KafkaNode

SCRAM_ITERATIONS = 4096

# librdkafka reports every failed probe on stderr; probes route its log here instead.
_quiet = logging.getLogger("kafka_broker.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def scram_config(bootstrap: str, username: str, password: str) -> dict[str, Any]:
    """confluent_kafka settings for a SCRAM-SHA-512 user on the SASL_PLAINTEXT listener."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": MECHANISM,
        "sasl.username": username,
        "sasl.password": password,
    }


def quiet_admin(conf: dict[str, Any]) -> AdminClient:
    """An AdminClient whose librdkafka log goes to a silent logger, not stderr."""
    full: dict[str, Any] = {**conf, "logger": _quiet}
    return AdminClient(full)


def _probe(conf: dict[str, Any], timeout: float) -> set[int]:
    """Metadata round trip; returns the broker ids seen. Raises KafkaException."""
    client = quiet_admin({**conf, "socket.connection.setup.timeout.ms": 5000})
    md = client.list_topics(timeout=timeout)
    return set(md.brokers)


def check_ready(cluster: KafkaCluster, nodes: Sequence[KafkaNode], timeout: float) -> None:
    """Raise unless every node in ``nodes`` serves metadata listing itself over
    PLAINTEXT and, with SASL, the admin authenticates over SCRAM."""
    for node in nodes:
        seen = _probe({"bootstrap.servers": node.plaintext}, timeout)
        if node.node_id not in seen:
            raise RuntimeError(f"node {node.node_id} not yet in metadata (brokers {sorted(seen)})")
        if node.sasl is not None:
            admin_conf = scram_config(node.sasl, cluster.admin_user, cluster.admin_password)
            try:
                _probe(admin_conf, min(timeout, 5.0))
            except KafkaException:
                # Someone replaced the admin's SCRAM credential (e.g. a test that made a
                # user called "admin"): put the recorded one back over PLAINTEXT, where
                # ANONYMOUS is a super user, and try again.
                reset_admin_password(node.plaintext, cluster.admin_user, cluster.admin_password)
                _probe(admin_conf, timeout)


def reset_admin_password(plaintext: str, username: str, password: str) -> None:
    """Upsert the admin's SCRAM-SHA-512 credential through the PLAINTEXT listener."""
    client = quiet_admin({"bootstrap.servers": plaintext})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    up = UserScramCredentialUpsertion(username, info, password.encode())
    for fut in client.alter_user_scram_credentials([up], request_timeout=15).values():
        fut.result()


def warm_up(bootstrap: str, timeout: float = 60.0) -> None:
    """Create __consumer_offsets now (first FindCoordinator) so the first test's
    consumer group does not pay for it."""
    client = quiet_admin({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = client.list_topics(timeout=10)
        if "__consumer_offsets" in md.topics and not md.topics["__consumer_offsets"].error:
            return
        futs = client.describe_consumer_groups(["igwn-alert-broker-warm-up"], request_timeout=10)
        for fut in futs.values():
            try:
                fut.result()
            except KafkaException:
                pass
        time.sleep(0.2)


def _user_filter(username: str) -> AclBindingFilter:
    """Every binding of ``User:<username>`` (None = any name / any host)."""
    any_value: Any = None
    return AclBindingFilter(
        ResourceType.ANY,
        any_value,
        ResourcePatternType.ANY,
        f"User:{username}",
        any_value,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


@dataclass
class Topic:
    """A topic as the igwn_alert client addresses it: ``<group>.<short>``."""

    group: str
    short: str
    partitions: int = 1

    @property
    def full(self) -> str:
        return f"{self.group}.{self.short}"

    def __str__(self) -> str:
        return self.full


@dataclass
class BrokerInfo:
    """The running test broker, and admin operations on it.

    ``plaintext``/``sasl`` are ``host:port``; the SASL listener wants
    SCRAM-SHA-512 (``mechanism``). ``log_dir`` holds ``kafka.log``.
    """

    plaintext: str
    sasl: str
    mechanism: str
    admin_user: str
    admin_password: str
    log_dir: str
    log_file: str
    pid: Optional[int] = None
    state_file: Optional[Path] = None
    _admin: Optional[AdminClient] = field(default=None, repr=False)
    _cluster: Optional[KafkaCluster] = field(default=None, repr=False)

    @classmethod
    def from_state(cls, state_file: Path = STATE_FILE) -> BrokerInfo:
        info = json.loads(Path(state_file).read_text())
        return cls.from_info(info, state_file)

    @classmethod
    def from_cluster(cls, cluster: KafkaCluster) -> BrokerInfo:
        """Describe a SASL-enabled cluster started with :func:`start_cluster` (node 1)."""
        broker = cls.from_info(cluster.info(), cluster.state_file)
        broker._cluster = cluster
        return broker

    @classmethod
    def from_info(cls, info: dict[str, Any], state_file: Optional[Path] = None) -> BrokerInfo:
        return cls(
            plaintext=info["plaintext"],
            sasl=info["sasl"],
            mechanism=info["mechanism"],
            admin_user=info["admin_user"],
            admin_password=info["admin_password"],
            log_dir=info["log_dir"],
            log_file=info["log_file"],
            pid=info.get("pid"),
            state_file=state_file,
        )

    # -- client settings
    @property
    def host(self) -> str:
        return self.sasl.rsplit(":", 1)[0]

    def scram_config(self, username: str, password: str) -> dict[str, Any]:
        return scram_config(self.sasl, username, password)

    def admin_config(self) -> dict[str, Any]:
        return self.scram_config(self.admin_user, self.admin_password)

    def plaintext_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.plaintext}

    def admin(self) -> AdminClient:
        """An AdminClient logged in as the SCRAM super user (cached)."""
        if self._admin is None:
            self._admin = quiet_admin(self.admin_config())
        return self._admin

    # -- topics
    def create_topics(
        self,
        names: Iterable[str],
        partitions: int = 1,
        replication: int = 1,
        config: Optional[dict[str, str]] = None,
        timeout: float = 30.0,
    ) -> None:
        """Create topics and wait until metadata shows all their partition leaders."""
        names = list(names)
        new = [NewTopic(n, partitions, replication, config=dict(config or {})) for n in names]
        for fut in self.admin().create_topics(new, request_timeout=timeout).values():
            fut.result()
        self.wait_topics(names, partitions, timeout)

    def wait_topics(self, names: Sequence[str], partitions: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        missing: list[str] = list(names)
        while True:
            md = self.admin().list_topics(timeout=max(1.0, deadline - time.monotonic()))
            missing = []
            for name in names:
                t = md.topics.get(name)
                if (
                    t is None
                    or t.error is not None
                    or len(t.partitions) < partitions
                    or any(p.leader < 0 for p in t.partitions.values())
                ):
                    missing.append(name)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not in metadata after {timeout}s: {missing}")
            time.sleep(0.05)

    def delete_topics(self, names: Iterable[str], timeout: float = 30.0) -> None:
        names = list(names)
        if not names:
            return
        for fut in self.admin().delete_topics(names, request_timeout=timeout).values():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise

    def list_topics(self) -> list[str]:
        return sorted(self.admin().list_topics(timeout=10).topics)

    # -- users
    def create_user(self, username: str, password: str, wait: float = 10.0) -> None:
        """Add (or replace) a SCRAM-SHA-512 credential and wait until it authenticates."""
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        up = UserScramCredentialUpsertion(username, info, password.encode())
        for fut in self.admin().alter_user_scram_credentials([up], request_timeout=30).values():
            fut.result()
        if wait:
            self.wait_authenticates(username, password, wait)

    def wait_authenticates(self, username: str, password: str, timeout: float = 10.0) -> None:
        """Poll until a metadata request with these credentials succeeds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                _probe(self.scram_config(username, password), timeout=2.0)
                return
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"SCRAM user {username!r} cannot authenticate after {timeout}s: {exc}"
                    ) from exc
            time.sleep(0.1)

    def delete_user(self, username: str) -> None:
        delete = UserScramCredentialDeletion(username, ScramMechanism.SCRAM_SHA_512)
        for fut in self.admin().alter_user_scram_credentials([delete], request_timeout=30).values():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                    raise

    # -- ACLs
    def acl_bindings(
        self,
        username: str,
        *,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        describe: Iterable[str] = (),
        groups: Iterable[str] = ("*",),
        group_pattern: ResourcePatternType = ResourcePatternType.LITERAL,
        topic_pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    ) -> list[AclBinding]:
        """The ALLOW bindings for: READ+DESCRIBE on ``read`` topics, WRITE+DESCRIBE on
        ``write`` topics, DESCRIBE on ``describe`` topics and READ on consumer
        ``groups`` (``"*"`` = any group; PREFIXED via ``group_pattern``)."""
        principal = f"User:{username}"
        wanted: dict[tuple[ResourceType, str, ResourcePatternType, AclOperation], None] = {}
        t, g = ResourceType.TOPIC, ResourceType.GROUP
        for name in read:
            wanted[(t, name, topic_pattern, AclOperation.READ)] = None
            wanted[(t, name, topic_pattern, AclOperation.DESCRIBE)] = None
        for name in write:
            wanted[(t, name, topic_pattern, AclOperation.WRITE)] = None
            wanted[(t, name, topic_pattern, AclOperation.DESCRIBE)] = None
        for name in describe:
            wanted[(t, name, topic_pattern, AclOperation.DESCRIBE)] = None
        for name in groups:
            wanted[(g, name, group_pattern, AclOperation.READ)] = None
        return [
            AclBinding(rt, name, pat, principal, "*", op, AclPermissionType.ALLOW)
            for (rt, name, pat, op) in wanted
        ]

    def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        if not bindings:
            return
        for fut in self.admin().create_acls(list(bindings), request_timeout=30).values():
            fut.result()

    def grant(self, username: str, **kwargs: Any) -> list[AclBinding]:
        """Create the bindings of :meth:`acl_bindings` (same keywords)."""
        bindings = self.acl_bindings(username, **kwargs)
        self.create_acls(bindings)
        return bindings

    def acls_for(self, username: str) -> list[AclBinding]:
        """The bindings the broker's authorizer holds for ``User:<username>``."""
        return list(self.admin().describe_acls(_user_filter(username), request_timeout=30).result())

    def wait_acls(self, username: str, count: int, timeout: float = 10.0) -> None:
        """Wait until the broker's authorizer serves at least ``count`` bindings."""
        deadline = time.monotonic() + timeout
        while len(self.acls_for(username)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ACLs of {username!r} not applied after {timeout}s")
            time.sleep(0.05)

    def delete_acls_for(self, username: str) -> None:
        for fut in self.admin().delete_acls([_user_filter(username)], request_timeout=30).values():
            fut.result()

    # -- process control (same ports, same data)
    def cluster(self) -> KafkaCluster:
        """The process handle behind this broker (loaded once from the state file)."""
        if self._cluster is None:
            if self.state_file is None:
                raise RuntimeError("this BrokerInfo was not loaded from a state file")
            self._cluster = KafkaCluster.from_state(self.state_file)
        return self._cluster

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker process; :meth:`start` brings it back on the same ports."""
        self._admin = None
        self.cluster().stop(timeout)

    def kill(self) -> None:
        """SIGKILL the broker process (a crash rather than a clean shutdown)."""
        self._admin = None
        self.cluster().kill()

    def start(self, timeout: float = 120.0) -> None:
        cluster = self.cluster()
        cluster.start(timeout)
        self.pid = cluster.nodes[0].pid

    def restart(self, timeout: float = 120.0) -> None:
        """Broker outage: stop, then start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def is_running(self) -> bool:
        return bool(self.cluster().running_nodes())
