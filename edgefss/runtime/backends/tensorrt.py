"""TensorRT 10 backend: deserialises .plan engines and moves NumPy arrays through CUDA buffers.

No torch: device memory and streams come from cuda-python (`cuda.bindings.runtime`, or the older
`cuda.cudart` module). Uses the TensorRT 10 name-based I/O API (`num_io_tensors`,
`get_tensor_name`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`).

A plan that does not deserialise here (built by another TensorRT/JetPack or for another GPU) is
rebuilt from the ONNX graph beside it (`<graph>.onnx`) through the engine cache
(edgefss.trt_cache), with a progress line; without that ONNX the error says how to rebuild.
The CUDA device is selected in every thread that runs an engine (the current device is
per-thread state in CUDA), and `close()` frees buffers, streams and engines deterministically.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgefss.errors import BackendUnavailableError, InputError, require


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8

        return cudart
    except ImportError:
        return require("cuda.cudart", "the tensorrt backend (CUDA buffers without torch)")


class _Cuda:
    """Thin checked wrappers over the few cudart calls the backend needs."""

    def __init__(self):
        self.rt = _cudart()

    def check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error in {what}: {err}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr), "cudaFree")

    def h2d(self, dst: int, src: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream),
                   "cudaMemcpyAsync H2D")

    def d2h(self, dst: np.ndarray, src: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream),
                   "cudaMemcpyAsync D2H")

    def stream(self):
        return self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream) -> None:
        self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def set_device(self, index: int) -> None:
        self.check(self.rt.cudaSetDevice(index), "cudaSetDevice")

    def sync(self, stream) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


class _Engine:
    """One deserialised engine + execution context + device buffers grown on demand."""

    def __init__(self, trt, runtime, path: Path, cuda: _Cuda, device: int = 0, log=print):
        self.trt, self.cuda = trt, cuda
        engine = None
        if path.suffix != ".onnx":
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            onnx = path.with_suffix(".onnx")
            if not onnx.is_file():
                raise InputError(
                    f"tensorrt: '{path}' could not be deserialised; it was built by another TensorRT version "
                    "or for another GPU, and no ONNX graph beside it ('" + onnx.name + "') to rebuild from. "
                    "Rebuild the bundle on this device (edgefss export --backend tensorrt)"
                )
            from edgefss.trt_cache import build_cached

            if path.suffix != ".onnx":
                log(f"tensorrt: '{path.name}' does not load with this TensorRT/GPU; rebuilding from {onnx.name}")
            int8, fp16 = self._build_precision(path, onnx)
            plan, _, _ = build_cached(onnx, int8, fp16, device=device, log=log)
            engine = runtime.deserialize_cuda_engine(plan.read_bytes())
            if engine is None:
                raise InputError(f"tensorrt: the engine rebuilt from '{onnx}' does not deserialise either")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_in = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_in else self.outputs).append(name)
        names = self.inputs + self.outputs
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, capacity bytes)
        self.stream = cuda.stream()

    @staticmethod
    def _build_precision(path: Path, onnx: Path) -> tuple[bool, bool]:
        """(int8, fp16) flags to rebuild with, as the exporter built this graph: INT8 for a graph with
        QDQ nodes, else FP16 unless the bundle (manifest beside it) is FP32."""
        import json

        data = onnx.read_bytes()
        if b"QuantizeLinear" in data:  # op types are stored as plain strings in the protobuf
            return True, True
        try:
            precision = str(json.loads((path.parent / "manifest.json").read_text()).get("precision", "fp16"))
        except (OSError, ValueError):
            precision = "fp16"
        return False, precision.lower() != "fp32"

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self.buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                self.cuda.free(ptr)
            ptr, cap = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, cap)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"tensorrt: missing inputs {missing}; engine inputs are {self.inputs}")
        hosts = {}
        for n in self.inputs:
            a = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
            hosts[n] = a  # keep alive until the stream is synchronised
            if not self.context.set_input_shape(n, a.shape):
                raise InputError(
                    f"tensorrt: input '{n}' shape {a.shape} is outside the engine's optimisation profile"
                )
            ptr = self._buffer(n, a.nbytes)
            self.cuda.h2d(ptr, a, self.stream)
            self.context.set_tensor_address(n, ptr)
        outs = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            outs[n] = np.empty(shape, dtype=self.dtypes[n])
            self.context.set_tensor_address(n, self._buffer(n, outs[n].nbytes))
        if not self.context.execute_async_v3(int(self.stream)):  # TensorRT takes the raw cudaStream_t handle
            raise RuntimeError("tensorrt: execute_async_v3 failed (see the TensorRT log above)")
        for n in self.outputs:
            self.cuda.d2h(outs[n], self.buffers[n][0], self.stream)
        self.cuda.sync(self.stream)
        return outs

    def close(self) -> None:
        """Frees the device buffers and the stream, then drops the context and engine (idempotent)."""
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers.clear()
        if getattr(self, "stream", None) is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
        self.context = None  # the context before its engine (TensorRT's destruction order)
        self.engine = None


class TensorRTBackend:
    """Runs a bundle's .plan engines with TensorRT 10.

    An IExecutionContext and its buffers are not thread-safe, so `run` holds a per-graph lock.

    Args:
        files: graph name -> .plan / .engine path (built for this GPU and TensorRT version).
        threads: ignored (GPU).
        device: CUDA device index or None (0).
    """

    name = "tensorrt"

    def __init__(self, files: dict[str, Path], threads: int | None = None, device: str | int | None = None):
        trt = require("tensorrt", "the tensorrt backend")
        major = int(str(trt.__version__).split(".")[0])
        if major < 10:
            raise BackendUnavailableError(
                f"the tensorrt backend needs TensorRT >= 10 (name-based I/O API), found {trt.__version__}"
            )
        cuda = _Cuda()
        self.device = 0 if device in (None, "cuda") else int(str(device).replace("cuda:", ""))
        cuda.set_device(self.device)
        self.cuda = cuda
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engines = {g: _Engine(trt, self.runtime, Path(p), cuda, self.device) for g, p in files.items()}
        self.locks = {g: threading.Lock() for g in files}
        self.closed = False

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.closed:
            raise InputError("tensorrt: the backend was closed; load the bundle again")
        with self.locks[graph]:
            # the current device is per-thread in CUDA: a worker thread starts on device 0
            self.cuda.set_device(self.device)
            return self.engines[graph].run(feeds)

    def close(self) -> None:
        """Releases every engine's device memory, stream and context now (idempotent)."""
        if getattr(self, "closed", True):
            return
        self.closed = True
        self.cuda.set_device(self.device)
        for g, e in self.engines.items():
            with self.locks[g]:
                e.close()
        self.runtime = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass
