"""`edgefss demo`: live few-shot segmentation on a camera, a video or a folder of images.

    edgefss demo --bundle B --support dog.jpg:dog --source 0
    edgefss demo --bundle B --support a.jpg:dog b.jpg:cat [--support-mask a.jpg:a.png] \
        --source clip.mp4 --output out.mp4

Support images, masks, backend flags are spelled as in `edgefss predict`.

Torch-free: runs wherever the runtime does (onnxruntime, OpenVINO, TensorRT on a Jetson).
"""

from __future__ import annotations

import argparse

from edgefss.cli._args import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory written by `edgefss export`")
    p.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG:CLASS",
                   help="support image and its class (repeat a class for K shots)")
    p.add_argument("--support-mask", nargs="+", action="extend", default=[], metavar="IMG:MASK",
                   help="mask of a support image (default: the on-device pseudo-mask)")
    p.add_argument("--source", default="0", help="camera index, video file or folder of images (default: 0)")
    p.add_argument("--output", default=None, metavar="PATH",
                   help="headless mode: annotated video (.mp4/.avi/.mkv/.mov; kept up to the last frame if "
                        "interrupted) or a folder (no suffix) of PNGs; default: a window")
    add_engine_arguments(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: all)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default: 0.5)")


def config_from_args(args):
    """argparse namespace -> DemoConfig (also used by examples/camera_app.py)."""
    from edgefss.app import DemoConfig
    from edgefss.cli._args import check_file, check_folder
    from edgefss.cli.predict import split_spec
    from edgefss.errors import InputError

    pairs = [split_spec(s, "--support") for s in args.support]
    masks = dict(split_spec(s, "--support-mask") for s in args.support_mask)
    unknown = sorted(set(masks) - {img for img, _ in pairs})
    if unknown:
        raise InputError(f"--support-mask: {unknown} are not support images (given: {[i for i, _ in pairs]})")
    check_folder(args.bundle, "--bundle")
    for img, _ in pairs:
        check_file(img, "--support")
    for m in masks.values():
        check_file(m, "--support-mask", "a mask image file")
    return DemoConfig(bundle=args.bundle, support=tuple(i for i, _ in pairs), classes=tuple(c for _, c in pairs),
                      masks=tuple(masks.get(i) for i, _ in pairs) if masks else None, source=args.source,
                      output=args.output, backend=args.backend, device=args.device, threads=args.threads,
                      max_frames=args.max_frames, alpha=args.alpha)


def run(args) -> int:
    import sys

    from edgefss.app import run_demo

    def progress(stats, name):
        if stats.frames % 25 == 0:
            print(f"frame {stats.frames} ({name}): {stats.latency_ms[-1]:.1f} ms", file=sys.stderr)

    from edgefss.cli._args import flag_names, support_labels

    cfg = config_from_args(args)
    with flag_names(support_labels(list(cfg.support), dict(zip(cfg.support, cfg.masks or ())))):
        stats = run_demo(cfg, progress=progress)
    lat = sorted(stats.latency_ms)
    med = lat[len(lat) // 2] if lat else float("nan")
    found = ", ".join(f"{c} in {n}" for c, n in stats.present.items())
    print(f"{stats.frames} frames, {stats.fps:.1f} FPS end-to-end, median predict {med:.1f} ms; found {found}")
    if stats.skipped or stats.resized:
        print(f"{stats.skipped} unreadable source frames skipped, {stats.resized} frames resized to the video's size")
    if args.output:
        print(f"wrote {args.output}")
    return 0
