"""igwn_alert: receive and send GraceDB alerts over Kafka (SCIMMA Hopskotch).

A drop-in replacement for the reference ``igwn_alert`` client: ``import igwn_alert`` gives
the :class:`~igwn_alert.client.client` class (as ``igwn_alert.client``) and the defaults.
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
