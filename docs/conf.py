"""Sphinx configuration of the igwn-alert documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

from igwn_alert.version import __version__

project = "igwn-alert"
author = "igwn-alert drop-in developers"
copyright = "2026, igwn-alert drop-in developers (GPL-3.0-or-later)"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
suppress_warnings = ["ref.python"]

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_static_path: list[str] = []
try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # pragma: no cover - the docs extra installs furo
    html_theme = "alabaster"
html_title = f"igwn-alert {__version__}"
