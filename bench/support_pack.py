"""Support packs vs encoding: what a pack saves on first use of a support set.

    python bench/support_pack.py --bundle BUNDLE [--shots 4] [--classes 2] [--repeat 7] [--images DIR]
        [--threads N] [--out runs/bench_support_pack.json]

Rows (median ms over interleaved repeats, bench/_harness.time_interleaved, so load on a shared
machine hits every row alike; ratios against `set_support` of the same set, same run):
  set_support      encode all N*K support images and cache them (the first use of a support set)
  load_support     read + verify (SHA-256) + check a pack of that set: no encoder run
  add_support(1)   add one shot to a set of N*K-1 shots (encodes only the new image)
  remove_shot      drop one shot (no encoder run)
  save_support     write the pack (atomic: temp + rename + fsync)
  shot_quality     leave-one-out score of every shot (one head call per shot and per reference)
  predict          one query with the cached set, for scale
Support images come from --images (any folder of .jpg/.png, first N*K files) or the DAVIS subset
in ../shared/data (default). Prints the pack size and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--shots", type=int, default=4, help="K shots per class")
    ap.add_argument("--classes", type=int, default=2, help="N classes")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from edgefss.runtime import Segmenter

    n = args.shots * args.classes
    imgs = H.images(args.images, n + 1, per_folder=n)
    sup, query = imgs[:n], imgs[n]
    seg = Segmenter.load(args.bundle, threads=args.threads)
    known = seg.known_classes()
    names_pool = known if known else [f"class{i}" for i in range(args.classes)]
    names = [names_pool[i // args.shots % len(names_pool)] for i in range(n)]
    seg.set_support(sup, names)
    tmp = Path(tempfile.mkdtemp(prefix="bench_support_pack_"))
    pack = seg.save_support(tmp / "set.efs")

    # the add/remove rows time the edit alone: their baseline set is rebuilt from records, untimed
    from edgefss.runtime import support_pack as sp

    full = seg._support
    recs, _ = sp.records_of(full)
    minus_one = sp.build_support(recs[:-1], seg.max_batch, bool(full.images))

    def t_add():
        seg._support = minus_one
        seg.add_support([sup[-1]], [names[-1]])

    def t_remove():
        seg._support = full
        seg.remove_shot(n - 1)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = H.time_interleaved({
        "set_support": lambda: seg.set_support(sup, names),
        "load_support": lambda: seg.load_support(pack),
        "add_support(1)": t_add,
        "remove_shot": t_remove,
        "save_support": lambda: seg.save_support(tmp / "again.efs"),
        "shot_quality": lambda: (setattr(seg, "_support", full), seg.shot_quality()),
        "predict": lambda: (setattr(seg, "_support", full), seg.predict(query)),
    }, warmup=1, repeat=args.repeat)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    ref = rows["set_support"]["median"]
    m = seg.manifest
    print(f"bundle {args.bundle}: {m['model']} {m['precision']} {m['backend']} imgsz {m['preprocess']['imgsz']}, "
          f"{args.classes} classes x {args.shots} shots, pack {pack.stat().st_size / 1e6:.2f} MB")
    cpu = H.cpu_info()
    print(f"cpu {cpu['cpu']} ({cpu['logical_cpus']} logical), threads {args.threads or 'engine default'}")
    print(f"load average before {load} after {load_after} (a shared machine: compare ratios, not ms)")
    print(f"{'row':<16} {'median ms':>10} {'p90 ms':>9} {'x set_support':>14}")
    for k, r in rows.items():
        print(f"{k:<16} {r['median']:>10.2f} {r['p90']:>9.2f} {r['median'] / ref:>14.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                        "pack_bytes": pack.stat().st_size, "load": [load, load_after]},
                                       indent=2))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
