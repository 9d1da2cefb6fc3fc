"""``python -m igwn_alert``: the ``igwn-alert`` command line."""

from __future__ import annotations

import sys

from .tool import main

if __name__ == "__main__":
    sys.exit(main())
