#!/usr/bin/env python
"""Per-frame encoder/head times of consecutive frame streams on one Segmenter (warm-up per stream).

    python bench/stream_warmup.py runs/latency400_s8/bundles/tlg_400_openvino_fp32 [--frames 8] [--streams 2]

Loads the bundle at threads=1 (so "auto" keeps 2 frames in flight on 2 cores), sets one DAVIS `dog`
support, then runs `predict_stream(frames, schedule="frames")` and a "sequential" stream, `--streams`
times each, printing ms/frame and every frame's `Prediction.timings` (encode, head). A frame stream
whose first frames are slower than the rest in every stream, not only the first, pays a per-worker
warm-up (docs/streams.md: OpenVINO requests owned by threads did, before the request pool).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgefss.runtime import Segmenter

DATA = Path("/work/shared/data/davis2016_val_subset/dog")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--data", default=str(DATA), help="a DAVIS class folder (images/, masks/)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--streams", type=int, default=2)
    a = p.parse_args(argv)
    d = Path(a.data)
    imgs, masks = sorted((d / "images").glob("*.jpg")), sorted((d / "masks").glob("*.png"))
    if len(imgs) < a.frames + 1:
        raise SystemExit(f"--data: {d} has {len(imgs)} images; need {a.frames + 1}")
    frames = [str(x) for x in imgs[1:a.frames + 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight bundles say so on every load
        seg = Segmenter.load(a.bundle, threads=1)
        seg.set_support([str(imgs[0])], [d.name], [str(masks[0])] if masks else None)
    for i in range(a.streams):
        for sched in ("frames", "sequential"):
            t = time.perf_counter()
            preds = list(seg.predict_stream(frames, schedule=sched))
            ms = (time.perf_counter() - t) * 1e3 / len(frames)
            print(f"stream {i + 1} {sched:<10} {ms:6.0f} ms/frame  encode "
                  f"{[round(x.timings['encode']) for x in preds]}  head {[round(x.timings['head']) for x in preds]}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
