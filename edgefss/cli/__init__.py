"""`edgefss` command line: one verb per module in this package, imported lazily.

Each verb module defines `add_arguments(parser)` and `run(args) -> int`. Verb modules must not
import torch at import time, so `edgefss predict` and `edgefss doctor` work on a torch-free device.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from edgefss._version import __version__
from edgefss.errors import EdgeFSSError

VERBS = {
    "export": ("edgefss.cli.export", "export TLG/CST to a verified ONNX/OpenVINO/TensorRT bundle (FP32/FP16/INT8)"),
    "predict": ("edgefss.cli.predict", "segment query images with a bundle, given support images + class names"),
    "eval": ("edgefss.cli.evaluate", "few-shot evaluation (mIoU, FB-IoU, 0/1 exact ratio) on a dataset"),
    "benchmark": ("edgefss.cli.benchmark", "latency of torch eager and bundles: p50/p90, ×torch, export cost"),
    "train": ("edgefss.cli.train", "episodic training of the TLG/CST heads (frozen backbones)"),
    "demo": ("edgefss.cli.demo", "camera/video/folder app: live overlays with a bundle (torch-free)"),
    "doctor": ("edgefss.cli.doctor", "what is installed and what each missing piece would enable"),
    "serve": ("edgefss.cli.serve", "HTTP API + web page over bundles: support sets, predict, MJPEG, /metrics"),
    "support": ("edgefss.cli.support", "support packs: encode a support set once (create), inspect one (show)"),
    "classes": ("edgefss.cli.classes", "the class names a bundle can segment (TLG table; CST: any name)"),
    "pseudo-masks": ("edgefss.cli.pseudo_masks", "CLIP Grad-CAM pseudo-masks (IMR-HSNet recipe) for a folder of images"),
    "label": ("edgefss.cli.label", "a workstation teacher (DiffewS) labels a folder of images for edgefss train"),
}


def build_parser() -> argparse.ArgumentParser:
    from edgefss.cli._args import EdgeFSSParser  # help with defaults; "did you mean" on typos

    parser = EdgeFSSParser(prog="edgefss", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgefss {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (mod, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        module = importlib.import_module(mod)  # a verb that fails to import is a broken install: say so
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    # warnings (random weights, an unjudged gate, capped threads) as one line each, not Python's
    # two-line "file:line: UserWarning" form with a source excerpt
    fmt = warnings.formatwarning
    warnings.formatwarning = lambda msg, *a, **k: f"edgefss {args.verb}: warning: {msg}\n"
    try:
        return int(args._run(args) or 0)
    except EdgeFSSError as exc:
        # User errors get one clear line, not a traceback from deep inside a backend.
        from edgefss.cli._args import name_the_flag

        print(f"edgefss {args.verb}: error: {name_the_flag(str(exc), args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edgefss {args.verb}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = fmt


if __name__ == "__main__":
    sys.exit(main())
