"""Machine facts for benchmark reports: CPU and ISA (from edgefss.doctor), load, peak RSS, the
per-instruction-set peak throughput (bench/peaks/isa_peaks), optional device info."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEAKS_SRC = REPO / "bench" / "peaks"
# The roofline of a row: the best measured FP32 FMA / INT8 dot-product peak of the CPU.
FP32_PEAKS = ("fp32_fma_avx512", "fp32_fma_avx2")
INT8_PEAKS = ("int8_vnni_avx512", "int8_vnni_avx256", "int8_avx2")


def cpu_info() -> dict:
    """{'cpu', 'arch', 'logical_cpus', 'isa': {name: bool}} (the ISA table of `edgefss doctor`)."""
    from edgefss.doctor import parse_cpuinfo

    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    info = parse_cpuinfo(text)
    return {"cpu": info["model"] or platform.processor() or platform.machine(), "arch": platform.machine(),
            "logical_cpus": os.cpu_count(), "isa": info["isa"]}


def has_vnni(isa: dict) -> bool:
    return bool(isa.get("AVX512-VNNI") or isa.get("AVX-VNNI"))


def gpu_info() -> str | None:
    """GPU names from nvidia-smi, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().replace("\n", "; ") or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_info() -> dict | None:
    """CUDA device, Jetson power mode / clocks and JetPack/CUDA/TensorRT versions from
    edgefss.devinfo; None on a machine with neither a CUDA device nor a Jetson."""
    try:
        from edgefss import devinfo
    except ImportError:
        return None
    try:
        cuda, jetson = devinfo.cuda_device_info(), devinfo.is_jetson()
        if cuda is None and not jetson:
            return None
        info = {"cuda": cuda, "versions": devinfo.versions()}
        if jetson:
            info.update(power_mode=devinfo.jetson_power_mode(), clocks_mhz=devinfo.jetson_clocks())
        return info
    except Exception as exc:  # a device query must not stop a benchmark
        return {"error": f"{type(exc).__name__}: {exc}"}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (other processes compete for the cores when > 0)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec; ru_maxrss would not do,
    as Linux keeps it across fork+exec, so a worker would inherit its parent's peak.
    """
    try:
        m = re.search(r"^VmHWM:\s*(\d+)\s*kB", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def peaks_binary(build_dir: Path | None = None, log=print) -> Path | None:
    """The isa_peaks driver: $EDGEFSS_PEAKS_BIN, build/peaks/isa_peaks, or built with CMake into
    `build_dir` from bench/peaks (a source checkout with cmake and a C++ compiler); else None."""
    env = os.environ.get("EDGEFSS_PEAKS_BIN")
    if env:
        return Path(env) if Path(env).is_file() else None
    for cand in (REPO / "build" / "peaks" / "isa_peaks", (build_dir or Path("/nonexistent")) / "isa_peaks"):
        if cand.is_file():
            return cand
    if build_dir is None or not (PEAKS_SRC / "CMakeLists.txt").is_file() or shutil.which("cmake") is None:
        return None
    try:
        subprocess.run(["cmake", "-S", str(PEAKS_SRC), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
                       capture_output=True, check=True, timeout=300)
        subprocess.run(["cmake", "--build", str(build_dir)], capture_output=True, check=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"isa_peaks: build failed ({type(exc).__name__}); no roofline reference")
        return None
    exe = build_dir / "isa_peaks"
    return exe if exe.is_file() else None


def isa_peaks(threads: int, binary: Path | None) -> dict:
    """{'peaks': {test: G ops/s}, 'threads', 'source'} from the driver, or {'error': why}."""
    if binary is None:
        return {"error": "bench/peaks/isa_peaks not built (cmake -S bench/peaks -B build/peaks && "
                         "cmake --build build/peaks)"}
    try:
        p = subprocess.run([str(binary), str(threads)], capture_output=True, text=True, timeout=120)
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"isa_peaks failed: {type(exc).__name__}: {exc}"}
    res["source"] = str(binary)
    return res


def reference_peak(peaks: dict, precision: str) -> tuple[str, float] | None:
    """(test name, G ops/s) the roofline of a row of this precision is measured against."""
    # the best instruction set for the precision: what a well-chosen kernel could reach
    names = INT8_PEAKS if precision == "int8" else FP32_PEAKS
    have = {n: float(v) for n, v in (peaks.get("peaks") or {}).items() if n in names and v}
    if not have:
        return None
    best = max(have, key=have.get)
    return best, have[best]


def source_sha256(pkg: Path | None = None) -> str:
    """SHA-256 over the edgefss package's Python sources (path + bytes, sorted): the code a figure
    or a cached bundle came from. Any edit changes it, so a benchmark never reuses a bundle that
    older code exported."""
    import hashlib

    pkg = Path(pkg) if pkg is not None else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()

