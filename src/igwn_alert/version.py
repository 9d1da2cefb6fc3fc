"""The version of this distribution (``igwn-alert``)."""

__all__ = ["__version__"]

#: The release of this drop-in client. It is 1.0 or later so that it replaces the
#: reference ``igwn-alert`` 0.7 in an environment.
__version__ = "1.0.0"
