"""`edgefss export`: model -> verified bundle (ONNX Runtime / OpenVINO / TensorRT, FP32/FP16/INT8).

Torch is imported only when the verb runs, so `edgefss --help` works on a torch-free device.
Every flag maps 1:1 onto `edgefss.exporters.export(...)`; unset flags take the --target
recipe's value, then the default.
"""

from __future__ import annotations

import argparse

from edgefss import formats


def _with(precision: str) -> str:
    return ", ".join(f.backend for f in formats.FORMATS if f.precision == precision)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["tlg", "cst", "imr_hsnet", "diffews"], default=None,
                   help="model to export (default tlg; imr_hsnet: CAMs as inputs, --imr-backbone/--imr-stages; "
                        "diffews: the teacher's ONNX UNet for GPU servers, not for edge)")
    p.add_argument("--imr-backbone", choices=["resnet50", "vgg16"], default=None,
                   help="--model imr_hsnet: the backbone (default resnet50)")
    p.add_argument("--imr-stages", type=int, default=None, metavar="N",
                   help="--model imr_hsnet: refinement stages unrolled in the head graph (default 2, PASCAL; "
                        "COCO checkpoints want 3)")
    p.add_argument("--checkpoint", default=None, help="weights file (default: random init, said loudly)")
    from edgefss.cli._args import BACKBONE_WEIGHTS_HELP

    p.add_argument("--backbone-weights", default=None, metavar="PTH",
                   help=f"{BACKBONE_WEIGHTS_HELP}; loaded after --checkpoint")
    p.add_argument("--backend", choices=list(formats.BACKENDS), default=None,
                   help="target runtime (default onnxruntime)")
    p.add_argument("--int8", action="store_const", const=True, default=None,
                   help=f"post-training INT8 with calibration and the accuracy gate ({_with('int8')})")
    p.add_argument("--calib", default=None, metavar="DIR",
                   help="images for INT8 calibration and the accuracy gate's held-out episodes (index.csv, PerSeg "
                        "or class-folder layout; default: ../shared/data mix)")
    p.add_argument("--fp16", action="store_const", const=True, default=None,
                   help=f"FP16, through the accuracy gate ({_with('fp16')}; with --int8 only on tensorrt, as the "
                        "fallback precision)")
    p.add_argument("--imgsz", type=int, default=None, help="square input size (default 400)")
    p.add_argument("--out", default=None, metavar="DIR", help="bundle directory (default <model>_<imgsz>_<backend>_<precision>)")
    p.add_argument("--target", default=None, metavar="RECIPE", help="recipe name (edgefss/recipes/*.json, see --list-targets), e.g. openvino-cpu-int8")
    p.add_argument("--force", action="store_const", const=True, default=None,
                   help="write an INT8/FP16 bundle even when the accuracy gate fails (warned; manifest gate.forced)")
    p.add_argument("--strict", action="store_const", const=True, default=None,
                   help="refuse an INT8/FP16 bundle whose accuracy gate is uninformative (all-background or "
                        "all-foreground FP32 masks, e.g. random weights)")
    p.add_argument("--clip-checkpoint", default=None, help="CLIP ViT-B/32 weights for the TLG text table")
    p.add_argument("--clip-bpe", default=None, metavar="FILE",
                   help="CLIP merges file bpe_simple_vocab_16e6.txt.gz (default: $EDGEFSS_CLIP_BPE or an installed "
                        "open_clip/clip; it ships inside the open_clip_torch wheel)")
    p.add_argument("--text-encoder", nargs="?", const="fp32", choices=["fp32", "int8"], default=None,
                   help="TLG: also export the CLIP text tower (fp32 by default, or int8 with its gate) so any class "
                        "name works on the device (docs/open_vocabulary.md); needs --clip-checkpoint")
    p.add_argument("--pseudo", choices=["prior", "cam"], default=None,
                   help="TLG query pseudo-masks on the device: the backbone prior (default) or the CLIP RN50 "
                        "Grad-CAM generator as a graph (docs/cam.md)")
    p.add_argument("--cam-classes", choices=["voc", "coco", "support+background"], default=None,
                   help="--pseudo cam: the list the CAM softmax runs over (default support+background)")
    p.add_argument("--cam-checkpoint", default=None, metavar="FILE",
                   help="--pseudo cam: CLIP RN50 weights (OpenAI RN50.pt or open_clip; default random, said loudly)")
    p.add_argument("--calib-episodes", type=int, default=None, help="calibration episodes (default 24)")
    p.add_argument("--gate-episodes", type=int, default=None, help="held-out episodes for the accuracy gate (default 8)")
    p.add_argument("--verify-episodes", type=int, default=None, help="real episodes for the FP32 check (default 2)")
    p.add_argument("--agreement", type=float, default=None,
                   help="accuracy gate: minimum mask IoU on the informative episodes (default 0.95)")
    p.add_argument("--shots", type=int, default=None, help="supports per calibration episode (default 1)")
    p.add_argument("--workspace", type=int, default=None, metavar="MIB",
                   help="TensorRT engine build memory cap in MiB (default 1024, fits an Orin Nano 8 GB)")
    from edgefss.quant.ort_int8 import ISA_FORMAT  # torch-free, no vendor import

    p.add_argument("--target-isa", choices=list(ISA_FORMAT), default=None,
                   help="onnxruntime --int8: the CPU instruction set the QDQ format is chosen for "
                        "(default: this machine's; U8S8 needs VNNI, S8S8 otherwise)")
    p.add_argument("--list-targets", action="store_true", help="print the recipe names and exit")


def run(args) -> int:
    from edgefss.exporters.options import RECIPE_DIR, list_recipes, load_recipe

    if args.list_targets:
        import json

        for name in list_recipes():
            desc = json.loads((RECIPE_DIR / f"{name}.json").read_text()).get("description", "")
            print(f"{name}: {json.dumps(load_recipe(name))}\n    {desc}")
        return 0
    from edgefss.exporters import export

    export(model=args.model, checkpoint=args.checkpoint, backbone_weights=args.backbone_weights,
           backend=args.backend, int8=args.int8, calib=args.calib,
           fp16=args.fp16, imgsz=args.imgsz, out=args.out, target=args.target, force=args.force, strict=args.strict,
           clip_checkpoint=args.clip_checkpoint, calib_episodes=args.calib_episodes,
           gate_episodes=args.gate_episodes, verify_episodes=args.verify_episodes, agreement=args.agreement,
           shots=args.shots, workspace=args.workspace, target_isa=args.target_isa,
           text_encoder=args.text_encoder, clip_bpe=args.clip_bpe, pseudo=args.pseudo, cam_classes=args.cam_classes,
           cam_checkpoint=args.cam_checkpoint, imr_backbone=args.imr_backbone, imr_stages=args.imr_stages)
    return 0
