"""The training loop: frozen backbone, episodic batches, resumable, DDP-ready (gloo or nccl).

Launch on several processes with `torchrun --nproc_per_node N -m edgefss train ...`: the loop
reads RANK/WORLD_SIZE from the environment, shards episodes with DistributedSampler and
averages gradients through DistributedDataParallel. Only rank 0 writes checkpoints and plots.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from edgefss.errors import InputError
from edgefss.models import build_model
from edgefss.models.checkpoints import save_edgefss
from edgefss.train.episodes import EpisodeDataset
from edgefss.train.feature_cache import cache_encoder
from edgefss.train.losses import cst_loss, tlg_loss


@dataclass
class TrainCfg:
    model: str = "cst"
    data: str = ""
    out: str = "runs/train"
    epochs: int = 1
    episodes_per_epoch: int = 64
    batch_size: int = 4
    lr: float | None = None  # None: the paper's (CST Adam 1e-3, TLG AdamW 4e-4)
    weight_decay: float = 1e-4
    imgsz: int = 400
    sup: str | None = None  # None: 'pseudo' for CST (weak), 'mask' for TLG (base-class GT)
    checkpoint: str | None = None  # initial weights (official or edgefss)
    backbone_checkpoint: str | None = None  # ImageNet/DINO backbone weights (torchvision .pth, DINO .pth)
    resume: bool = True
    seed: int = 0
    clip_checkpoint: str | None = None
    progress: bool = True
    feature_cache_mb: int = 3072  # frozen-backbone features kept per image (0: re-encode every step)
    cam_dir: str | None = None  # TLG: `edgefss pseudo-masks` CLIP Grad-CAM files instead of the prior


def _trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def _optimizer(cfg: TrainCfg, params):
    if cfg.model == "cst":
        return torch.optim.Adam(params, lr=cfg.lr or 1e-3)
    return torch.optim.AdamW(params, lr=cfg.lr or 4e-4, weight_decay=cfg.weight_decay)


class _TextLookup:
    """Class name -> TLG text tensors (B,512) from a prompt table built once."""

    def __init__(self, classes, clip_checkpoint):
        from edgefss.text.table import build_text_table

        self.table = build_text_table(list(classes), clip_checkpoint=clip_checkpoint)

    def __call__(self, names):
        rows = [self.table.lookup(n) for n in names]
        return {k: torch.from_numpy(__import__("numpy").stack([r[i] for r in rows])).float()
                for i, k in enumerate(("support", "query_fg", "query_bg"))}


def _step(cfg, model, batch, text):
    if cfg.model == "cst":
        out = model(batch["query"], batch["support"][:, 0], support_mask=None)
        return cst_loss(out, batch, cfg.sup)
    given = {}
    if "query_pseudo" in batch:  # --cam-dir: the CAM files, not the backbone prior
        given = {"query_pseudo": batch["query_pseudo"], "support_pseudo": batch["support_pseudo"][:, 0]}
    out = model(batch["query"], batch["support"][:, 0], text(batch["cls_name"]), **given)
    return tlg_loss(out, batch, cfg.sup)


def _collate(items):
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "cls_name"}
    out["cls_name"] = [it["cls_name"] for it in items]
    return out


def train(cfg: TrainCfg, records) -> dict:
    """Train the head of `cfg.model` on episodes drawn from `records`.

    Args:
        cfg: TrainCfg.
        records: list of edgefss.train.episodes.Record (image, mask, class).

    Returns:
        dict(history=[{epoch, step, loss, ...}], checkpoint=path of the edgefss checkpoint).
    """
    if cfg.model not in ("cst", "tlg", "tlg_vgg16"):
        raise InputError(f"train: model must be 'cst', 'tlg' or 'tlg_vgg16', got {cfg.model!r}")
    cfg.sup = cfg.sup or ("pseudo" if cfg.model == "cst" else "mask")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg.model, checkpoint=cfg.checkpoint, imgsz=cfg.imgsz,
                        **({"backbone_checkpoint": cfg.backbone_checkpoint} if cfg.backbone_checkpoint else {}))
    model.train()
    # Frozen backbones keep their eval-mode BatchNorm statistics (the paper freezes them).
    if hasattr(model, "backbone"):
        model.backbone.eval()
    params = _trainable(model)
    cache = cache_encoder(model, cfg.feature_cache_mb << 20) if cfg.feature_cache_mb > 0 else None
    opt = _optimizer(cfg, params)
    pseudo = None
    if cfg.cam_dir is not None:
        if cfg.model == "cst":
            raise InputError("--cam-dir: CST makes its pseudo-masks from its own attention; a TLG option")
        from edgefss.cam.files import CamDir

        pseudo = CamDir(cfg.cam_dir).load
    ds = EpisodeDataset(records, length=cfg.episodes_per_epoch, imgsz=cfg.imgsz, seed=cfg.seed,
                        p_absent=0.5 if cfg.model == "cst" else 0.0, pseudo=pseudo)
    text = _TextLookup(ds.classes, cfg.clip_checkpoint) if cfg.model != "cst" else None

    state_path = out / "last_state.pt"
    start_epoch, history = 0, []
    if cfg.resume and state_path.is_file():
        st = torch.load(str(state_path), map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, history = st["epoch"], st["history"]
        if rank == 0:
            print(f"[train] resumed from {state_path} at epoch {start_epoch}")

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=0, collate_fn=_collate, drop_last=False)
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs):
        ds.set_epoch(epoch)  # new episodes every epoch, reproducibly (resume redraws the same ones)
        if sampler is not None:
            sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"train {cfg.model} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and rank == 0))
        for step, batch in enumerate(bar):
            loss, parts = _step(cfg, net, batch, text)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec = {"epoch": epoch, "step": step, "loss": float(loss), **parts}
            history.append(rec)
            bar.set_postfix(loss=f"{float(loss):.4f}")
        if rank == 0:
            _save(cfg, model, opt, epoch + 1, history, out)
    if world > 1:
        dist.barrier()
    ckpt = out / "model.pt"
    stats = {} if cache is None else {"hits": cache.hits, "misses": cache.misses, "mb": cache.bytes >> 20}
    return {"history": history, "checkpoint": str(ckpt), "feature_cache": stats}


def _save(cfg, model, opt, epoch, history, out: Path) -> None:
    tmp = out / "last_state.pt.tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "history": history, "cfg": asdict(cfg)}, str(tmp))
    tmp.replace(out / "last_state.pt")
    save_edgefss(out / "model.pt", model, {"model": cfg.model, "imgsz": cfg.imgsz, "epochs": epoch,
                                           "trained_on": cfg.data, "sup": cfg.sup})
    (out / "history.json").write_text(json.dumps(history))
    plot_history(history, out / "loss.png", title=f"{cfg.model} training loss")


def plot_history(history, path: Path, title: str = "training loss") -> None:
    """Loss per step (and its running mean) as a PNG; silently skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    losses = [h["loss"] for h in history]
    w = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - w + 1): i + 1]) / len(losses[max(0, i - w + 1): i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, label="loss per step")
    ax.plot(smooth, label=f"running mean ({w})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
