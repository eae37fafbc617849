"""IMR-HSNet graph glue (exporters/imr_graphs.py I/O names). Torch-free.

IMR-HSNet has no on-device pseudo-mask: its head takes two CAM pseudo-masks at the S/8 grid
(`query_pseudo`, `support_pseudo`, (B,1,S/8,S/8) float32 in [0,1]; the released code reads
50x50 CLIP Grad-CAM files). With the Segmenter:
- the support CAM is the mask given to `set_support(..., masks=[...])` (one {0,1} mask per
  support image, as set_support takes masks);
- the query CAM is `predict(query, query_pseudo=[...])`, one (H, W) map per class at the query's
  size, {0,1} or soft [0,1].
Both are brought to the S/8 grid by `network_mask`: nearest resize to S x S (like the image; soft
values kept), then the mean of each 8x8 block, so a cell holds the mask's coverage / mean CAM.
Both are required; a missing one is an InputError naming it. The refinement stages run inside
the head graph (unrolled at export), so predict's `refine_steps` does not apply.
Presence: no classification output; see postprocess.PRESENCE_MIN_AREA.
"""

from __future__ import annotations

import re

import numpy as np

from edgefss.errors import BundleError, InputError
from edgefss.runtime.adapters import Adapter

_FEAT = re.compile(r"^feat_(\d{2})$")


class IMRAdapter(Adapter):
    model = "imr_hsnet"
    supports_refine = False
    refine_mode = "query"  # its head takes a query pseudo-mask (predict's query_pseudo)

    def __init__(self, manifest: dict, bundle_dir):
        super().__init__(manifest, bundle_dir)  # grid = S/8: the CAM size
        outs = sorted(n for n in manifest["graphs"]["encoder"].get("outputs", {}) if _FEAT.match(n))
        if not outs:
            raise BundleError(f"bundle: '{bundle_dir}' IMR-HSNet encoder lists no feat_XX outputs")
        self.feats = outs
        feats = [f"query_{n}" for n in outs] + [f"support_{n}" for n in outs]
        self.require_io("head", "inputs", feats + ["query_pseudo", "support_pseudo"])
        self.require_io("head", "outputs", ["query_logits"])

    def network_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) caller mask or CAM -> (S/8, S/8) float32 in [0, 1], the head's CAM grid (module doc).

        Unlike TLG/CST (masks at S x S), IMR-HSNet's head takes its masks at the grid, so the
        Segmenter's support and query masks arrive here already gridded."""
        from edgefss.transforms import resize_mask

        m = resize_mask(np.asarray(mask, np.float32), (self.S, self.S))
        k = self.S // self.grid
        return m.reshape(self.grid, k, self.grid, k).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)

    def support_entry(self, enc: dict, mask, class_name: str) -> dict:
        """mask: the support image's pseudo-mask from `network_mask`, (S/8, S/8) float32 (required)."""
        if mask is None:
            raise InputError(
                "IMR-HSNet: set_support needs a pseudo-mask per support image (masks=[...], e.g. its CLIP "
                "Grad-CAM, `edgefss pseudo-masks`); the model has no on-device pseudo-mask generator"
            )
        e = {f"support_{n}": enc[n][0] for n in self.feats}
        g = self.grid
        m = np.asarray(mask, np.float32)
        if m.shape != (g, g):
            raise InputError(f"IMR-HSNet support pseudo-mask: expected ({g}, {g}) from network_mask, got {m.shape}")
        e["support_pseudo"] = m[None]
        return e

    def query_entry(self, enc: dict) -> dict:
        return {f"query_{n}": enc[n] for n in self.feats}

    def head_extras(self, batch: int, refine=None) -> dict:
        """refine: (batch, S/8, S/8) float32 query pseudo-mask (predict's query_pseudo; required)."""
        if refine is None:
            raise InputError(
                "IMR-HSNet: predict needs the query's pseudo-mask (query_pseudo=[one (H, W) map per class], "
                "e.g. its CLIP Grad-CAM); the model has no on-device pseudo-mask generator"
            )
        return {"query_pseudo": np.ascontiguousarray(refine[:, None], dtype=np.float32)}

    def split_outputs(self, out: dict):
        return out["query_logits"], None
