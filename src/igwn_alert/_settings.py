"""The settings every client keeps, checked as the reference client checks them."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Optional

from hop.io import StartPosition

from ._topics import parse_server, strip_password

__all__ = ["ClientSettings", "stream_options"]


def _require(condition: bool, message: str) -> None:
    # An explicit check, not `assert`, so that it also fires under `python -O`.
    if not condition:
        raise AssertionError(message)


class ClientSettings:
    """The attributes a client keeps (see :meth:`_apply_settings`)."""

    server: str
    port: int
    _server_username: Optional[str]
    group_prefix: str
    consumer_group: Optional[str]
    batch_size: int
    batch_timeout: timedelta
    retry_on_fatal: bool
    listen_retries: int
    retry_wait: float
    jsonpp_on: bool
    stop_listening: threading.Event
    listening: threading.Event
    base_url_prefix: str
    sessions: dict[str, Any]
    _publishers: dict[str, Any]

    def _apply_settings(
        self,
        *,
        server: str,
        port: int,
        group: str,
        consumer_group: Optional[str],
        batch_size: int,
        batch_timeout: timedelta,
        retry_on_fatal: bool,
        listen_retries: int,
        retry_wait: float,
        jsonpp_on: bool,
    ) -> None:
        """Check a client's arguments and set its attributes.

        Sets ``server``, ``port``, ``group_prefix``, ``consumer_group``, ``batch_size``,
        ``batch_timeout``, ``retry_on_fatal``, ``listen_retries``, ``retry_wait``,
        ``jsonpp_on``, ``stop_listening`` and ``listening`` (events), ``base_url_prefix``,
        and empty ``sessions`` and ``_publishers``.

        Parameters
        ----------
        server, port, group, consumer_group, batch_size, batch_timeout, retry_on_fatal, \
    listen_retries, retry_wait, jsonpp_on
            As for :class:`igwn_alert.client`.

        Raises
        ------
        AssertionError
            If ``server`` or ``group`` is not a str, or ``port`` not an int (also under -O).
        ValueError
            If ``server`` is not a usable ``kafka://host[:port]/`` (a bare host or
            ``host:port`` is taken as one), or ``port`` disagrees with the URL's port (see
            :func:`igwn_alert._topics.parse_server`).

        Notes
        -----
        ``port`` is the port to use: the URL's when ``port`` was not given. ``server`` is
        kept as given, except that a password in it is removed (with a warning: it is
        never used, as in hop, and never shown).
        """
        _require(isinstance(server, str), f'"server" must be str, not {type(server)}')
        _require(
            isinstance(port, int) and not isinstance(port, bool),
            f'"port" must be int, not {type(port)}',
        )
        _require(isinstance(group, str), f'"group" must be str, not {type(group)}')
        address = parse_server(server, port)
        if address.has_password:
            warnings.warn(
                "the password in the server URL is ignored: give the credential with "
                "username and password, auth, authfile or hop's auth.toml",
                UserWarning,
                stacklevel=4,
            )
            server = strip_password(server)
        self.server = server
        self.port = address.port
        self._server_username = address.username
        self.group_prefix = group
        self.consumer_group = consumer_group
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.retry_on_fatal = retry_on_fatal
        self.listen_retries = listen_retries
        self.retry_wait = retry_wait
        self.jsonpp_on = jsonpp_on
        self.stop_listening = threading.Event()
        self.listening = threading.Event()
        self.base_url_prefix = f"kafka://{address.bootstrap}{address.path}{group}"
        self.sessions = {}
        self._publishers = {}


def stream_options(stream: Any, mode: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the hop ``Stream`` settings that ``stream.open(url, mode, **kwargs)`` applies.

    hop's :class:`hop.io.Stream` keeps ``start_at`` and ``until_eos`` as attributes that
    every stream opened for reading uses (``c.start_at = StartPosition.EARLIEST`` replays),
    and ``open(..., produce_timeout=...)`` bounds each write. An argument of ``open()``
    wins over the attribute.

    Parameters
    ----------
    stream : hop.io.Stream
        The client (its ``start_at`` and ``until_eos``; hop's defaults if it has none).
    mode : {"r", "w"}
        The mode of the stream.
    kwargs : mapping
        The keyword arguments ``open()`` was given.

    Returns
    -------
    dict
        For "r": ``start_at`` (a :class:`hop.io.StartPosition`, a
        :class:`datetime.datetime` or explicit positions) and ``until_eos`` (bool). For
        "w": ``produce_timeout`` (a :class:`datetime.timedelta`; zero means no limit, as
        in hop), if given.

    Raises
    ------
    TypeError
        If a setting has the wrong type.
    ValueError
        If ``produce_timeout`` is negative.
    """
    if mode == "r":
        start_at = kwargs.get("start_at")
        if start_at is None:
            start_at = getattr(stream, "start_at", None)
        if start_at is None:
            start_at = StartPosition.LATEST
        if not isinstance(start_at, (StartPosition, datetime, dict)):
            raise TypeError(
                "start_at must be a hop.io.StartPosition, a datetime or a dict of positions, "
                f"not {type(start_at).__name__}"
            )
        until_eos = kwargs.get("until_eos", getattr(stream, "until_eos", False))
        if not isinstance(until_eos, bool):
            raise TypeError(f"until_eos must be True or False, not {type(until_eos).__name__}")
        return {"start_at": start_at, "until_eos": until_eos}
    if mode == "w":
        if kwargs.get("produce_timeout") is None:
            return {}
        timeout = kwargs["produce_timeout"]
        if not isinstance(timeout, timedelta):
            raise TypeError(
                f"produce_timeout must be a datetime.timedelta, not {type(timeout).__name__}"
            )
        if timeout < timedelta(0):
            raise ValueError(f"produce_timeout must not be negative, not {timeout}")
        return {"produce_timeout": timeout}
    return {}
