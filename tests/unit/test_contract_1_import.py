"""Contract section 1: the import surface."""

from __future__ import annotations

import importlib
import sys
from datetime import timedelta

import pytest
from adc.errors import KafkaException


def test_1_1_package_defaults():
    import igwn_alert

    assert igwn_alert.DEFAULT_SERVER == "kafka://kafka.scimma.org/"
    assert igwn_alert.DEFAULT_PORT == 9092
    assert igwn_alert.DEFAULT_GROUP == "gracedb"
    assert igwn_alert.DEFAULT_LISTEN_RETRIES == 3
    assert igwn_alert.DEFAULT_RETRY_WAIT == 0.1


def test_1_1_package_version_is_the_version_module_version():
    import igwn_alert
    from igwn_alert.version import __version__

    assert igwn_alert.__version__ == __version__


def test_1_1_client_module_holds_batch_defaults():
    client_module = sys.modules["igwn_alert.client"]

    assert client_module.DEFAULT_BATCH_SIZE == 1
    assert isinstance(client_module.DEFAULT_BATCH_TIMEOUT, timedelta)
    assert timedelta(seconds=0.2) == client_module.DEFAULT_BATCH_TIMEOUT


def test_1_2_package_attribute_client_is_the_class():
    import igwn_alert

    assert isinstance(igwn_alert.client, type)
    assert igwn_alert.client.__name__ == "client"
    assert igwn_alert.client.__module__ == "igwn_alert.client"
    assert sys.modules["igwn_alert.client"].client is igwn_alert.client


def test_1_2_from_import_gives_the_class():
    import igwn_alert
    from igwn_alert import client

    assert client is igwn_alert.client


def test_1_2_patching_class_open_intercepts_what_the_client_uses():
    """Patching ``igwn_alert.client.client.open`` must intercept connect()."""
    from unittest import mock

    import igwn_alert

    with mock.patch("igwn_alert.client.client.open") as opened:
        c = igwn_alert.client(noauth=True, server="kafka://test.server", port=1234, group="t")
        c.connect("a")
    opened.assert_called_once_with("kafka://test.server:1234/t.a", "w")


def test_1_3_version_module_is_at_least_1_0():
    from igwn_alert.version import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    assert (major, minor) >= (1, 0)


def test_1_4_fake_exceptions_are_kafka_exception_instances_with_fatal_flag():
    from igwn_alert.exceptions import FakeFatalKafkaException, FakeNonFatalKafkaException

    assert isinstance(FakeFatalKafkaException, KafkaException)
    assert isinstance(FakeNonFatalKafkaException, KafkaException)
    assert FakeFatalKafkaException.fatal is True
    assert FakeNonFatalKafkaException.fatal is False


def test_1_4_fake_exceptions_can_be_raised_and_caught_as_kafka_exception():
    from igwn_alert.exceptions import FakeFatalKafkaException

    with pytest.raises(KafkaException) as info:
        raise FakeFatalKafkaException
    assert info.value.fatal is True


def test_1_5_tool_main_is_callable_with_args():
    import inspect

    tool = importlib.import_module("igwn_alert.tool")

    assert callable(tool.main)
    params = inspect.signature(tool.main).parameters
    assert list(params) == ["args"]
    assert params["args"].default is None


def test_1_5_console_script_is_declared():
    """The console script ``igwn-alert`` points at ``igwn_alert.tool:main``."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    text = pyproject.read_text()
    assert 'igwn-alert = "igwn_alert.tool:main"' in text
