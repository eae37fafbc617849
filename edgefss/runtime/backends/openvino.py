"""OpenVINO backend: CPU or GPU (or AUTO), reading .onnx directly or an IR .xml (+ .bin)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgefss.errors import InputError, require


class OpenVinoBackend:
    """Runs a bundle's graphs with openvino.Core.compile_model.

    An InferRequest is not thread-safe, so a call takes one from a pool per (compile, graph) for
    the time of its infer and gives it back; the compiled model itself is shared. The pool outlives
    the threads: a request's first infer allocates its intermediates (the graphs have a dynamic
    batch dim), about 1 s for the 400 px TLG head, so requests owned by threads (threading.local)
    made every new stream pay that again in each of its workers. The latency compile has one CPU
    stream, so concurrent requests queue behind each other; `concurrent_runs(n)` makes a second
    compile with n streams for threads that predict frames in parallel (runtime/stream.py), leaving
    single-query latency as it was.

    Args:
        files: graph name -> .onnx or .xml path.
        threads: INFERENCE_NUM_THREADS (None = OpenVINO's default).
        device: "CPU", "GPU", "AUTO", ... (None = the first of `devices` this machine has, else CPU).
        config: compile config from the bundle's format (edgefss.formats, recorded in the manifest
            as "engine_config"), e.g. INFERENCE_PRECISION_HINT: without it OpenVINO runs the GPU
            in f16 and AVX512-BF16/AMX CPUs in bf16, whatever was verified.
        devices: the devices the bundle's format targets, preferred first.
    """

    name = "openvino"

    def __init__(self, files: dict[str, Path], threads: int | None = None, device: str | None = None,
                 config: dict | None = None, devices: tuple = ("CPU",)):
        ov = require("openvino", "the openvino backend")
        core = ov.Core()
        present = {d.split(".")[0] for d in core.available_devices}
        if device is None:
            device = next((d for d in devices if d in present), "CPU")
        self.device = str(device).upper()
        if self.device.split(".")[0] not in present | {"AUTO", "MULTI", "HETERO"}:
            raise InputError(f"device: {device!r}; this machine's OpenVINO devices are {sorted(present)}")
        self.config = dict(config or {})
        self.threads = threads
        self._core, self._files = core, dict(files)
        cfg = dict(self.config)
        if threads is not None and self.device == "CPU":
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = {
            g: core.compile_model(core.read_model(str(p)), self.device, cfg) for g, p in files.items()
        }
        self.outputs = {g: [_port_name(o) for o in c.outputs] for g, c in self.compiled.items()}
        self._local = threading.local()  # .compiled: the stream compile a frame worker is bound to
        self._streams: dict[int, dict] = {}  # n -> graph -> model compiled with NUM_STREAMS = n
        self._streams_lock = threading.Lock()
        self._idle: dict[tuple[int, str], list] = {}  # (id of a compile set, graph) -> idle requests
        self._idle_lock = threading.Lock()

    def concurrent_runs(self, n: int):
        """Prepare for `n` threads running the graphs at once; returns the initializer each of those
        threads calls first (or None where nothing is needed).

        On CPU the graphs are compiled a second time (once per n, kept) with NUM_STREAMS = n and
        INFERENCE_NUM_THREADS = n * threads, so n requests run side by side with `threads` threads
        each; threads that never call the initializer keep the latency compile.
        """
        n = int(n)
        if self.device != "CPU" or n < 2:
            return None
        with self._streams_lock:
            if n not in self._streams:
                cfg = dict(self.config, NUM_STREAMS=n)
                if self.threads is not None:
                    cfg["INFERENCE_NUM_THREADS"] = n * int(self.threads)
                self._streams[n] = {g: self._core.compile_model(self._core.read_model(str(p)), self.device, cfg)
                                    for g, p in self._files.items()}
        compiled = self._streams[n]

        def bind() -> None:
            self._local.compiled = compiled

        return bind

    def _take(self, graph: str):
        """(pool key, request): an idle request of this thread's compile for `graph`, else a new one."""
        compiled = getattr(self._local, "compiled", None) or self.compiled
        key = (id(compiled), graph)
        with self._idle_lock:
            idle = self._idle.setdefault(key, [])
            if idle:
                return key, idle.pop()
        return key, compiled[graph].create_infer_request()

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds: input name -> array. Returns output name -> array (copied out of the request)."""
        key, req = self._take(graph)
        try:
            res = req.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            # results alias the request's buffers, which the next infer overwrites: copy them out
            return {name: np.array(res[i], copy=True) for i, name in enumerate(self.outputs[graph])}
        finally:
            with self._idle_lock:
                self._idle[key].append(req)


def _port_name(port) -> str:
    """The graph-level name of an output port, deterministically.

    A port can carry several tensor names (the ONNX output name and the internal name of the node
    that produced it, e.g. '/Mul_1_output_0'); `get_any_name()` may return either. The bundle's
    names are the exported graph outputs, which are never '/…' paths or 'onnx::' temporaries.
    """
    names = sorted(port.get_names())
    plain = [n for n in names if not n.startswith("/") and not n.startswith("onnx::")]
    return (plain or names or [port.get_any_name()])[0]
