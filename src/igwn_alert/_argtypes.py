"""``type=`` converters for argparse shared by the ``igwn-alert`` sub-commands.

An option whose value is bad makes argparse print the usage and ``argument --OPTION:``
followed by the converter's message, and exit with status 2.
"""

from __future__ import annotations

import argparse
from typing import Callable

__all__ = ["count"]


def count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``minimum``.

    Parameters
    ----------
    minimum : int
        The smallest value accepted.

    Returns
    -------
    callable
        Turns the option's text into an :class:`int`; raises
        :class:`argparse.ArgumentTypeError` naming the problem ("not a whole number: 'x'",
        "must not be negative: -1" for a minimum of 0, else "must be at least N: ...").

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--count", type=count(1))
    >>> parser.parse_args(["--count", "3"]).count
    3
    """
    below = "must not be negative" if minimum == 0 else f"must be at least {minimum}"

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{below}: {text}")
        return value

    return convert
