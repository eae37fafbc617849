"""TLG graph glue (design.md "TLG encoder/head" I/O names).

Support entry: `support_feat_XX` (C_l, H_l, W_l) for every encoder level, the class's text rows
`text_support`, `text_query_fg`, `text_query_bg` (512,) from the bundle's text_table.npz, and
`support_pseudo` (1, S, S) (the given mask or zeros). The first pass runs with
`pseudo_given = 0`, so the head uses its on-device prior for both pseudo-masks.

Pseudo-masks are head inputs at the network resolution S x S (`self.grid` = S for TLG), as the
released forward takes them; the head resamples them to S/4 the released way (bilinear,
align_corners=True). A caller's mask (support or query pseudo-mask, any (H, W)) is brought to S x S
as the released loaders bring their CAM pseudo-masks: bilinear, then >= 0.5 (`network_mask`).

The query prediction of TLG depends only on the query pseudo-mask (models-spec §1, "Consequence"):
a support mask given by the caller enters only the support branch, whose output the runtime does
not use. Refinement (predict(refine_steps=k), IMR-style) therefore refines the query side: it
feeds the previous step's query fg probability, at S x S, back as `query_pseudo` with
`pseudo_given = 1` (refine_mode "query"; CST instead refines its support masks, runtime/refine.py).

Presence: TLG has no classification output; see postprocess.PRESENCE_MIN_AREA.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from edgefss.errors import BundleError, InputError
from edgefss.runtime.adapters import Adapter
from edgefss.transforms import pseudo_mask_to_network

_FEAT = re.compile(r"^feat_(\d{2})$")


class TLGAdapter(Adapter):
    model = "tlg"
    supports_refine = True
    refine_mode = "query"

    def __init__(self, manifest: dict, bundle_dir, text=None):
        """text: the class text rows (`index`, `lookup`, like TextTable); None = the bundle's table."""
        super().__init__(manifest, bundle_dir)
        # the head takes its pseudo-masks (and a refinement's query probability) at S x S
        self.grid = self.S
        outs = sorted(n for n in manifest["graphs"]["encoder"].get("outputs", {}) if _FEAT.match(n))
        if not outs:
            raise BundleError(f"bundle: '{bundle_dir}' TLG encoder lists no feat_XX outputs")
        self.feats = outs
        extra = ["text_support", "text_query_fg", "text_query_bg", "query_pseudo", "support_pseudo",
                 "pseudo_given"]
        feats = [f"query_{n}" for n in outs] + [f"support_{n}" for n in outs]
        self.require_io("head", "inputs", feats + extra)
        self.require_io("head", "outputs", ["query_logits"])
        self.text = text if text is not None else self.load_text_table(manifest, bundle_dir)

    def load_text_table(self, manifest: dict, bundle_dir):
        """The class text rows (`index`, `lookup`): the bundle's text_table.npz, plus its CLIP text
        tower when exported with --text-encoder (any name; runtime/text_encoder.py)."""
        from edgefss.runtime.text_encoder import open_vocabulary

        return open_vocabulary(manifest, bundle_dir)

    def check_classes(self, class_names):
        for c in class_names:
            self.text.index(c)  # InputError listing close matches

    def network_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) caller mask -> (S, S) float32 {0, 1}: every mask TLG consumes is a pseudo-mask, and
        the released loaders bring those to the network size by bilinear resize then >= 0.5
        (transforms.pseudo_mask_to_network), not by the nearest resize of ground-truth masks."""
        return pseudo_mask_to_network(mask, self.S)

    def support_entry(self, enc: dict, mask, class_name: str) -> dict:
        e = {f"support_{n}": enc[n][0] for n in self.feats}
        s, fg, bg = self.text.lookup(class_name)
        e.update(text_support=s, text_query_fg=fg, text_query_bg=bg)
        if mask is not None:
            warnings.warn(
                "TLG: a support mask only enters the support branch (models-spec §1), so it does not "
                "change Prediction.mask; the query branch takes the query pseudo-mask (predict's "
                "query_pseudo) or the on-device prior",
                stacklevel=3,
            )
        S = self.S
        if mask is None:
            pseudo = np.zeros((S, S), np.float32)
        else:
            pseudo = np.asarray(mask, np.float32)
            if pseudo.shape != (S, S):
                raise InputError(f"TLG support mask: expected ({S}, {S}) at the network size, got {pseudo.shape}")
        e["support_pseudo"] = pseudo[None]
        return e

    def query_entry(self, enc: dict) -> dict:
        return {f"query_{n}": enc[n] for n in self.feats}

    def head_extras(self, batch: int, refine=None) -> dict:
        """refine: None (on-device prior) or (batch, S, S) float32 query fg probability / pseudo-mask."""
        g = self.grid
        if refine is None:
            return {"query_pseudo": np.zeros((batch, 1, g, g), np.float32),
                    "pseudo_given": np.zeros((batch, 1, 1, 1), np.float32)}
        return {"query_pseudo": np.ascontiguousarray(refine[:, None], dtype=np.float32),
                "pseudo_given": np.ones((batch, 1, 1, 1), np.float32)}

    def split_outputs(self, out: dict):
        return out["query_logits"], None
