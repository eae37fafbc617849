"""Open vocabulary: what a class name outside the bundle's table costs, and a support pack vs set_support.

    python bench/open_vocab.py --bundle BUNDLE [--shots 2] [--repeat 5] [--images DIR] [--threads N]
        [--out runs/bench_open_vocab.json]

BUNDLE is a TLG bundle exported with `--text-encoder` (docs/open_vocabulary.md). Rows (median ms
over interleaved repeats, bench/_harness.time_interleaved, so load on a shared machine hits every
row alike; ratios against `set_support` of one image with a table name, same run):
  set_support(table name)   encode 1 support image, class from the exported table (the baseline)
  new name: cold            open the tower (ONNX Runtime session + tokenizer) and embed a new name
  new name: tower + cache   embed a new name with the tower already open (2 prompts: the name, then
                            its matched background) and write its disk-cache entry
  new name: disk cache      a name embedded before, read back from the disk cache (a new process)
  new name: memory          a name embedded before in this process
  set_support(new name)     encode 1 support image whose class is a new name (encoder + tower)
  set_support(K shots)      encode the K-shot set a pack holds (first use of that set)
  load_support(K shots)     load that set's pack: read + verify + check, no encoder run
Each "new name" call uses a name never seen before in the run ('object 0007', ...). Prints the load
average before and after (a shared machine: compare ratios, not ms).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--shots", type=int, default=2, help="K shots of the pack's set")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from edgefss.runtime import Segmenter
    from edgefss.runtime.text_encoder import OpenVocabText, TextTower

    tmp = Path(tempfile.mkdtemp(prefix="bench_open_vocab_"))
    cache = tmp / "cache"
    os.environ["EDGEFSS_TEXT_CACHE"] = str(cache)  # never the user's cache
    seg = Segmenter.load(args.bundle, threads=args.threads)
    text = seg.adapter.text
    if not getattr(text, "has_tower", False):
        raise SystemExit(f"{args.bundle}: no text tower; export it with `edgefss export --model tlg "
                         "--text-encoder --clip-checkpoint ViT-B-32.pt ...`")
    sup = H.images(args.images, args.shots)
    one = sup[:1]
    table_name = str(text.classes[0])
    counter = itertools.count()
    fresh = lambda: f"object {next(counter):04d}"

    seg.set_support(sup, ["pack class"] * args.shots)
    pack = seg.save_support(tmp / "set.efs")
    cached = fresh()
    text.entry(cached)  # on disk and in memory from here on
    info = text.tower

    def cold():
        t = OpenVocabText(text.table, seg.manifest, seg.bundle_dir,
                          TextTower(info.graph, info.precision, info.bpe, info.context_length, info.template),
                          text.background, cache_dir=None)
        t.entry(fresh())
        t.close()

    def disk_hit():  # a new lookup object (empty memory) over the already open tower and files
        OpenVocabText(text.table, seg.manifest, seg.bundle_dir, text.tower, text.background,
                      cache_dir=cache).entry(cached)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = H.time_interleaved({
        "set_support(table name)": lambda: seg.set_support(one, [table_name]),
        "new name: cold": cold,
        "new name: tower + cache": lambda: text.entry(fresh()),
        "new name: disk cache": disk_hit,
        "new name: memory": lambda: text.entry(cached),
        "set_support(new name)": lambda: seg.set_support(one, [fresh()]),
        f"set_support({args.shots} shots)": lambda: seg.set_support(sup, ["pack class"] * args.shots),
        f"load_support({args.shots} shots)": lambda: seg.load_support(pack),
    }, warmup=1, repeat=args.repeat)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    ref = rows["set_support(table name)"]["median"]
    m = seg.manifest
    te = m["text_encoder"]
    print(f"bundle {args.bundle}: {m['model']} {m['precision']} {m['backend']} imgsz {m['preprocess']['imgsz']}; "
          f"text tower {te['precision']} ({te['layers']} layers x {te['width']}), {len(text.classes)} table names")
    cpu = H.cpu_info()
    print(f"cpu {cpu['cpu']} ({cpu['logical_cpus']} logical), threads {args.threads or 'engine default'}")
    print(f"load average before {load} after {load_after} (a shared machine: compare ratios, not ms)")
    print(f"{'row':<26} {'median ms':>10} {'p90 ms':>9} {'x set_support(table name)':>26}")
    for k, r in rows.items():
        print(f"{k:<26} {r['median']:>10.2f} {r['p90']:>9.2f} {r['median'] / ref:>26.3f}")
    k = f"{args.shots} shots"
    print(f"load_support / set_support of the same {k}: "
          f"{rows[f'load_support({k})']['median'] / rows[f'set_support({k})']['median']:.4f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                        "load": [load, load_after], "text_encoder": {
                                            k: te[k] for k in ("precision", "layers", "width")}}, indent=2))
    seg.close()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)  # the run's own temp folder only
    return 0


if __name__ == "__main__":
    sys.exit(main())
