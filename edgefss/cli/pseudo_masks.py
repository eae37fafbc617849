"""`edgefss pseudo-masks`: CLIP Grad-CAM pseudo-masks (the IMR-HSNet generator) for a folder of images.

Writes one (50, 50) float32 map per (image, class) plus `pseudo_masks.json` (edgefss.cam.files), the
layout `edgefss eval --query-pseudo cam --cam-dir OUT` reads. Atomic writes; a rerun with the same
recipe resumes (existing masks are kept); a different recipe, or a file this command did not make,
is never overwritten. Needs torch (the CLIP RN50 towers). See docs/cam.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgefss.errors import InputError


def add_arguments(p) -> None:
    p.add_argument("--images", required=True, help="folder of images (searched recursively, see --ext)")
    p.add_argument(
        "--classes",
        required=True,
        help="comma-separated class names to make masks for, or 'voc' / 'coco' (every class of the "
        "benchmark, softmax over that list)",
    )
    p.add_argument(
        "--softmax-classes",
        default="auto",
        help="the list the softmax(100 cos) runs over: 'voc', 'coco', 'support+background' (the "
        "--classes plus a background vocabulary) or comma-separated names. auto: the benchmark "
        "list for --classes voc/coco, else support+background",
    )
    p.add_argument(
        "--clip-checkpoint",
        default=None,
        help="CLIP RN50 weights (OpenAI RN50.pt or open_clip); default: random (masks meaningless, says so)",
    )
    p.add_argument(
        "--clip-bpe",
        default=None,
        help="CLIP merges file bpe_simple_vocab_16e6.txt.gz (with --clip-checkpoint)",
    )
    p.add_argument("--ext", default=".jpg,.jpeg", help="image file extensions to take (comma-separated)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true")


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def resolve_classes(classes: str, softmax: str) -> tuple[list[str], object]:
    """(--classes targets, the softmax_classes argument) from the two flags."""
    from edgefss.cam.recipe import IMR_VOC_CLASSES, imr_coco_classes

    key = classes.strip().lower()
    bench = {"voc": list(IMR_VOC_CLASSES), "coco": list(imr_coco_classes())}
    targets = bench.get(key) or _split(classes)
    if not targets:
        raise InputError("--classes: expected class names or 'voc' / 'coco', got nothing")
    s = softmax.strip().lower()
    if s == "auto":
        return targets, (key if key in bench else "support+background")
    if s in ("voc", "coco", "support+background"):
        return targets, s
    return targets, _split(softmax)


def list_images(root: Path, exts, out: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"--images: '{root}' is not a folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}
    out_r = out.resolve()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in exts and out_r not in p.resolve().parents
    )
    if not files:
        raise InputError(f"--images: no {'/'.join(sorted(exts))} files under '{root}'")
    return files


def run(args) -> int:
    from edgefss.errors import require

    require("torch", "edgefss pseudo-masks (CLIP RN50 Grad-CAM)")
    from tqdm import tqdm

    from edgefss.cam import files
    from edgefss.cam.generator import RANDOM_TEXT, build_cam_generator
    from edgefss.cam.recipe import OUT_SIZE, TEMPLATE
    from edgefss.fsio import write_bytes_atomic
    from edgefss.imageio import load_image

    root, out = Path(args.images), Path(args.out)
    targets, softmax = resolve_classes(args.classes, args.softmax_classes)
    images = list_images(root, _split(args.ext), out)
    gen = build_cam_generator(targets, softmax, clip_checkpoint=args.clip_checkpoint, bpe_path=args.clip_bpe)
    manifest = {
        "format": files.FORMAT,
        "images": os.path.abspath(root),
        "targets": targets,
        "softmax_classes": gen.classes,
        "class_source": gen.class_source,
        "template": TEMPLATE,
        "text_source": gen.text_source,
        "random_init": gen.text_source == RANDOM_TEXT,
        "size": OUT_SIZE,
        "resolution": gen.resolution,
        "recipe": "IMR-HSNet generate_cam_voc.py: CLIP RN50 Grad-CAM on visual.layer4[-1] (docs/cam.md)",
    }
    mf = out / files.MANIFEST
    resume = mf.is_file()
    if resume:
        try:
            old = json.loads(mf.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--out: '{mf}' could not be read: {exc}") from exc
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise InputError(
                f"--out: '{out}' already holds pseudo-masks made with another recipe (differs in "
                f"{', '.join(diff)}); choose another --out"
            )
    else:
        keys = [files.relative_key(p, root) for p in images]
        for k in keys:
            for c in targets:
                if files.mask_path(out, k, c).exists():
                    raise InputError(
                        f"--out: '{files.mask_path(out, k, c)}' exists and was not made by this "
                        "command (no pseudo_masks.json); choose another --out"
                    )
        write_bytes_atomic(mf, (json.dumps(manifest, indent=1) + "\n").encode(), "--out manifest")
    if gen.text_source == RANDOM_TEXT:
        print(
            "[pseudo-masks] WARNING: no --clip-checkpoint: random CLIP weights, the masks are not meaningful"
        )
    made = kept = 0
    it = images if args.no_progress else tqdm(images, desc="CAM pseudo-masks", unit="img")
    for p in it:
        key = files.relative_key(p, root)
        paths = [files.mask_path(out, key, c) for c in targets]
        if all(q.is_file() for q in paths):
            kept += 1
            continue
        masks = gen(load_image(p, "--images file"), targets)
        for q, m in zip(paths, masks):
            write_bytes_atomic(q, files.npy_bytes(m), "pseudo-mask")
        made += 1
    print(
        f"[pseudo-masks] {made} images x {len(targets)} classes written"
        + (f", {kept} already there (resumed)" if kept else "")
        + f"; softmax over {len(gen.classes)} classes ({gen.class_source}); {out}/{files.MANIFEST}"
    )
    return 0
