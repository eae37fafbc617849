"""CST bundles of the golden weights vs the OFFICIAL outputs stored in tests/goldens/cst (no official
code needed): the figures of docs/cst_official_parity.md's bundle tables.

    .venv/bin/python scripts/goldens/cst_bundle_report.py --work /tmp/cst_golden_bundles \
        --precision fp32,int8 --backend onnxruntime,openvino [--json out.json]

The golden weights are rebuilt from their recipe (cst_weights.py, seed and parameters from
meta.json) as an official-layout Lightning checkpoint; each (precision, backend) bundle is exported
at 400 px into WORK (reused when present; INT8 with `force=True`, since random weights may fail the
gate, which is then printed) and run through `Segmenter` on every golden episode (support image +
class name: the weak path). Per episode: query-mask IoU with the official prediction, both presence
decisions, logits max-abs difference, support pseudo-mask pixels differing (and how many of those
are not float ties at the 0.4 threshold). tests/test_cst_golden.py uses the same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLD = REPO / "tests" / "goldens" / "cst"
DATA = REPO.parent / "shared" / "data"
S = 400
TIE = 1e-5  # a pseudo-mask pixel may differ only where the official map is this close to the threshold


def meta(gold: Path = GOLD) -> dict:
    return json.loads((gold / "meta.json").read_text())


def golden(i: int, gold: Path = GOLD) -> dict:
    return dict(np.load(gold / f"episode_{i}.npz"))


def episode_paths(i: int, data: Path, gold: Path = GOLD):
    """(query path, support path, class name) of golden episode i."""
    ep = meta(gold)["episodes"][i]
    return data / ep["query"], data / ep["support"], ep["class"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def golden_checkpoint(path: Path, gold: Path = GOLD) -> Path:
    """Write the golden weights (rebuilt from the recipe in meta.json) as an official-layout
    Lightning checkpoint at `path`."""
    import torch

    sys.path.insert(0, str(HERE))
    from cst_weights import official_state_dict

    from edgefss.models.cst import CST

    m = meta(gold)
    shapes = {k: v.shape for k, v in CST().state_dict().items()}
    sd = official_state_dict(shapes, seed=m["seed"], pseudo_q=m["pseudo_q"], pseudo_k=m["pseudo_k"],
                             pseudo_spread=m["pseudo_spread"], logit_gain=m["logit_gain"])
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.6.5"},
               str(path))
    return path


def off_tie_diff(mask: np.ndarray, official: np.ndarray, cos50: np.ndarray) -> tuple[int, int]:
    """(pixels of `mask` (S,S) differing from the official bool mask, of those not within TIE of
    the threshold on the official (S,S) cosine map upsampled from `cos50` (50,50))."""
    from edgefss.transforms import resize_prob

    near = np.abs((resize_prob(cos50, official.shape) + 1) / 2 - 0.4) < TIE
    diff = (mask > 0.5) ^ official
    return int(diff.sum()), int((diff & ~near).sum())


def segmenter_figures(seg, data: Path, episodes, gold: Path = GOLD) -> list[dict]:
    """Every golden episode in `episodes` through `seg` (weak path) -> one dict of figures each."""
    out = []
    for i in episodes:
        g = golden(i, gold)
        qp, sp, cls = episode_paths(i, data, gold)
        seg.set_support([sp], [cls])
        pred = seg.predict(qp)
        out.append({"episode": i, "iou": iou(pred.mask, g["pred_seg"]),
                    "logits": float(np.abs(pred.logits - g["seg_logits"]).max()),
                    "present": bool(pred.present[0]), "official_present": bool(g["pred_cls"][0]),
                    "support_mask_diff_px": off_tie_diff(pred.support_masks[0], g["support_mask400"],
                                                         g["support_cos50"])})
    return out


def bundle_report(work: Path, data: Path, precisions, backends, threads: int = 2) -> dict:
    """Export (or reuse) each bundle under `work` and print/return its figures per episode."""
    from edgefss.exporters import export
    from edgefss.runtime import Segmenter

    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "cst_golden.ckpt"
    if not ckpt.is_file():
        golden_checkpoint(ckpt)
    report = {}
    n = len(meta()["episodes"])
    for prec in precisions:
        for be in backends:
            b = work / f"{prec}_{be}"
            if not (b / "manifest.json").is_file():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export("cst", checkpoint=str(ckpt), backend=be, imgsz=S, out=str(b), int8=(prec == "int8"),
                           force=(prec == "int8") or None, sensitivity=False if prec == "int8" else None,
                           calib_episodes=8 if prec == "int8" else None, gate_episodes=4 if prec == "int8" else None,
                           verify_episodes=1, log=lambda *a: print(*a, flush=True))
            gate = json.loads((b / "manifest.json").read_text()).get("gate") or {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seg = Segmenter.load(b, threads=threads)
            figs = segmenter_figures(seg, data, range(n))
            seg.close()
            report[f"{prec}/{be}"] = {"gate": {k: gate.get(k) for k in ("status", "agreement", "forced")},
                                      "episodes": figs}
            print(f"{prec} {be}: gate {gate.get('status')} agreement {gate.get('agreement')} "
                  f"forced {gate.get('forced')}")
            for f in figs:
                print(f"  episode {f['episode']}: mask IoU {f['iou']:.5f}, present {f['present']} "
                      f"(official {f['official_present']}), logits max-abs {f['logits']:.3g}, "
                      f"support-mask px differing {f['support_mask_diff_px'][0]} "
                      f"({f['support_mask_diff_px'][1]} not at a threshold tie)", flush=True)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the checkpoint and bundles (reused)")
    ap.add_argument("--precision", default="fp32", help="fp32,int8")
    ap.add_argument("--backend", default="onnxruntime", help="onnxruntime,openvino")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    rep = bundle_report(args.work, args.data, args.precision.split(","), args.backend.split(","), args.threads)
    if args.json:
        from edgefss.fsio import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps(rep, indent=1).encode(), what="--json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
