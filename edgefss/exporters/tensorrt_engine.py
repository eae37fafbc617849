"""TensorRT engine building from (QDQ) ONNX, written against the TensorRT 10 Python API.

INT8 is *explicit* quantization: the QDQ nodes from ORT's quantize_static carry the scales, so
no IInt8Calibrator is used (implicit calibration is deprecated in TRT 10.1 and removed in 11).
`BuilderFlag.FP16` is the fallback precision for the layers left float. Engines are not
portable across GPUs or TRT versions, so the cache key includes both.
`tensorrt` is imported lazily; without it `available()` is False and building raises
BackendUnavailableError.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from edgefss.errors import StateError, require

MAX_SUPPORT = 8  # optimization profile upper bound of the dynamic support batch B


def available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # the name only keys the cache; a missing CUDA torch must not block the build
        pass
    return "unknown-gpu"


def cache_key(onnx_path, int8: bool, fp16: bool, trt_version: str, gpu: str) -> str:
    """SHA-256 over the ONNX bytes, precision flags, TensorRT version and GPU name."""
    h = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(f"|int8={int8}|fp16={fp16}|trt={trt_version}|gpu={gpu}|maxB={MAX_SUPPORT}".encode())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEFSS_TRT_CACHE", Path.home() / ".cache" / "edgefss" / "trt"))


def build_engine(onnx_path, plan_path, int8: bool, fp16: bool, workspace_mib: int = 2048,
                 cache_dir=None) -> dict:
    """Build (or fetch from the cache) a serialized engine for one graph.

    Args:
        onnx_path: FP32 or QDQ ONNX; plan_path: where the .plan goes.
        int8: set BuilderFlag.INT8 (the graph must carry QDQ nodes); fp16: BuilderFlag.FP16.
        workspace_mib: builder workspace pool limit; cache_dir: engine cache folder.

    Returns:
        dict(trt_version, gpu, cache_key, cache_hit).
    """
    trt = require("tensorrt", "the tensorrt backend")
    gpu = _gpu_name()
    key = cache_key(onnx_path, int8, fp16, trt.__version__, gpu)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / f"{key}.plan"
    info = {"trt_version": trt.__version__, "gpu": gpu, "cache_key": key, "cache_hit": cached.is_file()}
    if cached.is_file():
        shutil.copyfile(cached, plan_path)
        return info
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StateError(f"TensorRT could not parse '{onnx_path}': {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if fp16 or int8:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if any(d < 0 for d in shape):
            lo = [1 if d < 0 else d for d in shape]
            hi = [MAX_SUPPORT if d < 0 else d for d in shape]
            profile.set_shape(t.name, lo, lo, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise StateError(f"TensorRT failed to build an engine from '{onnx_path}' (see the TensorRT log above)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(bytes(blob))
    tmp.replace(cached)
    shutil.copyfile(cached, plan_path)
    return info


def trt_runner(plan_path):
    """fn(feeds) -> outputs for an engine, using CUDA torch tensors as device buffers."""
    trt = require("tensorrt", "running TensorRT engines")
    torch = require("torch", "TensorRT verification buffers")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(feeds: dict) -> dict:
        keep = {}
        for n, v in feeds.items():
            t = torch.from_numpy(v).cuda().contiguous()
            keep[n] = t
            ctx.set_input_shape(n, tuple(t.shape))
            ctx.set_tensor_address(n, t.data_ptr())
        res = {}
        for n in outs:
            t = torch.empty(tuple(ctx.get_tensor_shape(n)), dtype=torch.float32, device="cuda")
            res[n] = t
            ctx.set_tensor_address(n, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise StateError(f"TensorRT execution failed for '{plan_path}'")
        stream.synchronize()
        return {n: t.cpu().numpy() for n, t in res.items()}

    return run
