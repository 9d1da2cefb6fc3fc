"""The command line's additions, without a broker (the end-to-end runs against the real
broker are in tests/integration/test_cli_options.py).

Boundary: ``igwn_alert.tool.client`` and ``igwn_alert.tool.probe``, as in
test_contract_9_cli.py, so that the parsed options can be looked at.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from unittest import mock

import pytest
from hop.models import Blob

from igwn_alert import tool

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    for name in tool.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    state = SimpleNamespace(instances=[])

    def make_client(*args, **kwargs):
        instance = mock.MagicMock(name="client()")
        instance.server = kwargs["server"]
        instance.port = kwargs["port"]
        instance.group_prefix = kwargs["group"]
        instance.consumer_group = kwargs.get("consumer_group")
        instance.auth = None
        instance.listening = threading.Event()
        instance.kwargs = kwargs
        state.instances.append(instance)
        return instance

    with (
        mock.patch.object(tool, "client", side_effect=make_client),
        mock.patch.object(
            tool, "probe", side_effect=lambda *a, **k: {"gracedb.superevent": object()}
        ),
    ):
        yield state


def run(args: list[str]) -> int:
    try:
        return tool.main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def test_environment_fills_what_no_option_gives(cli, monkeypatch):
    monkeypatch.setenv("IGWN_ALERT_SERVER", "kafka://kafka.example:9093")
    monkeypatch.setenv("IGWN_ALERT_GROUP", "gracedb-playground")
    monkeypatch.setenv("IGWN_ALERT_CONSUMER_GROUP", "from-env")
    assert run(["--no-auth", "topics"]) == 0
    kw = cli.instances[0].kwargs
    assert (kw["server"], kw["port"], kw["group"], kw["consumer_group"]) == (
        "kafka://kafka.example:9093",
        9093,
        "gracedb-playground",
        "from-env",
    )


def test_options_win_over_the_environment(cli, monkeypatch):
    monkeypatch.setenv("IGWN_ALERT_SERVER", "kafka://kafka.example:9093")
    monkeypatch.setenv("IGWN_ALERT_GROUP", "gracedb-playground")
    monkeypatch.setenv("IGWN_ALERT_CONSUMER_GROUP", "from-env")
    args = ["--no-auth", "-s", "kafka://other/", "-p", "9000", "-g", "gracedb", "-c", "mine"]
    assert run([*args, "topics"]) == 0
    kw = cli.instances[0].kwargs
    assert (kw["server"], kw["port"], kw["group"], kw["consumer_group"]) == (
        "kafka://other/",
        9000,
        "gracedb",
        "mine",
    )


def test_empty_variable_counts_as_unset(cli, monkeypatch):
    monkeypatch.setenv("IGWN_ALERT_GROUP", "  ")
    assert run(["--no-auth", "topics"]) == 0
    assert cli.instances[0].kwargs["group"] == "gracedb"


def test_bad_log_level_variable_is_a_usage_error(cli, monkeypatch, capsys):
    monkeypatch.setenv("IGWN_ALERT_LOG_LEVEL", "loud")
    assert run(["--no-auth", "topics"]) == 2
    assert "IGWN_ALERT_LOG_LEVEL" in capsys.readouterr().err
    assert cli.instances == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "three", "topics"], "argument -t/--listen_retries: not a whole number: 'three'"),
        (["-t", "-1", "topics"], "argument -t/--listen_retries: must not be negative: -1"),
        (["listen", "--count", "0"], "argument --count: must be at least 1: 0"),
        (["listen", "--count", "two"], "argument --count: not a whole number: 'two'"),
        (["lag", "-c", "grp", "--warn", "-1"], "argument --warn: must not be negative: -1"),
        (["lag", "-c", "grp", "--critical", "x"], "argument --critical: not a whole number: 'x'"),
    ],
    ids=["retries-word", "retries-negative", "count-0", "count-word", "warn", "critical"],
)
def test_a_bad_whole_number_option_names_the_option_and_the_problem(cli, capsys, args, message):
    assert run(["--no-auth", *args]) == 2
    assert message in capsys.readouterr().err
    assert cli.instances == []


def test_x_settings_become_config(cli):
    args = ["--no-auth", "-X", "session.timeout.ms=6000", "-X", "client.id=a=b", "topics"]
    assert run(args) == 0
    assert cli.instances[0].kwargs["config"] == {
        "session.timeout.ms": "6000",
        "client.id": "a=b",  # split at the first '=' only
    }


def test_no_x_setting_passes_no_config(cli):
    assert run(["--no-auth", "topics"]) == 0
    assert "config" not in cli.instances[0].kwargs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["--count", "3"], {"max_messages": 3}),
        (["--until-eos"], {"until_eos": True}),
    ],
    ids=["plain", "count", "until-eos"],
)
def test_listen_stop_options_reach_listen(cli, args, expected):
    assert run(["--no-auth", "listen", *args, "superevent"]) == 0
    call = cli.instances[0].listen.call_args
    assert call.args[1] == ["superevent"]
    assert {k: v for k, v in call.kwargs.items() if k != "since"} == expected


def test_send_several_files_and_a_bad_one_sends_nothing(cli, tmp_path, capsys):
    first, second = tmp_path / "a1.json", tmp_path / "a2.json"
    first.write_text('{"uid": "A1"}')
    second.write_text('{"uid": "A2"}')
    assert run(["--no-auth", "send", "superevent", str(first), str(second)]) == 0
    sent = [c.kwargs["msg"] for c in cli.instances[0].publish.call_args_list]
    assert sent == ['{"uid": "A1"}', '{"uid": "A2"}']
    assert run(["--no-auth", "send", "superevent", str(first), str(tmp_path / "nope")]) == 1
    assert len(cli.instances) == 1  # no client was even made for the second command
    assert "nope" in capsys.readouterr().err


def test_send_stdin_lines(cli, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO('{"uid": "L1"}\n\n{"uid": "L2"}\n'))
    assert run(["--no-auth", "send", "--lines", "superevent", "-"]) == 0
    sent = [c.kwargs["msg"] for c in cli.instances[0].publish.call_args_list]
    assert sent == ['{"uid": "L1"}', '{"uid": "L2"}']


def test_global_port_reaches_serve(monkeypatch):
    seen = {}

    def fake_serve(port=None, stream=None):
        seen["port"] = port

    monkeypatch.setattr("igwn_alert.testing._embedded_broker.serve", fake_serve)
    assert run(["-p", "19093", "serve"]) == 0
    assert seen["port"] == 19093
    assert run(["-p", "19093", "serve", "--port", "19094"]) == 0
    assert seen["port"] == 19094  # the sub-command's own option wins
    assert run(["serve"]) == 0
    assert seen["port"] is None  # no -p: a free port, not 9092


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"uid": "S1"}', {"payload": {"uid": "S1"}}),
        ({"uid": "S2"}, {"payload": {"uid": "S2"}}),
        ("not json", {"payload": "not json"}),
        (Blob(b'{"uid": "RAW"}'), {"payload": {"uid": "RAW"}}),
        (b"\xff\xfe", {"payload_base64": "//4="}),
    ],
    ids=["json-text", "dict", "text", "blob", "binary"],
)
def test_json_line(payload, expected):
    metadata = SimpleNamespace(topic="gracedb.superevent", partition=2, offset=7, timestamp=99)
    record = json.loads(tool._json_line("ignored", payload, metadata))
    assert record == {
        "topic": "gracedb.superevent",
        "partition": 2,
        "offset": 7,
        "timestamp": 99,
        **expected,
    }


def test_json_line_without_metadata_has_nulls():
    record = json.loads(tool._json_line("gracedb.superevent", "{}", None))
    assert record == {
        "topic": "gracedb.superevent",
        "partition": None,
        "offset": None,
        "timestamp": None,
        "payload": {},
    }
