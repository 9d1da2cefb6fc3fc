"""The project's real Apache Kafka broker for tests and benchmarks (private helper).

Used by ``scripts/kafka`` (CLI) and by the pytest fixtures in ``tests/``:

* :func:`start_cluster` starts an N-node KRaft cluster (nodes can be killed and
  started again on the same ports);
* :func:`ensure_broker` / :func:`stop_broker` manage the one shared
  single-node broker (PLAINTEXT + SASL_PLAINTEXT/SCRAM-SHA-512) described by
  ``.cache/kafka/state.json``.

The admin helpers (:mod:`.admin`) need confluent_kafka and are imported lazily.
"""

from .broker import (
    CACHE_DIR,
    MECHANISM,
    SINGLE_LOG,
    STATE_FILE,
    BrokerError,
    KafkaCluster,
    KafkaNode,
    ensure_jars,
    kafka_version,
    start_cluster,
)
from .service import ensure_broker, running_broker, stop_broker

__all__ = [
    "CACHE_DIR",
    "MECHANISM",
    "SINGLE_LOG",
    "STATE_FILE",
    "BrokerError",
    "KafkaCluster",
    "KafkaNode",
    "ensure_broker",
    "ensure_jars",
    "kafka_version",
    "running_broker",
    "start_cluster",
    "stop_broker",
]
