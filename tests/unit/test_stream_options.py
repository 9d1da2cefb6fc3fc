"""hop's Stream settings that open() applies (issue 11 item 6, the part before the reader).

Boundary: none; the function reads the client's attributes and open()'s keyword arguments.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hop.io import StartPosition

from igwn_alert import client
from igwn_alert._settings import stream_options

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def c():
    return client(noauth=True)


def test_hop_defaults(c):
    assert stream_options(c, "r", {}) == {"start_at": StartPosition.LATEST, "until_eos": False}
    assert stream_options(c, "w", {}) == {}


def test_client_attributes_are_applied(c):
    c.start_at = StartPosition.EARLIEST
    c.until_eos = True
    assert stream_options(c, "r", {}) == {"start_at": StartPosition.EARLIEST, "until_eos": True}


def test_open_arguments_win(c):
    c.start_at = StartPosition.EARLIEST
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert stream_options(c, "r", {"start_at": when})["start_at"] == when
    positions = {("gracedb.superevent", 0): 5}
    assert stream_options(c, "r", {"start_at": positions})["start_at"] == positions
    assert stream_options(c, "r", {"until_eos": True})["until_eos"] is True


def test_produce_timeout(c):
    got = stream_options(c, "w", {"produce_timeout": timedelta(seconds=3)})
    assert got == {"produce_timeout": timedelta(seconds=3)}
    assert stream_options(c, "w", {"produce_timeout": timedelta(0)}) == {
        "produce_timeout": timedelta(0)
    }


@pytest.mark.parametrize(
    ("mode", "kwargs", "error"),
    [
        ("r", {"start_at": "earliest"}, TypeError),
        ("r", {"until_eos": 1}, TypeError),
        ("w", {"produce_timeout": 3}, TypeError),
        ("w", {"produce_timeout": timedelta(seconds=-1)}, ValueError),
    ],
)
def test_bad_settings_are_clear_errors(c, mode, kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        stream_options(c, mode, kwargs)


def test_a_client_without_hop_attributes_gets_hop_defaults():
    class Bare:
        pass

    assert stream_options(Bare(), "r", {}) == {
        "start_at": StartPosition.LATEST,
        "until_eos": False,
    }
