"""Topic naming: short names, group-prefixed broker names and ``kafka://`` URLs.

On the broker a GraceDB topic is ``<group>.<topic>`` (``gracedb-playground.superevent``);
users pass and receive the short name (``superevent``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlparse, urlsplit

__all__ = [
    "DEFAULT_PORT",
    "MAX_TOPIC_NAME_LENGTH",
    "ServerAddress",
    "TopicSpec",
    "base_url",
    "bootstrap_address",
    "check_topic_name",
    "full_name",
    "group_topics",
    "normalize_topics",
    "parse_server",
    "port_given",
    "redact_url",
    "server_address",
    "short_name",
    "strip_password",
    "topic_url",
]

#: A topic argument: one short name, or any iterable of short names.
TopicSpec = Union[str, Iterable[str]]

#: Kafka's limit on the length of a topic name (``<group>.<topic>`` in all).
MAX_TOPIC_NAME_LENGTH = 249

_BAD_TOPIC_CHAR = re.compile(r"[^a-zA-Z0-9._-]")


def check_topic_name(name: str, group: Optional[str] = None) -> str:
    """Check a topic name against Kafka's rules; return it unchanged.

    A Kafka topic name is made of ASCII letters, digits, ``.``, ``_`` and ``-``, and is at
    most 249 characters long. A character outside that set (``#``, ``?``, ``,``, ``/``, a
    space, ...) would be cut off or change the meaning of the ``kafka://`` URL the name
    goes into, so it is refused instead.

    Parameters
    ----------
    name : str
        The short topic name (``superevent``), or a full one if ``group`` is None.
    group : str, optional
        The GraceDB group: the full name ``<group>.<name>`` is checked too (its length).

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If ``name`` is empty, contains a character Kafka does not allow, or the full name is
        longer than 249 characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"topic names must be str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError("a topic name must not be empty")
    bad = _BAD_TOPIC_CHAR.search(name)
    if bad is not None:
        raise ValueError(
            f"invalid topic name {name!r}: {bad.group()!r} is not allowed (Kafka topic names "
            "use only ASCII letters, digits, '.', '_' and '-')"
        )
    full = name if group is None else full_name(group, name)
    if group is not None:
        bad = _BAD_TOPIC_CHAR.search(group)
        if bad is not None:
            raise ValueError(
                f"invalid group {group!r}: {bad.group()!r} is not allowed in a topic name"
            )
    if len(full) > MAX_TOPIC_NAME_LENGTH:
        raise ValueError(
            f"topic name {full[:40]!r}... is {len(full)} characters long; Kafka allows at most "
            f"{MAX_TOPIC_NAME_LENGTH}"
        )
    return name


class _DefaultPort(int):
    """The default port 9092, told apart from an explicit ``port=9092``.

    ``client(server="kafka://host:1234/")`` must use port 1234, and ``port=9093`` together
    with that URL is a conflict, so the client has to know whether ``port`` was given. A
    sentinel such as None would change the signature's visible default (downstream code
    and documentation read ``port=9092``), so the default is this ``int``: it equals 9092,
    prints as 9092 and does arithmetic as 9092, and only it (not a literal ``9092``, which
    is a plain ``int``) counts as "not given". ``argparse`` hands a non-str default over as
    it is, so ``-p`` left out on the command line is "not given" as well.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_DefaultPort, (int(self),))


#: The default broker port, 9092 (see :class:`_DefaultPort`: it tells "not given" apart).
DEFAULT_PORT: int = _DefaultPort(9092)

_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/@]*@")


def port_given(port: int) -> bool:
    """Tell whether ``port`` was given explicitly (anything but :data:`DEFAULT_PORT`).

    Parameters
    ----------
    port : int
        A port argument.

    Returns
    -------
    bool
        False only for the default (:data:`DEFAULT_PORT`, or a copy of it).
    """
    return not isinstance(port, _DefaultPort)


def redact_url(url: str) -> str:
    """Return ``url`` with its user information (``user:password@``) replaced by ``***@``.

    Parameters
    ----------
    url : str
        A URL, or a bare ``[user:password@]host[:port]``.

    Returns
    -------
    str
        The URL, safe to put in a message or a log line.
    """
    return _USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", url, count=1)


def strip_password(url: str) -> str:
    """Return ``url`` without the password of its user information (the user name stays).

    Parameters
    ----------
    url : str
        A URL.

    Returns
    -------
    str
        ``kafka://alice@host/`` for ``kafka://alice:secret@host/``; other URLs unchanged.
    """
    match = _USERINFO.match(url)
    if match is None:
        return url
    scheme = match.group(1) or ""
    userinfo = url[len(scheme) : match.end() - 1]
    if ":" not in userinfo:
        return url
    return f"{scheme}{userinfo.split(':', 1)[0]}@{url[match.end() :]}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class ServerAddress:
    """The parts of a server URL (see :func:`parse_server`).

    Attributes
    ----------
    host : str
        The host name, lower case; an IPv6 address without brackets.
    port : int
        The port to use.
    path : str
        The URL's path, ending with ``/``.
    username : str or None
        The user name of the URL's ``user@``, if any (it selects a credential, as in hop).
    has_password : bool
        Whether the URL holds a password (which is never used, shown or logged).
    """

    host: str
    port: int
    path: str
    username: Optional[str]
    has_password: bool

    @property
    def bootstrap(self) -> str:
        """``host:port`` for librdkafka (``[::1]:9092`` for an IPv6 address)."""
        return f"{_bracketed(self.host)}:{self.port}"


def _is_bare_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _check_port(port: int, shown: str) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} of the server {shown} is not a TCP port (1 to 65535)")


def parse_server(server: str, port: int) -> ServerAddress:
    """Parse a client's ``server`` and ``port`` arguments.

    ``kafka://host[:port][/]`` is the form; a bare ``host``, ``host:port`` or IPv6 address
    (``::1``, ``[::1]:9092``) is taken as a ``kafka://`` URL. A port in the URL is used
    when ``port`` is the default (:data:`DEFAULT_PORT`); an explicit ``port`` must agree
    with it. A password in the URL is never put in a message.

    Parameters
    ----------
    server : str
        The server URL.
    port : int
        The ``port`` argument (:data:`DEFAULT_PORT` when not given).

    Returns
    -------
    ServerAddress
        The host, the port to use, the path and the user name.

    Raises
    ------
    ValueError
        For an empty server, another scheme than ``kafka://``, no host name, several
        brokers, a port that is not a number from 1 to 65535, or an explicit ``port``
        that disagrees with the URL's.
    """
    text = server.strip()
    shown = repr(redact_url(text))
    if not text:
        raise ValueError("the server URL is empty: give kafka://host[:port]/")
    if "://" not in text:
        text = f"kafka://[{text}]" if _is_bare_ipv6(text) else f"kafka://{text}"
    parsed = urlsplit(text)
    if parsed.scheme.lower() != "kafka":
        raise ValueError(f"the server URL {shown} must start with kafka://")
    hostport = parsed.netloc.rsplit("@", 1)[-1]
    if "," in hostport:
        raise ValueError(
            f"the server URL {shown} names several brokers: give one broker, kafka://host:port/"
        )
    try:
        url_port = parsed.port
    except ValueError:
        raise ValueError(
            f"the server URL {shown} has a port that is not a number from 1 to 65535"
        ) from None
    host = parsed.hostname
    if not host:
        raise ValueError(f"cannot find a host name in the server URL {shown}")
    if not (_HOST.match(host) or _is_bare_ipv6(host)):
        raise ValueError(f"the server URL {shown} has no valid host name")
    if url_port is None:
        effective = int(port)
    else:
        if port_given(port) and port != url_port:
            raise ValueError(
                f"the server URL {shown} names port {url_port} but port={port} was given: "
                "give the port in one place"
            )
        effective = url_port
    _check_port(effective, shown)
    path = parsed.path if parsed.path.endswith("/") else parsed.path + "/"
    return ServerAddress(
        host=host,
        port=effective,
        path=path,
        username=parsed.username or None,
        has_password=parsed.password is not None,
    )


def server_address(server: str, port: int) -> tuple[str, int]:
    """Return ``(host, port)`` of the broker named by a server URL.

    Parameters
    ----------
    server : str
        The server URL, such as ``kafka://kafka.scimma.org/`` (see :func:`parse_server`).
    port : int
        The ``port`` argument (:data:`DEFAULT_PORT` when not given).

    Returns
    -------
    tuple of (str, int)
        The host name (an IPv6 address in brackets, so that ``f"{host}:{port}"`` is an
        address librdkafka and hop understand) and the port to use.

    Raises
    ------
    ValueError
        As :func:`parse_server`.
    """
    parsed = parse_server(server, port)
    return _bracketed(parsed.host), parsed.port


def bootstrap_address(broker: str, default_port: int) -> str:
    """Return ``host:port`` of one broker of a ``kafka://`` URL, adding the default port.

    Parameters
    ----------
    broker : str
        ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.
    default_port : int
        The port to add when ``broker`` has none.

    Returns
    -------
    str
        ``host:port`` (``[::1]:9092`` for an IPv6 address).
    """
    if broker.startswith("["):
        return broker if "]:" in broker else f"{broker}:{default_port}"
    if _is_bare_ipv6(broker):
        return f"[{broker}]:{default_port}"
    return broker if ":" in broker else f"{broker}:{default_port}"


def base_url(server: str, port: int, group: str) -> str:
    """Return the client's base URL: ``kafka://<host>:<port>/<group>``.

    Parameters
    ----------
    server : str
        The server URL, with or without a trailing slash (see :func:`parse_server`).
    port : int
        The ``port`` argument.
    group : str
        The GraceDB group (``gracedb``, ``gracedb-playground``, ...).

    Returns
    -------
    str
        For example ``kafka://test.server:1234/test``. No user information.

    Raises
    ------
    ValueError
        As :func:`parse_server`.
    """
    parsed = parse_server(server, port)
    return f"kafka://{parsed.bootstrap}{parsed.path}{group}"


def full_name(group: str, topic: str) -> str:
    """Return the broker's name ``<group>.<topic>`` of a short topic name.

    Parameters
    ----------
    group : str
        The GraceDB group.
    topic : str
        The short topic name.

    Returns
    -------
    str
        The group-prefixed topic name.
    """
    return f"{group}.{topic}"


def topic_url(base: str, topics: TopicSpec) -> str:
    """Return the URL of one or several topics below a base URL.

    Parameters
    ----------
    base : str
        The client's base URL (see :func:`base_url`).
    topics : str or iterable of str
        Short topic names.

    Returns
    -------
    str
        For example ``kafka://test.server:1234/test.topic1,test.topic2``.

    Raises
    ------
    ValueError
        If no topic is named, or a name breaks Kafka's rules (see :func:`check_topic_name`).
    """
    parsed = urlparse(base)
    group = parsed.path.rsplit("/", 1)[-1]
    prefix = parsed.path[: len(parsed.path) - len(group)]
    names = ",".join(
        full_name(group, check_topic_name(t, group))
        for t in normalize_topics(topics, required=True)
    )
    return f"{parsed.scheme}://{parsed.netloc}{prefix}{names}"


def short_name(full: str, group: str) -> str:
    """Return the short name of a broker topic name by removing the exact ``<group>.`` prefix.

    Topic names that contain dots keep them. A name without the prefix is returned unchanged.

    Parameters
    ----------
    full : str
        The broker's topic name, such as ``gracedb.superevent``.
    group : str
        The GraceDB group.

    Returns
    -------
    str
        The short name, such as ``superevent``.
    """
    prefix = group + "."
    return full[len(prefix) :] if full.startswith(prefix) else full


def group_topics(all_topics: Iterable[str], group: str) -> list[str]:
    """Return the short names of the topics that belong to ``group``, in the given order.

    Parameters
    ----------
    all_topics : iterable of str
        Broker topic names.
    group : str
        The GraceDB group; only names starting with exactly ``<group>.`` match.

    Returns
    -------
    list of str
        Short topic names.
    """
    prefix = group + "."
    return [t[len(prefix) :] for t in all_topics if t.startswith(prefix) and len(t) > len(prefix)]


def normalize_topics(
    topics: TopicSpec | Mapping[str, object] | None, *, required: bool = False
) -> list[str]:
    """Return a topic argument as a list of short names, each checked (see
    :func:`check_topic_name`).

    Parameters
    ----------
    topics : str, iterable of str, or None
        One name, or any iterable of names (list, tuple, set, dict keys, ...).
    required : bool, optional
        True where at least one topic must be named (publishing, ``connect()``): None, an
        empty collection or an empty name is then a ValueError. Otherwise (``listen()``,
        where they mean every topic) None gives an empty list and empty names are passed
        on as they are.

    Returns
    -------
    list of str
        The names, in iteration order, without duplicates.

    Raises
    ------
    TypeError
        If an element is not a str.
    ValueError
        If a name breaks Kafka's rules, or, with ``required``, no topic is named.
    """
    if topics is None:
        names: list[str] = []
    elif isinstance(topics, str):
        names = [topics]
    else:
        names = []
        for topic in topics:
            if not isinstance(topic, str):
                raise TypeError(f"topic names must be str, not {type(topic).__name__}: {topic!r}")
            if topic not in names:
                names.append(topic)
    for name in names:
        if name or required:
            check_topic_name(name)
    if required and not names:
        raise ValueError(f"no topic given ({topics!r}): name at least one topic")
    return names
