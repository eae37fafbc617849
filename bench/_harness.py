"""Benchmark plumbing for bench/latency.py: timing statistics, machine facts, the NumPy matmul
peak, and the table / CSV / JSON / PNG outputs. No torch, no edgefss model code.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


# ------------------------------------------------------------------------------------ timing
def stats_ms(samples_s: list[float]) -> dict:
    """Seconds -> {'median', 'p90', 'min', 'n'} in milliseconds (p90 by linear interpolation)."""
    a = np.asarray(samples_s, np.float64) * 1e3
    if a.size == 0:
        raise ValueError("stats_ms: no samples")
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "min": float(a.min()), "n": int(a.size)}


def time_calls(fn: Callable[[], object], warmup: int, repeat: int) -> dict:
    """Run fn `warmup` times untimed, then `repeat` timed calls; returns stats_ms of the timed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return stats_ms(samples)


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeat: int,
                     budget_s: float | None = None) -> dict[str, dict]:
    """Time several implementations of one case round-robin, so that load changes on a shared
    machine hit all of them alike; returns {name: stats_ms}.

    Each gets `warmup` untimed calls, then up to `repeat` timed rounds; once an implementation
    has spent `budget_s` seconds in timed calls it leaves the rotation (at least one sample each).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            if samples[name] and budget_s is not None and sum(samples[name]) > budget_s:
                continue
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {k: stats_ms(v) for k, v in samples.items()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec; ru_maxrss would not do,
    as Linux keeps it across fork+exec, so a worker would inherit its parent's peak.
    """
    import resource

    try:
        m = re.search(r"^VmHWM:\s*(\d+)\s*kB", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


# ------------------------------------------------------------------------------------ machine
def cpu_info() -> dict:
    """CPU model and the ISA flags that decide which kernels run (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else model
        f = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
        flags = set(f.group(2).split()) if f else set()
    except OSError:
        pass
    isa = {
        "AVX2": "avx2" in flags,
        "AVX-512": "avx512f" in flags,
        "VNNI": bool({"avx512_vnni", "avx_vnni"} & flags),
        "AMX": "amx_tile" in flags,
        "NEON": "asimd" in flags or platform.machine() in ("aarch64", "arm64"),
    }
    return {"cpu": model, "isa": isa, "logical_cpus": os.cpu_count(), "arch": platform.machine()}


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


def matmul_peak_gflops(n: int = 2048, repeat: int = 3) -> float:
    """Best-of-`repeat` float32 NumPy matmul throughput (GFLOP/s, 2 n^3 per product): the
    machine's practical dense peak for the roofline line, with the BLAS threads of this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm the BLAS thread pool
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2.0 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------ outputs
COLUMNS = ["Model", "Backend", "Precision", "Size", "Support ms", "Query ms", "Episode ms", "FPS", "×torch", "Agreement"]


def _fmt(v, nd=1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Rows (dicts from the workers) -> table cells in COLUMNS order."""
    out = []
    for r in rows:
        if r.get("status") != "ok":
            out.append([r["model"], r["backend"], r["precision"], str(r["size"]), r.get("status", "?")] + [""] * 5)
            continue
        out.append([
            r["model"], r["backend"], r["precision"], str(r["size"]),
            f"{_fmt(r['support_1shot_ms']['median'])} / {_fmt(r['support_5shot_ms']['median']) if r.get('support_5shot_ms') else '-'}",
            _fmt(r["query_ms"]["median"]), _fmt(r["episode_ms"]["median"]), _fmt(r["fps"]),
            _fmt(r.get("speedup_vs_torch"), 2), _fmt(r.get("agreement"), 4),
        ])
    return out


def format_table(rows: list[dict]) -> str:
    """Plain-text table (Support ms = 1-shot / 5-shot medians; Query = predict with cached support)."""
    cells = [COLUMNS] + table_rows(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def write_csv(path: Path, rows: list[dict]) -> Path:
    """One line per configuration with the flattened statistics."""
    flat = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    d[f"{k}_{kk}"] = vv
            elif not isinstance(v, (list, tuple)):
                d[k] = v
        flat.append(d)
    keys = list(dict.fromkeys(k for d in flat for k in d))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(flat)
    return atomic_write(path, buf.getvalue().encode())


def write_chart(path: Path, rows: list[dict], title: str) -> Path | None:
    """Horizontal bar chart of the median episode latency per configuration (PNG, matplotlib)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']} {r['backend']} {r['precision']} {r['size']}" for r in ok]
    q = [r["query_ms"]["median"] for r in ok]
    e = [r["episode_ms"]["median"] for r in ok]
    y = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ok) + 1.5))
    ax.barh(y + 0.2, e, 0.4, label="episode (support 1-shot + query)")
    ax.barh(y - 0.2, q, 0.4, label="query (cached support)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median latency, ms (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def run_worker(cmd: list[str], timeout_s: float, env: dict | None = None) -> dict:
    """Run one measurement in a fresh process (its own peak RSS); its last stdout line is JSON."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout_s:.0f}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"status": f"error: {tail}"}
    return json.loads(lines[-1])
