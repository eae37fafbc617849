"""Regenerate tests/goldens/cst/ by running the OFFICIAL CST code (dahyun-kang/cst) on real episodes.

Only needed to regenerate the goldens; the tests never import the official code. Usage:

    git --git-dir=<fetched dahyun-kang/cst> archive HEAD | tar -x -C /tmp/cst_official
    pip install --no-deps --target /tmp/cst_deps einops torchvision==0.28.0   # never into .venv
    .venv/bin/python scripts/goldens/make_cst_goldens.py --official /tmp/cst_official \
        --deps /tmp/cst_deps --out tests/goldens/cst [--ckpt-out /tmp/cst_golden.ckpt]

What runs is the official code itself: `model.cst.ClfSegTransformer` (sup='pseudo', 1-way 1-shot,
imgsize 400) with its `predict_cls_seg`, the DINO ViT of its repo, and its loader transform
(torchvision `Resize((400, 400))` on the PIL image, `ToTensor`, `Normalize`). Three things are
stubbed because they do not change the forward: `pytorch_lightning` (LightningModule -> nn.Module),
torchvision's meta-op registrations (its compiled ops are not needed for PIL transforms), and
`torch.hub.load_state_dict_from_url` (returns the seeded DINO weights; the official __init__ loads
them with strict=True, which checks the backbone layout). The learner is loaded with strict=True.

Weights: scripts/goldens/cst_weights.py (seed + recipe; --ckpt-out also writes the
official-layout Lightning checkpoint, ~85 MB, outside the repo).

Each episode file (episode_<i>.npz, compressed) holds what localises a difference:
- input_sha256_{query,support}: sha256 of the official uint8 400x400 RGB input (recovered exactly
  from its normalised tensor); query_hw: the original query size;
- support_cos50 (50,50) / query_cos50 (50,50): head-mean key/CLS-query cosine before upsampling
  (support: its own CLS; query: the support's CLS);
- support_mask400 (400,400) bool: the support pseudo-mask the learner received;
- key_mask12 (12,12), key_mask3 (3,3) float32: that mask resized by the learner (keys where 0 are masked);
- query_pseudo400 (400,400) bool: the query pseudo-mask at 400 (training target, class present);
- cls_logits (1,2), seg_logits (1,2,100,100) float32: the learner's outputs;
- pred_seg (H,W) uint8 at the original query size, pred_cls bool, p_cls float32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"

# (query, support, class): 3 DAVIS episodes (one with the class absent) + 1 FSS-1000 episode
EPISODES = [
    ("davis2016_val_subset/dog/images/00039.jpg", "davis2016_val_subset/dog/images/00000.jpg", "dog"),
    ("davis2016_val_subset/car-shadow/images/00009.jpg", "davis2016_val_subset/car-roundabout/images/00000.jpg", "car"),
    ("davis2016_val_subset/camel/images/00010.jpg", "davis2016_val_subset/blackswan/images/00000.jpg", "swan"),
    ("fss1000_example_eiffel/eiffel_tower/2.jpg", "fss1000_example_eiffel/eiffel_tower/1.jpg", "eiffel_tower"),
]
PRESENT = [True, True, False, True]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _stub_modules():
    import torch.nn as nn

    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = nn.Module
    core = types.ModuleType("pytorch_lightning.core")
    dm = types.ModuleType("pytorch_lightning.core.datamodule")
    dm.LightningDataModule = object
    pl.core, core.datamodule = core, dm
    sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.core": core,
                        "pytorch_lightning.core.datamodule": dm})
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")


class _Recorder:
    """Stands in for a module's `F`: records every F.interpolate (input shape, output)."""

    def __init__(self, F, log, tag):
        self._F, self._log, self._tag = F, log, tag

    def __getattr__(self, name):
        return getattr(self._F, name)

    def interpolate(self, x, *a, **k):
        y = self._F.interpolate(x, *a, **k)
        self._log.append((self._tag, tuple(x.shape), x.detach().clone(), y.detach().clone()))
        return y


def _uint8(x):
    """Official normalised (3,H,W) tensor -> the exact uint8 (H,W,3) it came from."""
    img = (x.numpy().transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)) * 255.0
    out = np.rint(img)
    assert np.abs(img - out).max() < 1e-3, "normalised input is not an exact uint8 image"
    return out.astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, help="work tree of dahyun-kang/cst")
    ap.add_argument("--deps", default="", help="os.pathsep-separated dirs holding einops and torchvision")
    ap.add_argument("--out", default=str(REPO / "tests" / "goldens" / "cst"))
    ap.add_argument("--ckpt-out", default=None, help="also write the official-layout Lightning checkpoint here")
    args = ap.parse_args(argv)

    official = Path(args.official).resolve()
    sys.path[:0] = [str(official)] + [p for p in args.deps.split(":") if p]
    sys.path.insert(0, str(HERE))
    _stub_modules()
    import torch
    from PIL import Image
    from torchvision import transforms

    from cst_weights import LOGIT_GAIN, PSEUDO_K, PSEUDO_Q, PSEUDO_SPREAD, SEED, official_state_dict

    torch.set_num_threads(2)
    sys.path.insert(0, str(REPO))
    from edgefss.models.cst import CST

    shapes = {k: v.shape for k, v in CST().state_dict().items()}
    sd = official_state_dict(shapes)
    backbone = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    torch.hub.load_state_dict_from_url = lambda *a, **k: dict(backbone)

    import model.cst as ocst
    import model.module.corrtrblock as oblock
    import model.module.cst as olearner

    log: list = []
    ocst.F = _Recorder(ocst.F, log, "cst")
    oblock.F = _Recorder(oblock.F, log, "block")
    olearner.F = _Recorder(olearner.F, log, "learner")
    oargs = argparse.Namespace(imgsize=400, sup="pseudo", way=1, shot=1, lr=1e-3)
    net = ocst.ClfSegTransformer(oargs)
    missing, unexpected = net.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    net.eval()
    learner_out = {}
    net.learner.register_forward_hook(lambda m, i, o: learner_out.update(cls=o[0].detach().clone(),
                                                                          seg=o[1].detach().clone()))
    tf = transforms.Compose([transforms.Resize(size=(400, 400)), transforms.ToTensor(),
                             transforms.Normalize(MEAN, STD)])

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"official_repo": "dahyun-kang/cst", "episodes": [], "seed": SEED, "pseudo_q": PSEUDO_Q,
            "pseudo_k": PSEUDO_K, "pseudo_spread": PSEUDO_SPREAD, "logit_gain": LOGIT_GAIN,
            "torch": torch.__version__, "imgsize": 400}
    try:
        meta["official_commit"] = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip() or "633c280"
    except OSError:
        meta["official_commit"] = "633c280"
    for i, ((qp, sp, cls), present) in enumerate(zip(EPISODES, PRESENT)):
        q_pil, s_pil = Image.open(DATA / qp), Image.open(DATA / sp)
        W, H = q_pil.size
        q, s = tf(q_pil), tf(s_pil)
        batch = {"query_img": q[None], "support_imgs": s[None, None, None],  # (b, way, shot, 3, H, W)
                 "support_masks": torch.zeros(1, 1, 1, 400, 400),
                 "query_class_presence": torch.tensor([[present]]),
                 "org_query_imsize": [torch.tensor([W]), torch.tensor([H])]}
        log.clear()
        with torch.no_grad():
            pred_cls, pred_seg = net.predict_cls_seg(batch, nshot=1)
            p_cls = torch.softmax(learner_out["cls"], dim=1)[:, 1]
            cst_calls = [r for r in log if r[0] == "cst"]
            block_calls = [r for r in log if r[0] == "block"]
            assert cst_calls[0][1] == (1, 1, 50, 50) and cst_calls[1][1] == (1, 1, 50, 50)
            support_cos50, query_cos50 = cst_calls[0][2][0, 0], cst_calls[1][2][0, 0]
            key12 = [r for r in block_calls if r[3].shape[-1] == 12][0][3][0, 0]
            key3 = [r for r in block_calls if r[3].shape[-1] == 3][0][3][0, 0]
            # the training target at 400: query keys against the support's CLS query, class present
            qqkv, _ = net.extract_dino_feats(q[None], return_qkv=True)
            sqkv, _ = net.extract_dino_feats(s[None], return_qkv=True)
            _, q400 = net.generate_pseudo_mask(qqkv, sqkv, torch.tensor([True]), resize=(400, 400), thr=0.4)
        spt_mask = batch["support_pmasks"][0].numpy() > 0.5
        rec = {
            "input_sha256_query": hashlib.sha256(_uint8(q).tobytes()).hexdigest(),
            "input_sha256_support": hashlib.sha256(_uint8(s).tobytes()).hexdigest(),
            "query_hw": np.array([H, W]),
            "support_cos50": support_cos50.numpy().astype(np.float32),
            "query_cos50": query_cos50.numpy().astype(np.float32),
            "support_mask400": spt_mask,
            "key_mask12": key12.numpy().astype(np.float32),
            "key_mask3": key3.numpy().astype(np.float32),
            "query_pseudo400": q400[0].numpy() > 0.5,
            "cls_logits": learner_out["cls"].numpy().astype(np.float32),
            "seg_logits": learner_out["seg"].numpy().astype(np.float32),
            "pred_seg": pred_seg[0].numpy().astype(np.uint8),
            "pred_cls": pred_cls.numpy().reshape(-1),
            "p_cls": p_cls.numpy().astype(np.float32),
        }
        np.savez_compressed(out_dir / f"episode_{i}.npz", **rec)
        fg = float((rec["pred_seg"] > 0).mean())
        meta["episodes"].append({"query": qp, "support": sp, "class": cls, "present": present,
                                 "support_mask_fraction": float(spt_mask.mean()),
                                 "key_cells_masked_12": int((rec["key_mask12"] == 0).sum()),
                                 "pred_fg_fraction": fg, "p_cls": float(p_cls[0]),
                                 "seg_logit_range": [float(rec["seg_logits"].min()), float(rec["seg_logits"].max())]})
        print(f"episode {i}: {meta['episodes'][-1]}", flush=True)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if args.ckpt_out:
        tmp = Path(args.ckpt_out + ".tmp")
        torch.save({"state_dict": sd, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.6.5",
                    "optimizer_states": [], "lr_schedulers": [], "callbacks": {}}, str(tmp))
        tmp.replace(args.ckpt_out)
        print(f"official-layout checkpoint: {args.ckpt_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
