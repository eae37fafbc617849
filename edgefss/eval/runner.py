"""Episode loop: any predictor, one dataset, seeded episodes -> mIoU / FB-IoU / ER + report.

A predictor is anything with the runtime's interface (`edgefss.runtime.Segmenter` is one):
    set_support(images: list[(H,W,3) uint8], class_names: list[str], masks: list[(H,W) uint8] | None)
    predict(query (H,W,3) uint8, refine_steps=0) -> object with .mask (H,W) uint8 labels
        (0 background, i = .classes[i-1]), .classes list[str], and .present (N,) bool (or
        .probs (N,) presence probabilities, present iff > 0.5)
so PyTorch models and bundles of any backend/precision are scored on identical episodes.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefss.errors import InputError
from edgefss.eval.datasets import FewShotDataset
from edgefss.eval.episodes import Episode, EpisodeSampler
from edgefss.eval.metrics import ExactRatioMeter, SegMeter
from edgefss.transforms import resize_mask


def episode_gt(ds: FewShotDataset, ep: Episode):
    """GT of an episode's query over its ways.

    Returns:
        (labels (H,W) uint8 with 0 bg / i+1 = way i, ignore (H,W) bool or None, present (N,) bool).
    """
    labels = None
    ignore = None
    present = []
    for i, cls in enumerate(ep.classes):
        fg, ign = ds.load_gt(ep.query, cls)
        if labels is None:
            labels = np.zeros(fg.shape, np.uint8)
        if ign is not None:
            ignore = ign if ignore is None else (ignore | ign)
        labels[fg > 0] = i + 1
    for i in range(len(ep.classes)):
        sel = labels == i + 1
        present.append(bool(sel[~ignore].any() if ignore is not None else sel.any()))
    return labels, ignore, np.array(present)


def _align(pred, ep: Episode, shape) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels/presence re-indexed to the episode's way order."""
    classes = list(getattr(pred, "classes", ep.classes))
    order = list(ep.classes)
    if sorted(classes) != sorted(order):
        raise InputError(f"predictor returned classes {classes}, expected the episode's {order}")
    lut = np.zeros(len(classes) + 1, np.uint8)
    for j, c in enumerate(classes):
        lut[j + 1] = order.index(c) + 1
    mask = np.asarray(pred.mask)
    if mask.shape != shape:
        mask = resize_mask(mask.astype(np.uint8), shape)
    # The runtime's own decision when it gives one (TLG presence is an area, not p > 0.5).
    flags = getattr(pred, "present", None)
    if flags is None:
        flags = np.asarray(pred.probs, np.float64).reshape(-1) > 0.5
    present = np.zeros(len(order), bool)
    for j, c in enumerate(classes):
        present[order.index(c)] = bool(np.asarray(flags).reshape(-1)[j])
    return lut[mask], present


def evaluate(predictor, ds: FewShotDataset, sampler: EpisodeSampler, episodes: int, sup: str = "pseudo",
             refine_steps: int = 0, out_dir=None, n_worst: int = 8, progress: bool = True,
             meta: dict | None = None, query_pseudo: str = "prior", cam_masks=None) -> dict:
    """Run `episodes` seeded episodes and score them.

    Args:
        predictor: see the module docstring.
        sup: "pseudo" (support masks withheld: the model's own pseudo-masks, weak supervision)
            or "mask" (GT support masks given).
        query_pseudo: "prior" (the model's on-device pseudo-masks) or "gt" (TLG, PyTorch predictor:
            the query's GT mask of each way is fed as the external query pseudo-mask, an oracle) or "cam"
            (CLIP Grad-CAM maps from `cam_masks(image_path, classes, (H, W))`, e.g. edgefss.cam.files.CamDir).
        out_dir: when given, writes `eval.json` and `worst/epNNNNN.png` overlays of the
            `n_worst` lowest-IoU episodes.

    Returns:
        dict with miou, fbiou, er (all x 100), class_iou, unsampled classes, timing and the
        per-episode records (so two runs on the same episodes can be compared).
    """
    if sup not in ("pseudo", "mask"):
        raise InputError(f"--sup: '{sup}' is not 'pseudo' or 'mask'")
    if query_pseudo not in ("prior", "gt", "cam"):
        raise InputError(f"--query-pseudo: '{query_pseudo}' is not 'prior', 'gt' or 'cam'")
    if query_pseudo == "cam" and cam_masks is None:
        raise InputError("--query-pseudo cam: no CAM pseudo-masks given (--cam-dir)")
    if episodes < 1:
        raise InputError(f"--episodes: {episodes} must be >= 1")
    seg, er = SegMeter(ds.classes), ExactRatioMeter()
    records, worst = [], []
    t_pred = 0.0
    t0 = time.perf_counter()
    it = range(episodes)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"eval {ds.name} {sampler.way}-way {sampler.shot}-shot", unit="ep")
    for idx in it:
        ep = sampler[idx]
        flat = [s for shots in ep.supports for s in shots]
        images = [ds.load_image(s) for s in flat]
        names = [s_cls for s_cls, shots in zip(ep.classes, ep.supports) for _ in shots]
        masks = [ds.load_support_mask(s) for s in flat] if sup == "mask" else None
        query = ds.load_image(ep.query)
        gt, ignore, gt_present = episode_gt(ds, ep)
        # set_support keeps the episode's class order, so class i is label i + 1 of gt
        ext = [(gt == i + 1).astype(np.uint8) for i in range(len(ep.classes))] if query_pseudo == "gt" else None
        if query_pseudo == "cam":
            ext = cam_masks(ep.query.image, list(ep.classes), gt.shape)
        t = time.perf_counter()
        predictor.set_support(images, names, masks)
        if ext is not None:
            pred = predictor.predict(query, refine_steps=refine_steps, query_pseudo=ext)
        else:
            pred = predictor.predict(query, refine_steps=refine_steps)
        dt = time.perf_counter() - t
        t_pred += dt
        labels, present = _align(pred, ep, gt.shape)
        ious = seg.update(labels, gt, ep.classes, ignore)
        ok = er.update(present, gt_present)
        finite = ious[~np.isnan(ious)]
        score = float(finite.mean()) if finite.size else 1.0
        records.append({
            "index": idx, "query": ep.query.image, "classes": list(ep.classes),
            "supports": [[s.image for s in shots] for shots in ep.supports],
            "iou": [None if math.isnan(v) else round(float(v), 6) for v in ious],
            "present_gt": gt_present.tolist(), "present_pred": present.tolist(), "exact": ok,
            "fg_pixels_pred": int((labels > 0).sum()), "ms": round(dt * 1e3, 3),
        })
        if out_dir is not None and n_worst > 0:
            # Min-heap on -score: its root is the best of the kept worst, the one to evict.
            item = (-score, idx, labels, gt, ep)
            if len(worst) < n_worst:
                heapq.heappush(worst, item)
            elif -score > worst[0][0]:
                heapq.heapreplace(worst, item)
        if progress:
            it.set_postfix(mIoU=f"{seg.miou():.1f}", ER=f"{er.ratio():.1f}")
    res = {
        "dataset": ds.name, "data": ds.root, "classes": ds.classes, "way": sampler.way, "shot": sampler.shot,
        "protocol": sampler.protocol, "query_order": sampler.order, "seed": sampler.seed, "episodes": episodes,
        "sup": sup,
        "refine_steps": refine_steps, "query_pseudo": query_pseudo,
        "miou": seg.miou(), "fbiou": seg.fbiou(), "er": er.ratio(),
        "class_iou": {c: float(v * 100) for c, v in zip(ds.classes, seg.class_iou())},
        "unsampled_classes": seg.unsampled(), "never_query_classes": sampler.never_queried(),
        "seconds": time.perf_counter() - t0, "predict_ms_mean": 1e3 * t_pred / episodes,
        **(meta or {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
        res["worst"] = [str(p) for p in _save_worst(ds, sorted(worst, reverse=True), out / "worst")]
        write_json(out / "eval.json", {**res, "per_episode": records})
    res["per_episode"] = records
    return res


def unsampled_note(res: dict) -> str | None:
    """One line naming every evaluated class that no episode scored (None when all were).

    They count 0 in mIoU (as HSNet), so the line lists them all, with the reason when a class
    has too few images to ever be a query."""
    missing = res.get("unsampled_classes") or []
    if not missing:
        return None
    never = set(res.get("never_query_classes") or [])
    names = ", ".join(f"{c} (too few images to be a query)" if c in never else c for c in missing)
    return (f"WARNING: {len(missing)} of {len(res['classes'])} classes never sampled in {res['episodes']} episodes "
            f"(order {res.get('query_order', '?')}, seed {res['seed']}; they count 0 in mIoU, as HSNet): {names}")


def _save_worst(ds: FewShotDataset, worst, folder: Path) -> list[Path]:
    from edgefss.eval.overlay import overlay, panel, save_png

    paths = []
    for neg, idx, labels, gt, ep in worst:
        q = ds.load_image(ep.query)
        tiles = [overlay(ds.load_image(s), ds.load_support_mask(s), [c])
                 for c, shots in zip(ep.classes, ep.supports) for s in shots]
        titles = [f"support {c}" for c, shots in zip(ep.classes, ep.supports) for _ in shots]
        tiles += [overlay(q, gt, ep.classes), overlay(q, labels, ep.classes)]
        # score is a fraction; the label says percent so "IoU 0.5 %" cannot be read as 0.5
        titles += ["query GT", f"pred IoU {-neg * 100:.1f} %"]
        paths.append(save_png(folder / f"ep{idx:05d}.png", panel(tiles, titles)))
    return paths


def write_json(path, obj) -> Path:
    """Atomic JSON write (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def compare(a: dict, b: dict) -> dict:
    """Agreement of two runs on the same episodes (e.g. FP32 vs INT8 bundles).

    Returns:
        dict(episodes, same_exact (share of episodes with equal ER outcome), mean_abs_iou_diff
        (x 100, over ways scored in both), miou_delta, fbiou_delta, er_delta).
    """
    ea, eb = a["per_episode"], b["per_episode"]
    if [(r["index"], r["query"], r["classes"]) for r in ea] != [(r["index"], r["query"], r["classes"]) for r in eb]:
        raise InputError("compare: the two runs did not see the same episodes (different data/seed/way/shot)")
    diffs = [abs(x - y) for ra, rb in zip(ea, eb) for x, y in zip(ra["iou"], rb["iou"])
             if x is not None and y is not None]
    return {
        "episodes": len(ea),
        "same_exact": float(np.mean([ra["present_pred"] == rb["present_pred"] for ra, rb in zip(ea, eb)])),
        "mean_abs_iou_diff": float(np.mean(diffs) * 100) if diffs else 0.0,
        "miou_delta": b["miou"] - a["miou"], "fbiou_delta": b["fbiou"] - a["fbiou"], "er_delta": b["er"] - a["er"],
    }
