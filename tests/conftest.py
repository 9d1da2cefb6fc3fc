"""Shared pytest fixtures: the project's real Apache Kafka broker (``scripts/kafka``).

Nothing here starts Java unless a test asks for one of the broker fixtures, so
unit tests run without it. Tests using them are marked ``integration``.

Fixtures
--------
kafka_broker   (session)  BrokerInfo of the shared single-node broker: reuses the
                          one ``scripts/kafka up`` started, else starts it (and stops
                          it at session end unless IGWN_ALERT_KEEP_BROKER=1).
                          Never skips: fails with the broker log path instead.
make_topic     (function) make_topic(short="superevent", *, group=None, partitions=1,
                          replication=1, config=None) -> Topic(.group, .short, .full)
make_user      (function) make_user(read=(), write=(), *, describe=(), groups=("*",),
                          describe_configs=True, username=None, password=None,
                          group_prefixed=False)
                          -> KafkaUser(.username, .password, .auth_toml, .netrc, ...)
hop_auth_for   (function) hop_auth_for(user) -> hop.auth.Auth (SASL_PLAINTEXT, SCRAM-SHA-512)
make_cluster   (function) make_cluster(n=3, *, sasl=False, ...) -> KafkaCluster; killed
                          after the test.
kafka_private_broker (function) a fresh single-node broker (PLAINTEXT + SCRAM) for this
                          test alone, as a BrokerInfo whose stop()/start()/restart()/kill()
                          keep the same ports and data (broker-outage tests). Use
                          TopicFactory/UserFactory from _kafka_broker.testing with it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT / "scripts") not in sys.path:
    sys.path.append(str(REPO_ROOT / "scripts"))
# tests/_shared.py: helpers both unit and integration test modules import
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.append(str(REPO_ROOT / "tests"))

if TYPE_CHECKING:
    from _kafka_broker import KafkaCluster
    from _kafka_broker.admin import BrokerInfo
    from _kafka_broker.testing import KafkaUser, TopicFactory, UserFactory

BROKER_FIXTURES = frozenset(
    {
        "kafka_broker",
        "make_topic",
        "make_user",
        "hop_auth_for",
        "make_cluster",
        "kafka_private_broker",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Whatever folder it lives in, a test that uses the real broker is ``integration``."""
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if "make_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BrokerInfo]:
    """The running shared broker; started here if ``scripts/kafka up`` was not run."""
    from _kafka_broker import SINGLE_LOG, STATE_FILE, ensure_broker, stop_broker
    from _kafka_broker.admin import BrokerInfo

    try:
        cluster, started = ensure_broker(timeout=180.0)
    except Exception as exc:  # noqa: BLE001 - fail loudly, never skip
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = ""
    if error:
        pytest.fail(
            f"could not start the Kafka test broker: {error}\n"
            f"broker log: {SINGLE_LOG} (see also: scripts/kafka logs)",
            pytrace=False,
        )
    broker = BrokerInfo.from_cluster(cluster)
    assert broker.state_file == STATE_FILE
    yield broker
    if started and os.environ.get("IGWN_ALERT_KEEP_BROKER") != "1":
        stop_broker()


@pytest.fixture
def make_topic(kafka_broker: BrokerInfo) -> Iterator[TopicFactory]:
    from _kafka_broker.testing import TopicFactory

    factory = TopicFactory(kafka_broker)
    yield factory
    factory.close()


@pytest.fixture
def make_user(kafka_broker: BrokerInfo, tmp_path: Path) -> Iterator[UserFactory]:
    from _kafka_broker.testing import UserFactory

    factory = UserFactory(kafka_broker, tmp_path / "kafka-users")
    yield factory
    factory.close()


@pytest.fixture
def hop_auth_for(kafka_broker: BrokerInfo) -> Callable[[KafkaUser], Any]:
    from _kafka_broker.testing import hop_auth_for

    return hop_auth_for


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., KafkaCluster]]:
    """Start throw-away N-node KRaft clusters (default 3, PLAINTEXT only); each node
    has ``kill()``/``stop()``/``start()``; all are killed after the test."""
    from _kafka_broker import start_cluster

    clusters: list[KafkaCluster] = []

    def factory(n: int = 3, **kwargs: Any) -> KafkaCluster:
        base = tmp_path / f"kafka-cluster-{len(clusters) + 1}"
        try:
            cluster = start_cluster(n, base, **kwargs)
        except Exception as exc:  # noqa: BLE001 - fail loudly, never skip
            logs = ", ".join(str(p) for p in sorted(base.glob("node-*/kafka.log")))
            pytest.fail(f"could not start a {n}-node Kafka cluster: {exc}\nlogs: {logs}")
        clusters.append(cluster)
        return cluster

    yield factory
    for cluster in clusters:
        cluster.kill()


@pytest.fixture
def kafka_private_broker(tmp_path: Path) -> Iterator[BrokerInfo]:
    """A single-node broker of this test's own (SASL + PLAINTEXT), killed afterwards."""
    from _kafka_broker import start_cluster
    from _kafka_broker.admin import BrokerInfo

    base = tmp_path / "kafka-private"
    try:
        cluster = start_cluster(1, base, sasl=True, state_file=base / "state.json")
    except Exception as exc:  # noqa: BLE001 - fail loudly, never skip
        pytest.fail(f"could not start a private Kafka broker: {exc}\nlog: {base}/node-1/kafka.log")
    broker = BrokerInfo.from_cluster(cluster)
    yield broker
    broker.cluster().kill()
