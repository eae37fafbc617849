#!/usr/bin/env python
"""Latency benchmark: TLG / CST on torch eager and exported bundles (onnxruntime, OpenVINO,
TensorRT) at FP32 / FP16 / INT8.

    python bench/latency.py            # default run, < ~10 min on 2 cores (time-budgeted)
    python bench/latency.py --quick    # CI smoke: TLG at 128 px, torch + onnxruntime FP32
    python bench/latency.py --full     # every backend/precision present, 224 and 400 px, more repeats

For every model x size the torch eager FP32 baseline is measured first, in the same run; each
configuration then runs in its own subprocess (so its peak RSS is its own) and reports median /
p90 latency of set_support (1 and 5 shots), predict with a cached support set, a full episode
(set_support 1-shot + predict), throughput, bundle size, params / GMACs, speed-up over the
baseline and pixel agreement of its masks with the baseline's on the same query images. Bundles
are exported with `edgefss.exporters.export` and cached under <out>/bundles/. Outputs:
<out>/latency.json, latency.csv, latency.png (default out: runs/latency/).

Weights are random-initialised unless checkpoints are given: latency does not depend on them,
agreement is then a numerical-equivalence check rather than an accuracy figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _harness as H  # noqa: E402

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "fake")
PRECISIONS = ("fp32", "fp16", "int8")
# What each backend can run (the exporter refuses the rest; see exporters/options.validate).
SUPPORTED = {"torch": {"fp32"}, "onnxruntime": {"fp32", "int8"}, "openvino": {"fp32", "fp16", "int8"},
             "tensorrt": {"fp32", "fp16", "int8"}, "fake": {"fp32", "int8"}}
MODES = {
    # models, sizes, backends (None = all installed), precisions, shots, warmup, repeat, queries, budget_s
    "quick": dict(models="tlg", sizes="128", backends="torch,onnxruntime", precisions="fp32", shots="1",
                  warmup=1, repeat=2, queries=1, budget=240),
    "default": dict(models="tlg,cst", sizes="224", backends=None, precisions="fp32,int8", shots="1,5",
                    warmup=1, repeat=3, queries=2, budget=510),
    "full": dict(models="tlg,cst", sizes="224,400", backends=None, precisions="fp32,fp16,int8", shots="1,5",
                 warmup=2, repeat=20, queries=4, budget=3600),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI smoke: tiny and fast")
    g.add_argument("--full", action="store_true", help="everything installed, 224 and 400 px")
    p.add_argument("--models", help="comma list of tlg, tlg_vgg16, cst")
    p.add_argument("--backends", help=f"comma list of {', '.join(BACKENDS[:4])} (default: all installed)")
    p.add_argument("--precisions", help="comma list of fp32, fp16, int8 (unsupported combinations are skipped)")
    p.add_argument("--sizes", help="comma list of square input sizes (multiples of 32)")
    p.add_argument("--shots", help="support set sizes to time set_support with, e.g. 1,5")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: all logical CPUs)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--queries", type=int, default=None, help="query images used for agreement")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new configurations after this many seconds (rows left are 'skipped')")
    p.add_argument("--ops", default="auto", choices=("auto", "graph", "native", "reference"),
                   help="runtime correlation path (Segmenter.load ops=; auto = the measured faster per backend)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=FILE",
                   help="weights per model (default: random init)")
    p.add_argument("--out", default="runs/latency", help="output folder (JSON, CSV, PNG, cached bundles)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    mode = "quick" if a.quick else ("full" if a.full else "default")
    d = MODES[mode]
    a.mode = mode
    a.models = _list(a.models or d["models"], ("tlg", "tlg_vgg16", "cst"), "--models")
    a.sizes = [int(s) for s in _list(a.sizes or d["sizes"], None, "--sizes")]
    a.backends = _list(a.backends, BACKENDS, "--backends") if a.backends else \
        (_list(d["backends"], BACKENDS, "--backends") if d["backends"] else installed_backends())
    a.precisions = _list(a.precisions or d["precisions"], PRECISIONS, "--precisions")
    a.shots = [int(s) for s in _list(a.shots or d["shots"], None, "--shots")]
    a.threads = a.threads or os.cpu_count() or 1
    a.warmup = d["warmup"] if a.warmup is None else a.warmup
    a.repeat = d["repeat"] if a.repeat is None else a.repeat
    a.queries = d["queries"] if a.queries is None else a.queries
    a.budget_s = d["budget"] if a.budget_s is None else a.budget_s
    a.checkpoints = dict(c.split("=", 1) for c in a.checkpoint)
    return a


def _list(s: str, allowed, flag: str) -> list[str]:
    items = [x.strip() for x in str(s).split(",") if x.strip()]
    bad = [x for x in items if allowed is not None and x not in allowed]
    if bad or not items:
        raise SystemExit(f"{flag}: {bad or s!r} not in {allowed}")
    return items


def installed_backends() -> list[str]:
    import importlib.util

    have = ["torch"] + [b for b in ("onnxruntime", "openvino", "tensorrt") if importlib.util.find_spec(b)]
    return have


# ------------------------------------------------------------------------------------ inputs
def bench_images(n_support: int, n_query: int):
    """Real DAVIS 'dog' frames (support) and 'car' frames (query) when ../shared/data exists, else
    seeded random 480x854 RGB images. Returns (supports, masks, queries, class_name, source)."""
    from edgefss.transforms import load_image, load_mask

    root = Path(os.environ.get("EDGEFSS_SHARED_DATA", REPO.parent / "shared" / "data")) / "davis2016_val_subset"
    if (root / "dog" / "images").is_dir():
        imgs = sorted((root / "dog" / "images").iterdir())
        masks = sorted((root / "dog" / "masks").iterdir())
        qs = sorted((root / "libby" / "images").iterdir())
        sup = [load_image(p) for p in imgs[:n_support]]
        return sup, [load_mask(m) for m in masks[:n_support]], [load_image(p) for p in qs[:n_query]], "dog", str(root)
    rng = np.random.default_rng(0)
    mk = lambda: rng.integers(0, 256, (480, 854, 3), dtype=np.uint8)  # noqa: E731
    masks = [np.zeros((480, 854), np.uint8) for _ in range(n_support)]
    for m in masks:
        m[120:360, 200:600] = 1
    return [mk() for _ in range(n_support)], masks, [mk() for _ in range(n_query)], "dog", "synthetic"


class FakePredictor:
    """Harness self-test stand-in: a fixed NumPy workload per call, masks from image statistics."""

    ops_path = "fake (no correlation)"

    def __init__(self, size: int, precision: str):
        self.size, self.precision = size, precision
        self.w = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32) / size

    def set_support(self, images, class_names, masks=None):
        self.classes = list(dict.fromkeys(class_names))
        self.proto = np.mean([im.mean() for im in images])
        for _ in images:
            self.w @ self.w

    def predict(self, query, refine_steps=0):
        from types import SimpleNamespace

        t = time.perf_counter()
        self.w @ self.w
        g = query.mean(axis=2)
        thr = self.proto if self.precision == "fp32" else self.proto + 1.0  # int8 differs a little
        mask = (g > thr).astype(np.uint8)
        return SimpleNamespace(mask=mask, probs=np.array([mask.mean()]), present=np.array([mask.any()]),
                               classes=self.classes, timings={"encode": (time.perf_counter() - t) * 1e3})


# ------------------------------------------------------------------------------------ worker
def count_torch(model, size: int) -> dict:
    """Params (total / non-backbone) and GMACs of one backbone pass + one 1-shot head pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    total = sum(p.numel() for p in model.parameters())
    backbone = getattr(model, "backbone", None)
    head_params = total - (sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        fc = FlopCounterMode(display=False)
        with fc:
            model.encode(x)
        enc = fc.get_total_flops()
    return {"params_m": total / 1e6, "head_params_m": head_params / 1e6, "backbone_gmacs": enc / 2e9}


def worker(cfg: dict) -> dict:
    """Measure one configuration in this (fresh) process."""
    size, threads = cfg["size"], cfg["threads"]
    t_load = time.perf_counter()
    extra = {}
    if cfg["backend"] == "fake":
        pred = FakePredictor(size, cfg["precision"])
    elif cfg["backend"] == "torch":
        import warnings

        from edgefss.models.torch_segmenter import torch_segmenter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-init warning is stated in the report header
            pred = torch_segmenter(cfg["model"], checkpoint=cfg.get("checkpoint"), imgsz=size, threads=threads)
        extra = count_torch(pred.model, size)
    else:
        from edgefss.runtime import Segmenter

        pred = Segmenter.load(cfg["bundle"], backend=cfg["backend"], threads=threads, ops=cfg.get("ops", "auto"))
    load_s = time.perf_counter() - t_load
    shots = cfg["shots"]
    sup, masks, queries, cls, source = bench_images(max(shots), cfg["queries"])
    w, r = cfg["warmup"], cfg["repeat"]
    res = {"status": "ok", "load_s": load_s, "inputs": source,
           # which implementation ran the head's correlation: the runtime's choice, or torch's own ops
           "ops_path": getattr(pred, "ops_path", "torch (in-model)")}
    for k in shots:
        res[f"support_{k}shot_ms"] = H.time_calls(lambda: pred.set_support(sup[:k], [cls] * k), w, r)
    pred.set_support(sup[:1], [cls])
    enc = []

    def one_query():
        enc.append(pred.predict(queries[0]).timings.get("encode"))

    res["query_ms"] = H.time_calls(one_query, w, r)
    enc = [e for e in enc[w:] if e is not None]
    res["encode_ms"] = float(np.median(enc)) if enc else None
    res["episode_ms"] = H.time_calls(lambda: (pred.set_support(sup[:1], [cls]), pred.predict(queries[0])), 0, r)
    res["fps"] = 1e3 / res["query_ms"]["median"]
    pred.set_support(sup[:1], [cls])
    out_masks = [np.asarray(pred.predict(q).mask, np.uint8) for q in queries]
    np.savez_compressed(cfg["masks_out"], *out_masks)
    res["peak_rss_mb"] = H.peak_rss_mb()
    res.update(extra)
    return res


def _peak_worker() -> dict:
    return {"status": "ok", "matmul_gflops": H.matmul_peak_gflops()}


# ------------------------------------------------------------------------------------ driver
def export_bundle(model: str, backend: str, precision: str, size: int, out: Path, checkpoint=None) -> Path:
    """Build (or reuse) a bundle under <out>/bundles/ through edgefss.exporters.export."""
    name = f"{model}_{size}_{backend}_{precision}" + ("" if checkpoint is None else "_ckpt")
    path = out / "bundles" / name
    if (path / "manifest.json").is_file():
        return path
    from edgefss.exporters import export

    # The bench needs a bundle, not a quality gate: few calibration episodes, gate failures forced.
    kw = dict(int8=True, force=True, calib_episodes=8, gate_episodes=2, sensitivity=False) if precision == "int8" else {}
    return Path(export(model.split("_")[0] if model == "tlg" else model, checkpoint=checkpoint, backend=backend,
                       fp16=precision == "fp16" or None, imgsz=size, out=str(path), verify_episodes=1,
                       log=lambda *a, **k: None, **kw))


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2 ** 20


def agreement(a_path: Path, b_path: Path) -> float | None:
    """Share of query pixels with the same label in two runs' masks."""
    try:
        a, b = np.load(a_path), np.load(b_path)
        pairs = [(a[k], b[k]) for k in a.files if k in b.files]
        if not pairs or any(x.shape != y.shape for x, y in pairs):
            return None
        return float(np.mean([np.mean(x == y) for x, y in pairs]))
    except (OSError, ValueError):
        return None


def machine(threads: int) -> dict:
    from edgefss.ops import active_path

    info = H.cpu_info()
    info.update(threads=threads, gpu=H.gpu_info(), ops_impl=active_path(), python=sys.version.split()[0])
    try:
        from edgefss.ops import has_native

        info["native_ops"] = bool(has_native())
    except ImportError:
        info["native_ops"] = False
    return info


def header(m: dict, args) -> str:
    isa = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["isa"].items())
    return "\n".join([
        f"machine: {m['cpu']} ({m['arch']}, {m['logical_cpus']} logical CPUs; {isa})",
        f"threads: {m['threads']}   GPU: {m['gpu'] or 'none'}   edgefss.ops implementation: {m['ops_impl']}"
        f"   runtime head path: --ops {args.ops} (per row below)"
        f"   NumPy fp32 matmul peak: {m.get('matmul_gflops', float('nan')):.1f} GFLOP/s",
        f"mode: {args.mode}; warm-up {args.warmup}, repeat {args.repeat}; weights: "
        + (", ".join(f"{k}={v}" for k, v in args.checkpoints.items()) or "random init (latency only)"),
    ])


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    me = [sys.executable, str(Path(__file__).resolve())]
    m = machine(args.threads)
    peak = H.run_worker(me + ["--worker", json.dumps({"kind": "peak"})], 300, env)
    m["matmul_gflops"] = peak.get("matmul_gflops", float("nan"))
    print(header(m, args), flush=True)
    rows = []
    plan = build_plan(args)
    try:
        from tqdm import tqdm

        it = tqdm(plan, desc="latency", unit="cfg")
    except ImportError:
        it = plan
    base = {}
    for model, be, prec, size, is_base in it:
        row = {"model": model, "backend": be, "precision": prec, "size": size, "threads": args.threads,
               "baseline": is_base}
        rows.append(row)
        if time.perf_counter() - t0 > args.budget_s:
            row["status"] = f"skipped (time budget {args.budget_s:.0f}s)"
            continue
        ckpt = args.checkpoints.get(model)
        masks_out = out / "masks" / f"{model}_{size}_{be}_{prec}.npz"
        masks_out.parent.mkdir(parents=True, exist_ok=True)
        cfg = dict(model=model, backend=be, precision=prec, size=size, threads=args.threads, warmup=args.warmup,
                   repeat=args.repeat, shots=args.shots, queries=args.queries, checkpoint=ckpt, ops=args.ops,
                   masks_out=str(masks_out))
        if be not in ("torch", "fake"):
            try:
                t = time.perf_counter()
                bundle = export_bundle(model, be, prec, size, out, ckpt)
                row["export_s"] = time.perf_counter() - t
                row["bundle_mb"] = dir_mb(bundle)
                cfg["bundle"] = str(bundle)
            except Exception as exc:  # one failed export must not stop the benchmark
                row["status"] = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                continue
        left = max(60.0, args.budget_s - (time.perf_counter() - t0) + 120)
        row.update(H.run_worker(me + ["--worker", json.dumps(cfg)], left, env))
        if row.get("status") != "ok":
            continue
        key = (model, size)
        if is_base:
            base[key] = row
        b = base.get(key)
        if b is not None:
            row["speedup_vs_torch"] = b["episode_ms"]["median"] / row["episode_ms"]["median"]
            row["agreement"] = 1.0 if is_base else agreement(masks_out, out / "masks" / f"{model}_{size}_{b['backend']}_fp32.npz")
            for k in ("params_m", "head_params_m", "backbone_gmacs"):
                row.setdefault(k, b.get(k))
        if row.get("backbone_gmacs") and row.get("encode_ms"):
            row["backbone_gflops_s"] = 2 * row["backbone_gmacs"] / (row["encode_ms"] / 1e3)
    table = H.format_table(rows)
    print(table)
    print("head correlation/Sinkhorn path per row: " + "; ".join(
        f"{r['model']} {r['backend']} {r['precision']} {r['size']}: {r['ops_path']}" for r in rows if r.get("ops_path")))
    roof = roofline_lines(rows, m["matmul_gflops"])
    for ln in roof:
        print(ln)
    res = {"machine": m, "mode": args.mode, "settings": {k: getattr(args, k) for k in
           ("models", "backends", "precisions", "sizes", "shots", "threads", "warmup", "repeat", "queries", "budget_s",
            "ops")},
           "rows": rows, "roofline": roof, "seconds": time.perf_counter() - t0,
           "notes": "Support ms = set_support median (1-shot / 5-shot); Query ms = predict with cached support; "
                    "Episode = set_support(1 shot) + predict; FPS = 1000 / Query ms; ×torch = torch-eager-FP32 "
                    "episode ms / this episode ms (same run); Agreement = pixel share equal to the baseline's mask."}
    H.write_json(out / "latency.json", res)
    H.write_csv(out / "latency.csv", rows)
    chart = H.write_chart(out / "latency.png", rows, f"{m['cpu']} | {args.threads} threads | {args.mode}")
    print(f"wrote {out / 'latency.json'}, {out / 'latency.csv'}" + (f", {chart}" if chart else "")
          + f" in {res['seconds']:.0f}s")
    return 0


def build_plan(args) -> list[tuple]:
    """(model, backend, precision, size, is_baseline) in priority order: every baseline first, then
    FP32 bundles, then INT8, then FP16, so a time budget cuts the least informative rows."""
    base_be = "fake" if "fake" in args.backends else "torch"
    plan = [(m, base_be, "fp32", s, True) for s in args.sizes for m in args.models]
    rank = {"fp32": 0, "int8": 1, "fp16": 2}
    rest = [(m, be, p, s, False) for s in args.sizes for m in args.models for be in args.backends
            for p in args.precisions if be != "torch" and not (be == base_be and p == "fp32") and p in SUPPORTED[be]]
    order = {b: i for i, b in enumerate(BACKENDS)}
    return plan + sorted(rest, key=lambda r: (args.sizes.index(r[3]), rank[r[2]], order[r[1]], args.models.index(r[0])))


def roofline_lines(rows: list[dict], peak: float) -> list[str]:
    out = []
    for r in rows:
        if r.get("status") == "ok" and r.get("backbone_gflops_s"):
            pct = 100 * r["backbone_gflops_s"] / peak if peak and np.isfinite(peak) else float("nan")
            out.append(f"roofline: {r['model']} {r['backend']} {r['precision']} {r['size']}px backbone "
                       f"{2 * r['backbone_gmacs']:.2f} GFLOP in {r['encode_ms']:.1f} ms = "
                       f"{r['backbone_gflops_s']:.1f} GFLOP/s = {pct:.0f}% of the NumPy fp32 matmul peak {peak:.1f} GFLOP/s")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        cfg = json.loads(args.worker)
        try:
            res = _peak_worker() if cfg.get("kind") == "peak" else worker(cfg)
        except Exception as exc:  # reported as the row's status by the driver
            res = {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        print(json.dumps(res, default=float), flush=True)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
