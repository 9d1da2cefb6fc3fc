"""Contract section 4: topic names and URLs."""

from __future__ import annotations

import pytest

from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(params=["kafka://test.server", "kafka://test.server/"], ids=["bare", "slash"])
def test_client(request):
    return client(noauth=True, server=request.param, port=1234, group="test")


def test_4_1_base_url_with_or_without_trailing_slash(test_client):
    assert test_client._construct_base_url() == "kafka://test.server:1234/test"
    assert test_client.base_url_prefix == "kafka://test.server:1234/test"


def test_4_1_base_url_uses_port_argument_not_default():
    c = client(noauth=True, server="kafka://kafka.scimma.org/", port=9093, group="gracedb")
    assert c._construct_base_url() == "kafka://kafka.scimma.org:9093/gracedb"


def test_4_1_base_url_group_with_dash():
    c = client(noauth=True, group="gracedb-playground")
    assert c._construct_base_url() == "kafka://kafka.scimma.org:9092/gracedb-playground"


@pytest.mark.parametrize("topics", ["topic1", ["topic1"]], ids=["str", "list"])
def test_4_2_topic_url_one_topic(test_client, topics):
    assert test_client._construct_topic_url(topics) == "kafka://test.server:1234/test.topic1"


def test_4_2_topic_url_two_topics(test_client):
    assert (
        test_client._construct_topic_url(["topic1", "topic2"])
        == "kafka://test.server:1234/test.topic1,test.topic2"
    )


def test_4_2_topic_url_topic_with_dot():
    c = client(noauth=True, server="kafka://test.server", port=1234, group="gracedb")
    assert c._construct_topic_url("cbc.gstlal") == "kafka://test.server:1234/gracedb.cbc.gstlal"
