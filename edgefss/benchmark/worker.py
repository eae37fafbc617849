"""One benchmark configuration in its own process, driven over a pipe (JSON lines).

    python -m edgefss.benchmark.worker              # serve: load / round / finish requests
    python -m edgefss.benchmark.worker --export CFG # export one bundle, report time and peak RSS

A fresh process per configuration gives each its own peak RSS and keeps one engine's thread
pools and allocator state from touching another's. Protocol, one JSON object per line:
    {"op": "load", "cfg": {...}}    -> {"status": "ok", "load_s", "inputs", "ops_path", ...}
    {"op": "round", "shots5": bool} -> one sample of every timing (ms), see `Runner.round`
    {"op": "finish", "masks_out"}   -> {"status": "ok", "peak_rss_mb"}; the process exits
Replies go to the original stdout; anything a library prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgefss.benchmark.contention import Window, share_pct
from edgefss.benchmark.machine import REPO, peak_rss_mb


def bench_images(n_support: int, n_query: int):
    """Real DAVIS 'dog' frames (support) and 'libby' frames (query, a dog in another video) when
    the shared data exists, else seeded random 480x854 RGB images.

    Returns:
        (supports [(H,W,3) uint8], masks [(H,W) uint8], queries [(H,W,3) uint8], class name, source).
    """
    from edgefss.transforms import load_image, load_mask

    root = Path(os.environ.get("EDGEFSS_SHARED_DATA", REPO.parent / "shared" / "data")) / "davis2016_val_subset"
    if (root / "dog" / "images").is_dir() and (root / "libby" / "images").is_dir():
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
        t = time.perf_counter()
        self.w @ self.w
        g = query.mean(axis=2)
        thr = self.proto if self.precision == "fp32" else self.proto + 1.0  # int8 differs a little
        mask = (g > thr).astype(np.uint8)
        return SimpleNamespace(mask=mask, probs=np.array([mask.mean()]), present=np.array([mask.any()]),
                               classes=self.classes, timings={"encode": (time.perf_counter() - t) * 1e3})


def count_torch(model, size: int) -> dict:
    """Params (total / non-backbone) and GMACs of one backbone pass at `size` (flops.count_macs:
    torch's FlopCounter with the CPU attention kernel counted)."""
    import torch

    from edgefss.benchmark.flops import count_macs

    total = sum(p.numel() for p in model.parameters())
    backbone = getattr(model, "backbone", None)
    head_params = total - (sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        enc = count_macs(lambda: model.encode(x))
    return {"params_m": total / 1e6, "head_params_m": head_params / 1e6, "backbone_gmacs": enc / 1e9}


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1e3


class Runner:
    """A loaded predictor, its inputs, and one timed round per request."""

    def __init__(self, cfg: dict):
        size, threads = cfg["size"], cfg["threads"]
        t = time.perf_counter()
        self.extra = {}
        if cfg["backend"] == "fake":
            self.pred = FakePredictor(size, cfg["precision"])
        elif cfg["backend"] == "torch":
            import warnings

            from edgefss.eval.predictors import load_predictor

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the random-init warning is stated in the report header
                self.pred, _ = load_predictor(model=cfg["model"], checkpoint=cfg.get("checkpoint"), imgsz=size,
                                              threads=threads)
            net = getattr(self.pred, "model", None)
            if net is not None:
                self.extra = count_torch(net, size)
        else:
            from edgefss.runtime import Segmenter

            self.pred = Segmenter.load(cfg["bundle"], backend=cfg["backend"], threads=threads,
                                       ops=cfg.get("ops", "auto"))
        self.load_s = time.perf_counter() - t
        # device memory of GPU engines, sampled from here to 'finish' (device-wide: cudaMemGetInfo)
        self.gpu_mem = None
        if cfg["backend"] == "tensorrt":
            try:
                from edgefss.devinfo import PeakGpuMemory

                self.gpu_mem = PeakGpuMemory().__enter__()
            except ImportError:
                pass
        self.shots = max(cfg["shots"])
        self.sup, self.masks, self.queries, self.cls, self.source = bench_images(self.shots, cfg["queries"])
        self.stream, self.stream_frames = None, []
        # Warm-up: first calls allocate arenas, compile kernels, page weights in; every shape the
        # rounds use (1-shot support, query, the larger support batch) runs here first.
        for _ in range(max(1, cfg["warmup"])):
            self.round(shots5=self.shots > 1)
        self.single_peak_rss_mb = peak_rss_mb()  # before the stream's engines are loaded
        if cfg.get("stream_frames") and cfg["backend"] not in ("torch", "fake"):
            self._load_stream(cfg)

    def _load_stream(self, cfg: dict) -> None:
        """A second Segmenter on the same bundle for `predict_stream`, loaded with threads // 2 so the
        stream's "auto" schedule (runtime/stream.py) can keep frames in flight on the cores the
        single-query rows use (CPU: CPUs // (threads // 2) frames, each a full predict)."""
        from edgefss.runtime import Segmenter
        from edgefss.runtime.stream import choose_schedule

        import warnings

        self.stream_threads = max(1, int(cfg["threads"]) // 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the first load already said it (random weights, gate)
            self.stream = Segmenter.load(cfg["bundle"], backend=cfg["backend"], threads=self.stream_threads,
                                         ops=cfg.get("ops", "auto"))
        self.stream.set_support(self.sup[:1], [self.cls])
        n = int(cfg["stream_frames"])
        self.stream_frames = [self.queries[i % len(self.queries)] for i in range(n)]
        self.stream_schedule, self.stream_workers, _ = choose_schedule(
            self.stream_threads, getattr(self.stream.backend, "device", "cpu"))
        self.stream_overlap = self.stream_schedule != "sequential"
        self.stream_round()  # warm-up

    def stream_round(self) -> float:
        """ms per frame of `predict_stream` over the stream frames (every frame's result consumed)."""
        import warnings

        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a sequential fallback is reported as stream_overlap = False
            n = sum(1 for _ in self.stream.predict_stream(self.stream_frames))
        return _ms(t, time.perf_counter()) / n

    def round(self, shots5: bool = False) -> dict:
        """One sample of each timing, in ms.

        support_1shot: set_support(1 image); query_first: the predict right after it;
        episode: the two together (so no episode can be shorter than its own query);
        query: a second predict with the support cached (the steady state of a stream);
        support_kshot: set_support(K images), K = the largest --shots, when `shots5`.
        """
        p, q = self.pred, self.queries[0]
        t0 = time.perf_counter()
        p.set_support(self.sup[:1], [self.cls])
        t1 = time.perf_counter()
        p.predict(q)
        t2 = time.perf_counter()
        win = Window()  # who else had the CPUs during the steady query (a slow sample's cause)
        r = p.predict(q)
        t3 = time.perf_counter()
        used = win.close()
        out = {"support_1shot": _ms(t0, t1), "query_first": _ms(t1, t2), "episode": _ms(t0, t2),
               "query": _ms(t2, t3), "encode": (getattr(r, "timings", None) or {}).get("encode"),
               "query_own_cpu": used["own_cpu_ms"], "query_foreign_pct": share_pct(used, os.cpu_count() or 1)}
        if shots5 and self.shots > 1:
            t = time.perf_counter()
            p.set_support(self.sup[:self.shots], [self.cls] * self.shots)
            out["support_kshot"] = _ms(t, time.perf_counter())
        if self.stream is not None:
            out["stream_frame"] = self.stream_round()
        return out

    def save_masks(self, path: str) -> None:
        self.pred.set_support(self.sup[:1], [self.cls])
        np.savez_compressed(path, *[np.asarray(self.pred.predict(q).mask, np.uint8) for q in self.queries])

    def describe(self) -> dict:
        d = {"status": "ok", "load_s": self.load_s, "inputs": self.source,
             # which implementation ran the head's correlation: the runtime's choice, or torch's own ops
             "ops_path": getattr(self.pred, "ops_path", "torch (in-model)"), **self.extra}
        if self.stream is not None:
            d.update(stream_threads=self.stream_threads, stream_overlap=self.stream_overlap,
                     stream_schedule=self.stream_schedule, stream_workers=self.stream_workers,
                     stream_frames=len(self.stream_frames))
        return d


def _error(exc: BaseException) -> dict:
    msg = str(exc).splitlines()[0][:200] if str(exc) else ""
    return {"status": f"error: {type(exc).__name__}: {msg}"}


def serve(inp=sys.stdin, out=None) -> int:
    """Answer requests until 'finish' or end of input."""
    out = out or sys.stdout
    runner = None
    for line in inp:
        req = json.loads(line)
        try:
            if req["op"] == "load":
                runner = Runner(req["cfg"])
                res = runner.describe()
            elif req["op"] == "round":
                res = runner.round(bool(req.get("shots5")))
            elif req["op"] == "finish":
                if req.get("masks_out"):
                    runner.save_masks(req["masks_out"])
                # the configuration's own peak; with a stream, the process's peak (both engine sets) apart
                res = {"status": "ok", "peak_rss_mb": runner.single_peak_rss_mb if runner.stream else peak_rss_mb()}
                if runner.stream is not None:
                    res["stream_peak_rss_mb"] = peak_rss_mb()
                if runner.gpu_mem is not None:
                    runner.gpu_mem.__exit__(None, None, None)
                    res["peak_gpu_mib"] = runner.gpu_mem.peak_mib
            else:
                res = {"status": f"error: unknown op {req['op']!r}"}
        except Exception as exc:  # reported as the row's status by the driver
            res = _error(exc)
        out.write(json.dumps(res, default=float) + "\n")
        out.flush()
        if req.get("op") == "finish" or (req.get("op") == "load" and res.get("status") != "ok"):
            break
    return 0


def export_bundle(cfg: dict) -> dict:
    """Export one bundle with edgefss.exporters.export (this process's peak RSS is the export's).

    cfg: model, backend, precision, size, path, checkpoint. The bench needs a bundle, not a
    quality gate: few calibration episodes and gate failures forced for INT8.
    """
    from edgefss.exporters import export

    t = time.perf_counter()
    kw = dict(int8=True, force=True, calib_episodes=8, gate_episodes=2, sensitivity=False) \
        if cfg["precision"] == "int8" else {}
    export(cfg["model"], checkpoint=cfg.get("checkpoint"), backend=cfg["backend"],
           fp16=cfg["precision"] == "fp16" or None, imgsz=cfg["size"], out=cfg["path"], verify_episodes=1,
           log=lambda *a, **k: None, **kw)
    return {"status": "ok", "export_s": time.perf_counter() - t, "export_peak_rss_mb": peak_rss_mb()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Replies keep the original stdout; C and Python prints from libraries go to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if argv[:1] == ["--export"]:
        try:
            res = export_bundle(json.loads(argv[1]))
        except Exception as exc:
            res = _error(exc)
        proto.write(json.dumps(res, default=float) + "\n")
        proto.flush()
        return 0
    return serve(sys.stdin, proto)


if __name__ == "__main__":
    sys.exit(main())
