"""The reference client's deprecated methods: each warns and does nothing else."""

from __future__ import annotations

import warnings

__all__ = ["DeprecatedMethods"]


class DeprecatedMethods:
    """``get_subscriptions``, ``subscribe``, ``unsubscribe`` and ``delete``, kept for old code."""

    def get_subscriptions(self) -> None:
        """Deprecated: does nothing but warn; see ``listen()`` and ``get_topics()``."""
        warnings.warn(
            "This feature is deprecated. Please refer to the client.listen() method",
            DeprecationWarning,
            stacklevel=2,
        )

    def subscribe(self, *topics: str) -> None:
        """Deprecated: does nothing but warn; pass the topics to ``listen()``."""
        warnings.warn(
            "This feature is deprecated. Please supply a list of topics to client.listen(), "
            "and ensure you have permission to read from topics.",
            DeprecationWarning,
            stacklevel=2,
        )

    def unsubscribe(self, *topics: str) -> None:
        """Deprecated: does nothing but warn."""
        warnings.warn("This feature is deprecated.", DeprecationWarning, stacklevel=2)

    def delete(self) -> None:
        """Deprecated: does nothing but warn."""
        warnings.warn("This feature is deprecated.", DeprecationWarning, stacklevel=2)
