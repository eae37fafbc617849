"""Loader for the optional native extension `edgefss._C` (placeholder until csrc lands)."""

from __future__ import annotations

from edgefss.errors import BackendUnavailableError

_MOD = None
_TRIED = False


def native_module(required: bool = False):
    global _MOD, _TRIED
    if not _TRIED:
        _TRIED = True
        try:
            from edgefss import _C  # type: ignore[attr-defined]

            _MOD = _C
        except ImportError:
            _MOD = None
    if _MOD is None and required:
        raise BackendUnavailableError(
            "the native extension edgefss._C was not built; reinstall with a C++ compiler and "
            "CMake available: pip install --force-reinstall --no-deps ."
        )
    return _MOD


def has_native() -> bool:
    """True when the compiled extension edgefss._C is importable."""
    return native_module() is not None
