"""Single source of the package version (read by setuptools and the protocol's READY)."""

__version__ = "0.2.0"
