"""Credential resolution: which SCIMMA credential a client uses.

The order follows the reference client (first match wins):

1. an explicit ``auth`` (a :class:`hop.auth.Auth` or a list of them);
2. ``noauth=True``: no credential;
3. ``username`` and ``password``;
4. only one of the two: :class:`RuntimeError`;
5. ``authfile``: :func:`hop.auth.load_auth` on that file (a file hop refuses raises
   :class:`AuthFileError`, a RuntimeError naming the file and the cause);
6. hop's default ``auth.toml``, through ``hop.auth.load_auth`` looked up at call time; one
   that exists but cannot be used (readable by others, does not parse) is not skipped
   silently: a warning names the file and the cause (the mode and ``chmod 600``, or the
   line of the parse error), never its contents;
7. the netrc file (``$NETRC`` or ``~/.netrc``), by the exact server string or by host name;
8. nothing: a warning, and an unauthenticated session.

A credential for a loopback broker (``127.0.0.1``, ``localhost``, ``::1``) made from a user
name and password uses SASL over plain TCP: no public certificate authority can vouch for a
loopback address, so TLS to such a host can only be a local development broker without it.
Such a credential (a :class:`LoopbackAuth`) is only ever used for loopback hosts: a stream
opened on another host gets the same user name and password over TLS, the default of every
non-loopback host (see :func:`credential_for_host`).

A private reader (no consumer group) gets the group id hop gives it,
``<credential user name>-<random>`` (see :func:`private_group_id`), which is what
prefix-based consumer-group ACLs on Hopskotch match.
"""

from __future__ import annotations

import ipaddress
import logging
import netrc as _netrc
import os
import secrets
import string
import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

import hop
import hop.auth
import hop.configure
from hop.auth import AmbiguousCredentialError, Auth, select_matching_auth

from ._topics import server_address

__all__ = [
    "AuthFileError",
    "CredentialSpec",
    "LoopbackAuth",
    "auth_file_problem",
    "credential_for_host",
    "credential_for_user",
    "default_auth_file",
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

# hop refuses a credential file whose mode has any of these bits (hop.auth.load_auth)
_UNSAFE_MODE = 0o7077


def default_auth_file() -> str:
    """Return the path of hop's default credential file (``auth.toml``).

    Returns
    -------
    str
        ``$XDG_CONFIG_HOME/hop/auth.toml``, else ``~/.config/hop/auth.toml``.
    """
    return str(hop.configure.get_config_path("auth"))


def auth_file_problem(path: str, exc: BaseException) -> Optional[str]:
    """Say why hop could not use an existing credential file, without quoting it.

    Parameters
    ----------
    path : str
        The file hop tried to read.
    exc : BaseException
        What hop raised.

    Returns
    -------
    str or None
        ``"<path> is readable or writable by others (mode 0644), so hop will not use it:
        run chmod 600 <path>"``, ``"<path> cannot be parsed as TOML (line 3, column
        16)"``, ...; None if the file does not exist (nothing to report: the next source
        is tried).
    """
    if isinstance(exc, FileNotFoundError) or not os.path.exists(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return f"{path} cannot be read ({err.strerror})"
    if mode & _UNSAFE_MODE:
        return (
            f"{path} is readable or writable by others (mode {mode & 0o7777:04o}), so hop "
            f"will not use it: run chmod 600 {path}"
        )
    # hop wraps the parser's error; its message may quote the file, so only say where
    parser_error = exc.__cause__ or exc.__context__
    line = getattr(parser_error, "lineno", None)
    if line is not None:
        column = getattr(parser_error, "colno", None)
        where = f"line {line}, column {column}" if column is not None else f"line {line}"
        return f"{path} cannot be parsed as TOML ({where})"
    if isinstance(exc, RuntimeError) and str(exc).startswith("configuration file "):
        # hop's own checks: "has no auth section", "missing auth property 'password'"
        return f"{path}: {str(exc)[len('configuration file ') :]}"
    if isinstance(exc, KeyError):
        # hop looks the mechanism up by name (SASLMethod[...]): the name, not a secret
        return f"{path} names an unknown mechanism or setting {exc}"
    return f"{path} cannot be used ({type(exc).__name__})"


class AuthFileError(RuntimeError):
    """A hop credential file exists but cannot be used; the message names file and cause."""


def _load_auth_file(path: Optional[str] = None) -> list[Auth]:
    """``hop.auth.load_auth`` (looked up at call time), its errors naming file and cause.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    AuthFileError
        If it exists but cannot be used (the message says why, never quoting the file).
    """
    try:
        if path is None:
            return hop.auth.load_auth()  # type: ignore[no-any-return]
        return hop.auth.load_auth(path)  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise
    except Exception as exc:
        problem = auth_file_problem(default_auth_file() if path is None else path, exc)
        if problem is None:
            raise
        raise AuthFileError(problem) from None


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


class LoopbackAuth(Auth):  # type: ignore[misc]
    """A SCRAM-SHA-512 credential made from a user name and password for a loopback broker.

    It speaks SASL without TLS, so it is never used for another host: there
    :meth:`with_tls` gives the same user name and password over TLS.

    Parameters
    ----------
    user : str
        The user name.
    password : str
        Its password.
    host : str
        The loopback host it was made for.
    """

    def __init__(self, user: str, password: str, host: str) -> None:
        super().__init__(user, password, host=host, ssl=False)

    def with_tls(self) -> Auth:
        """Return the same user name and password over TLS, bound to no host.

        Returns
        -------
        hop.auth.Auth
            The credential hop's default (SASL_SSL) would give.
        """
        return Auth(self.username, self.password)


def private_group_id(credential: Any) -> str:
    """Return a new consumer group id for a private reader, named as hop names it.

    hop names a generated group ``<credential user name>-<random>``, and prefix-based
    consumer-group ACLs (READ on groups prefixed ``<user>-``) are written for that. Without
    a credential the id is the random part alone. A consumer group given by the caller is
    used as it is and never goes through here.

    Parameters
    ----------
    credential : hop.auth.Auth, None or False
        The credential the reader connects with.

    Returns
    -------
    str
        ``alice-7G2K9QX0ZB`` for user ``alice``; ``7G2K9QX0ZB`` without a credential.
    """
    alphabet = string.ascii_uppercase + string.digits
    suffix = "".join(secrets.choice(alphabet) for _ in range(10))
    username = getattr(credential, "username", None) if credential else None
    return f"{username}-{suffix}" if username else suffix


def _host_of(address: str) -> str:
    """The host of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if address.startswith("["):
        return address[: address.find("]") + 1] or address
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address


def credential_for_host(
    creds: Union[Auth, Sequence[Auth], bool, None], bootstrap: str, username: Optional[str] = None
) -> Optional[Auth]:
    """Choose the credential a stream on ``bootstrap`` uses, as hop's ``Stream.open`` does.

    hop's :func:`hop.auth.select_matching_auth` picks among the credentials by host name
    (and user name, if given). A :class:`LoopbackAuth` (SASL without TLS) counts as bound to
    every loopback host and to no other: for a non-loopback host it is replaced by the same
    user name and password over TLS.

    Parameters
    ----------
    creds : hop.auth.Auth, sequence of hop.auth.Auth, None or False
        The client's credentials.
    bootstrap : str
        ``host:port`` (or ``host``) of the broker.
    username : str, optional
        Use this user's credential.

    Returns
    -------
    hop.auth.Auth or None
        The credential; None without credentials.

    Raises
    ------
    RuntimeError
        If no credential matches the host (and user).
    hop.auth.AmbiguousCredentialError
        If several match.
    """
    if not creds:
        return None
    listed = [creds] if isinstance(creds, Auth) else list(creds)  # type: ignore[arg-type]
    host = _host_of(bootstrap)
    loopback = is_loopback(host)
    views: list[Auth] = []
    chosen_for: dict[int, Auth] = {}
    for cred in listed:
        if isinstance(cred, LoopbackAuth):
            # matched as a credential without a host; used as itself only on loopback
            view = Auth(cred.username, cred.password, ssl=False)
            chosen_for[id(view)] = cred if loopback else cred.with_tls()
        else:
            view = cred
            chosen_for[id(view)] = cred
        views.append(view)
    try:
        found = select_matching_auth(views, bootstrap, username)
    except AmbiguousCredentialError:
        raise
    except RuntimeError:
        if host == bootstrap:
            raise
        # a credential bound to the host alone (no port) matches any port of that host
        found = select_matching_auth(views, host, username)
    return chosen_for[id(found)]


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
        return LoopbackAuth(username, password, host)
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
    host, port = server_address(server, port)
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
    host, port = server_address(server, port)
    path = default_auth_file()
    unread = ""
    try:
        creds = _load_auth_file()
    except FileNotFoundError:
        creds = []
    except AuthFileError as exc:
        unread = f" (hop's credential file was not read: {exc})"
        creds = []
    except Exception as exc:  # noqa: BLE001 - any other failure means: not in auth.toml
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
    where = f"{path} or netrc" if not unread and os.path.exists(path) else "auth.toml or netrc"
    raise LookupError(f"no credential for user {username!r} and host {host} in {where}{unread}")


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
        If only one of ``username`` and ``password`` is given, or ``authfile`` cannot be
        used (:class:`AuthFileError`: unsafe permissions, a parse error; the message names
        the file, the mode or the line, never the contents).
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
        return _load_auth_file(authfile)
    try:
        return _load_auth_file()
    except FileNotFoundError:
        log.debug("no hop auth.toml; trying netrc")
    except AuthFileError as exc:
        # an auth.toml that exists but cannot be used is never skipped silently
        warnings.warn(f"ignoring hop's credential file: {exc}", UserWarning, stacklevel=3)
    except Exception as exc:  # noqa: BLE001 - any other failure falls through to netrc
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
