"""Credential resolution: which SCIMMA credential a client uses.

The order follows the reference client (first match wins):

1. an explicit ``auth`` (a :class:`hop.auth.Auth` or a list of them);
2. ``noauth=True``: no credential;
3. ``username`` and ``password``;
4. only one of the two: :class:`RuntimeError`;
5. ``authfile``: :func:`hop.auth.load_auth` on that file;
6. hop's default ``auth.toml``, through ``hop.auth.load_auth`` looked up at call time;
7. the netrc file (``$NETRC`` or ``~/.netrc``), by the exact server string or by host name;
8. nothing: a warning, and an unauthenticated session.

A credential for a loopback broker (``127.0.0.1``, ``localhost``, ``::1``) made from a user
name and password uses SASL over plain TCP: no public certificate authority can vouch for a
loopback address, so TLS to such a host can only be a local development broker without it.
"""

from __future__ import annotations

import ipaddress
import logging
import netrc as _netrc
import os
import secrets
import string
import warnings
from typing import Any, Optional, Union

import hop
import hop.auth
from hop.auth import Auth

from ._topics import server_address

__all__ = [
    "CredentialSpec",
    "credential_for_user",
    "is_loopback",
    "make_auth",
    "netrc_credential",
    "private_group_id",
    "resolve_credentials",
]

log = logging.getLogger(__name__)

#: What a client holds as its credential: False (none), one Auth, or a list of Auth.
CredentialSpec = Union[bool, Auth, list[Auth], None]

_UNAUTHENTICATED = "No authentication found. Proceeding with unauthenticated session"


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names this machine's loopback interface.

    Parameters
    ----------
    host : str
        A host name or IP address.

    Returns
    -------
    bool
        True for ``localhost`` and loopback addresses.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_auth(username: str, password: str, host: str = "") -> Auth:
    """Build a SCRAM-SHA-512 credential for a user, the way Hopskotch expects it.

    Parameters
    ----------
    username : str
        The SCIMMA user name.
    password : str
        Its password.
    host : str, optional
        The broker host. A loopback host gets SASL without TLS (see the module notes).

    Returns
    -------
    hop.auth.Auth
        The credential.
    """
    if host and is_loopback(host):
        return Auth(username, password, host=host, ssl=False)
    return Auth(username, password)


def netrc_credential(server: str, port: int, path: Optional[str] = None) -> Optional[Auth]:
    """Look a credential up in a netrc file.

    The machine may be named exactly as the server string (``machine kafka://kafka.test/``,
    as the reference client requires) or by its host name (``machine kafka.scimma.org``),
    optionally with the port (``machine kafka.scimma.org:9092``).

    Parameters
    ----------
    server : str
        The server URL.
    port : int
        The broker port.
    path : str, optional
        The netrc file; default ``$NETRC``, else ``~/.netrc``.

    Returns
    -------
    hop.auth.Auth or None
        The credential, or None if the file has no entry for the server.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    netrc.NetrcParseError
        If the file is malformed or readable by others.
    """
    if path is None:
        path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.stat(path).st_mode & 0o077:
        raise _netrc.NetrcParseError("it is readable by others: run chmod 600 on it", path)
    host, _ = server_address(server, port)
    entries = _netrc.netrc(path)
    for machine in (server, f"{host}:{port}", host):
        found = entries.authenticators(machine)
        if found is not None and found[0] and found[2]:
            log.debug("using the netrc credential for %s from %s", machine, path)
            return make_auth(found[0], found[2], host)
    return None


def credential_for_user(
    username: str, server: str, port: int, netrc_path: Optional[str] = None
) -> Auth:
    """Pick the credential of one user for the server, from ``auth.toml`` or else netrc.

    Parameters
    ----------
    username : str
        The user name to select.
    server : str
        The server URL.
    port : int
        The broker port.
    netrc_path : str, optional
        The netrc file to search if hop's ``auth.toml`` has no match.

    Returns
    -------
    hop.auth.Auth
        The credential.

    Raises
    ------
    LookupError
        If neither file has a credential for that user and host.
    """
    host, _ = server_address(server, port)
    try:
        creds = hop.auth.load_auth()
    except Exception as exc:  # noqa: BLE001 - any failure means: not in auth.toml
        log.debug("no usable hop auth.toml: %s", type(exc).__name__)
        creds = []
    for target in (f"{host}:{port}", host):
        try:
            chosen: Auth = hop.auth.select_matching_auth(creds, target, username)
            return chosen
        except RuntimeError:
            continue
    try:
        found = netrc_credential(server, port, netrc_path)
    except (OSError, _netrc.NetrcParseError):
        found = None
    if found is not None and found.username == username:
        return found
    raise LookupError(f"no credential for user {username!r} and host {host} in auth.toml or netrc")


def resolve_credentials(
    *,
    username: Optional[str],
    password: Optional[str],
    auth: Any,
    authfile: Optional[str],
    noauth: bool,
    server: str,
    port: int,
) -> CredentialSpec:
    """Choose the credential of a client (see the module notes for the order).

    Parameters
    ----------
    username, password : str or None
        A user name and password.
    auth : hop.auth.Auth, list of hop.auth.Auth, or None
        An explicit credential, used as it is.
    authfile : str or None
        A hop ``auth.toml`` to load.
    noauth : bool
        True for an unauthenticated session.
    server : str
        The server URL.
    port : int
        The broker port.

    Returns
    -------
    False, hop.auth.Auth or list of hop.auth.Auth
        The credential; False means unauthenticated.

    Raises
    ------
    RuntimeError
        If only one of ``username`` and ``password`` is given, or ``authfile`` has unsafe
        permissions (hop's check).
    FileNotFoundError
        If ``authfile`` does not exist.
    """
    if auth is not None:
        return auth  # type: ignore[no-any-return]
    if noauth:
        return False
    if username and password:
        return make_auth(username, password, server_address(server, port)[0])
    if bool(username) != bool(password):
        raise RuntimeError(
            "You must provide both a username and a password for basic authentication."
        )
    if authfile:
        return hop.auth.load_auth(authfile)  # type: ignore[no-any-return]
    try:
        return hop.auth.load_auth()  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - any failure falls through to netrc
        log.debug("hop auth.toml not usable (%s); trying netrc", type(exc).__name__)
    try:
        found = netrc_credential(server, port)
    except OSError as exc:
        log.debug("netrc not usable: %s", type(exc).__name__)
        found = None
    except _netrc.NetrcParseError as exc:
        # never echo the parser's message: it may quote a token of the file
        where = f"{exc.filename}, line {exc.lineno}" if exc.lineno else exc.filename
        reason = exc.msg if "readable by others" in exc.msg else "it cannot be parsed"
        warnings.warn(f"ignoring the netrc file ({where}): {reason}", UserWarning, stacklevel=3)
        found = None
    if found is not None:
        return found
    warnings.warn(_UNAUTHENTICATED, UserWarning, stacklevel=3)
    return False


def private_group_id(credential: Any) -> str:
    """Return the ``group.id`` of a private reader, named as hop names a generated group.

    hop names it ``<credential username>-<random>`` (a random name without a credential),
    which is what prefix-based consumer-group ACLs (``READ`` on groups prefixed ``user-``)
    match; the reader never joins it.

    Parameters
    ----------
    credential : hop.auth.Auth or None
        The credential the reader uses.

    Returns
    -------
    str
        The group id.
    """
    alphabet = string.ascii_uppercase + string.digits
    suffix = "".join(secrets.choice(alphabet) for _ in range(10))
    username = getattr(credential, "username", None) if credential else None
    return f"{username}-{suffix}" if username else suffix
