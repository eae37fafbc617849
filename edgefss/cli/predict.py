"""`edgefss predict`: segment query images with a bundle, given support images and class names.

    edgefss predict --bundle B --support dog1.jpg:dog cat.jpg:cat [--support-mask dog1.jpg:dog1.png] \
        --query q.jpg [--query q2.jpg] --out mask.png
    edgefss predict --bundle B --support-pack pets.efs --query q.jpg --out mask.png

--support-pack takes a support pack written by `edgefss support create` for the same bundle
(no support image is encoded again); it replaces --support/--support-mask.

Writes a mask PNG per query that any viewer shows: with one class 0 = background, 255 = the
class; with several a palette PNG whose pixel values are the class indices (0 background, i = the
i-th class in order of first appearance) and whose palette has the overlay's colours.
`--raw-mask` writes the bare index map instead (gray, values 0..N). Next to it an overlay PNG
(<out stem>_overlay<suffix>). With several queries the outputs are <out stem>_<query stem><suffix>;
names that would collide get -2, -3, ... (said on stdout). No output may overwrite an input.
Files are written atomically (temp + rename). Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from edgefss.errors import InputError


def split_spec(spec: str, what: str) -> tuple[str, str]:
    """'IMAGE:CLASS' (or 'IMAGE:MASK') -> (image, class); InputError naming the flag `what`."""
    # rsplit so Windows drive letters (C:\x.jpg:dog) keep working
    if ":" not in spec:
        raise InputError(f"{what}: {spec!r} must be IMAGE:{'CLASS' if what == '--support' else 'MASK'}")
    a, b = spec.rsplit(":", 1)
    if not a or not b:
        raise InputError(f"{what}: {spec!r} must be IMAGE:{'CLASS' if what == '--support' else 'MASK'}")
    return a, b


def add_arguments(p) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory written by `edgefss export`")
    p.add_argument("--support", nargs="+", action="extend", default=None, metavar="IMG:CLASS",
                   help="support image and the class it shows; repeat a class for K shots")
    p.add_argument("--support-pack", default=None, metavar="PACK",
                   help="support pack from `edgefss support create` for this bundle, instead of --support")
    p.add_argument("--support-mask", nargs="+", action="extend", default=[], metavar="IMG:MASK",
                   help="optional binary mask PNG for a support image (default: on-device pseudo-mask)")
    p.add_argument("--query", nargs="+", action="extend", required=True, metavar="IMG", help="query image(s)")
    p.add_argument("--out", required=True, help="label mask PNG path (overlay goes next to it)")
    p.add_argument("--backend", choices=["onnxruntime", "openvino", "tensorrt"], default=None,
                   help="default: the bundle's backend")
    p.add_argument("--device", default=None, help="engine device (cpu/cuda, CPU/GPU/AUTO, CUDA index)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine")
    p.add_argument("--raw-mask", action="store_true",
                   help="write the raw class-index map (0 background, i = i-th class; looks black in viewers) "
                        "instead of the viewable mask (0/255 for one class, a palette PNG for several)")
    p.add_argument("--refine-steps", type=int, default=0, help="IMR-style refinement passes (0 = none): CST refines its support pseudo-masks with the predicted query mask, TLG its query pseudo-mask")


def plan_outputs(out: Path, queries: list, inputs: dict) -> tuple[list, list]:
    """(mask path, overlay path) per query, and notes for renamed ones.

    Names keep --out's suffix as given. Refuses (InputError) any output that is an input;
    outputs that would collide with each other get -2, -3, ... and a note saying which.
    """
    from edgefss.fsio import check_not_input, unique_path

    several = len(queries) > 1
    taken: set = set()
    plan, notes = [], []
    for q in queries:
        stem = f"{out.stem}_{Path(q).stem}" if several else out.stem
        pair = []
        for want in (out.with_name(stem + out.suffix), out.with_name(stem + "_overlay" + out.suffix)):
            check_not_input(want, inputs)
            got = unique_path(want, taken)
            if got != want:
                check_not_input(got, inputs)
                notes.append(f"note: {q}: '{want}' is already an output of this run; writing '{got}'")
            pair.append(got)
        plan.append(tuple(pair))
    return plan, notes


def viewable_mask(mask, n_classes: int, raw: bool = False):
    """(image, palette or None) to write for a (H, W) uint8 label mask: raw indices (raw=True),
    0/255 for one class, else the indices with the overlay colours as a PNG palette."""
    import numpy as np

    from edgefss.runtime.visualize import palette

    if raw:
        return mask, None
    if n_classes <= 1:
        return (mask > 0).astype(np.uint8) * 255, None
    return mask, palette(n_classes)


def run(args) -> int:
    from edgefss.fsio import write_png_atomic
    from edgefss.runtime import Segmenter
    from edgefss.runtime.segmenter import random_weights_note
    from edgefss.runtime.visualize import overlay
    from edgefss.transforms import load_image

    pack = getattr(args, "support_pack", None)
    if (args.support is None) == (pack is None):
        raise InputError("--support / --support-pack: give exactly one (support images IMG:CLASS, or a pack)")
    if pack is not None and args.support_mask:
        raise InputError("--support-mask: a support pack already holds its masks; drop --support-mask")
    pairs = [split_spec(s, "--support") for s in args.support or []]
    masks = dict(split_spec(s, "--support-mask") for s in args.support_mask)
    unknown = sorted(set(masks) - {img for img, _ in pairs})
    if unknown:
        raise InputError(f"--support-mask: {unknown} are not support images (given: {[i for i, _ in pairs]})")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out: {str(out)!r} must end in .png")
    inputs = {q: "--query" for q in args.query}
    inputs.update({i: "--support" for i, _ in pairs})
    inputs.update({m: "--support-mask" for m in masks.values()})
    if pack is not None:
        inputs[pack] = "--support-pack"
    plan, notes = plan_outputs(out, list(args.query), inputs)  # before minutes of work

    seg = Segmenter.load(args.bundle, backend=args.backend, threads=args.threads, device=args.device)
    if pack is not None:
        seg.load_support(pack)
    else:
        seg.set_support([i for i, _ in pairs], [c for _, c in pairs], masks=[masks.get(i) for i, _ in pairs])
    for line in notes:
        print(line)
    note = random_weights_note(seg.manifest)
    for q, (mask_path, ov_path) in zip(args.query, plan):
        pred = seg.predict(q, refine_steps=args.refine_steps)
        img, pal = viewable_mask(pred.mask, len(pred.classes), getattr(args, "raw_mask", False))
        write_png_atomic(mask_path, img, rgb=False, palette=pal, what="--out")
        write_png_atomic(ov_path, overlay(load_image(q, "query"), pred.mask, pred.classes, probs=pred.probs,
                                          note=note), what="--out (overlay)")
        found = [f"{c} ({p:.2f})" for c, p, ok in zip(pred.classes, pred.probs, pred.present) if ok]
        found = found or ["none"]
        print(f"{q}: present: {', '.join(found)}; {pred.timings['total']:.1f} ms" + (f"  [{note}]" if note else ""))
        print(f"  mask    -> {mask_path}")
        print(f"  overlay -> {ov_path}")
    return 0
