"""Benchmark edgefss's hot-path ops: native (edgefss._C) vs PyTorch vs NumPy (vs POT for Sinkhorn).

    python bench/ops.py [--quick] [--out runs/bench_ops] [--threads N]

Prints one table (op, shape, impl, median ms, speed-up vs torch, GFLOP/s for the correlation
(2 flops per multiply-add of the GEMM it contains), peak memory) and writes
`ops.json` and `ops.png` (speed-up bars) under --out. The implementations of a case are timed
round-robin (bench/_harness.time_interleaved), so load on a shared machine hits them alike; the
load average is printed before and after. The torch baseline is `edgefss.ops.torch_ops`, the
code the models run. "gemm" (correlation only, not a baseline) is torch's bare matmul of
pre-normalised inputs: the floor for any implementation that does the same multiply-adds.

Peak memory is measured for the correlation in a fresh subprocess per implementation: the rise
of the resident-set high-water mark over the resident set after the inputs exist (Linux /proc;
"n/a" elsewhere). It includes the output, which every implementation must materialise; "extra"
is peak minus the output's bytes (RSS accounting noise is about +-3 MB), "peak/t" and
"extra/t" are the ratios to torch's.
--quick uses small shapes (CI smoke run, ~1 min on 2 cores). With a CUDA build and a device,
"cuda" rows time the CUDA kernels from host arrays (copies included; no peak-memory figure);
where torch sees a GPU, "torch_cuda" rows run the same torch ops there under the same contract.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402


# ----------------------------------------------------------------------------- cases
def sinkhorn_cases(quick: bool):
    """(label, batch, n, m): TLG's 50x50 per branch at several batches, then large problems."""
    if quick:
        return [("50x50 B=1", 1, 50, 50), ("50x50 B=16", 16, 50, 50), ("512x512 B=1", 1, 512, 512)]
    return [("50x50 B=1", 1, 50, 50), ("50x50 B=4", 4, 50, 50), ("50x50 B=16", 16, 50, 50),
            ("1024x1024 B=1", 1, 1024, 1024), ("4096x4096 B=1", 1, 4096, 4096)]


def correlation_cases(quick: bool):
    """(label, kind, imgsz): CST (12 layers x 6 heads, one array) and TLG (13 ResNet-50 layers, a list)."""
    size_cst, size_tlg = (224, 208) if quick else (400, 400)
    return [(f"CST {size_cst}", "cst", size_cst), (f"TLG {size_tlg}", "tlg", size_tlg)]


def sinkhorn_inputs(batch, n, m, seed=0):
    rng = np.random.default_rng(seed)
    # TLG's cost: 1 - softmax attention, entries in (0, 1]
    logits = rng.standard_normal((batch, n, m)) * 3
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    return (1.0 - attn).astype(np.float32)


def correlation_inputs(kind, imgsz, seed=0):
    """query, support (lists for TLG), heads, clamp_min: shapes as the models feed them."""
    rng = np.random.default_rng(seed)
    if kind == "cst":
        t, s = (imgsz // 8) ** 2, 1 + (imgsz // 32) ** 2
        q = rng.standard_normal((1, 12, 384, t)).astype(np.float32)
        sp = rng.standard_normal((1, 12, 384, s)).astype(np.float32)
        return q, sp, 6, None
    # ResNet-50 layer2 (4 x 512 @ S/8), layer3 (6 x 1024 @ S/16), layer4 (3 x 2048 @ S/32)
    specs = [(512, -(-imgsz // 8))] * 4 + [(1024, -(-imgsz // 16))] * 6 + [(2048, -(-imgsz // 32))] * 3
    q = [np.maximum(rng.standard_normal((1, c, h * h)), 0).astype(np.float32) for c, h in specs]
    sp = [np.maximum(rng.standard_normal((1, c, h * h)), 0).astype(np.float32) for c, h in specs]
    return q, sp, 1, 0.0


def correlation_gflop(q, s) -> float:
    """Multiply-adds of a correlation case as GFLOP (2 per multiply-add); heads do not change it."""
    qs, ss = (q, s) if isinstance(q, list) else ([q], [s])
    return sum(2.0 * np.prod(a.shape[:-1]) * a.shape[-1] * b.shape[-1] for a, b in zip(qs, ss)) / 1e9


def describe(x):
    if isinstance(x, list):
        return f"{len(x)} layers, C {x[0].shape[-2]}..{x[-1].shape[-2]}, N {x[0].shape[-1]}..{x[-1].shape[-1]}"
    return "x".join(map(str, x.shape))


# ----------------------------------------------------------------------------- implementations
def _cuda_device(native_mod) -> bool:
    """True when edgefss._C has CUDA kernels and a device: then "cuda" rows are timed as well
    (host arrays in and out, so the copies to and from the device are included)."""
    return bool(native_mod is not None and native_mod.with_cuda() and native_mod.cuda_available())


def sinkhorn_impls():
    """name -> callable(cost) for every implementation importable here."""
    from edgefss.ops import _native, reference

    impls = {}
    if _native.has_native():
        impls["native"] = lambda C: _native.sinkhorn_log(C, eps=0.5, n_iter=11)
        if _cuda_device(_native.native_module()):
            impls["cuda"] = lambda C: _native.sinkhorn_log(C, eps=0.5, n_iter=11, device="cuda")
    try:
        import torch

        from edgefss.ops import torch_ops

        impls["torch"] = lambda C: torch_ops.sinkhorn_log(torch.from_numpy(C), eps=0.5, n_iter=11).numpy()
        if torch.cuda.is_available():
            # same host-in/host-out contract as the "cuda" rows, so both include the copies
            impls["torch_cuda"] = lambda C: torch_ops.sinkhorn_log(torch.from_numpy(C).cuda(), eps=0.5,
                                                                   n_iter=11).cpu().numpy()
    except ImportError:
        pass
    impls["numpy"] = lambda C: reference.sinkhorn_log(C, eps=0.5, n_iter=11)
    try:
        import ot

        def pot(C):
            n, m = C.shape[-2:]
            a, b = np.full(n, 1.0 / n, np.float32), np.full(m, 1.0 / m, np.float32)
            return np.stack([ot.bregman.sinkhorn_log(a, b, c, 0.5, numItermax=11, stopThr=0.0, warn=False)
                             for c in C])

        impls["pot"] = pot
    except ImportError:
        pass
    return impls


def correlation_impls(with_gemm: bool = False):
    """name -> callable(q, s, heads, clamp_min); `with_gemm` adds torch's bare matmul ("gemm")."""
    from edgefss.ops import _native, reference

    impls = {}
    if _native.has_native():
        impls["native"] = lambda q, s, h, c: _native.cosine_correlation(q, s, h, c)
        if _cuda_device(_native.native_module()):
            impls["cuda"] = lambda q, s, h, c: _native.cosine_correlation(q, s, h, c, device="cuda")
    try:
        import torch

        from edgefss.ops import torch_ops

        def to_t(x):
            return [torch.from_numpy(v) for v in x] if isinstance(x, list) else torch.from_numpy(x)

        def run_torch(q, s, h, c):
            with torch.no_grad():
                return torch_ops.cosine_correlation(to_t(q), to_t(s), h, c)

        impls["torch"] = run_torch
        if torch.cuda.is_available():
            def run_torch_cuda(q, s, h, c):
                to_d = (lambda x: [torch.from_numpy(v).cuda() for v in x] if isinstance(x, list)
                        else torch.from_numpy(x).cuda())
                with torch.no_grad():
                    out = torch_ops.cosine_correlation(to_d(q), to_d(s), h, c)
                return [o.cpu() for o in out] if isinstance(out, (list, tuple)) else out.cpu()

            impls["torch_cuda"] = run_torch_cuda
        if with_gemm:
            impls["gemm"] = _gemm_floor(torch)
    except ImportError:
        pass
    impls["numpy"] = lambda q, s, h, c: reference.cosine_correlation(q, s, h, c)
    return impls


def _gemm_floor(torch):
    """callable(q, s, heads, clamp_min) timing only torch.matmul of inputs normalised beforehand
    (cached per input object): the multiply-adds every implementation has to do."""
    cache = {}

    def prep(q, s, heads):
        *lead, C, nq = q.shape
        qn = torch.from_numpy(q).reshape(*lead, heads, C // heads, nq)
        sn = torch.from_numpy(s).reshape(*lead, heads, C // heads, s.shape[-1])
        qn = (qn / (qn.norm(dim=-2, keepdim=True) + 1e-5)).transpose(-1, -2).contiguous()
        sn = sn / (sn.norm(dim=-2, keepdim=True) + 1e-5)
        return qn, sn

    def gemm(q, s, heads, clamp_min):
        key = id(q)
        if key not in cache:
            qs, ss = (q, s) if isinstance(q, list) else ([q], [s])
            cache.clear()
            cache[key] = [prep(a, b, heads) for a, b in zip(qs, ss)]
        with torch.no_grad():
            return [torch.matmul(a, b) for a, b in cache[key]]

    return gemm


# ----------------------------------------------------------------------------- peak memory
def _rss_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise OSError(field)


def memory_probe(kind, imgsz, impl):
    """Runs in a fresh process: prints JSON {peak_mb, out_mb} for one correlation call."""
    fn = correlation_impls()[impl]
    q, s, h, c = correlation_inputs(kind, imgsz)
    small = correlation_inputs(kind, 64)
    fn(*small)  # library start-up (thread pools, allocator arenas) must not count as the op's memory
    base = _rss_kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS
        fh.write("5")
    out = fn(q, s, h, c)
    peak = _rss_kb("VmHWM:") - base
    outs = out if isinstance(out, list) else [out]
    out_bytes = sum(np.asarray(o).nbytes for o in outs)
    print(json.dumps({"peak_mb": peak / 1024, "out_mb": out_bytes / 2**20}))


def measure_memory(kind, imgsz, impl, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_mem-probe", kind, str(imgsz), impl]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------- report
def _f(v, spec):
    return format(v, spec) if v is not None else "-"


def print_table(rows):
    head = (f"{'op':<20} {'shape':<36} {'impl':<7} {'median ms':>10} {'x vs torch':>10} {'GFLOP/s':>8} "
            f"{'peak MB':>8} {'extra MB':>8} {'peak/t':>7} {'extra/t':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['op']:<20} {r['shape']:<36} {r['impl']:<7} {r['median_ms']:>10.3f} "
              f"{_f(r.get('speedup_vs_torch'), '.2f'):>10} {_f(r.get('gflops'), '.1f'):>8} "
              f"{_f(r.get('peak_mb'), '.1f'):>8} "
              f"{_f(r.get('extra_mb'), '.1f'):>8} {_f(r.get('peak_vs_torch'), '.2f'):>7} "
              f"{_f(r.get('extra_vs_torch'), '.2f'):>7}")


def write_atomic(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def plot(rows, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'edgefss[plots]')")
        return
    cases = list(dict.fromkeys((r["op"], r["case"]) for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(cases)), 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        vals = [next((r["speedup_vs_torch"] or 0 for r in rows if (r["op"], r["case"]) == c and r["impl"] == impl), 0)
                for c in cases]
        ax.bar([i + k * width for i in range(len(cases))], vals, width, label=impl)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels([f"{o}\n{c}" for o, c in cases], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up vs torch (higher is faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_ops", help="output folder for ops.json / ops.png")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (CI)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for torch and native")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 20, quick 5)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--_mem-probe", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before edgefss._C loads OpenMP
    if args._mem_probe:
        kind, imgsz, impl = args._mem_probe
        memory_probe(kind, int(imgsz), impl)
        return 0
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        print("torch not installed: no torch baseline, ratios are omitted")
    from tqdm import tqdm

    from edgefss.ops import _native

    repeats = args.repeats or (5 if args.quick else 20)
    budget = 3.0 if args.quick else 10.0
    native = _native.native_module()
    print(f"native: {'yes' if native else 'NOT BUILT'}"
          + (f" (OpenMP threads {native.num_threads()}, CUDA compiled {native.with_cuda()}, "
             f"CUDA device {native.cuda_available()})" if native else "") + f"; threads {args.threads}")
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows = []
    s_impls, c_impls = sinkhorn_impls(), correlation_impls(with_gemm=True)
    jobs = [("sinkhorn_log", c) for c in sinkhorn_cases(args.quick)] + \
           [("cosine_correlation", c) for c in correlation_cases(args.quick)]
    for op, case in tqdm(jobs, desc="bench ops", unit="case"):
        case_rows = []
        if op == "sinkhorn_log":
            label, batch, n, m = case
            C = sinkhorn_inputs(batch, n, m)
            big = n * m >= 1 << 20
            fns = {name: (lambda fn=fn: fn(C)) for name, fn in s_impls.items()
                   if not (big and name in ("numpy", "pot") and (args.quick or n * m > 1 << 22))}
            stats = H.time_interleaved(fns, warmup=1, repeat=3 if big else repeats, budget_s=budget)
            for name, st in stats.items():
                case_rows.append(dict(op=op, case=label, shape=f"{batch}x{n}x{m} it=11 eps=0.5", impl=name,
                                      median_ms=st["median"], runs=st["n"], peak_mb=None, out_mb=None))
        else:
            label, kind, imgsz = case
            q, s, h, c = correlation_inputs(kind, imgsz)
            fns = {name: (lambda fn=fn: fn(q, s, h, c)) for name, fn in c_impls.items()}
            stats = H.time_interleaved(fns, warmup=1, repeat=repeats, budget_s=budget)
            for name, st in stats.items():
                # host RSS says nothing of the GPU
                skip_mem = args.no_memory or name in ("gemm", "cuda", "torch_cuda")
                mem = None if skip_mem else measure_memory(kind, imgsz, name, args.threads)
                case_rows.append(dict(op=op, case=label, shape=describe(q), impl=name, median_ms=st["median"],
                                      gflops=correlation_gflop(q, s) / (st["median"] / 1e3),
                                      runs=st["n"], peak_mb=mem and mem["peak_mb"], out_mb=mem and mem["out_mb"]))
        torch_row = next((r for r in case_rows if r["impl"] == "torch"), None)
        for r in case_rows:
            r["extra_mb"] = r["peak_mb"] - r["out_mb"] if r["peak_mb"] is not None else None
        for r in case_rows:
            r["speedup_vs_torch"] = torch_row["median_ms"] / r["median_ms"] if torch_row else None
            ok = torch_row is not None and torch_row["peak_mb"] is not None and r["peak_mb"] is not None
            r["peak_vs_torch"] = r["peak_mb"] / torch_row["peak_mb"] if ok else None
            r["extra_vs_torch"] = r["extra_mb"] / torch_row["extra_mb"] if ok and torch_row["extra_mb"] > 0 else None
        rows += case_rows
    load_after = os.getloadavg()
    print_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
          f"({os.cpu_count()} CPUs)")
    meta = {"threads": args.threads, "quick": args.quick, "native": bool(native), "repeats": repeats,
            "load_before": load_before, "load_after": load_after,
            "cuda_compiled": bool(native and native.with_cuda()), "numpy": np.__version__}
    write_atomic(out / "ops.json", json.dumps({"meta": meta, "rows": rows}, indent=2).encode())
    plot(rows, out / "ops.png")
    print(f"wrote {out / 'ops.json'} and {out / 'ops.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
