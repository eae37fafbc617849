"""`edgefss eval`: few-shot evaluation of a PyTorch model or an exported bundle on a dataset.

Prints mIoU / FB-IoU / 0-1 exact ratio and writes `<out>/eval.json` (per-episode records) plus
`<out>/worst/*.png` overlays. Episodes depend only on (data, way, shot, seed, protocol), so runs
of the PyTorch model and of FP32/INT8 bundles on any backend are directly comparable
(`--compare OTHER/eval.json` prints the agreement).
"""

from __future__ import annotations

import json

from edgefss.cli._args import BACKBONE_WEIGHTS_HELP
from edgefss.errors import InputError


def add_arguments(p) -> None:
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--model", choices=["cst", "tlg", "tlg_vgg16"], help="PyTorch model (needs torch)")
    src.add_argument("--checkpoint", default=None, help="weights for --model (default: random init, says so)")
    src.add_argument("--backbone-weights", default=None, metavar="PTH",
                     help=f"--model only: {BACKBONE_WEIGHTS_HELP}; loaded after --checkpoint")
    src.add_argument("--clip-checkpoint", default=None, help="CLIP ViT-B/32 weights for TLG's text table")
    src.add_argument("--imgsz", type=int, default=400, help="input size of --model (bundles use their own)")
    src.add_argument("--bundle", default=None, help="bundle directory written by `edgefss export`")
    src.add_argument("--backend", default=None, choices=["onnxruntime", "openvino", "tensorrt"],
                     help="run the bundle on this backend (default: the manifest's)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--dataset", default="auto",
                   choices=["auto", "pascal", "coco", "fss", "folder", "davis", "coco_tiny", "perseg"])
    p.add_argument("--fold", type=int, default=0, help="PASCAL-5i / COCO-20i fold 0..3")
    p.add_argument("--splits", default=None, help="folder with pascal/, coco/, fss/ split files")
    p.add_argument("--way", type=int, default=1)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--episodes", type=int, default=None,
                   help="default 1000, fewer for tiny datasets (10 per annotated image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["auto", "fss", "fscs"], default="auto",
                   help="fss: the query always shows a support class (HSNet); fscs: query class drawn with "
                        "p=1/2 (CST FS-CS). auto: fss for 1-way, fscs for N-way")
    p.add_argument("--sup", choices=["pseudo", "mask"], default="pseudo",
                   help="support masks: withheld (model's pseudo-masks, weak supervision) or the GT masks")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="k refinement steps (0 = plain prediction). TLG: the predicted query mask becomes the "
                        "head's query pseudo-mask; CST: IMR-style mutual refinement of the support masks "
                        "(--model and --bundle alike)")
    p.add_argument("--query-pseudo", choices=["prior", "gt", "cam"], default="prior",
                   help="TLG query pseudo-mask: the on-device prior, the query's GT mask fed as an external "
                        "mask (oracle upper bound of the pseudo-mask source), or the CLIP Grad-CAM maps of "
                        "--cam-dir (TLG --model or --bundle)")
    p.add_argument("--cam-dir", default=None, help="folder written by `edgefss pseudo-masks` (--query-pseudo cam)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the bundle's engine (default: the engine's)")
    p.add_argument("--worst", type=int, default=8, help="save overlays of this many lowest-IoU episodes")
    p.add_argument("--compare", default=None, help="another run's eval.json (same episodes) to compare with")
    p.add_argument("--out", default="runs/eval", help="output folder (eval.json, worst/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from edgefss.eval.datasets import load_dataset
    from edgefss.eval.episodes import EpisodeSampler, auto_episodes
    from edgefss.eval.predictors import load_predictor
    from edgefss.eval.runner import compare, evaluate, unsampled_note

    ds = load_dataset(args.data, args.dataset, fold=args.fold, splits=args.splits)
    protocol = args.protocol if args.protocol != "auto" else ("fss" if args.way == 1 else "fscs")
    sampler = EpisodeSampler(ds, way=args.way, shot=args.shot, seed=args.seed, protocol=protocol)
    episodes = args.episodes if args.episodes is not None else auto_episodes(ds)
    cam_masks = None
    if args.query_pseudo == "cam":  # checked before the model loads: a missing folder fails fast
        if not args.cam_dir:
            raise InputError("--query-pseudo cam: give --cam-dir, a folder written by `edgefss pseudo-masks`")
        from edgefss.cam.files import CamDir

        cam_masks = CamDir(args.cam_dir).query_masks
    predictor, meta = load_predictor(args.model, args.checkpoint, args.bundle, args.backend, args.imgsz,
                                     args.clip_checkpoint, args.threads,
                                     backbone_checkpoint=args.backbone_weights)
    if args.query_pseudo != "prior" and predictor.adapter.refine_mode != "query":
        raise InputError(f"--query-pseudo {args.query_pseudo}: {meta['model']} has no query pseudo-mask input; "
                         "it is a TLG option (--model tlg or a TLG --bundle)")
    if meta.get("random_init"):
        print("[eval] WARNING: randomly initialised weights (no checkpoint): the scores are not meaningful")
    res = evaluate(predictor, ds, sampler, episodes, sup=args.sup, refine_steps=args.refine_steps,
                   out_dir=args.out, n_worst=args.worst, progress=not args.no_progress, meta=meta,
                   query_pseudo=args.query_pseudo, cam_masks=cam_masks)
    what = f"{meta['model']} {meta['backend']} {meta['precision']}"
    print(f"[eval] {what} on {ds.name} ({len(ds.classes)} classes), {sampler.way}-way {sampler.shot}-shot, "
          f"{episodes} episodes, protocol {protocol}, seed {args.seed}, sup {args.sup}"
          + (f", query pseudo-mask {args.query_pseudo}" if args.query_pseudo != "prior" else ""))
    print(f"[eval] mIoU {res['miou']:.2f}  FB-IoU {res['fbiou']:.2f}  ER {res['er']:.2f}  "
          f"({res['predict_ms_mean']:.1f} ms/episode)")
    if unsampled_note(res):
        print(f"[eval] {unsampled_note(res)}")
    if args.compare:
        with open(args.compare) as f:
            other = json.load(f)
        c = compare(other, res)
        print(f"[eval] vs {args.compare}: dmIoU {c['miou_delta']:+.2f}  dFB-IoU {c['fbiou_delta']:+.2f}  "
              f"dER {c['er_delta']:+.2f}  mean |dIoU| {c['mean_abs_iou_diff']:.2f}  same presence {c['same_exact']:.3f}")
    print(f"[eval] wrote {args.out}/eval.json")
    return 0
