#!/usr/bin/env python
"""Why does the same query take different times? One bundle, one process, N identical queries.

    python bench/variance_probe.py runs/latency/bundles/tlg_400_onnxruntime_int8 --queries 60
    python bench/variance_probe.py BUNDLE --threads 2 --out runs/variance_tlg_int8

The same query image is predicted N times after a warm-up. Around each query it records what
could explain a slow one: the process's own CPU time, page faults and context switches
(getrusage), the machine's user/system/idle/steal time and the share other processes took
(/proc/stat, edgefss/benchmark/contention.py). Between queries it measures reference kernels that
do not depend on the engine: a register-only FP32 FMA loop (bench/peaks isa_peaks, when built),
and single-thread copy bandwidth of a 256 MB and an 8 MB buffer (NumPy memcpy, no BLAS). If a
query slows while the reference kernels, the faults and the other processes stay flat, the cause
is below the operating system (e.g. the host sharing the cores' caches with other tenants): no
benchmark rule can remove it, only interleaving and medians can make every configuration meet it
alike. Writes variance.json and variance.png (query ms and reference speeds against the query
index) under --out. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.benchmark.contention import Window, share_pct  # noqa: E402
from edgefss.benchmark.machine import cpu_info, load_average, peaks_binary  # noqa: E402
from edgefss.benchmark.stats import AGREE_TOL, summarize  # noqa: E402
from edgefss.benchmark.worker import bench_images  # noqa: E402


def _copy_gbs(a: np.ndarray, b: np.ndarray, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        np.copyto(b, a)
    return 2 * a.nbytes * reps / (time.perf_counter() - t) / 1e9


def _fma_gops(binary: Path | None, threads: int) -> float | None:
    if binary is None:
        return None
    p = subprocess.run([str(binary), str(threads), "0.05"], capture_output=True, text=True, timeout=60)
    peaks = json.loads(p.stdout.strip().splitlines()[-1]).get("peaks", {})
    fp32 = [v for k, v in peaks.items() if k.startswith("fp32")]
    return max(fp32) if fp32 else None


def _slow_stretches(q: np.ndarray, tol: float) -> list[list[int]]:
    """[first, last] index runs of queries slower than (1 + tol) x the median."""
    slow = q > (1 + tol) * np.median(q)
    runs, start = [], None
    for i, s in enumerate(slow):
        if s and start is None:
            start = i
        if not s and start is not None:
            runs.append([start, i - 1])
            start = None
    if start is not None:
        runs.append([start, len(q) - 1])
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--out", default="runs/variance")
    a = ap.parse_args(argv)
    from edgefss.runtime import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight bundles say so on load; latency only here
        seg = Segmenter.load(a.bundle, backend=a.backend, threads=a.threads)
    sup, _, qs, cls, source = bench_images(1, 1)
    seg.set_support(sup, [cls])
    seg.predict(qs[0])  # warm-up
    binary = peaks_binary(REPO / "build" / "peaks", log=lambda *_: None)
    big = np.ones(64 << 20, np.float32), np.empty(64 << 20, np.float32)
    mid = np.ones(2 << 20, np.float32), np.empty(2 << 20, np.float32)
    rows = []
    for i in range(a.queries):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        win = Window()
        pred = seg.predict(qs[0])
        used = win.close()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        row = {"i": i, "query_ms": used["wall_ms"], "own_cpu_ms": used["own_cpu_ms"],
               "foreign_pct": share_pct(used, os.cpu_count() or 1), "steal_ms": used.get("steal_ms"),
               "minor_faults": r1.ru_minflt - r0.ru_minflt, "major_faults": r1.ru_majflt - r0.ru_majflt,
               "invol_switches": r1.ru_nivcsw - r0.ru_nivcsw, "sys_cpu_ms": 1e3 * (r1.ru_stime - r0.ru_stime),
               "encode_ms": pred.timings.get("encode"), "head_ms": pred.timings.get("head"),
               "fma_gops": _fma_gops(binary, a.threads), "dram_copy_gbs": _copy_gbs(*big, 2),
               "l3_copy_gbs": _copy_gbs(*mid, 40)}
        rows.append(row)
        print(f"{i:3d} query {row['query_ms']:7.1f} ms (enc {row['encode_ms'] or 0:6.1f} head {row['head_ms'] or 0:6.1f})"
              f"  other+steal {row['foreign_pct'] or 0:4.1f} %  faults {row['minor_faults']:5d}"
              f"  sys {row['sys_cpu_ms']:5.1f} ms  | FMA {row['fma_gops'] or 0:5.0f} G/s"
              f"  copy 256MB {row['dram_copy_gbs']:5.1f} 8MB {row['l3_copy_gbs']:5.1f} GB/s", flush=True)
    q = np.array([r["query_ms"] for r in rows])
    stretches = _slow_stretches(q, AGREE_TOL)
    slow = np.zeros(len(q), bool)
    for s, e in stretches:
        slow[s:e + 1] = True

    def med(key, mask):
        v = [r[key] for r, m in zip(rows, mask) if m and r[key] is not None]
        return float(np.median(v)) if v else None

    compare = {k: {"fast": med(k, ~slow), "slow": med(k, slow)}
               for k in ("query_ms", "encode_ms", "head_ms", "own_cpu_ms", "foreign_pct", "minor_faults", "sys_cpu_ms", "fma_gops",
                         "dram_copy_gbs", "l3_copy_gbs")}
    res = {"bundle": a.bundle, "threads": a.threads, "machine": cpu_info(), "load": load_average(), "images": source,
           "query_ms": summarize(q), "slow_stretches": stretches, "fast_vs_slow_medians": compare, "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variance.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"slow stretches (> {100 * AGREE_TOL:.0f} % over the median {np.median(q):.0f} ms): {stretches}")
    for k, v in compare.items():
        if v["slow"] is not None:
            print(f"  {k:14s} fast {v['fast']:9.1f}  slow {v['slow']:9.1f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out / 'variance.json'} (no matplotlib: no plot)")
        return 0
    fig, ax = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax[0].plot(q, "o-", ms=3, label="query ms")
    ax[0].axhline(np.median(q), color="gray", lw=0.8)
    ax[0].set_ylabel("ms")
    ax[0].legend()
    for key, label in (("fma_gops", "FMA G ops/s"), ("dram_copy_gbs", "copy 256 MB GB/s"),
                       ("l3_copy_gbs", "copy 8 MB GB/s")):
        v = np.array([r[key] if r[key] is not None else np.nan for r in rows], float)
        if np.isfinite(v).any():
            ax[1].plot(v / np.nanmedian(v), label=label)
    ax[1].set_ylabel("reference speed / its median")
    ax[1].set_xlabel("query")
    ax[1].legend()
    fig.suptitle(f"{Path(a.bundle).name}: same query, {a.threads} threads")
    fig.tight_layout()
    fig.savefig(out / "variance.png", dpi=110)
    print(f"wrote {out / 'variance.json'}, {out / 'variance.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
