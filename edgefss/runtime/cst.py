"""CST graph glue (design.md "CST encoder/head" I/O names).

Support entry: `support_feats` (12, 384, 1+s*s) and `support_mask` (S/8, S/8) — the given mask, or
without one the on-device pseudo-mask `pseudo_prob > threshold` (models-spec §3.3; threshold from
the manifest, 0.4). Query entry: `query_feats` (1, 12, 384, T). Outputs: `seg_logits`, `cls_logits`.
"""

from __future__ import annotations

import numpy as np

from edgefss.runtime.adapters import Adapter


class CSTAdapter(Adapter):
    model = "cst"
    supports_refine = False  # the CST head has no query-mask input to feed a prediction back into

    def __init__(self, manifest: dict, bundle_dir):
        super().__init__(manifest, bundle_dir)
        self.require_io("encoder", "outputs", ["query_feats", "support_feats", "pseudo_prob"])
        self.require_io("head", "inputs", ["query_feats", "support_feats", "support_mask"])
        self.require_io("head", "outputs", ["cls_logits", "seg_logits"])

    def support_entry(self, enc: dict, mask, class_name: str) -> dict:
        if mask is None:
            mask = enc["pseudo_prob"][0] > self.pseudo_threshold
        else:
            # the head masks image-token keys where the mask is 0; a cell counts when mostly covered
            mask = mask >= 0.5
        return {"support_feats": enc["support_feats"][0], "support_mask": mask.astype(np.float32)}

    def query_entry(self, enc: dict) -> dict:
        return {"query_feats": enc["query_feats"]}

    def split_outputs(self, out: dict):
        return out["seg_logits"], out["cls_logits"]
