"""`edgefss predict`: segment query images with a bundle, given support images and class names.

    edgefss predict --bundle B --support dog1.jpg:dog cat.jpg:cat [--support-mask dog1.jpg:dog1.png] \
        --query q.jpg [--query q2.jpg] --out mask.png

Writes the label mask PNG (0 background, i = i-th class in order of first appearance) and an
overlay PNG (<out stem>_overlay.png) per query. With several queries the outputs are named
<out stem>_<query stem>.png. Torch-free.
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
    p.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG:CLASS",
                   help="support image and the class it shows; repeat a class for K shots")
    p.add_argument("--support-mask", nargs="+", action="extend", default=[], metavar="IMG:MASK",
                   help="optional binary mask PNG for a support image (default: on-device pseudo-mask)")
    p.add_argument("--query", nargs="+", action="extend", required=True, metavar="IMG", help="query image(s)")
    p.add_argument("--out", required=True, help="label mask PNG path (overlay goes next to it)")
    p.add_argument("--backend", choices=["onnxruntime", "openvino", "tensorrt"], default=None,
                   help="default: the bundle's backend")
    p.add_argument("--device", default=None, help="engine device (cpu/cuda, CPU/GPU/AUTO, CUDA index)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine")
    p.add_argument("--refine-steps", type=int, default=0, help="IMR-style refinement passes (0 = none): CST refines its support pseudo-masks with the predicted query mask, TLG its query pseudo-mask")


def _out_paths(out: Path, query: str, several: bool) -> tuple[Path, Path]:
    stem = f"{out.stem}_{Path(query).stem}" if several else out.stem
    return out.with_name(stem + ".png"), out.with_name(stem + "_overlay.png")


def run(args) -> int:
    from edgefss.runtime import Segmenter
    from edgefss.runtime.visualize import overlay, write_png
    from edgefss.transforms import load_image

    pairs = [split_spec(s, "--support") for s in args.support]
    masks = dict(split_spec(s, "--support-mask") for s in args.support_mask)
    unknown = sorted(set(masks) - {img for img, _ in pairs})
    if unknown:
        raise InputError(f"--support-mask: {unknown} are not support images (given: {[i for i, _ in pairs]})")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out: {str(out)!r} must end in .png")

    seg = Segmenter.load(args.bundle, backend=args.backend, threads=args.threads, device=args.device)
    seg.set_support([i for i, _ in pairs], [c for _, c in pairs], masks=[masks.get(i) for i, _ in pairs])
    several = len(args.query) > 1
    stems = [Path(q).stem for q in args.query]
    if several and len(set(stems)) != len(stems):
        raise InputError(f"--query: several queries share a file name stem {stems}; outputs would collide")
    for q in args.query:
        pred = seg.predict(q, refine_steps=args.refine_steps)
        mask_path, ov_path = _out_paths(out, q, several)
        write_png(mask_path, pred.mask, rgb=False)
        write_png(ov_path, overlay(load_image(q, "query"), pred.mask, pred.classes, probs=pred.probs))
        found = [f"{c} ({p:.2f})" for c, p, ok in zip(pred.classes, pred.probs, pred.present) if ok]
        found = found or ["none"]
        print(f"{q}: present: {', '.join(found)}; {pred.timings['total']:.1f} ms")
        print(f"  mask    -> {mask_path}")
        print(f"  overlay -> {ov_path}")
    return 0
