"""What the DiffewS teacher costs on this machine, next to CST (an edge model) measured in the same run.

    timeout 3600 .venv/bin/python bench/diffews_cost.py [--imgsz 512] [--shots 1] [--repeat 1] [--json F]

Random weights (the cost does not depend on their values). Per model: parameters, GMACs of one
query (edgefss.benchmark.flops.count_macs over the whole forward: convolutions, matmuls and
scaled-dot-product attention, the CPU attention kernel given torch's SDPA formula; MACs = FLOPs /
2), seconds per query (median of --repeat timed forwards after one counted warm-up forward) and
the process's peak RSS after each model. DiffewS: VAE encoding of query + K supports + K masks,
the UNet's support and query passes, VAE decoding, the mask rule, at --imgsz (512 official).
CST: encoder of query + K supports and the head, at 400.
The ratio row is DiffewS / CST from this run. Timings are only comparable within one run on an
unloaded machine: say how loaded the machine was next to any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import cpu_info, peak_rss_mb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from edgefss.benchmark.flops import count_macs


def _count_gmacs(fn) -> float:
    return count_macs(fn) / 1e9


def _time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure_diffews(imgsz: int, shots: int, repeat: int, config: str = "sd21") -> dict:
    import torch

    from edgefss.models import build_model

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("diffews", config=config, imgsz=imgsz)
    build_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    q = torch.rand(1, 3, imgsz, imgsz, generator=g) * 2 - 1
    s = torch.rand(1, shots, 3, imgsz, imgsz, generator=g) * 2 - 1
    k = (torch.rand(1, shots, imgsz, imgsz, generator=g) > 0.5).float()

    def run():
        with torch.no_grad():
            return m(q, s, k)

    gmacs = _count_gmacs(run)
    sec = _time(run, repeat)
    return {"model": f"diffews ({config})", "imgsz": imgsz, "shots": shots,
            "params_M": {"unet": sum(p.numel() for p in m.unet.parameters()) / 1e6,
                         "vae": sum(p.numel() for p in m.vae.parameters()) / 1e6,
                         "total": sum(p.numel() for p in m.parameters()) / 1e6},
            "fused_self_attentions": m.n_fused, "gmacs": gmacs, "s_per_query": sec, "build_s": build_s,
            "peak_rss_mb": peak_rss_mb()}


def measure_cst(imgsz: int, shots: int, repeat: int) -> dict:
    import torch

    from edgefss.models import build_model
    from edgefss.models.cst import predict_nway_kshot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("cst", imgsz=imgsz)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 3, imgsz, imgsz, generator=g)
    s = torch.randn(1, shots, 3, imgsz, imgsz, generator=g)

    def run():
        return predict_nway_kshot(m, q, s, None)

    gmacs = _count_gmacs(run)
    sec = _time(run, repeat)
    return {"model": "cst", "imgsz": imgsz, "shots": shots,
            "params_M": {"total": sum(p.numel() for p in m.parameters()) / 1e6},
            "gmacs": gmacs, "s_per_query": sec, "peak_rss_mb": peak_rss_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=512)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="timed forwards per model (after the counted one)")
    ap.add_argument("--config", default="sd21", help="diffews config (tiny: a quick check of this script)")
    ap.add_argument("--cst-imgsz", type=int, default=400)
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    import torch

    cpu = cpu_info()
    load = os.getloadavg()
    print(f"# {cpu.get('cpu')} ({cpu.get('logical_cpus')} logical CPUs, torch threads {torch.get_num_threads()}); "
          f"load average at start {load[0]:.1f}")
    cst = measure_cst(a.cst_imgsz, a.shots, a.repeat)  # first: its peak RSS is not the teacher's
    dif = measure_diffews(a.imgsz, a.shots, a.repeat, a.config)
    load_end = os.getloadavg()
    rows = [("model", "input", "params (M)", "GMACs/query", "s/query", "peak RSS (MiB)")]
    for r in (dif, cst):
        rows.append((r["model"], f"{r['imgsz']} px, {r['shots']} shot", f"{r['params_M']['total']:.1f}",
                     f"{r['gmacs']:.1f}", f"{r['s_per_query']:.2f}", f"{r['peak_rss_mb']:.0f}"))
    rows.append(("diffews / cst", "", f"{dif['params_M']['total'] / cst['params_M']['total']:.0f}x",
                 f"{dif['gmacs'] / cst['gmacs']:.0f}x", f"{dif['s_per_query'] / cst['s_per_query']:.0f}x", ""))
    for i, r in enumerate(rows):
        print("| " + " | ".join(r) + " |")
        if i == 0:
            print("|" + "---|" * len(r))
    print(f"# diffews params: UNet {dif['params_M']['unet']:.1f} M, VAE {dif['params_M']['vae']:.1f} M; "
          f"{dif['fused_self_attentions']} KV-fused self-attentions; build {dif['build_s']:.0f} s; "
          f"load average at end {load_end[0]:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"diffews": dif, "cst": cst, "load_avg": [load[0], load_end[0]], "cpu": cpu.get("cpu")}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
