"""librdkafka settings shared by the client's readers and writers."""

from __future__ import annotations

import logging
from typing import Any, Optional

__all__ = ["DebugLog", "base_config", "credential_config", "rdkafka_logger"]

#: librdkafka's own log lines go to this logger, at debug level: the client reports the
#: errors that matter itself (once per outage), through ``error_cb``.
rdkafka_logger = logging.getLogger("igwn_alert.rdkafka")


class DebugLog:
    """A logger for librdkafka (its ``logger`` setting) that files every line at debug level."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        """File one librdkafka log line at debug level.

        Parameters
        ----------
        level : int
            librdkafka's (syslog) level, ignored.
        msg : str
            The format string.
        *args
            Its arguments.
        """
        if rdkafka_logger.isEnabledFor(logging.DEBUG):
            rdkafka_logger.debug(msg, *args)


_RDKAFKA_LOG = DebugLog()


def credential_config(credential: Any) -> dict[str, Any]:
    """Return the librdkafka settings of a hop credential (empty for none).

    Parameters
    ----------
    credential : hop.auth.Auth or None
        The credential; calling it gives its librdkafka settings.

    Returns
    -------
    dict
        ``security.protocol``, ``sasl.*`` and ``ssl.*`` settings.
    """
    if credential is None or credential is False:
        return {}
    return dict(credential())


def base_config(
    bootstrap: str, credential: Any, extra: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """Return the settings every client of ours starts from.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    credential : hop.auth.Auth or None
        The credential to authenticate with.
    extra : dict, optional
        Settings that override the defaults.

    Returns
    -------
    dict
        A librdkafka configuration.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": _RDKAFKA_LOG,
        # the first connection to the broker learned from the bootstrap one waits this long:
        # 100 ms (the default) -> 20 ms cut listen() start-up from 55 ms to 16 ms here
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 2000,
        "socket.keepalive.enable": True,
        "client.id": "igwn-alert",
    }
    config.update(credential_config(credential))
    if extra:
        config.update(extra)
    return config
