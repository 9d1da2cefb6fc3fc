"""Sphinx configuration of the igwn-alert documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

from igwn_alert.version import __version__

project = "igwn-alert"
author = "IGWN alert drop-in maintainers"
copyright = "2026, IGWN alert drop-in maintainers (GPL-3.0-or-later)"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = True
napoleon_preprocess_types = True
# Words of the numpydoc type lines that are prose, not names to link.
nitpick_ignore = [
    ("py:class", word)
    for word in (
        "optional",
        "callable",
        "iterable",
        "sequence",
        "mapping",
        "text file",
        "hop model",
        "file-like",
        "stream",
        "(str",  # "tuple of (str, bytes)"
        "bytes)",
        "object)",
    )
]
napoleon_type_aliases = {"datetime": "datetime.datetime", "timedelta": "datetime.timedelta"}
# Short names in docstrings of igwn_alert.testing's implementation modules: the errors of the
# embedded broker and the demo, raised through LocalBroker and ``igwn-alert demo``.
nitpick_ignore += [
    ("py:exc", "EmbeddedBrokerError"),
    ("py:exc", "DemoError"),
    ("py:data", "DEFAULT_SERVE_TOPICS"),
    ("py:class", "Client"),
    ("py:class", "AlertReader"),
    ("py:class", "AlertWriter"),
    ("py:meth", "connect"),  # InMemoryClient.publish's docstring, documented in testing.rst
    ("py:class", "MemoryReader"),  # the in-memory transport's streams (private)
    ("py:class", "MemoryWriter"),
    ("py:meth", "igwn_alert.client.listen"),  # InMemoryClient.listen's docstring
]
# Implementation classes named in public signatures (their modules are private): shown by
# their short name, unlinked.
nitpick_ignore_regex = [("py:class", r"igwn_alert(\.testing)?\._\w+\.\w+")]

# -- intersphinx -----------------------------------------------------------------------------
# The build machine reaches package registries only, so the projects' own objects.inv cannot
# be downloaded. _inventories/*.txt are small hand-written inventories of the external names
# these pages actually reference, each pointing at its real public URL; they are compiled
# into objects.inv files (Sphinx's format) at build time. A name missing from them fails the
# strict build (-n -W), so the list stays complete and honest.
_HERE = os.path.dirname(os.path.abspath(__file__))
_INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "hop": "https://hop-client.readthedocs.io/en/latest/",
    "confluent_kafka": "https://docs.confluent.io/platform/current/clients/confluent-kafka-python/html/",
    "adc": "https://github.com/astronomy-commons/adc-streaming/blob/main/",
}


def _compile_inventory(name: str) -> str:
    """Write ``_build/inventories/<name>.inv`` from ``_inventories/<name>.txt``."""
    import zlib

    source = os.path.join(_HERE, "_inventories", f"{name}.txt")
    lines = [
        line.rstrip("\n")
        for line in open(source, encoding="utf-8")  # noqa: SIM115
        if line.strip() and not line.startswith("#")
    ]
    out_dir = os.path.join(_HERE, "_build", "inventories")
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, f"{name}.inv")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    with open(target, "wb") as f:
        f.write(header.encode())
        f.write(zlib.compress(("\n".join(lines) + "\n").encode()))
    return target


intersphinx_mapping = {name: (url, _compile_inventory(name)) for name, url in _INVENTORIES.items()}


def _is_private(cls: type) -> bool:
    return cls.__module__.startswith("igwn_alert._") or cls.__name__.startswith("_")


def _public_bases(app, name, obj, options, bases):  # type: ignore[no-untyped-def]
    """Show a class's public bases: a private base (an implementation mix-in or base
    class) gives way to its nearest public ancestor outside ``object``."""
    shown: list[type] = []
    for base in bases:
        if _is_private(base):
            base = next((c for c in base.__mro__ if not _is_private(c) and c is not object), None)
            if base is None:
                continue
        if base not in shown:
            shown.append(base)
    bases[:] = shown


def _skip_self_alias(app, what, name, obj, skip, options):  # type: ignore[no-untyped-def]
    """``client.client`` is the class itself (for ``mock.patch`` on Python 3.9/3.10)."""
    if name == "client" and isinstance(obj, type) and obj.__name__ == "client":
        return True
    return None


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-skip-member", _skip_self_alias)


templates_path: list[str] = []
exclude_patterns = ["_build"]
html_static_path: list[str] = []
try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # pragma: no cover - the docs extra installs furo
    html_theme = "alabaster"
html_title = f"igwn-alert {__version__}"
