"""Predictors the evaluator scores: a PyTorch model (torch) or a bundle (torch-free runtime).

`TorchPredictor` runs `build_model(...)` through the model API in design.md and combines ways and
shots with the runtime's own NumPy post-processing (`edgefss.runtime.postprocess`), the same
support-mask gridding and the same pseudo-mask rules, so PyTorch vs bundle differences come
from the network alone. `load_predictor` picks one from CLI-style arguments.
"""

from __future__ import annotations

import time

import numpy as np

from edgefss.config import PreprocessCfg
from edgefss.errors import InputError, StateError, require
from edgefss.transforms import load_image, normalize, resize_image


class TorchPredictor:
    """`Segmenter`-compatible wrapper of a PyTorch TLG/CST model (CPU, eval mode, no grad).

    Args:
        model: "cst", "tlg" or "tlg_vgg16".
        checkpoint: weights file or None (random init, the model warns).
        imgsz: network input size S.
        clip_checkpoint: CLIP ViT-B/32 weights for TLG's text table; None = random stand-ins.
        threads: torch intra-op threads (None = torch default).
    """

    def __init__(self, model: str = "cst", checkpoint=None, imgsz: int = 400, clip_checkpoint=None,
                 threads: int | None = None, built=None):
        self.torch = require("torch", "evaluating a PyTorch model")
        from edgefss.models import build_model

        if threads:
            self.torch.set_num_threads(int(threads))
        self.name = model
        self.kind = "tlg" if model.startswith("tlg") else "cst"
        self.cfg = PreprocessCfg(imgsz=imgsz)
        self.model = (built if built is not None else build_model(model, checkpoint=checkpoint, imgsz=imgsz)).eval()
        self.clip_checkpoint = clip_checkpoint
        self.grid = imgsz // 8
        self._text: dict[str, tuple] = {}
        self._support = None

    # ------------------------------------------------------------------ support
    def _tensor(self, rgb: np.ndarray):
        return self.torch.from_numpy(normalize(resize_image(rgb, self.cfg.imgsz), self.cfg))

    def _text_rows(self, names: list[str]) -> dict:
        missing = [n for n in dict.fromkeys(names) if n not in self._text]
        if missing:
            import warnings

            from edgefss.text.table import build_text_table

            with warnings.catch_warnings():
                # build_text_table warns on every call without CLIP weights; the CLI says it once
                warnings.simplefilter("ignore")
                table = build_text_table(missing, clip_checkpoint=self.clip_checkpoint)
            for n in missing:
                self._text[n] = table.lookup(n)
        rows = [self._text[n] for n in names]
        return {k: self.torch.from_numpy(np.stack([r[j] for r in rows]).astype(np.float32))
                for j, k in enumerate(("support", "query_fg", "query_bg"))}

    def set_support(self, images, class_names, masks=None) -> None:
        """Encode and cache the support set; images[i] shows class_names[i] (runtime semantics)."""
        from edgefss.runtime.segmenter import mask_to_grid

        if len(images) == 0 or len(images) != len(class_names):
            raise InputError(f"set_support: {len(images)} images for {len(class_names)} class names; "
                             "expected one name per image, at least one")
        if masks is not None and len(masks) != len(images):
            raise InputError(f"set_support: {len(masks)} masks for {len(images)} images")
        classes = list(dict.fromkeys(class_names))
        groups = [[i for i, n in enumerate(class_names) if n == c] for c in classes]
        rgbs = [load_image(im, f"support image {i}") for i, im in enumerate(images)]
        with self.torch.no_grad():
            x = self.torch.cat([self._tensor(r) for r in rgbs])
            feats = self.model.encode(x)
        grids = None
        if masks is not None:
            grids = self.torch.from_numpy(np.stack(
                [mask_to_grid(np.asarray(m, np.uint8), self.cfg.imgsz, self.grid) for m in masks]).astype(np.float32))
        text = self._text_rows(list(class_names)) if self.kind == "tlg" else None
        self._support = dict(feats=feats, grids=grids, classes=classes, groups=groups, text=text)

    def reset_support(self) -> None:
        self._support = None

    # ------------------------------------------------------------------ predict
    def _head(self, qf, s, refine=None):
        torch = self.torch
        if self.kind == "cst":
            from edgefss.models.cst import PSEUDO_THRESHOLD

            if s["grids"] is None:
                mask = (s["feats"]["pseudo_prob"] > PSEUDO_THRESHOLD).float()
            else:
                mask = (s["grids"] >= 0.5).float()
            out = self.model.head(qf["query_feats"], s["feats"]["support_feats"], mask)
            return out["seg_logits"].numpy(), out["cls_logits"].numpy()
        qp, sp = self.model.prior(qf, s["feats"])
        if s["grids"] is not None:
            sp = s["grids"][:, None]
        if refine is not None:
            qp = torch.from_numpy(refine[:, None].astype(np.float32))
        out = self.model.head(qf, s["feats"], s["text"], qp, sp)
        return out["query_logits"].numpy(), None

    def predict(self, query, refine_steps: int = 0, query_pseudo=None):
        """Segment one query; returns `edgefss.runtime.Prediction` (same fields as the bundle path).

        query_pseudo: TLG only, optional external query pseudo-masks replacing the on-device prior
            (the slot of the paper's offline CLIP Grad-CAM masks): one (H,W) {0,1} or [0,1] array
            per support class, in set_support's class order.
        """
        from edgefss.runtime import postprocess as post
        from edgefss.runtime.segmenter import Prediction, mask_to_grid
        from edgefss.transforms import resize_prob

        s = self._support
        if s is None:
            raise StateError("predict: no support set; call set_support(images, class_names) first")
        if not isinstance(refine_steps, int) or refine_steps < 0:
            raise InputError(f"refine_steps: expected an int >= 0, got {refine_steps!r}")
        if refine_steps and self.kind != "tlg":
            raise InputError(f"refine_steps: {self.name} has no query-mask input to refine with; use 0")
        if query_pseudo is not None and self.kind != "tlg":
            raise InputError(f"query_pseudo: {self.name} has no query pseudo-mask input (TLG only)")
        if query_pseudo is not None and len(query_pseudo) != len(s["classes"]):
            raise InputError(f"query_pseudo: {len(query_pseudo)} masks for {len(s['classes'])} support classes")
        t0 = time.perf_counter()
        rgb = load_image(query, "query")
        H, W = rgb.shape[:2]
        with self.torch.no_grad():
            qf = self.model.encode(self._tensor(rgb))
            t1 = time.perf_counter()
            external = None
            if query_pseudo is not None:
                external = np.empty((sum(len(g) for g in s["groups"]), self.grid, self.grid), np.float32)
                for c, shots in enumerate(s["groups"]):
                    external[shots] = mask_to_grid(np.asarray(query_pseudo[c], np.float32), self.cfg.imgsz,
                                                  self.grid)
            seg, cls = self._head(qf, s, refine=external)
            for _ in range(refine_steps):
                p = resize_prob(post.fg_probability(seg, s["groups"], seg.shape[-2:]), (self.grid, self.grid))
                ref = np.empty((seg.shape[0], self.grid, self.grid), np.float32)
                for c, shots in enumerate(s["groups"]):
                    ref[shots] = p[c]
                seg, cls = self._head(qf, s, refine=ref)
        t2 = time.perf_counter()
        seg = seg.astype(np.float32)
        p_fg = post.fg_probability(seg, s["groups"], (H, W))
        if cls is not None:
            probs = post.cls_probability(cls.astype(np.float32), s["groups"])
            present = probs > post.FG_THRESHOLD
        else:
            probs = post.area_presence(p_fg)
            present = probs > post.PRESENCE_MIN_AREA
        t3 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
        return Prediction(mask=post.label_mask(p_fg), probs=probs, present=present,
                          logits=post.mean_logits(seg, s["groups"]), fg_prob=p_fg, classes=list(s["classes"]),
                          timings={"encode": ms(t0, t1), "head": ms(t1, t2), "post": ms(t2, t3), "total": ms(t0, t3)})


def load_predictor(model: str | None = None, checkpoint=None, bundle=None, backend=None, imgsz: int = 400,
                   clip_checkpoint=None, threads: int | None = None):
    """(predictor, description dict) from `--model/--checkpoint` or `--bundle/--backend`."""
    if (model is None) == (bundle is None):
        raise InputError("eval: give exactly one of --model (PyTorch) or --bundle (exported bundle)")
    if bundle is not None:
        from edgefss.runtime import Segmenter

        seg = Segmenter.load(bundle, backend=backend, threads=threads)
        m = seg.manifest
        return seg, {"predictor": "bundle", "bundle": str(bundle), "model": m.get("model"),
                     "backend": backend or m.get("backend"), "precision": m.get("precision"),
                     "imgsz": m.get("preprocess", {}).get("imgsz"),
                     "random_init": m.get("weights", {}).get("random_init")}
    p = TorchPredictor(model, checkpoint=checkpoint, imgsz=imgsz, clip_checkpoint=clip_checkpoint, threads=threads)
    return p, {"predictor": "torch", "model": model, "backend": "torch", "precision": "fp32", "imgsz": imgsz,
               "checkpoint": None if checkpoint is None else str(checkpoint), "random_init": checkpoint is None}
