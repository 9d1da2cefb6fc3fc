"""Topic naming: short names, group-prefixed broker names and ``kafka://`` URLs.

On the broker a GraceDB topic is ``<group>.<topic>`` (``gracedb-playground.superevent``);
users pass and receive the short name (``superevent``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Optional, Union
from urllib.parse import urlparse

__all__ = [
    "MAX_TOPIC_NAME_LENGTH",
    "TopicSpec",
    "base_url",
    "check_topic_name",
    "full_name",
    "group_topics",
    "normalize_topics",
    "server_address",
    "short_name",
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


def server_address(server: str, port: int) -> tuple[str, int]:
    """Return ``(host, port)`` of the broker named by a ``kafka://`` server URL.

    Parameters
    ----------
    server : str
        The server URL, such as ``kafka://kafka.scimma.org/``. A bare host name is accepted.
    port : int
        The port to use.

    Returns
    -------
    tuple of (str, int)
        The host name and the port.

    Raises
    ------
    ValueError
        If no host name can be found in ``server``.
    """
    parsed = urlparse(server if "//" in server else f"kafka://{server}")
    host = parsed.hostname
    if not host:
        raise ValueError(f"cannot find a host name in the server URL {server!r}")
    return host, port


def base_url(server: str, port: int, group: str) -> str:
    """Return the client's base URL: ``kafka://<host>:<port>/<group>``.

    Parameters
    ----------
    server : str
        The server URL, with or without a trailing slash.
    port : int
        The broker port.
    group : str
        The GraceDB group (``gracedb``, ``gracedb-playground``, ...).

    Returns
    -------
    str
        For example ``kafka://test.server:1234/test``.
    """
    parsed = urlparse(server)
    path = parsed.path if parsed.path.endswith("/") else parsed.path + "/"
    return f"{parsed.scheme}://{parsed.hostname}:{port}{path}{group}"


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
