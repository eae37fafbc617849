"""Device facts for doctor, the TensorRT cache and benchmarks: CUDA device, Jetson power mode and
clocks, JetPack/L4T, CUDA and TensorRT versions, peak GPU memory. Torch-free; every probe returns
None (or an empty field) where the fact does not exist on this machine, never raises.

For bench/latency.py (H6) and doctor: `jetson_power_mode()`, `jetson_clocks()`, `versions()`,
`PeakGpuMemory` (a sampler: `with PeakGpuMemory() as m: ...; m.peak_mib`).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import threading
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            return None
    return cudart


def cuda_device_info(device: int = 0) -> dict | None:
    """{'name', 'compute_capability': 'major.minor', 'total_mib'} of a CUDA device, or None."""
    rt = _cudart()
    if rt is None:
        return None
    try:
        err, props = rt.cudaGetDeviceProperties(device)
        if err != rt.cudaError_t.cudaSuccess:
            return None
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}",
                "total_mib": int(props.totalGlobalMem) >> 20}
    except Exception:  # a broken driver must not break doctor
        return None


def is_jetson() -> bool:
    return TEGRA_RELEASE.is_file()


def l4t_release(text: str | None = None) -> str | None:
    """'36.3.0' from /etc/nv_tegra_release ('# R36 (release), REVISION: 3.0, ...')."""
    if text is None:
        if not is_jetson():
            return None
        text = TEGRA_RELEASE.read_text(errors="replace")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_from_l4t(l4t: str | None) -> str | None:
    """JetPack major line for an L4T release: R36 -> '6', R35 -> '5' (exact minor from the L4T)."""
    if not l4t:
        return None
    major = int(l4t.split(".")[0])
    return {36: "6", 35: "5", 34: "5", 32: "4"}.get(major)


def _run(cmd) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def jetson_power_mode(nvpmodel_output: str | None = None) -> str | None:
    """The nvpmodel mode ('MAXN', '15W', ...) from `nvpmodel -q`, or None off a Jetson."""
    if nvpmodel_output is None:
        if not is_jetson():
            return None
        nvpmodel_output = _run(["nvpmodel", "-q"]) or ""
    m = re.search(r"NV Power Mode:\s*(\S+)", nvpmodel_output)
    return m.group(1) if m else None


def jetson_clocks(sysfs: Path = Path("/sys")) -> dict:
    """Current CPU (per core) and GPU clocks in MHz from sysfs; empty off a Jetson."""
    out: dict = {}
    cpus = sorted((sysfs / "devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))
    if cpus and (sysfs != Path("/sys") or is_jetson()):
        out["cpu_mhz"] = [int(p.read_text().strip()) // 1000 for p in cpus]
    for p in sorted((sysfs / "devices").glob("platform/*gpu*/devfreq/*/cur_freq")) + \
            sorted((sysfs / "devices").glob("platform/*ga10b*/devfreq/*/cur_freq")):
        out["gpu_mhz"] = int(p.read_text().strip()) // 1_000_000
        break
    return out


def versions() -> dict:
    """JetPack/L4T (Jetson), CUDA runtime and TensorRT versions, None where absent."""
    l4t = l4t_release()
    cuda = None
    rt = _cudart()
    if rt is not None:
        try:
            err, v = rt.cudaRuntimeGetVersion()
            if err == rt.cudaError_t.cudaSuccess:
                cuda = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:
            cuda = None
    if cuda is None:
        vj = Path("/usr/local/cuda/version.json")
        if vj.is_file():
            try:
                cuda = json.loads(vj.read_text())["cuda"]["version"]
            except (ValueError, KeyError):
                cuda = None
    trt = None
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        try:
            trt = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"l4t": l4t, "jetpack": jetpack_from_l4t(l4t), "cuda": cuda, "tensorrt": trt}


class PeakGpuMemory:
    """Peak device memory in use (MiB) while the block runs, sampled every `interval` s.

    Uses cudaMemGetInfo (device-wide used = total - free, so other processes count too; on a
    Jetson it is the shared system memory). `peak_mib` is None without a CUDA device.
    """

    def __init__(self, device: int = 0, interval: float = 0.01):
        self.device, self.interval = device, interval
        self.peak_mib: float | None = None
        self.baseline_mib: float | None = None
        self._stop = threading.Event()
        self._thread = None

    def _used(self) -> float | None:
        rt = _cudart()
        if rt is None:
            return None
        try:
            rt.cudaSetDevice(self.device)
            err, free, total = rt.cudaMemGetInfo()
            return (total - free) / 2**20 if err == rt.cudaError_t.cudaSuccess else None
        except Exception:
            return None

    def _loop(self):
        while not self._stop.is_set():
            u = self._used()
            if u is not None:
                self.peak_mib = u if self.peak_mib is None else max(self.peak_mib, u)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.baseline_mib = self._used()
        if self.baseline_mib is not None:
            self.peak_mib = self.baseline_mib
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False
