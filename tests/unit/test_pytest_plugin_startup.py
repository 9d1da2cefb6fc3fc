"""The pytest plugin costs nothing until a fixture is used.

pytest imports every ``pytest11`` entry point at start-up, in every project whose
environment has igwn-alert installed. These tests check what that import pulls in (the
time it costs is measured by ``bench/startup.py``, not asserted here).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HEAVY = ("igwn_alert", "hop", "confluent_kafka", "adc", "requests", "toml")
SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _entry_point() -> importlib.metadata.EntryPoint:
    every = importlib.metadata.entry_points()
    group = every.select(group="pytest11") if hasattr(every, "select") else every["pytest11"]
    # the same distribution may be on sys.path twice (an editable install and src/*.egg-info)
    found = list({(e.name, e.value): e for e in group if e.name == "igwn_alert"}.values())
    assert len(found) == 1, found
    return found[0]


def test_entry_point_is_a_module_outside_the_package() -> None:
    assert _entry_point().value == "igwn_alert_pytest_plugin"


def test_importing_the_entry_point_imports_nothing_heavy() -> None:
    code = (
        f"import sys, {_entry_point().value}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env()
    ).stdout.strip()
    assert out == "[]"


def test_public_plugin_module_has_the_same_fixtures() -> None:
    import igwn_alert_pytest_plugin
    from igwn_alert.testing import pytest_plugin

    for name in pytest_plugin.__all__:
        assert getattr(pytest_plugin, name) is getattr(igwn_alert_pytest_plugin, name)


def test_a_session_not_using_the_fixtures_never_imports_the_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inner pytest run, the plugin loaded by its entry point as in any project."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    pytester.makepyfile(
        f"""
        import sys


        def test_plain(request):
            assert request.config.pluginmanager.get_plugin("igwn_alert") is not None
            loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
            assert loaded == []


        def test_fixture_imports_on_demand(igwn_alert_memory):
            assert "igwn_alert.testing.memory" in sys.modules
            assert igwn_alert_memory.topics() == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
