"""`edgefss support`: support packs, the cached support set of a bundle as one checksummed file.

    edgefss support create --bundle B --support dog1.jpg:dog dog2.jpg:dog cat.jpg:cat \
        [--support-mask dog1.jpg:dog1.png] --out pets.efs
    edgefss support show pets.efs [--bundle B]
    edgefss predict --bundle B --support-pack pets.efs --query q.jpg --out mask.png

`create` encodes the support images once and writes the pack atomically (temp + rename); it never
writes over an input, nor over an existing file that is not a support pack. `show` verifies the
pack's SHA-256 and prints what it holds (with --bundle: also whether it belongs to that bundle).
`create --quality` also prints the leave-one-out score of every shot of a class with K >= 2.
Format: docs/support-packs.md, edgefss/runtime/support_pack.py. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from edgefss.cli._args import add_engine_arguments
from edgefss.errors import InputError


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="support_cmd", metavar="CMD")
    c = sub.add_parser("create", help="encode support images with a bundle and write a support pack",
                       description="encode support images with a bundle and write a support pack")
    c.add_argument("--bundle", required=True, help="bundle directory written by `edgefss export`")
    c.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG:CLASS",
                   help="support image and the class it shows; repeat a class for K shots")
    c.add_argument("--support-mask", nargs="+", action="extend", default=[], metavar="IMG:MASK",
                   help="optional binary mask PNG for a support image (default: on-device pseudo-mask)")
    c.add_argument("--out", required=True, help="support pack file to write (e.g. pets.efs)")
    add_engine_arguments(c)
    c.add_argument("--quality", action="store_true",
                   help="print each shot's leave-one-out score (classes with >= 2 shots)")
    s = sub.add_parser("show", help="verify a support pack and print what it holds",
                       description="verify a support pack and print what it holds")
    s.add_argument("pack", help="support pack file")
    s.add_argument("--bundle", default=None, help="also check the pack belongs to this bundle")


def _support_inputs(args) -> tuple[list, list, dict]:
    """(images, class names, {image: mask}) from --support / --support-mask (predict's parsing)."""
    from edgefss.cli.predict import support_inputs

    return support_inputs(args)


def _check_out(out: Path, inputs: dict) -> None:
    """Refuse an --out that is an input, a folder, or an existing file that is not a support pack."""
    from edgefss.fsio import check_not_input
    from edgefss.runtime import support_pack as sp

    check_not_input(out, inputs)
    if out.is_dir():
        raise InputError(f"--out: '{out}' is a folder; expected a file name such as pets{sp.PACK_SUFFIX}")
    if out.exists():
        try:
            sp.read(out)
        except InputError as exc:  # the reason tells a damaged or format-1 pack from a foreign file
            why = str(exc).split("': ", 1)[-1]
            raise InputError(f"--out: '{out}' exists and is not a support pack this edgefss reads ({why}); this "
                             "command only replaces such packs: choose another name") from None


def run(args) -> int:
    from edgefss.runtime import support_pack as sp

    if args.support_cmd == "show":
        from edgefss.cli._args import check_file

        check_file(args.pack, "pack", "a support pack file written by `edgefss support create`")
        header, arrays = sp.read(args.pack)
        print(sp.describe(header, arrays, args.pack))
        if args.bundle is not None:
            from edgefss.bundle import read_manifest

            sp.check_bundle(header, read_manifest(args.bundle, verify=False), args.bundle, args.pack)
            print(f"  matches bundle '{args.bundle}'")
        return 0
    if args.support_cmd != "create":
        raise InputError("support: expected a command: create or show (see `edgefss support -h`)")

    from edgefss.cli._args import check_folder, flag_names, support_labels
    from edgefss.runtime import Segmenter

    check_folder(args.bundle, "--bundle")
    images, names, masks = _support_inputs(args)
    out = Path(args.out)
    inputs = {i: "--support" for i in images}
    inputs.update({m: "--support-mask" for m in masks.values()})
    _check_out(out, inputs)
    with Segmenter.load(args.bundle, backend=args.backend, threads=args.threads, device=args.device) as seg:
        with flag_names(support_labels(images, masks)):
            seg.set_support(images, names, masks=[masks.get(i) for i in images])
        seg.save_support(out)
        groups = seg._support.groups
        print(f"support pack -> {out} ({out.stat().st_size / 1e6:.2f} MB): "
              + ", ".join(f"{c} ({len(g)} shot{'s' if len(g) > 1 else ''})" for c, g in zip(seg.classes, groups)))
        if args.quality:
            for row in seg.shot_quality():
                score = "n/a (K = 1)" if row["score"] is None else f"{row['score']:.3f} vs {row['reference']}"
                print(f"  shot {row['shot']} {images[row['shot']]} ({row['class']}): leave-one-out IoU {score}")
    return 0
