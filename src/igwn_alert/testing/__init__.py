"""Tools for testing code that sends or receives GraceDB alerts.

* :class:`InMemoryClient` and :class:`InMemoryBroker`: the client's API on an in-memory
  bus, for fast, deterministic unit tests of alert handlers, with no broker at all.
* :class:`LocalBroker`: a real Kafka broker embedded in the test process (librdkafka's
  mock cluster), and real :class:`igwn_alert.client` objects connected to it.
* The pytest fixtures ``igwn_alert_broker``, ``igwn_alert_group`` and
  ``igwn_alert_memory`` (:mod:`igwn_alert.testing.pytest_plugin`, loaded automatically).
* :data:`FakeFatalKafkaException` and :data:`FakeNonFatalKafkaException`, from
  :mod:`igwn_alert.exceptions`.
* :func:`demo_alerts`: realistic GraceDB alerts to feed your handlers.

The names are imported on first use, so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..exceptions import FakeFatalKafkaException, FakeNonFatalKafkaException
    from ._demo import DemoAlert, demo_alerts
    from .local_broker import BackgroundListener, LocalBroker
    from .memory import (
        InMemoryBroker,
        InMemoryClient,
        InMemoryWriter,
        Record,
        default_broker,
        set_default_broker,
        use_broker,
    )

__all__ = [
    "BackgroundListener",
    "DemoAlert",
    "FakeFatalKafkaException",
    "FakeNonFatalKafkaException",
    "InMemoryBroker",
    "InMemoryClient",
    "InMemoryWriter",
    "LocalBroker",
    "Record",
    "default_broker",
    "demo_alerts",
    "set_default_broker",
    "use_broker",
]

_WHERE = {
    "BackgroundListener": ".local_broker",
    "LocalBroker": ".local_broker",
    "InMemoryBroker": ".memory",
    "InMemoryClient": ".memory",
    "InMemoryWriter": ".memory",
    "Record": ".memory",
    "default_broker": ".memory",
    "set_default_broker": ".memory",
    "use_broker": ".memory",
    "FakeFatalKafkaException": "..exceptions",
    "FakeNonFatalKafkaException": "..exceptions",
    "DemoAlert": "._demo",
    "demo_alerts": "._demo",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
