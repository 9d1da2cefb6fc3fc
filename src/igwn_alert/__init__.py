"""igwn_alert: receive and send GraceDB alerts over Kafka (SCIMMA Hopskotch).

A drop-in replacement for the reference ``igwn_alert`` client: ``import igwn_alert`` gives
the :class:`~igwn_alert.client.client` class (as ``igwn_alert.client``) and the defaults,
and :class:`~igwn_alert.Alert`, what an ``on_failure`` handler of ``listen()`` receives.
"""

from ._alert import Alert
from .client import (
    DEFAULT_GROUP,
    DEFAULT_LISTEN_RETRIES,
    DEFAULT_PORT,
    DEFAULT_RETRY_WAIT,
    DEFAULT_SERVER,
    client,
)
from .version import __version__

# ``igwn_alert.client`` is the class (the reference's import surface), which hides the
# module of the same name. ``mock.patch("igwn_alert.client.client.open")`` then looks up
# ``client`` on the class: on Python 3.11+ unittest.mock resolves the name with
# pkgutil.resolve_name and finds the module, but on 3.9 and 3.10 it walks attributes and
# fails with "'igwn_alert.client' is not a package". The class naming itself makes that
# walk end at the class, whose ``open`` is what the client really uses.
client.client = client  # type: ignore[attr-defined]

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_LISTEN_RETRIES",
    "DEFAULT_PORT",
    "DEFAULT_RETRY_WAIT",
    "DEFAULT_SERVER",
    "Alert",
    "__version__",
    "client",
]
