"""ONNX Runtime backend: CPU, or CUDA when onnxruntime-gpu provides it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefss.errors import InputError, require

DEVICES = ("cuda", "cpu")


def session_options(ort, threads: int | None = None):
    """The one SessionOptions the runtime, the export verification and the gate all use.

    Args:
        ort: the onnxruntime module. threads: intra-op threads (None = onnxruntime's default).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the CPU provider warns about every unused initializer otherwise
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


class OrtBackend:
    """Runs a bundle's graphs with onnxruntime.InferenceSession.

    `InferenceSession.run` is thread-safe, so one session per graph serves concurrent `run` calls.

    Args:
        files: graph name -> .onnx path.
        threads: intra-op threads (None = onnxruntime's default, all cores).
        device: "cpu", "cuda" or None (the first of `devices` this onnxruntime offers).
        devices: the devices the bundle's format runs on, preferred first (edgefss.formats).
    """

    name = "onnxruntime"

    def __init__(self, files: dict[str, Path], threads: int | None = None, device: str | None = None,
                 devices: tuple = DEVICES):
        ort = require("onnxruntime", "the onnxruntime backend")
        available = ort.get_available_providers()
        has = {"cpu": True, "cuda": "CUDAExecutionProvider" in available}
        dev = None if device is None else str(device).lower()
        if dev is not None and dev not in DEVICES:
            raise InputError(f"device: {device!r} is not an onnxruntime device; expected 'cpu' or 'cuda'")
        if dev is not None and dev not in devices:
            raise InputError(f"device: {device!r}; this bundle's format runs on {list(devices)}")
        if dev == "cuda" and not has["cuda"]:
            raise InputError(
                f"device: 'cuda' asked for, but this onnxruntime has only {available}; "
                "pip install onnxruntime-gpu (x86_64) or use device='cpu'"
            )
        dev = dev or next(d for d in list(devices) + ["cpu"] if has.get(d))
        self.device = dev
        self.providers = (["CUDAExecutionProvider"] if dev == "cuda" else []) + ["CPUExecutionProvider"]
        opts = session_options(ort, threads)
        self.sessions = {
            g: ort.InferenceSession(str(p), sess_options=opts, providers=self.providers)
            for g, p in files.items()
        }
        self.outputs = {g: [o.name for o in s.get_outputs()] for g, s in self.sessions.items()}

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds: input name -> array (dtype/shape per the manifest). Returns output name -> array."""
        names = self.outputs[graph]
        return dict(zip(names, self.sessions[graph].run(names, feeds)))
