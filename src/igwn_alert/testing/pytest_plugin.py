"""pytest plugin of igwn-alert: fixtures for testing code that sends or receives alerts.

pytest loads this module in every test run of every project that has ``igwn-alert``
installed (entry point ``pytest11``), so it imports nothing heavy: the broker and the
clients are imported when a fixture is first used.

Fixtures
--------
igwn_alert_broker
    (session scope) A running :class:`igwn_alert.testing.LocalBroker`, shared by every
    test of the session: starting one takes milliseconds, but sharing it keeps
    connections warm. Topics live as long as the session, so give each test its own
    GraceDB group (:func:`igwn_alert_group`) or its own topic names.
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
    from .local_broker import LocalBroker
    from .memory import InMemoryBroker

__all__ = ["igwn_alert_broker", "igwn_alert_group", "igwn_alert_memory"]


@pytest.fixture(scope="session")
def igwn_alert_broker() -> Iterator[LocalBroker]:
    """A running embedded Kafka broker shared by the test session.

    Yields
    ------
    igwn_alert.testing.LocalBroker
        Use ``.client(group=...)`` for clients and ``.listener(...)`` for listeners.
    """
    from .local_broker import LocalBroker

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
    from .local_broker import LocalBroker

    return LocalBroker.unique_group()


@pytest.fixture
def igwn_alert_memory() -> Iterator[InMemoryBroker]:
    """A fresh in-memory alert bus, the default of ``InMemoryClient`` during the test.

    Yields
    ------
    igwn_alert.testing.InMemoryBroker
        The bus.
    """
    from .memory import use_broker

    with use_broker() as bus:
        yield bus
