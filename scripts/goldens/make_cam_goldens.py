"""CLIP Grad-CAM goldens from the released IMR-HSNet generator (Whileherham/IMR-HSNet @ 5757227).

Regenerate (only then is the official code imported; it is never copied into this repository):

    mkdir -p /tmp/imr_off && cd /tmp/imr_off && for f in model_clip.py clip.py simple_tokenizer.py \
        bpe_simple_vocab_16e6.txt.gz $(git --git-dir=<IMR-HSNet .git> ls-tree -r --name-only HEAD \
        pytorch_grad_cam | grep '\\.py$'); do mkdir -p $(dirname $f); git --git-dir=<IMR-HSNet .git> \
        show HEAD:$f > $f; done
    cd <edgefss> && PYTHONPATH=. .venv/bin/python scripts/goldens/make_cam_goldens.py \
        --official /tmp/imr_off \
        --data ../shared/data --out tests/goldens/cam

What is run:
- `rn50_keys.json`: key -> shape of `visual.*` of the official `CLIP(1024, 224, (3,4,6,3), 64, ...)`
  (RN50), i.e. the layout of OpenAI's RN50.pt, for the edgefss tower to match key for key.
- `tiny.npz`: a tiny CLIP (scripts/goldens/cam_weights.py: vision layers (2,1,1,2), width 8, 96 px,
  3x3 layer-4 grid, 32-d embedding; text width 64, 1 layer) with seeded weights loaded into the
  official `model_clip.build_model` (then `.float()`, as `clip.load` on CPU), the official
  `clip.tokenize("a photo of a {c}")` over VOC class names, `get_text_features`, and the official
  `pytorch_grad_cam.GradCAM(model, [model.visual.layer4[-1]])(input, target_category=c)[0]` then
  `cv2.resize(., (50, 50))` exactly as `generate_cam_voc.py:20-33`, for 2 real images x 3 targets.
  Stand-ins, none numeric: `ftfy.fix_text` = identity (ASCII prompts), an empty `ttach` (only used by
  aug_smooth), `torchvision.transforms` placeholders (imported, unused: the preprocessing below is a
  transcription of torchvision's PIL path: Resize(96, BICUBIC) on the short side with
  `int(96 * long / short)`, CenterCrop with `int(round((s - 96) / 2))` offsets, /255, CLIP mean/std).
  Saved: the images (uint8), the preprocessed input, token ids, text features, softmax outputs,
  the hooked layer-4 activations' Grad-CAM weights (spatial mean of the gradient), the 96x96 CAM
  and the 50x50 result; `meta.json` holds the seed, the state dict's SHA-256 and versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np

IMAGES = ("davis2016_val_subset/dog/images/00000.jpg", "coco_tiny16/images/000000318219.jpg")
CLASSES = ("aeroplane", "bird", "cat", "dog", "person", "diningtable", "tvmonitor")
TARGETS = ((3, 4, 2), (4, 3, 5))  # per image: indices into CLASSES
MAX_SIDE = 160  # images are shrunk (PIL bilinear) before anything else to keep the golden small


def sd_sha256(sd: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def torchvision_preprocess(pil, n_px: int) -> np.ndarray:
    """torchvision (0.8-0.11) Resize(n_px, BICUBIC), CenterCrop(n_px), ToTensor, Normalize on a PIL image."""
    from PIL import Image

    w, h = pil.size
    if not ((w <= h and w == n_px) or (h <= w and h == n_px)):
        if w < h:
            ow, oh = n_px, int(n_px * h / w)
        else:
            oh, ow = n_px, int(n_px * w / h)
        pil = pil.resize((ow, oh), Image.BICUBIC)
    w, h = pil.size
    top, left = int(round((h - n_px) / 2.0)), int(round((w - n_px) / 2.0))
    pil = pil.crop((left, top, left + n_px, top + n_px)).convert("RGB")
    x = np.asarray(pil, np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)[:, None, None]
    std = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)[:, None, None]
    return (x - mean) / std


def _stubs():
    sys.modules["ftfy"] = types.SimpleNamespace(fix_text=lambda s: s)
    sys.modules["ttach"] = types.ModuleType("ttach")
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    for n in ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"):
        setattr(tr, n, type(n, (), {"__init__": lambda self, *a, **k: None}))
    tv.transforms = tr
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--official", required=True, help="folder with the official model_clip.py, clip.py, pytorch_grad_cam/"
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="tests/goldens/cam")
    a = ap.parse_args()
    _stubs()
    sys.path.insert(0, str(Path(a.official).resolve()))
    import cv2
    import torch
    from PIL import Image

    import clip as off_clip
    import model_clip
    from pytorch_grad_cam import GradCAM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cam_weights import SEED, TINY, clip_state_dict

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # 1. RN50 key layout
    rn50 = model_clip.CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
    keys = {k: list(v.shape) for k, v in rn50.state_dict().items() if k.startswith("visual.")}
    (out / "rn50_keys.json").write_text(json.dumps(keys, indent=0) + "\n")
    del rn50
    # 2. tiny CLIP through the official generator
    t = TINY
    shapes_model = model_clip.CLIP(
        t["embed_dim"],
        t["image_resolution"],
        t["vision_layers"],
        t["vision_width"],
        None,
        t["context_length"],
        t["vocab_size"],
        t["transformer_width"],
        t["transformer_heads"],
        t["transformer_layers"],
    )
    shapes = {k: tuple(v.shape) for k, v in shapes_model.state_dict().items()}
    sd = clip_state_dict(shapes, SEED)
    model = model_clip.build_model({k: v.clone() for k, v in sd.items()}).float().eval()
    ids = torch.cat([off_clip.tokenize(f"a photo of a {c}") for c in CLASSES])
    with torch.no_grad():
        text = model.encode_text(ids)
        text = text / text.norm(dim=-1, keepdim=True)
    rec = {
        "classes": np.array(CLASSES),
        "targets": np.array(TARGETS, np.int64),
        "ids": ids.numpy(),
        "text": text.numpy(),
    }
    imgs, xs, probs, weights, cam96, cam50 = [], [], [], [], [], []
    for path, targets in zip(IMAGES, TARGETS):
        pil = Image.open(Path(a.data) / path).convert("RGB")
        s = MAX_SIDE / max(pil.size)
        pil = pil.resize((round(pil.size[0] * s), round(pil.size[1] * s)), Image.BILINEAR)
        imgs.append(np.asarray(pil))
        x = torch.from_numpy(torchvision_preprocess(pil, t["image_resolution"]))[None]
        xs.append(x[0].numpy())
        model.get_text_features(ids)
        with torch.no_grad():
            probs.append(model(x)[0].numpy())
        w_i, c96_i, c50_i = [], [], []
        for c in targets:
            cam = GradCAM(model=model, target_layers=[model.visual.layer4[-1]], use_cuda=False)
            g = cam(input_tensor=x, target_category=int(c))[0, :]
            grads = cam.activations_and_grads.gradients[0].numpy()
            w_i.append(grads.mean(axis=(2, 3))[0])
            c96_i.append(g)
            c50_i.append(cv2.resize(g, (50, 50)))
            cam.activations_and_grads.release()
        weights.append(w_i)
        cam96.append(c96_i)
        cam50.append(c50_i)
    rec["images"] = np.empty(len(imgs), object)
    for i, im in enumerate(imgs):
        rec[f"image{i}"] = im
    del rec["images"]
    rec.update(
        x=np.stack(xs),
        probs=np.stack(probs),
        weights=np.array(weights, np.float32),
        cam96=np.array(cam96, np.float32),
        cam50=np.array(cam50, np.float32),
    )
    np.savez_compressed(out / "tiny.npz", **rec)
    meta = {
        "seed": SEED,
        "tiny": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
        "state_dict_sha256": sd_sha256(sd),
        "images": list(IMAGES),
        "max_side": MAX_SIDE,
        "official": "Whileherham/IMR-HSNet@5757227",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cv2": cv2.__version__,
        "probs": np.stack(probs).round(4).tolist(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta["probs"]))
    print("cam50 max per map", np.array(cam50).max(axis=(2, 3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
