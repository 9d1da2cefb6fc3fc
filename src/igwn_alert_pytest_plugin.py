"""pytest plugin of igwn-alert (entry point ``pytest11``): fixtures for alert code.

pytest imports this module at the start of every test run in every environment that has
``igwn-alert`` installed, so it lives outside the ``igwn_alert`` package: importing
anything under ``igwn_alert`` runs the package's ``__init__``, which imports hop,
confluent-kafka, adc and requests. Here nothing is imported until a fixture is used.
The fixtures are documented in :mod:`igwn_alert.testing.pytest_plugin`, which is this
module under its public name.

Fixtures
--------
igwn_alert_broker
    (session scope) A running :class:`igwn_alert.testing.LocalBroker`, shared by every
    test of the session: starting one takes milliseconds, but sharing it keeps
    connections warm. Topics live as long as the session, so give each test its own
    GraceDB group (``igwn_alert_group``) or its own topic names.
igwn_alert_group
    (function scope) A GraceDB group name unique to the test, such as
    ``'gracedb-test-4242-7'``.
igwn_alert_memory
    (function scope) A fresh :class:`igwn_alert.testing.InMemoryBroker`, made the default
    bus of :class:`igwn_alert.testing.InMemoryClient` for the duration of the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from igwn_alert.testing import InMemoryBroker, LocalBroker

__all__ = ["igwn_alert_broker", "igwn_alert_group", "igwn_alert_memory"]


@pytest.fixture(scope="session")
def igwn_alert_broker() -> Iterator[LocalBroker]:
    """A running embedded Kafka broker shared by the test session.

    Yields
    ------
    igwn_alert.testing.LocalBroker
        Use ``.client(group=...)`` for clients and ``.listener(...)`` for listeners.
    """
    from igwn_alert.testing.local_broker import LocalBroker

    with LocalBroker() as broker:
        yield broker


@pytest.fixture
def igwn_alert_group() -> str:
    """A GraceDB group name that no other test of the session gets.

    Returns
    -------
    str
        The group name.
    """
    from igwn_alert.testing.local_broker import LocalBroker

    return LocalBroker.unique_group()


@pytest.fixture
def igwn_alert_memory() -> Iterator[InMemoryBroker]:
    """A fresh in-memory alert bus, the default of ``InMemoryClient`` during the test.

    Yields
    ------
    igwn_alert.testing.InMemoryBroker
        The bus.
    """
    from igwn_alert.testing.memory import use_broker

    with use_broker() as bus:
        yield bus
