"""`edgefss train`: episodic training of a model head on a folder of annotated images."""

from __future__ import annotations

from edgefss.cli._args import BACKBONE_WEIGHTS_HELP


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, choices=["cst", "tlg", "tlg_vgg16"], help="model whose head is trained")
    p.add_argument("--data", required=True, help="dataset folder (shared/data layouts, or class/image.jpg + class/image.png)")
    p.add_argument("--out", default="runs/train", help="output folder: model.pt, last_state.pt, loss.png, history.json")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--episodes", type=int, default=64, help="episodes per epoch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="default: the paper's (CST 1e-3 Adam, TLG 4e-4 AdamW)")
    p.add_argument("--imgsz", type=int, default=400)
    p.add_argument("--sup", choices=["pseudo", "mask"], default=None,
                   help="seg target: backbone pseudo-mask (CST default, weak) or pixel GT (TLG default)")
    p.add_argument("--checkpoint", default=None, help="initial weights (official or edgefss checkpoint)")
    p.add_argument("--backbone-weights", default=None, metavar="PTH",
                   help=BACKBONE_WEIGHTS_HELP + "; loaded after --checkpoint")
    p.add_argument("--clip-checkpoint", default=None, help="CLIP .pt for TLG's text table")
    p.add_argument("--cam-dir", default=None,
                   help="TLG: query/support pseudo-masks from this `edgefss pseudo-masks` folder (CLIP Grad-CAM) "
                        "instead of the backbone prior")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-mb", type=int, default=3072,
                   help="keep frozen-backbone features of up to this many MB of images (exact; 0 = off)")


def run(args) -> int:
    from edgefss.train import TrainCfg, train
    from edgefss.train.records import find_records

    cfg = TrainCfg(model=args.model, data=args.data, out=args.out, epochs=args.epochs,
                   episodes_per_epoch=args.episodes, batch_size=args.batch_size, lr=args.lr,
                   imgsz=args.imgsz, sup=args.sup, checkpoint=args.checkpoint,
                   backbone_checkpoint=args.backbone_weights, resume=not args.no_resume,
                   seed=args.seed, clip_checkpoint=args.clip_checkpoint,
                   feature_cache_mb=args.cache_mb, cam_dir=args.cam_dir)
    records = find_records(args.data)
    res = train(cfg, records)
    h = res["history"]
    if h:
        first = sum(r["loss"] for r in h[: max(1, len(h) // 5)]) / max(1, len(h) // 5)
        last = sum(r["loss"] for r in h[-max(1, len(h) // 5):]) / max(1, len(h) // 5)
        print(f"[train] {len(h)} steps; mean loss first 20% {first:.4f} -> last 20% {last:.4f}")
    if res.get("feature_cache"):
        c = res["feature_cache"]
        print(f"[train] feature cache: {c['misses']} images encoded, {c['hits']} served from cache ({c['mb']} MB)")
    print(f"[train] checkpoint: {res['checkpoint']}  (export with: edgefss export --model {args.model} --checkpoint {res['checkpoint']})")
    return 0
