"""Encoder outputs + masks -> head-graph inputs (torch-free).

One implementation used by export verification (PyTorch vs backend on the same feeds),
INT8 calibration and the accuracy gate, so all three exercise the head exactly as the
runtime will. Graph I/O names follow docs/design.md "Graph I/O names".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefss.config import PreprocessCfg
from edgefss.errors import InputError
from edgefss.transforms import load_mask, preprocess, resize_mask

# Which head output is the query segmentation (B,2,S/4,S/4) for each model.
MASK_OUTPUT = {"tlg": "query_logits", "cst": "seg_logits"}
# CST's weak-supervision threshold on pseudo_prob (design.md "CST").
CST_PSEUDO_THRESHOLD = 0.4


class FeedBuilder:
    """Builds graph inputs for model `kind` ('tlg' | 'cst').

    Args:
        kind: model name.
        pre: preprocessing (imgsz, mean, std).
        head_inputs: the head graph's input names, in order.
        text_table: TLG only; an `edgefss.text.table.TextTable` (rows looked up by class name).
    """

    def __init__(self, kind: str, pre: PreprocessCfg, head_inputs, text_table=None):
        if kind not in MASK_OUTPUT:
            raise InputError(f"model kind {kind!r}; expected one of {sorted(MASK_OUTPUT)}")
        if kind == "tlg" and text_table is None:
            raise InputError("TLG feeds need a text table (edgefss.text.table.build_text_table)")
        self.kind, self.pre, self.head_inputs, self.text = kind, pre, list(head_inputs), text_table
        self.grid = pre.imgsz // 8

    def image(self, path) -> np.ndarray:
        """(1,3,S,S) float32 via edgefss.transforms.preprocess (the only preprocessing)."""
        return preprocess(path, self.pre, name=str(path))

    def small_mask(self, path) -> np.ndarray | None:
        """Mask file -> (h,h) float32 {0,1} at the feature grid h = S/8, or None."""
        if path is None:
            return None
        m = load_mask(Path(path), name=str(path))
        return resize_mask(m, (self.grid, self.grid)).astype(np.float32)

    def _text_rows(self, cls: str, B: int) -> list[np.ndarray]:
        rows = self.text.lookup_many([cls] * B)  # TextTable canonicalises the spelling
        return [np.asarray(rows[k], np.float32) for k in ("support", "query_fg", "query_bg")]

    def head_feeds(self, enc_q: dict, enc_s: list, s_masks: list, cls: str,
                   q_mask: np.ndarray | None = None, use_given: bool = True) -> dict:
        """Head inputs for one episode.

        Args:
            enc_q: encoder outputs of the query {name: (1,...)}.
            enc_s: list of K encoder output dicts of the supports.
            s_masks: list of K (h,h) float32 masks or None (None: the model's own pseudo-mask).
            cls: class name (TLG text row). q_mask: TLG external query pseudo-mask or None.
            use_given: TLG: feed the external masks (pseudo_given=1) when all are present.
        Returns:
            {input name: float32 array} in `head_inputs` order.
        """
        B = len(enc_s)
        if self.kind == "cst":
            masks = [m if m is not None else (e["pseudo_prob"][0] > CST_PSEUDO_THRESHOLD).astype(np.float32)
                     for m, e in zip(s_masks, enc_s)]
            feeds = {
                "query_feats": enc_q["query_feats"],
                "support_feats": np.concatenate([e["support_feats"] for e in enc_s], 0),
                "support_mask": np.stack(masks, 0).astype(np.float32),
            }
        else:
            given = use_given and q_mask is not None and all(m is not None for m in s_masks)
            h = self.grid
            zero = np.zeros((h, h), np.float32)
            s_ext = np.stack([m if m is not None else zero for m in s_masks], 0)[:, None]
            q_ext = np.repeat((q_mask if q_mask is not None else zero)[None, None], B, 0)
            t_s, t_fg, t_bg = self._text_rows(cls, B)
            feeds = {"text_support": t_s, "text_query_fg": t_fg, "text_query_bg": t_bg,
                     "query_pseudo": q_ext.astype(np.float32), "support_pseudo": s_ext.astype(np.float32),
                     "pseudo_given": np.full((B, 1, 1, 1), 1.0 if given else 0.0, np.float32)}
            for name, v in enc_q.items():
                feeds["query_" + name] = v
            for name in enc_q:
                feeds["support_" + name] = np.concatenate([e[name] for e in enc_s], 0)
        missing = [n for n in self.head_inputs if n not in feeds]
        if missing:
            raise InputError(f"head inputs {missing} cannot be built for model {self.kind!r}")
        return {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self.head_inputs}

    def query_mask(self, head_out: dict) -> np.ndarray:
        """(B,h4,w4) bool foreground from the head's query logits (argmax over 2 classes)."""
        lg = head_out[MASK_OUTPUT[self.kind]]
        return lg[:, 1] > lg[:, 0]
