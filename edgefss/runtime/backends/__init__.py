"""One module per inference engine; each defines a class with the `Backend` protocol.

The vendor package is imported inside the class constructor (through `edgefss.errors.require`), so
listing or importing this package never needs onnxruntime, openvino or tensorrt. Which files an
engine reads, its devices and engine settings come from the format table (`edgefss.formats`).
"""

from __future__ import annotations

import importlib

# backend name -> (module, class)
BACKENDS = {
    "onnxruntime": ("edgefss.runtime.backends.ort", "OrtBackend"),
    "openvino": ("edgefss.runtime.backends.openvino", "OpenVinoBackend"),
    "tensorrt": ("edgefss.runtime.backends.tensorrt", "TensorRTBackend"),
}


def backend_class(name: str):
    """The class implementing backend `name` (a key of BACKENDS); imports no vendor package."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)
