"""The package's version: one home, read by the package root and by data-set manifests."""

__all__ = ["__version__"]

__version__ = "0.1.0"
