"""The pytest plugin: its fixtures, run in an inner pytest session (pytester)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

PLUGIN = "igwn_alert.testing.pytest_plugin"


@pytest.fixture
def plugin_args(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Load the plugin in the inner session unless its entry point already does."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # this igwn_alert, not another
    if request.config.pluginmanager.get_plugin("igwn_alert") is not None:
        return []
    return ["-p", PLUGIN]


def test_fixtures_in_an_inner_session(pytester: pytest.Pytester, plugin_args: list[str]) -> None:
    pytester.makepyfile(
        """
        import json

        import igwn_alert
        from igwn_alert.testing import InMemoryClient, LocalBroker

        seen_brokers = []


        def test_broker_round_trip(igwn_alert_broker, igwn_alert_group):
            assert isinstance(igwn_alert_broker, LocalBroker)
            seen_brokers.append(igwn_alert_broker)
            publisher = igwn_alert_broker.client(group=igwn_alert_group)
            assert isinstance(publisher, igwn_alert.client)
            with igwn_alert_broker.listener("superevent", group=igwn_alert_group) as alerts:
                publisher.publish("superevent", json.dumps({"uid": "S1"}))
                assert alerts.wait_for(1) == [("superevent", '{"uid": "S1"}')]


        def test_broker_is_shared_and_groups_differ(igwn_alert_broker, igwn_alert_group):
            assert seen_brokers == [igwn_alert_broker]
            assert igwn_alert_group.startswith("gracedb-test-")


        def test_memory_bus(igwn_alert_memory):
            InMemoryClient().publish("superevent", "x")
            assert igwn_alert_memory.published("superevent") == ["x"]


        def test_memory_bus_is_fresh(igwn_alert_memory):
            assert igwn_alert_memory.topics() == []
        """
    )
    result = pytester.runpytest_subprocess(*plugin_args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_fixtures_are_listed(pytester: pytest.Pytester, plugin_args: list[str]) -> None:
    result = pytester.runpytest_subprocess(*plugin_args, "--fixtures")
    result.stdout.fnmatch_lines(
        ["*igwn_alert_broker*session*", "*igwn_alert_group*", "*igwn_alert_memory*"]
    )


def test_plugin_import_is_cheap() -> None:
    """Importing the plugin does not import the broker, the in-memory bus or the demo."""
    code = (
        "import sys; import igwn_alert.testing.pytest_plugin; "
        "heavy = [m for m in ('igwn_alert.testing._embedded_broker', 'igwn_alert.testing.memory', "
        "'igwn_alert.testing.local_broker', 'igwn_alert.testing._demo') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env()
    ).stdout.strip()
    assert out == "[]"


def _env() -> dict[str, str]:
    import os

    import igwn_alert

    src = os.path.dirname(os.path.dirname(os.path.abspath(igwn_alert.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
