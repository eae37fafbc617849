"""ONNX Runtime backend: CPU, or CUDA when onnxruntime-gpu provides it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefss.errors import InputError, require


class OrtBackend:
    """Runs a bundle's graphs with onnxruntime.InferenceSession.

    `InferenceSession.run` is thread-safe, so one session per graph serves concurrent `run` calls.

    Args:
        files: graph name -> .onnx path.
        threads: intra-op threads (None = onnxruntime's default, all cores).
        device: "cpu", "cuda" or None (CUDA when the CUDA provider is available, else CPU).
    """

    name = "onnxruntime"

    def __init__(self, files: dict[str, Path], threads: int | None = None, device: str | None = None):
        ort = require("onnxruntime", "the onnxruntime backend")
        available = ort.get_available_providers()
        dev = (device or "auto").lower()
        if dev not in ("auto", "cpu", "cuda"):
            raise InputError(f"device: {device!r} is not an onnxruntime device; expected 'cpu' or 'cuda'")
        if dev == "cuda" and "CUDAExecutionProvider" not in available:
            raise InputError(
                f"device: 'cuda' asked for, but this onnxruntime has only {available}; "
                "pip install onnxruntime-gpu (x86_64) or use device='cpu'"
            )
        use_cuda = dev == "cuda" or (dev == "auto" and "CUDAExecutionProvider" in available)
        self.providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        self.device = "cuda" if use_cuda else "cpu"
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.sessions = {
            g: ort.InferenceSession(str(p), sess_options=opts, providers=self.providers)
            for g, p in files.items()
        }

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds: input name -> array (dtype/shape per the manifest). Returns output name -> array."""
        sess = self.sessions[graph]
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, feeds)
        return dict(zip(names, outs))
