"""Exception types of edgefss.

Every error raised for bad user input names the input and what was expected. The classes
subclass the builtin a caller would naturally catch (ValueError, RuntimeError, ImportError),
so `except ValueError` keeps working for code that does not know edgefss.
"""

from __future__ import annotations


class EdgeFSSError(Exception):
    """Base class of all edgefss errors."""


class InputError(EdgeFSSError, ValueError):
    """An input (image, mask, array, class name, option) is not what was expected."""


class BundleError(EdgeFSSError, ValueError):
    """A bundle directory is missing files, tampered with, or from an incompatible version."""


class CheckpointError(EdgeFSSError, ValueError):
    """A checkpoint file does not match the model (wrong model, missing/unexpected keys)."""


class BackendUnavailableError(EdgeFSSError, ImportError):
    """An optional backend (onnxruntime, openvino, tensorrt, torch) is not installed."""


class StateError(EdgeFSSError, RuntimeError):
    """An API was called in the wrong order (e.g. predict before set_support)."""


_PIP = {  # top-level module -> install line; read through pip_hint()
    "torch": "pip install 'edgefss[torch]'  (pins torch==2.13.0, the CPU wheel)",
    "onnx": "pip install onnx",
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install 'edgefss[openvino]'",
    "nncf": "pip install nncf",
    "tensorrt": "pip install tensorrt  (on Jetson: comes with JetPack; use the system python3-libnvinfer)",
    "cuda": "pip install cuda-python",
    "cv2": "pip install opencv-python-headless",
    "matplotlib": "pip install matplotlib",
}


def pip_hint(module: str) -> str:
    """The exact install line for optional package `module` (top-level name, e.g. "openvino")."""
    top = module.split(".")[0]
    return _PIP.get(top, f"pip install {top}")


def require(module: str, purpose: str):
    """Import an optional dependency or raise BackendUnavailableError with the exact pip line.

    Args:
        module: importable module name, e.g. "openvino".
        purpose: what it is needed for, e.g. "the openvino backend".
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = pip_hint(top)
        raise BackendUnavailableError(
            f"{purpose} needs the Python package '{top}', which is not installed: {hint}"
        ) from exc
