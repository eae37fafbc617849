"""`edgefss doctor`: what is installed on this machine and what each missing piece would enable.

`collect()` returns a JSON-able dict; `format_report()` renders it for people. Nothing here
imports torch or initialises a GPU: package versions come from the installed metadata, and only
onnxruntime, openvino and the native extension are imported (to list providers/devices/CUDA).
Every probe is guarded, so a broken package shows up as an entry with its error instead of a crash.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from edgefss._version import __version__
from edgefss.errors import pip_hint

# (import name, distribution names to ask for a version, what it enables)
PACKAGES = (
    ("numpy", ("numpy",), "everything (required)"),
    ("cv2", ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
     "image loading, overlays and the camera/video demo"),
    ("onnx", ("onnx",), "building and checking ONNX graphs (export, INT8 quantisation)"),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
     "the onnxruntime backend (CPU, CUDA/TensorRT providers when present) and INT8 calibration"),
    ("openvino", ("openvino",), "the openvino backend (Intel CPU/GPU/NPU) and OpenVINO IR bundles"),
    ("nncf", ("nncf",), "INT8 quantisation for OpenVINO"),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt_lean"), "the tensorrt backend (NVIDIA GPUs, Jetson)"),
    ("torch", ("torch",), "export, training and evaluation of the PyTorch models (not needed to deploy)"),
)

# ISA features that matter for the engines: (name shown, /proc/cpuinfo flags meaning it)
ISA_FLAGS = (
    ("SSE4.2", ("sse4_2",)),
    ("AVX2", ("avx2",)),
    ("FMA", ("fma",)),
    ("AVX-512", ("avx512f",)),
    ("AVX512-VNNI", ("avx512_vnni",)),
    ("AVX-VNNI", ("avx_vnni",)),
    ("AVX512-BF16", ("avx512_bf16",)),
    ("AMX", ("amx_tile",)),
    ("NEON", ("asimd", "neon")),
    ("dotprod", ("asimddp",)),
    ("FP16 arith", ("asimdhp", "fphp")),
    ("i8mm", ("i8mm",)),
    ("SVE", ("sve",)),
)


def _version(dists) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def _package(name: str, dists, enables: str) -> dict:
    installed = importlib.util.find_spec(name) is not None
    entry = {"installed": installed, "version": _version(dists) if installed else None, "enables": enables}
    if not installed:
        entry["pip"] = pip_hint(name)
    return entry


def _onnxruntime_info() -> dict:
    try:
        ort = importlib.import_module("onnxruntime")
        return {"providers": list(ort.get_available_providers()), "device": ort.get_device()}
    except Exception as exc:  # a broken install must not stop the report
        return {"error": f"{type(exc).__name__}: {exc}"}


def _openvino_info() -> dict:
    try:
        ov = importlib.import_module("openvino")
        core = ov.Core()
        devices = {}
        for d in core.available_devices:
            try:
                devices[d] = str(core.get_property(d, "FULL_DEVICE_NAME"))
            except Exception:
                devices[d] = d
        return {"devices": devices}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _native_info() -> dict:
    from edgefss.ops import has_native
    from edgefss.ops._native import native_error, native_module

    if not has_native():
        return {"cpu": False, "cuda_compiled": False, "cuda_device": False, "import_error": native_error(),
                "enables": "fast Sinkhorn/correlation kernels (C++/OpenMP, CUDA)",
                "pip": "pip install --force-reinstall --no-deps .  (with a C++ compiler and CMake; "
                       "nvcc for the CUDA kernels)"}
    mod = native_module()
    info = {"cpu": True, "cuda_compiled": False, "cuda_device": False}
    try:
        info["cuda_compiled"] = bool(mod.with_cuda())
        info["cuda_device"] = bool(mod.cuda_available())
        info["kernel_isa"] = mod.kernel_isa()  # CPU kernel variant picked at run time (csrc/common/isa.h)
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo text -> {"model": str | None, "cores": int, "flags": [...], "isa": {name: bool}}.

    Reads x86 ("model name", "flags") and ARM ("Hardware"/"CPU part", "Features") layouts.
    """
    model, flags, cores = None, set(), 0
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip().lower(), val.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "hardware", "cpu model") and val and model is None:
            model = val
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    isa = {name: any(f in flags for f in keys) for name, keys in ISA_FLAGS}
    return {"model": model, "cores": cores, "flags": sorted(flags), "isa": isa}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _cpu_info(root: Path) -> dict:
    info = parse_cpuinfo(_read(root / "proc/cpuinfo") or "")
    info["arch"] = platform.machine()
    if info["model"] is None:
        info["model"] = platform.processor() or None
    # the full flag list is long; keep it out of the report, the ISA table says what matters
    info.pop("flags")
    return info


def _gpu_info(root: Path) -> list:
    gpus = []
    smi = shutil.which("nvidia-smi") if root == Path("/") else None
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            for line in out.stdout.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                gpus.append(dict(zip(("name", "driver", "memory", "compute_capability"), parts), source="nvidia-smi"))
        except (OSError, subprocess.SubprocessError):
            pass
    if not gpus:
        for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
            fields = dict(l.split(":", 1) for l in (_read(info) or "").splitlines() if ":" in l)
            gpus.append({"name": fields.get("Model", "").strip() or "NVIDIA GPU", "source": str(info)})
    if not gpus:
        ver = _read(root / "proc/driver/nvidia/version")
        if ver:
            gpus.append({"name": "NVIDIA GPU (driver loaded)", "driver": ver.splitlines()[0].strip(),
                         "source": "/proc/driver/nvidia/version"})
    return gpus


def _jetson_model(root: Path) -> str | None:
    model = _read(root / "proc/device-tree/model")
    if model is None:
        return None
    model = model.replace("\x00", "").strip()
    return model if "jetson" in model.lower() or "nvidia" in model.lower() else None


def collect(root: str | Path = "/") -> dict:
    """Everything the report shows, as a JSON-able dict.

    Args:
        root: filesystem root for /proc lookups (tests point it at a fake tree; nvidia-smi is only
            run for the real root).
    """
    root = Path(root)
    pkgs = {name: _package(name, dists, enables) for name, dists, enables in PACKAGES}
    info = {
        "edgefss": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": pkgs,
        "native": _native_info(),
        "cpu": _cpu_info(root),
        "gpu": _gpu_info(root),
        "jetson": _jetson_model(root),
    }
    if pkgs["onnxruntime"]["installed"]:
        pkgs["onnxruntime"].update(_onnxruntime_info())
    if pkgs["openvino"]["installed"]:
        pkgs["openvino"].update(_openvino_info())
    info["backends"] = usable_backends(info)
    if root == Path("/"):  # device facts come from the live system only
        info["device"], info["trt_engines"] = _device_info()
    return info


def _device_info() -> tuple[dict, list]:
    """(JetPack/L4T, CUDA, TensorRT versions [+ Jetson power mode and clocks], cached TensorRT
    engines with whether each fits this device: the TensorRT version and compute capability it was
    built for must both match, or the runtime rebuilds it from the bundle's ONNX)."""
    from edgefss import devinfo, trt_cache

    dev = dict(devinfo.versions())
    cuda = devinfo.cuda_device_info()
    cc = None if not cuda else cuda.get("compute_capability")
    dev["compute_capability"] = cc
    if devinfo.is_jetson():
        dev["power_mode"] = devinfo.jetson_power_mode()
        dev.update(devinfo.jetson_clocks())
    return dev, trt_cache.cached_engines(None, dev.get("tensorrt"), cc)


def usable_backends(info: dict) -> dict:
    """backend name -> why it can / cannot run here (one line each)."""
    p = info["packages"]
    out = {}
    if p["onnxruntime"]["installed"]:
        out["onnxruntime"] = "ready (" + ", ".join(p["onnxruntime"].get("providers", [])) + ")"
    else:
        out["onnxruntime"] = "missing: " + p["onnxruntime"]["pip"]
    if p["openvino"]["installed"]:
        out["openvino"] = "ready (" + ", ".join(p["openvino"].get("devices", {})) + ")"
    else:
        out["openvino"] = "missing: " + p["openvino"]["pip"]
    if not p["tensorrt"]["installed"]:
        out["tensorrt"] = "missing: " + p["tensorrt"]["pip"]
    elif not info["gpu"]:
        out["tensorrt"] = "installed, but no NVIDIA GPU found"
    else:
        out["tensorrt"] = "ready"
    return out


def format_report(info: dict) -> str:
    """Human-readable report of `collect()`'s dict."""
    lines = [f"edgefss {info['edgefss']} on Python {info['python']['version']} ({info['python']['platform']})", ""]
    lines.append("packages:")
    missing = []
    for name, e in info["packages"].items():
        if e["installed"]:
            extra = ""
            if "providers" in e:
                extra = "  providers: " + ", ".join(e["providers"])
            if "devices" in e:
                extra = "  devices: " + ", ".join(f"{k} ({v})" for k, v in e["devices"].items())
            if "error" in e:
                extra += f"  (broken: {e['error']})"
            lines.append(f"  [x] {name:<12} {e['version'] or '?':<12}{extra}")
        else:
            lines.append(f"  [ ] {name:<12} not installed")
            missing.append((name, e))
    n = info["native"]
    if n["cpu"]:
        cuda = "CUDA kernels + device" if n["cuda_device"] else ("CUDA kernels, no device" if n["cuda_compiled"] else "no CUDA")
        lines.append(f"  [x] edgefss._C   CPU ({n.get('kernel_isa', '?')} kernels), {cuda}")
    else:
        lines.append(f"  [ ] edgefss._C   cannot be imported, NumPy reference ops are used ({n['import_error']})")
        missing.append(("edgefss._C", n))
    c = info["cpu"]
    lines += ["", f"cpu: {c['model'] or 'unknown'} ({c['arch']}, {c['cores']} logical cores)",
              "  ISA: " + (", ".join(k for k, v in c["isa"].items() if v) or "none of " + ", ".join(c["isa"]))]
    lines.append("gpu: " + ("; ".join(g["name"] + (f" (driver {g['driver']})" if g.get("driver") else "")
                                      for g in info["gpu"]) or "none found (nvidia-smi, /proc/driver/nvidia)"))
    if info["jetson"]:
        lines.append(f"jetson: {info['jetson']}")
    if "device" in info:
        d = info["device"]
        lines.append("device: " + ", ".join(f"{k} {v}" for k, v in d.items() if v is not None)
                     if any(v is not None for v in d.values()) else "device: no JetPack, CUDA runtime or TensorRT found")
        eng = info["trt_engines"]
        fit = {True: "fits", False: "built for another TensorRT/GPU: rebuilt on load", None: "fit unknown"}
        lines.append(f"cached TensorRT engines: {len(eng)}" + "".join(
            f"\n  {Path(e['plan']).name}: {e.get('precision', '?')}, TensorRT {e.get('trt_version', '?')}, "
            f"sm {e.get('compute_capability', '?')} ({fit[e['fits']]})" for e in eng))
    lines += ["", "backends:"] + [f"  {k:<12} {v}" for k, v in info["backends"].items()]
    if missing:
        lines += ["", "missing pieces and what they would enable:"]
        for name, e in missing:
            lines.append(f"  {name}: {e['enables']}")
            lines.append(f"      {e['pip']}")
    return "\n".join(lines)
