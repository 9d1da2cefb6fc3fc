"""Contract section 9: the command line ``igwn-alert`` (``igwn_alert.tool.main``).

Boundary: the tool's collaborators ``igwn_alert.tool.client`` (the client class) and
``igwn_alert.tool.probe`` (the broker check), so that nothing reaches the network.
Credential files are real files in an isolated HOME.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from unittest import mock

import pytest

from igwn_alert import tool
from igwn_alert.exceptions import (
    AuthenticationError,
    BrokerUnreachableError,
    FakeFatalKafkaException,
)
from igwn_alert.version import __version__

pytestmark = pytest.mark.usefixtures("isolated_home")

SECRET = "cli-pw-9x8y-secret"


@pytest.fixture
def cli():
    """Patch the tool's client class and probe; return what the test needs to look at."""
    state = SimpleNamespace(instances=[], topics={})

    def make_client(*args, **kwargs):
        instance = mock.MagicMock(name="client()")
        instance.server = kwargs.get("server", "kafka://kafka.scimma.org/")
        instance.port = kwargs.get("port", 9092)
        instance.group_prefix = kwargs.get("group", "gracedb")
        instance.auth = None
        instance.consumer_group = kwargs.get("consumer_group")
        instance.listening = threading.Event()  # never set: no status line
        instance.kwargs = kwargs
        state.instances.append(instance)
        return instance

    with (
        mock.patch.object(tool, "client", side_effect=make_client) as cls,
        mock.patch.object(tool, "probe", side_effect=lambda *a, **k: dict(state.topics)) as probe,
    ):
        state.cls = cls
        state.probe = probe
        yield state


def run(args):
    """Run main(args); return its exit status whether it returns or raises SystemExit."""
    try:
        status = tool.main(args)
    except SystemExit as exc:
        code = exc.code
        return 0 if code is None else code if isinstance(code, int) else 1
    return 0 if status is None else status


def built(cli):
    assert len(cli.instances) == 1, "the client was not built exactly once"
    return cli.instances[0].kwargs


def assert_one_line_error(capsys, status, *must_contain):
    out, err = capsys.readouterr()
    assert status != 0
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in must_contain:
        assert text in lines[0], lines[0]
    return lines[0]


# -- options ---------------------------------------------------------------------------------


def test_9_1_defaults(cli):
    cli.instances.clear()
    assert run(["topics"]) == 0
    kw = built(cli)
    assert kw["server"] == "kafka://kafka.scimma.org/"
    assert kw["port"] == 9092
    assert kw["group"] == "gracedb"
    assert kw.get("consumer_group") is None
    assert kw.get("retry_on_fatal") is False
    assert kw.get("listen_retries") == 3
    assert kw.get("retry_wait") == 0.1
    assert kw.get("jsonpp_on") is False


@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_9_1_every_option_parsed(cli, long):
    opts = {
        "-g": ("--group", "gracedb-playground"),
        "-c": ("--consumer-group", "my-group"),
        "-l": ("--log", "debug"),
        "-p": ("--port", "9093"),
        "-s": ("--server", "kafka://kafka.example/"),
        "-t": ("--listen_retries", "5"),
        "-w": ("--retry_wait", "0.5"),
    }
    flags = {"-j": "--jsonpp", "-r": "--retry-on-fatal"}
    args = ["--no-auth"]
    for short, (longname, value) in opts.items():
        args += [longname if long else short, value]
    for short, longname in flags.items():
        args.append(longname if long else short)
    assert run([*args, "topics"]) == 0
    kw = built(cli)
    assert kw["group"] == "gracedb-playground"
    assert kw["consumer_group"] == "my-group"
    assert kw["server"] == "kafka://kafka.example/"
    assert kw["port"] == 9093 and type(kw["port"]) is int
    assert kw["listen_retries"] == 5 and type(kw["listen_retries"]) is int
    assert kw["retry_wait"] == 0.5 and isinstance(kw["retry_wait"], float)
    assert kw["jsonpp_on"] is True
    assert kw["retry_on_fatal"] is True
    assert kw.get("noauth") is True or kw.get("auth") is False


@pytest.mark.parametrize(
    "args",
    [["-p", "ninety"], ["-t", "three"], ["-w", "soon"], ["-l", "loud"]],
    ids=["port", "listen_retries", "retry_wait", "log"],
)
def test_9_1_bad_option_value_is_usage_error(cli, capsys, args):
    assert run([*args, "topics"]) == 2
    assert "usage" in capsys.readouterr().err.lower()
    assert cli.instances == []


def test_9_1_version(cli, capsys):
    assert run(["-V"]) == 0
    out, _ = capsys.readouterr()
    assert __version__ in out
    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


# -- sub-commands ----------------------------------------------------------------------------


def test_9_2_topics_output_format(cli, capsys):
    def make(*args, **kwargs):
        instance = mock.MagicMock()
        instance.server, instance.port = kwargs["server"], kwargs["port"]
        instance.group_prefix, instance.auth = kwargs["group"], None
        instance.consumer_group, instance.listening = None, threading.Event()
        instance.get_topics.return_value = ["superevent", "cbc.gstlal"]
        return instance

    cli.cls.side_effect = make
    assert run(["--no-auth", "-g", "gracedb-test", "topics"]) == 0
    out, _err = capsys.readouterr()
    assert out == (
        "Topics for group gracedb-test associated with the current credential:\n"
        "superevent\ncbc.gstlal\n"
    )


@pytest.mark.parametrize(
    ("topics", "expected"), [([], None), (["superevent", "cbc"], ["superevent", "cbc"])]
)
def test_9_2_listen_topics(cli, topics, expected):
    cli.topics = {"gracedb.superevent": object(), "gracedb.cbc": object()}
    assert run(["--no-auth", "listen", *topics]) == 0
    listen = cli.instances[0].listen
    listen.assert_called_once()
    call = listen.call_args
    got_callback = call.kwargs.get("callback", call.args[0] if call.args else None)
    assert got_callback is None
    got = call.kwargs.get("topic", call.args[1] if len(call.args) > 1 else None)
    if expected is None:
        assert not got  # no topic means every topic
    else:
        assert list(got) == expected


def test_9_2_send_publishes_file_text_as_str(cli, tmp_path, fakes):
    alert = {"superevent_id": "S230101a", "alert_type": "new", "object": {"far": 1e-9}}
    text = json.dumps(alert, indent=2) + "\n"
    path = tmp_path / "alert.json"
    path.write_text(text)
    cli.topics = {"gracedb.superevent": object()}
    assert run(["--no-auth", "send", "superevent", str(path)]) == 0
    publish = cli.instances[0].publish
    publish.assert_called_once()
    kwargs = publish.call_args.kwargs
    msg = kwargs.get("msg", publish.call_args.args[1] if len(publish.call_args.args) > 1 else None)
    topic = kwargs.get("topic", publish.call_args.args[0] if publish.call_args.args else None)
    assert isinstance(msg, str)
    assert msg == text  # not JSON-encoded a second time
    assert json.loads(msg) == alert
    assert topic in ("superevent", ["superevent"], ("superevent",))


def test_9_2_send_unknown_topic_one_line_error(cli, tmp_path, capsys):
    path = tmp_path / "alert.json"
    path.write_text("{}")
    cli.topics = {"gracedb.superevent": object()}
    status = run(["--no-auth", "send", "nosuch", str(path)])
    assert_one_line_error(capsys, status, "nosuch")
    cli.instances[0].publish.assert_not_called()


def test_9_2_send_missing_file_one_line_error(cli, tmp_path, capsys):
    cli.topics = {"gracedb.superevent": object()}
    status = run(["--no-auth", "send", "superevent", str(tmp_path / "missing.json")])
    assert_one_line_error(capsys, status, "missing.json")


@pytest.mark.parametrize("command", ["subscriptions", "unsubscribe"])
def test_9_2_deprecated_commands_say_so(cli, capsys, command):
    run([command])
    out, err = capsys.readouterr()
    assert "deprecated" in (out + err).lower()
    assert "Traceback" not in out + err


# -- credentials -----------------------------------------------------------------------------


def test_9_3_netrc_file_option_reads_that_file(cli, tmp_path, fakes):
    path = fakes.write_private(
        tmp_path / "my-netrc", f"machine kafka.scimma.org login nina password {SECRET}\n"
    )
    assert run(["-n", str(path), "topics"]) == 0
    auth = built(cli)["auth"]
    assert auth.username == "nina"
    assert auth.password == SECRET


def test_9_3_netrc_file_option_exact_server_string(cli, tmp_path, fakes):
    path = fakes.write_private(
        tmp_path / "my-netrc", f"machine kafka://kafka.test/ login nina password {SECRET}\n"
    )
    assert run(["-n", str(path), "-s", "kafka://kafka.test/", "topics"]) == 0
    assert built(cli)["auth"].username == "nina"


def test_9_3_netrc_file_option_beats_home_netrc(cli, tmp_path, fakes, isolated_home):
    fakes.write_private(
        isolated_home / ".netrc", "machine kafka.scimma.org login home-user password x\n"
    )
    path = fakes.write_private(
        tmp_path / "my-netrc", f"machine kafka.scimma.org login nina password {SECRET}\n"
    )
    assert run(["-n", str(path), "topics"]) == 0
    assert built(cli)["auth"].username == "nina"


def test_9_3_netrc_file_missing_one_line_error(cli, tmp_path, capsys):
    status = run(["-n", str(tmp_path / "nope"), "topics"])
    assert_one_line_error(capsys, status, "nope")


def test_9_3_netrc_file_without_entry_one_line_error(cli, tmp_path, fakes, capsys):
    path = fakes.write_private(tmp_path / "my-netrc", "machine other.host login a password b\n")
    status = run(["-n", str(path), "topics"])
    assert_one_line_error(capsys, status)


def test_9_3_malformed_netrc_error_does_not_leak_password(cli, tmp_path, fakes, capsys):
    path = fakes.write_private(
        tmp_path / "my-netrc", f"machine kafka.scimma.org login nina password {SECRET} junk\n"
    )
    status = run(["-n", str(path), "topics"])
    line = assert_one_line_error(capsys, status)
    assert SECRET not in line


def test_9_3_username_selects_that_users_credential(cli, isolated_home, fakes):
    fakes.write_hop_auth(
        isolated_home,
        [
            {"username": "alice", "password": "pw-a", "hostname": "kafka.scimma.org"},
            {"username": "bob", "password": SECRET, "hostname": "kafka.scimma.org"},
        ],
    )
    assert run(["-u", "bob", "topics"]) == 0
    auth = built(cli)["auth"]
    assert auth.username == "bob"
    assert auth.password == SECRET


def test_9_3_username_with_netrc_file(cli, tmp_path, fakes):
    path = fakes.write_private(
        tmp_path / "my-netrc", f"machine kafka.scimma.org login nina password {SECRET}\n"
    )
    assert run(["-n", str(path), "-u", "nina", "topics"]) == 0
    assert built(cli)["auth"].username == "nina"


def test_9_3_unknown_username_one_line_error(cli, isolated_home, fakes, capsys):
    fakes.write_hop_auth(
        isolated_home, [{"username": "alice", "password": SECRET, "hostname": "kafka.scimma.org"}]
    )
    status = run(["-u", "mallory", "topics"])
    line = assert_one_line_error(capsys, status, "mallory")
    assert SECRET not in line


# -- Ctrl-C and errors -----------------------------------------------------------------------


def test_9_4_keyboard_interrupt_exits_quietly_with_status_0(cli, capsys):
    def make(*args, **kwargs):
        instance = mock.MagicMock()
        instance.server, instance.port = kwargs["server"], kwargs["port"]
        instance.group_prefix, instance.auth = kwargs["group"], None
        instance.consumer_group, instance.listening = None, threading.Event()
        instance.listen.side_effect = KeyboardInterrupt
        return instance

    cli.cls.side_effect = make
    assert run(["--no-auth", "listen"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (AuthenticationError("the broker refused the credential"), "refused"),
        (BrokerUnreachableError("cannot reach the Kafka broker at x:9092"), "cannot reach"),
    ],
    ids=["bad-credential", "unreachable"],
)
def test_9_4_broker_errors_one_line_non_zero(cli, capsys, exc, text):
    cli.probe.side_effect = exc
    status = run(["--no-auth", "topics"])
    assert_one_line_error(capsys, status, text)


def test_9_4_unknown_listen_topic_one_line_non_zero(cli, capsys):
    cli.topics = {"gracedb.superevent": object()}
    status = run(["--no-auth", "listen", "nosuch"])
    assert_one_line_error(capsys, status, "nosuch")
    cli.instances[0].listen.assert_not_called()


def test_9_4_fatal_kafka_error_while_listening_one_line_non_zero(cli, capsys):
    def make(*args, **kwargs):
        instance = mock.MagicMock()
        instance.server, instance.port = kwargs["server"], kwargs["port"]
        instance.group_prefix, instance.auth = kwargs["group"], None
        instance.consumer_group, instance.listening = None, threading.Event()
        instance.listen.side_effect = FakeFatalKafkaException
        return instance

    cli.cls.side_effect = make
    status = run(["--no-auth", "listen"])
    assert_one_line_error(capsys, status)
