"""Single source of the package version (also written into every bundle manifest)."""

__version__ = "0.1.0"
