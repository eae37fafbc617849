#!/usr/bin/env python
"""Stream schedules vs single-query latency on one bundle, interleaved in one process.

    python bench/stream_schedules.py runs/latency400/bundles/tlg_400_onnxruntime_fp32
    python bench/stream_schedules.py BUNDLE --backend openvino --frames 4 --rounds 3 --json out.json

Two Segmenters on the bundle: "single" at threads = usable CPUs (the single-query rate, frames
predicted one after the other), and "stream" at threads = stream_threads() (usable CPUs // 2), on
which every `predict_stream` schedule runs ("frames", "pipeline", and "sequential", which at
1/2 the threads is also the intra-op scaling reference). Each round times every configuration once
over the same DAVIS frames, in a rotated order, so load from other processes hits all of them.

Printed per configuration: median ms/frame over the rounds, and the ratio stream fps / single fps
(median and min-max of the per-round ratios). Then what bounds the "frames" schedule: with W = 2
frames of 1-thread predicts on 2 cores, frames/s <= 2 / t(1 thread), so the ratio to the
single-query rate is at most 2 * t(2 threads) / t(1 thread); shown for the whole predict and for
its encoder and head separately (Prediction.timings). Peak RSS (ru_maxrss) is printed after the
single Segmenter, after the stream Segmenter, and after the first frame-parallel stream (OpenVINO
compiles the graphs a second time with NUM_STREAMS there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.runtime import Segmenter  # noqa: E402
from edgefss.runtime.stream import stream_threads  # noqa: E402
from edgefss.threads import usable_cpus  # noqa: E402

DATA = Path("/work/shared/data/davis2016_val_subset")
SCHEDULES = ("frames", "pipeline", "sequential")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def davis(cls_dir: Path, n: int):
    imgs = sorted((cls_dir / "images").glob("*.jpg"))
    masks = sorted((cls_dir / "masks").glob("*.png"))
    if len(imgs) < n + 1:
        raise SystemExit(f"--data: {cls_dir} has {len(imgs)} images; need {n + 1} (1 support + {n} frames)")
    return imgs[0], masks[0] if masks else None, [str(p) for p in imgs[1:n + 1]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--backend", default=None, help="engine (default: the bundle's)")
    p.add_argument("--data", default=str(DATA / "dog"), help="a DAVIS class folder (images/, masks/)")
    p.add_argument("--frames", type=int, default=4, help="frames per stream round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.json and Path(a.json).exists():
        raise SystemExit(f"--json: {a.json} exists; choose a new file (it is never overwritten)")

    n_cpu = usable_cpus()
    sup, mask, frames = davis(Path(a.data), a.frames)
    cls = Path(a.data).name  # DAVIS folder names are classes (TLG text tables know "dog")
    rss, load0 = {}, os.getloadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight bundles say so on every load
        single = Segmenter.load(a.bundle, backend=a.backend, threads=n_cpu)
        single.set_support([str(sup)], [cls], None if mask is None else [str(mask)])
        single.predict(frames[0])
        rss["single_loaded"] = peak_rss_mb()
        stream = Segmenter.load(a.bundle, backend=a.backend, threads=stream_threads())
        stream.set_support([str(sup)], [cls], None if mask is None else [str(mask)])
        rss["stream_loaded"] = peak_rss_mb()
        for s in SCHEDULES:  # warm-up: arenas, the OpenVINO stream compile, page-in
            list(stream.predict_stream(frames[:2], schedule=s))
        rss["after_frames_stream"] = peak_rss_mb()

    def run_single():
        t = time.perf_counter()
        preds = [single.predict(f) for f in frames]
        return (time.perf_counter() - t) * 1e3 / len(frames), preds

    def run_schedule(s):
        def go():
            t = time.perf_counter()
            preds = list(stream.predict_stream(frames, schedule=s))
            return (time.perf_counter() - t) * 1e3 / len(frames), preds
        return go

    configs = {"single": run_single, **{s: run_schedule(s) for s in SCHEDULES}}
    names = list(configs)
    ms = {k: [] for k in names}
    parts = {k: {"encode": [], "head": []} for k in ("single", "sequential")}
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t, preds = configs[k]()
            ms[k].append(t)
            if k in parts:
                for part in ("encode", "head"):
                    parts[k][part].append(statistics.median(pr.timings[part] for pr in preds))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {ms[k][-1]:.0f}" for k in names) + " ms/frame",
              flush=True)

    med = {k: statistics.median(v) for k, v in ms.items()}
    out = {"bundle": a.bundle, "backend": single.backend.name, "usable_cpus": n_cpu,
           "single_threads": n_cpu, "stream_threads": stream_threads(), "frames": a.frames, "rounds": a.rounds,
           "ms_per_frame": med, "rounds_ms": ms, "peak_rss_mb": rss,
           "loadavg_1m": [load0[0], os.getloadavg()[0]]}
    print(f"\n{Path(a.bundle).name} ({single.backend.name}), {n_cpu} usable CPUs, {a.frames} frames x "
          f"{a.rounds} rounds; single = predict one by one at threads={n_cpu}, schedules at "
          f"threads={stream_threads()}; load average (1 min) {load0[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print(f"{'config':<12}{'ms/frame':>10}{'fps':>8}{'x single fps (median, min-max)':>34}")
    out["ratio"] = {}
    for k in names:
        rr = [s / t for s, t in zip(ms["single"], ms[k])]
        out["ratio"][k] = {"median": statistics.median(rr), "min": min(rr), "max": max(rr)}
        print(f"{k:<12}{med[k]:>10.0f}{1e3 / med[k]:>8.2f}{statistics.median(rr):>16.2f} "
              f"({min(rr):.2f}-{max(rr):.2f})")
    # the bound of W frames of 1/W the threads: W * t(all threads) / t(1/W of them)
    w = max(1, n_cpu // stream_threads())
    bound = {"predict": w * med["single"] / med["sequential"]}
    for part in ("encode", "head"):
        bound[part] = w * statistics.median(parts["single"][part]) / statistics.median(parts["sequential"][part])
    out["frames_bound"] = bound
    out["stage_ms"] = {k: {p_: statistics.median(v) for p_, v in d.items()} for k, d in parts.items()}
    print(f"frames-schedule bound {w} * t({n_cpu} threads) / t({stream_threads()} thread(s)): predict "
          f"{bound['predict']:.2f}, encoder {bound['encode']:.2f}, head {bound['head']:.2f}  (stage ms: "
          + "; ".join(f"{k} enc {d['encode']:.0f} head {d['head']:.0f}" for k, d in out["stage_ms"].items()) + ")")
    print("peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    if a.json:
        tmp = Path(a.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.rename(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
