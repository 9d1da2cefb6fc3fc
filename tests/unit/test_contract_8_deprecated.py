"""Contract section 8: deprecated methods warn and do nothing else.

Boundary: ``igwn_alert.client.client.open`` (to show that nothing is opened).
"""

from __future__ import annotations

import warnings

import pytest

from igwn_alert import client

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("get_subscriptions", ()),
        ("subscribe", ()),
        ("subscribe", ("superevent", "cbc")),
        ("unsubscribe", ()),
        ("unsubscribe", ("superevent",)),
        ("delete", ()),
    ],
)
def test_8_deprecated_methods_warn_and_do_nothing(patched_open, method, args):
    c = client(noauth=True, server="kafka://test.server", port=1234, group="test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = getattr(c, method)(*args)
    assert result is None
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "deprecated" in str(caught[0].message).lower()
    patched_open.assert_not_called()
    assert c.sessions == {}
