"""librdkafka settings shared by the client's readers and writers."""

from __future__ import annotations

import logging
from typing import Any, Optional

__all__ = [
    "DebugLog",
    "base_config",
    "check_user_config",
    "credential_config",
    "rdkafka_logger",
    "reader_settings",
]

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


#: librdkafka settings a caller may not override through ``config=``: the client's delivery
#: guarantees (positions stored only after the callback returned), its addressing and its
#: callbacks depend on them.
OWNED_SETTINGS = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "enable.idempotence",
        "error_cb",
        "logger",
        "on_commit",
        "on_delivery",
        "stats_cb",
        "throttle_cb",
        "oauth_cb",
    }
)


def check_user_config(config: Any) -> dict[str, Any]:
    """Check a caller's librdkafka settings (the ``config=`` keyword of the client).

    Parameters
    ----------
    config : mapping or None
        Setting name -> value, as librdkafka names them (``session.timeout.ms``, ...).

    Returns
    -------
    dict
        A copy, with every name a str.

    Raises
    ------
    TypeError
        If ``config`` is not a mapping, or a name is not a str.
    ValueError
        For a setting the client must own (the message names it and why), or a
        credential setting (``sasl.*``, ``security.protocol``: use ``auth=`` instead).
    """
    if config is None:
        return {}
    if not hasattr(config, "items"):
        raise TypeError(f"config must be a mapping of librdkafka settings, not {type(config)}")
    out: dict[str, Any] = {}
    for name, value in config.items():
        if not isinstance(name, str):
            raise TypeError(f"librdkafka setting names are str, not {name!r}")
        key = name.strip()
        if key in OWNED_SETTINGS:
            raise ValueError(
                f"config={{{key!r}: ...}} is not allowed: the client sets {key!r} itself "
                "(its delivery guarantees and error reporting depend on it)"
            )
        if key.startswith("sasl.") or key in ("security.protocol",):
            raise ValueError(
                f"config={{{key!r}: ...}} is not allowed: credentials come from auth=, "
                "username=/password=, hop's auth.toml or netrc"
            )
        out[key] = value
    return out


def reader_settings(*, private: bool, until_eos: bool) -> dict[str, Any]:
    """Return the librdkafka settings of a reader (before ``config=`` is merged).

    Parameters
    ----------
    private : bool
        True for a reader without a consumer group (it never commits).
    until_eos : bool
        Report the end of each partition (for readers that stop there).

    Returns
    -------
    dict
        Settings.
    """
    return {
        # librdkafka commits only what the reader stored: alerts whose callback returned
        "enable.auto.commit": not private,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "latest",
        "allow.auto.create.topics": False,
        "enable.partition.eof": until_eos,
        "topic.metadata.refresh.interval.ms": 5000,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        # a fetch waiting for data returns at once when an alert arrives on Kafka;
        # brokers that do not wake it (librdkafka's mock) answer within this bound
        "fetch.wait.max.ms": 100,
        # catching up on a back-log: librdkafka stops fetching while its pre-fetch queue is
        # full and, by default, looks again only 1 s later, stalling the listener
        # (bench/run.py: replay ~68k -> ~132k alerts/s); 16 MB of pre-fetched alerts
        # (~12,000 GraceDB alerts) keeps the pipe full with a quarter of the default's
        # memory (RSS after 1M alerts: 129 -> 71 MB)
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": 16384,
        "partition.assignment.strategy": "cooperative-sticky",
    }
