"""`edgefss label`: a workstation teacher (DiffewS) labels a folder of images for distillation.

    edgefss label --teacher diffews --checkpoint RELEASE/unet --vae SD21_DIR \
        --support dog1.jpg:dog [--support-mask dog1.jpg:dog1.png] --images DIR --out LABELS
    edgefss train --model cst --sup mask --data LABELS   # distil the teacher masks into an edge model

Supports without --support-mask get the CST on-device pseudo-mask (class names alone). The
output (index.csv + masks/<class>/<stem>.png + label_manifest.json) is the layout `edgefss train`
and `edgefss eval` read; a re-run skips masks already written. Torch is imported when it runs.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--teacher", choices=["diffews"], default="diffews", help="teacher model (default diffews)")
    p.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG:CLASS",
                   help="support image and its class; repeat a class for K shots")
    p.add_argument("--support-mask", nargs="+", action="extend", default=[], metavar="IMG:MASK",
                   help="binary mask PNG of a support image (default: the CST pseudo-mask)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images to label")
    p.add_argument("--out", required=True, metavar="DIR", help="labels folder (created; resumed when re-run)")
    p.add_argument("--checkpoint", default=None,
                   help="DiffewS release unet folder, SD2.1 diffusers folder or edgefss save (default: random "
                        "init, said loudly)")
    p.add_argument("--vae", default=None, metavar="DIR",
                   help="SD2.1 folder holding vae/ and prompt_embeds.* when --checkpoint has none")
    p.add_argument("--config", choices=["sd21", "tiny"], default="sd21", help="teacher size (tiny: tests only)")
    p.add_argument("--imgsz", type=int, default=512, help="teacher input size (512 official)")
    p.add_argument("--r-threshold", type=float, default=0.25, help="mask = mean RGB > r x max (0.25 official)")
    p.add_argument("--cst-checkpoint", default=None, help="CST weights for support pseudo-masks")
    p.add_argument("--dino-checkpoint", default=None, help="DINO ViT-S/8 weights for support pseudo-masks")
    p.add_argument("--cst-imgsz", type=int, default=400, help="pseudo-mask input size (400 official)")
    p.add_argument("--seed", type=int, default=0, help="random-init seed (no checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from edgefss.cli._args import flag_names
    from edgefss.cli.predict import split_spec
    from edgefss.config import CST_PSEUDO_THRESHOLD
    from edgefss.errors import InputError
    from edgefss.models import build_model
    from edgefss.models.diffews import TIMESTEP
    from edgefss.teacher.labeler import (
        DiffewSTeacher,
        PseudoMasker,
        Support,
        check_supports,
        checkpoint_files,
        file_digest,
        label,
        list_images,
    )

    masks = dict(split_spec(s, "--support-mask") for s in args.support_mask)
    pairs = [split_spec(s, "--support") for s in args.support]
    supports = [Support(img, cls, masks.pop(img, None)) for img, cls in pairs]
    if masks:
        raise InputError(f"--support-mask: {sorted(masks)} is not a --support image")
    check_supports(supports)
    list_images(args.images)  # bad input fails before minutes of model building
    files = checkpoint_files(args.checkpoint, args.vae)
    with flag_names({"imgsz": "--imgsz", "r_threshold": "--r-threshold"}):  # DiffewSConfig's checks
        model = build_model("diffews", checkpoint=args.checkpoint, vae_checkpoint=args.vae, config=args.config,
                            imgsz=args.imgsz, r_threshold=args.r_threshold, seed=args.seed)
    need_pseudo = any(s.mask is None for s in supports)
    meta = {
        "teacher": args.teacher, "config": args.config, "imgsz": args.imgsz,
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "vae": str(Path(args.vae).resolve()) if args.vae else None,
        "checkpoint_sha256": file_digest(files) if files else f"random-init seed {args.seed}",
        "random_init": args.checkpoint is None,
        "thresholds": {"r_threshold": args.r_threshold,
                       "cst_pseudo_threshold": CST_PSEUDO_THRESHOLD if need_pseudo else None},
        "denoising": {"steps": 1, "timestep": TIMESTEP, "x0": "-v"},
        "pseudo_mask": ({"model": "cst", "checkpoint": args.cst_checkpoint, "dino": args.dino_checkpoint,
                         "imgsz": args.cst_imgsz} if need_pseudo else None),
    }
    pseudo = PseudoMasker(args.cst_checkpoint, args.dino_checkpoint, args.cst_imgsz) if need_pseudo else None
    res = label(DiffewSTeacher(model), supports, args.images, args.out, meta, pseudo=pseudo,
                progress=not args.no_progress)
    print(f"[label] next: edgefss train --model cst --sup mask --data {res['out']}")
    if res["failed"]:
        shown = ", ".join(res["failed"][:10]) + (" ..." if len(res["failed"]) > 10 else "")
        raise InputError(f"--images: {len(res['failed'])} image(s) could not be read and were skipped "
                         f"(warnings above; a re-run retries them): {shown}")
    return 0
