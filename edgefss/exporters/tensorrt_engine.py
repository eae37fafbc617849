"""TensorRT engines for a bundle, built from (QDQ) ONNX through the engine cache (edgefss.trt_cache).

INT8 is *explicit* quantization: the QDQ nodes from ORT's quantize_static carry the scales, so
no IInt8Calibrator is used (implicit calibration is deprecated in TRT 10.1 and removed in 11).
`BuilderFlag.FP16` is the fallback precision for the layers left float, under the FP16 precision
policy of edgefss.trt_policy. Engines are cached under (graph SHA-256, TensorRT version, compute
capability, precision, optimisation profile); a changed key rebuilds with a progress line.
`tensorrt` is imported lazily; without it `available()` is False and building raises
BackendUnavailableError. No torch: device facts come from cuda-python (edgefss.devinfo).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import asdict
from pathlib import Path

from edgefss.trt_cache import DEFAULT_WORKSPACE_MIB, MAX_SUPPORT, build_cached, default_cache_dir  # noqa: F401


def available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def build_engine(onnx_path, plan_path, int8: bool, fp16: bool, workspace_mib: int | None = None, cache_dir=None,
                 device: int = 0, log=print) -> dict:
    """Build (or fetch from the cache) a serialized engine for one graph and copy it to `plan_path`.

    Args:
        onnx_path: FP32 or QDQ ONNX; plan_path: where the .plan goes.
        int8: BuilderFlag.INT8 (the graph must carry QDQ nodes); fp16: BuilderFlag.FP16 with the policy.
        workspace_mib: builder workspace cap (default 1024 MiB or $EDGEFSS_TRT_WORKSPACE_MIB).
        cache_dir: engine cache folder (default $EDGEFSS_TRT_CACHE or ~/.cache/edgefss/trt).

    Returns:
        dict(trt_version, gpu (compute capability), cache_key (digest), cache_hit, key (the EngineKey fields)).
    """
    plan, key, hit = build_cached(onnx_path, int8, fp16, workspace_mib, cache_dir, device, log)
    shutil.copyfile(plan, Path(plan_path))
    return {"trt_version": key.trt_version, "gpu": f"sm_{key.compute_capability.replace('.', '')}",
            "cache_key": key.digest(), "cache_hit": hit, "key": asdict(key)}
