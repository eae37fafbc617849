"""The teacher's optional dependency, imported lazily with the exact install line on failure."""

from __future__ import annotations

from edgefss.errors import BackendUnavailableError

PIP_LINE = "pip install 'edgefss[teacher]'"


def diffusers():
    """The `diffusers` module, or BackendUnavailableError naming the install line."""
    try:
        import diffusers as mod
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the DiffewS teacher needs the Python package 'diffusers', which is not installed: {PIP_LINE}"
        ) from exc
    return mod
