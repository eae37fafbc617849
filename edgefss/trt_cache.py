"""TensorRT engine cache and builder (TensorRT 10 API), torch-free; `tensorrt` is imported lazily.

An engine is valid only for the graph, TensorRT version, GPU architecture, precision and
optimisation profile it was built with; a plan from another TensorRT or JetPack refuses to
deserialise (NVIDIA/TensorRT#2105, pytorch/TensorRT#3478). So engines are cached under an
`EngineKey` of exactly those five things, and a lookup that finds only engines of the same
graph built under another key says which field changed, rebuilds (one progress line, then the
time it took) and caches the new engine next to the old ones.

Builds are capped at `workspace_mib` of builder scratch memory (default 1024 MiB, or
$EDGEFSS_TRT_WORKSPACE_MIB): TensorRT's default is the whole device memory, which on an Orin Nano
8 GB (CPU and GPU share it) gets the build killed for memory (nanosam#18, jetson-containers#598).
FP16 builds follow the precision policy of `edgefss.trt_policy` (norms, softmax, exp/log stay FP32).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edgefss.errors import StateError, require

MAX_SUPPORT = 8  # optimisation profile upper bound of the dynamic support batch B
DEFAULT_WORKSPACE_MIB = 1024  # fits an Orin Nano 8 GB next to the process and the model's weights


def default_workspace_mib() -> int:
    env = os.environ.get("EDGEFSS_TRT_WORKSPACE_MIB")
    if env:
        try:
            v = int(env)
        except ValueError:
            v = 0
        if v < 64:
            raise ValueError(f"EDGEFSS_TRT_WORKSPACE_MIB must be an integer >= 64 (MiB), got {env!r}")
        return v
    return DEFAULT_WORKSPACE_MIB


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEFSS_TRT_CACHE", Path.home() / ".cache" / "edgefss" / "trt"))


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for. `profile`: "name:min/opt/max;..." over the dynamic inputs."""

    graph_sha256: str
    trt_version: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100/H200)
    precision: str  # "fp32" | "fp16" | "int8"
    profile: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]

    def differences(self, other: "EngineKey") -> list[str]:
        """'field: other -> self' for every field that differs."""
        return [f"{f.name}: {getattr(other, f.name)} -> {getattr(self, f.name)}" for f in fields(self)
                if getattr(other, f.name) != getattr(self, f.name)]


class EngineCache:
    """Folder of `<digest>.plan` engines, each with `<digest>.json` holding its EngineKey."""

    def __init__(self, root=None):
        self.root = Path(root) if root else default_cache_dir()

    def plan_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.digest()}.plan"

    def lookup(self, key: EngineKey) -> Path | None:
        p = self.plan_path(key)
        return p if p.is_file() and p.with_suffix(".json").is_file() else None

    def same_graph(self, key: EngineKey) -> list[EngineKey]:
        """Cached keys of the same graph and precision built under another key (why a rebuild)."""
        out = []
        for meta in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                k = EngineKey(**json.loads(meta.read_text()))
            except (ValueError, TypeError):
                continue
            if k != key and k.graph_sha256 == key.graph_sha256 and k.precision == key.precision:
                out.append(k)
        return out

    def store(self, key: EngineKey, blob: bytes) -> Path:
        """Writes the engine and its key atomically (temp + rename); returns the plan path."""
        self.root.mkdir(parents=True, exist_ok=True)
        plan = self.plan_path(key)
        for path, data in ((plan, bytes(blob)), (plan.with_suffix(".json"), json.dumps(asdict(key)).encode())):
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return plan

    def get_or_build(self, key: EngineKey, build, label: str, log=print) -> tuple[Path, bool]:
        """The cached plan for `key`, or `build() -> bytes` run once and cached.

        Returns:
            (plan path, cache hit).
        """
        hit = self.lookup(key)
        if hit is not None:
            return hit, True
        old = self.same_graph(key)
        why = ("cached engine was built for " + "; ".join(key.differences(old[0]))) if old else "not cached yet"
        log(f"building TensorRT engine for {label} ({why}); this takes minutes on a Jetson ...")
        t0 = time.perf_counter()
        blob = build()
        plan = self.store(key, blob)
        log(f"built TensorRT engine for {label} in {time.perf_counter() - t0:.1f} s -> {plan}")
        return plan, False


def device_compute_capability(device: int = 0) -> str:
    """'major.minor' of a CUDA device through cuda-python (no torch)."""
    from edgefss.devinfo import cuda_device_info

    info = cuda_device_info(device)
    if info is None:
        raise StateError("TensorRT engines need a CUDA device; none was found (cuda-python could not see one)")
    return info["compute_capability"]


def profile_string(inputs) -> str:
    """'name:min/opt/max;...' for (name, shape) inputs whose dims < 0 are dynamic (the support batch)."""
    parts = []
    for name, shape in inputs:
        if any(d < 0 for d in shape):
            lo = [1 if d < 0 else d for d in shape]
            hi = [MAX_SUPPORT if d < 0 else d for d in shape]
            parts.append(f"{name}:{'x'.join(map(str, lo))}/{'x'.join(map(str, lo))}/{'x'.join(map(str, hi))}")
    return ";".join(parts)


def onnx_inputs(onnx_path) -> list[tuple[str, tuple]]:
    """(name, shape) of a graph's inputs, -1 for symbolic dims (reads the ONNX protobuf, no TensorRT)."""
    onnx = require("onnx", "reading the graph's inputs for the TensorRT profile")
    m = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    out = []
    for i in m.graph.input:
        if i.name in init:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
        out.append((i.name, dims))
    return out


def precision_of(int8: bool, fp16: bool) -> str:
    return "int8" if int8 else ("fp16" if fp16 else "fp32")


def serialize_engine(onnx_path, int8: bool, fp16: bool, workspace_mib: int, log=print) -> bytes:
    """Parses the ONNX and builds a serialized engine with the FP16 precision policy."""
    trt = require("tensorrt", "building TensorRT engines")
    from edgefss import trt_policy

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StateError(f"TensorRT could not parse '{onnx_path}': {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if fp16 or int8:
        config.set_flag(trt.BuilderFlag.FP16)
        onnx = require("onnx", "the FP16 precision policy")
        pins = trt_policy.pinned_nodes(onnx.load(str(onnx_path), load_external_data=False))
        marked = trt_policy.apply_to_network(network, pins, trt)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log(f"precision policy: {len(pins)} ONNX nodes kept FP32 {trt_policy.summary(pins)} "
            f"-> {marked} TensorRT layers")
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
        raise StateError(f"TensorRT failed to build an engine from '{onnx_path}' (see the TensorRT log above; "
                         f"workspace cap {workspace_mib} MiB: raise --workspace / EDGEFSS_TRT_WORKSPACE_MIB "
                         "if tactics were skipped for memory)")
    return bytes(blob)


def engine_key(onnx_path, int8: bool, fp16: bool, trt_version: str, compute_capability: str) -> EngineKey:
    return EngineKey(file_sha256(onnx_path), str(trt_version), str(compute_capability), precision_of(int8, fp16),
                     profile_string(onnx_inputs(onnx_path)))


def build_cached(onnx_path, int8: bool, fp16: bool, workspace_mib: int | None = None, cache_dir=None,
                 device: int = 0, log=print) -> tuple[Path, EngineKey, bool]:
    """Engine for `onnx_path` on this device from the cache, built (with the policy) on a miss.

    Returns:
        (cached plan path, its EngineKey, cache hit).
    """
    trt = require("tensorrt", "building TensorRT engines")
    key = engine_key(onnx_path, int8, fp16, trt.__version__, device_compute_capability(device))
    ws = default_workspace_mib() if workspace_mib is None else int(workspace_mib)
    plan, hit = EngineCache(cache_dir).get_or_build(
        key, lambda: serialize_engine(onnx_path, int8, fp16, ws, log), Path(onnx_path).name, log)
    return plan, key, hit


def cached_engines(cache_dir=None, trt_version: str | None = None, compute_capability: str | None = None) -> list[dict]:
    """Every engine in the cache with its key and whether it fits this device (for `edgefss doctor`).

    Args:
        trt_version / compute_capability: this device's; None = unknown (then `fits` is None).

    Returns:
        [{"plan": path, **EngineKey fields, "fits": bool | None}] sorted by plan name.
    """
    cache = EngineCache(cache_dir)
    out = []
    for meta in sorted(cache.root.glob("*.json")) if cache.root.is_dir() else []:
        try:
            key = EngineKey(**json.loads(meta.read_text()))
        except (ValueError, TypeError):
            continue
        plan = meta.with_suffix(".plan")
        if not plan.is_file():
            continue
        fits = None
        if trt_version is not None and compute_capability is not None:
            fits = key.trt_version == str(trt_version) and key.compute_capability == str(compute_capability)
        out.append({"plan": str(plan), **asdict(key), "fits": fits})
    return out
