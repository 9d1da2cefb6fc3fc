"""Contract section 7: get_topics(group=None).

Boundary: the ``hop.list_topics`` module attribute.
"""

from __future__ import annotations

from unittest import mock

import pytest
from hop.auth import Auth

from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")

BROKER_TOPICS = {
    "gracedb.superevent": "==",
    "gracedb-playground.superevent": "==",
    "test-gracedb.x": "==",
    "gracedb.cbc.gstlal": "==",
    "gracedbx.y": "==",
    "other.gracedb.z": "==",
    "gracedb.burst.cwb": "==",
    "gracedb.": "==",
}


def patched_list_topics(topics=BROKER_TOPICS):
    fake = mock.MagicMock(name="hop.list_topics")
    fake.list_topics = mock.MagicMock(return_value=dict(topics))
    return mock.patch("hop.list_topics", fake), fake


def test_7_1_short_names_of_the_group_in_broker_order():
    patcher, _fake = patched_list_topics()
    c = client(noauth=True, server="kafka://test.server", port=1234, group="gracedb")
    with patcher:
        topics = c.get_topics()
    assert topics == ["superevent", "cbc.gstlal", "burst.cwb"]


def test_7_1_exact_group_prefix_not_substring():
    patcher, _ = patched_list_topics()
    c = client(noauth=True, group="gracedb")
    with patcher:
        topics = c.get_topics()
    assert "x" not in topics  # test-gracedb.x belongs to group test-gracedb
    assert "y" not in topics
    assert "gracedb.z" not in topics and "z" not in topics


def test_7_1_group_argument_overrides_clients_group():
    patcher, _ = patched_list_topics()
    c = client(noauth=True, group="gracedb")
    with patcher:
        assert c.get_topics("gracedb-playground") == ["superevent"]
        assert c.get_topics(group="test-gracedb") == ["x"]


def test_7_1_group_with_no_topics_is_empty():
    patcher, _ = patched_list_topics()
    c = client(noauth=True, group="nobody")
    with patcher:
        assert c.get_topics() == []


def test_7_1_broker_order_kept_not_sorted():
    topics = {"g.zeta": 1, "g.alpha": 1, "g.mu": 1}
    patcher, _ = patched_list_topics(topics)
    c = client(noauth=True, group="g")
    with patcher:
        assert c.get_topics() == ["zeta", "alpha", "mu"]


def test_7_2_list_topics_called_by_keyword_with_url_and_auth_at_call_time():
    c = client(noauth=True, server="kafka://test.server/", port=1234, group="gracedb")
    patcher, fake = patched_list_topics()  # patched after the client was made
    with patcher:
        c.get_topics()
    fake.list_topics.assert_called_once()
    kwargs = fake.list_topics.call_args.kwargs
    assert "url" in kwargs and "auth" in kwargs
    assert "test.server" in kwargs["url"]
    assert ":1234" in kwargs["url"]  # the client's port, not the default
    assert not kwargs["auth"]


def test_7_2_list_topics_gets_the_clients_credential():
    cred = Auth("alice", "pw")
    c = client(auth=cred, server="kafka://test.server/", port=1234, group="gracedb")
    patcher, fake = patched_list_topics()
    with patcher:
        c.get_topics()
    assert fake.list_topics.call_args.kwargs["auth"] is cred


def test_7_2_list_topics_gets_one_credential_from_a_list():
    cred = Auth("alice", "pw")
    c = client(auth=[cred], server="kafka://test.server/", port=1234, group="gracedb")
    patcher, fake = patched_list_topics()
    with patcher:
        c.get_topics()
    assert fake.list_topics.call_args.kwargs["auth"] is cred
