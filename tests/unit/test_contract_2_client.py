"""Contract section 2: the client object (class, signature, checks, attributes)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import hop
import pytest

import igwn_alert
from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")

SIGNATURE = [
    ("username", None),
    ("password", None),
    ("auth", None),
    ("authfile", None),
    ("noauth", False),
    ("group", "gracedb"),
    ("consumer_group", None),
    ("server", "kafka://kafka.scimma.org/"),
    ("port", 9092),
    ("batch_size", 1),
    ("batch_timeout", timedelta(seconds=0.2)),
    ("retry_on_fatal", False),
    ("listen_retries", 3),
    ("retry_wait", 0.1),
    ("jsonpp_on", False),
]


def test_2_1_client_subclasses_hop_stream():
    assert issubclass(client, hop.Stream)
    assert isinstance(client(noauth=True), hop.Stream)


def test_2_1_every_stream_goes_through_self_open(patched_open):
    c = client(noauth=True, server="kafka://test.server", port=1234, group="test")
    c.connect(["a", "b"])
    c.publish("c", {"x": 1})
    urls = [call.args[0] for call in patched_open.call_args_list]
    assert urls == [
        "kafka://test.server:1234/test.a",
        "kafka://test.server:1234/test.b",
        "kafka://test.server:1234/test.c",
    ]
    assert all(call.args[1] == "w" for call in patched_open.call_args_list)


def test_2_2_signature_order_and_defaults():
    params = list(inspect.signature(client).parameters.values())
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [(p.name, p.default) for p in positional] == SIGNATURE
    # additions of this client are keyword-only, so positional callers are unaffected
    assert [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY] == ["config"]
    for p in positional:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, p.name


def test_2_2_positional_call_binds_in_order():
    c = client(
        None,  # username
        None,  # password
        None,  # auth
        None,  # authfile
        True,  # noauth
        "grp",  # group
        "cg",  # consumer_group
        "kafka://test.server/",  # server
        1234,  # port
        7,  # batch_size
        timedelta(seconds=3),  # batch_timeout
        True,  # retry_on_fatal
        9,  # listen_retries
        0.5,  # retry_wait
        True,  # jsonpp_on
    )
    assert c.auth_obj is False
    assert c.group_prefix == "grp"
    assert c.consumer_group == "cg"
    assert c.server == "kafka://test.server/"
    assert c.port == 1234
    assert c.batch_size == 7
    assert c.batch_timeout == timedelta(seconds=3)
    assert c.retry_on_fatal is True
    assert c.listen_retries == 9
    assert c.retry_wait == 0.5
    assert c.jsonpp_on is True


def test_2_2_positional_username_password():
    c = client("alice", "s3cret")
    assert c.auth_obj.username == "alice"
    assert c.auth_obj.password == "s3cret"


def test_2_2_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        client(noauth=True, bad_input="is_bad")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server": None},
        {"server": b"kafka://test.server"},
        {"port": "9092"},
        {"port": 9092.0},
        {"group": None},
        {"group": ["gracedb"]},
    ],
    ids=["server-None", "server-bytes", "port-str", "port-float", "group-None", "group-list"],
)
def test_2_3_bad_server_port_group_assertion_error(kwargs):
    with pytest.raises(AssertionError):
        client(noauth=True, **kwargs)


def test_2_3_assertion_errors_fire_under_python_O(tmp_path):
    """The checks are explicit raises: they still fire with assertions disabled."""
    script = textwrap.dedent(
        """
        import sys
        assert False, "assertions are on"
        """
    )
    # first make sure -O really disables assert statements in this interpreter
    off = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True)
    assert off.returncode == 0, off.stderr

    script = textwrap.dedent(
        """
        import igwn_alert
        results = []
        for kwargs in ({"server": None}, {"port": "onetwo"}, {"group": None}):
            try:
                igwn_alert.client(noauth=True, **kwargs)
            except AssertionError:
                results.append("AssertionError")
            except Exception as exc:
                results.append(type(exc).__name__)
            else:
                results.append("no error")
        print(",".join(results))
        print(igwn_alert.__file__)
        """
    )
    package_root = str(Path(igwn_alert.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    run = subprocess.run(
        [sys.executable, "-O", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    results, where = run.stdout.strip().splitlines()[-2:]
    assert Path(where).resolve() == Path(igwn_alert.__file__).resolve()
    assert results == "AssertionError,AssertionError,AssertionError"


def test_2_4_attributes_after_construction():
    c = client(
        noauth=True,
        group="gracedb-playground",
        consumer_group="my-group",
        server="kafka://test.server/",
        port=1234,
        batch_size=5,
        batch_timeout=timedelta(seconds=1),
        retry_on_fatal=True,
        listen_retries=4,
        retry_wait=0.25,
        jsonpp_on=True,
    )
    assert c.server == "kafka://test.server/"
    assert c.port == 1234
    assert c.group_prefix == "gracedb-playground"
    assert c.consumer_group == "my-group"
    assert c.batch_size == 5
    assert c.batch_timeout == timedelta(seconds=1)
    assert c.retry_on_fatal is True
    assert c.listen_retries == 4
    assert c.retry_wait == 0.25
    assert c.jsonpp_on is True
    assert isinstance(c.stop_listening, type(threading.Event()))
    assert not c.stop_listening.is_set()
    assert c.base_url_prefix == "kafka://test.server:1234/gracedb-playground"
    assert c.sessions == {}
    assert isinstance(c.sessions, dict)
    assert c.auth_obj is False
    assert c.auth is None


def test_2_4_default_attributes():
    c = client(noauth=True)
    assert c.server == "kafka://kafka.scimma.org/"
    assert c.port == 9092
    assert c.group_prefix == "gracedb"
    assert c.consumer_group is None
    assert c.batch_size == 1
    assert c.batch_timeout == timedelta(seconds=0.2)
    assert c.retry_on_fatal is False
    assert c.listen_retries == 3
    assert c.retry_wait == 0.1
    assert c.jsonpp_on is False
    assert c.base_url_prefix == "kafka://kafka.scimma.org:9092/gracedb"


def test_2_4_each_client_has_its_own_sessions_and_event():
    a = client(noauth=True)
    b = client(noauth=True)
    assert a.sessions is not b.sessions
    assert a.stop_listening is not b.stop_listening
