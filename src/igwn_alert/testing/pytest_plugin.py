"""pytest plugin of igwn-alert: fixtures for testing code that sends or receives alerts.

The plugin is loaded automatically (entry point ``pytest11``) from the top-level module
``igwn_alert_pytest_plugin``, which imports nothing until a fixture is used, so that
having ``igwn-alert`` installed costs other projects' test runs nothing. This module is
the same fixtures under the package's name, for ``pytest -p
igwn_alert.testing.pytest_plugin`` when plugin auto-loading is off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``).

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

from igwn_alert_pytest_plugin import igwn_alert_broker, igwn_alert_group, igwn_alert_memory

__all__ = ["igwn_alert_broker", "igwn_alert_group", "igwn_alert_memory"]
