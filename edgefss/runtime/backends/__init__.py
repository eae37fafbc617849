"""One module per inference engine; each defines a class with the `Backend` protocol.

The vendor package is imported inside the class constructor (through `edgefss.errors.require`), so
listing or importing this package never needs onnxruntime, openvino or tensorrt.
"""

from __future__ import annotations

import importlib

# backend name -> (module, class, the graph file suffixes it can read)
BACKENDS = {
    "onnxruntime": ("edgefss.runtime.backends.ort", "OrtBackend", (".onnx",)),
    "openvino": ("edgefss.runtime.backends.openvino", "OpenVinoBackend", (".onnx", ".xml")),
    "tensorrt": ("edgefss.runtime.backends.tensorrt", "TensorRTBackend", (".plan", ".engine")),
}


def backend_class(name: str):
    """The class implementing backend `name` (a key of BACKENDS); imports no vendor package."""
    module, cls, _ = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)
