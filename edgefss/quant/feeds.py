"""Encoder outputs + masks -> head-graph inputs, through the runtime's model adapters (torch-free).

One implementation used by export verification (PyTorch vs backend on the same feeds), INT8
calibration and the accuracy gate. The head inputs come from the same adapter calls the runtime's
Segmenter makes (`support_entry`, `query_entry`, `head_extras`, runtime/adapters.py), so support
masks are gridded, pseudo-masks thresholded and text rows looked up exactly as on the device.
Graph I/O names follow docs/design.md "Graph I/O names".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgefss.config import CST_PSEUDO_THRESHOLD, PreprocessCfg
from edgefss.errors import InputError
from edgefss.runtime.adapters import stack_entries
from edgefss.transforms import load_mask, preprocess

KINDS = ("cst", "tlg", "imr_hsnet")
_CST_ENCODER_OUTPUTS = ("query_feats", "support_feats", "pseudo_prob")
_HEAD_OUTPUTS = {"cst": ("cls_logits", "seg_logits"),
                 "tlg": ("query_logits", "support_logits", "query_prior"),
                 "imr_hsnet": ("query_logits", "support_logits")}


def _manifest(kind: str, pre: PreprocessCfg, head_inputs: list) -> dict:
    """The manifest fields an adapter reads, from the head's input names (design.md naming:
    TLG head input `query_feat_XX` is encoder output `feat_XX`)."""
    if kind in ("tlg", "imr_hsnet"):
        enc_out = [n[len("query_"):] for n in head_inputs if n.startswith("query_feat_")]
    else:
        enc_out = list(_CST_ENCODER_OUTPUTS)
    return {"model": kind, "preprocess": pre.to_dict(),
            "graphs": {"encoder": {"outputs": {n: {} for n in enc_out}},
                       "head": {"inputs": {n: {} for n in head_inputs},
                                "outputs": {n: {} for n in _HEAD_OUTPUTS[kind]}}},
            "pseudo_mask": {"threshold": CST_PSEUDO_THRESHOLD if kind == "cst" else None}}


class FeedBuilder:
    """Builds graph inputs for model `kind` ('tlg' | 'cst') with its runtime adapter.

    Args:
        kind: model name.
        pre: preprocessing (imgsz, mean, std).
        head_inputs: the head graph's input names, in order.
        text_table: TLG only; an `edgefss.text.table.TextTable` (rows looked up by class name).
    """

    def __init__(self, kind: str, pre: PreprocessCfg, head_inputs, text_table=None):
        if kind not in KINDS:
            raise InputError(f"model kind {kind!r}; expected one of {list(KINDS)}")
        if kind == "tlg" and text_table is None:
            raise InputError("TLG feeds need a text table (edgefss.text.table.build_text_table)")
        self.kind, self.pre, self.head_inputs, self.text = kind, pre, list(head_inputs), text_table
        manifest = _manifest(kind, pre, self.head_inputs)
        if kind == "cst":
            from edgefss.runtime.cst import CSTAdapter

            self.adapter = CSTAdapter(manifest, None)
        elif kind == "imr_hsnet":
            from edgefss.runtime.imr import IMRAdapter

            self.adapter = IMRAdapter(manifest, None)
        else:
            from edgefss.runtime.tlg import TLGAdapter

            self.adapter = TLGAdapter(manifest, None, text=text_table)
        self.grid = self.adapter.grid

    def image(self, path) -> np.ndarray:
        """(1,3,S,S) float32 via edgefss.transforms.preprocess (the only preprocessing)."""
        return preprocess(path, self.pre, name=str(path))

    def network_mask(self, path) -> np.ndarray | None:
        """Mask file -> (S,S) float32 {0,1} at the network size, resized as Segmenter.set_support
        resizes it (adapter.network_mask), or None without a file."""
        if path is None:
            return None
        return self.adapter.network_mask(load_mask(Path(path), name=str(path)))

    def head_feeds(self, enc_q: dict, enc_s: list, s_masks: list, cls: str,
                   q_mask: np.ndarray | None = None, use_given: bool = True) -> dict:
        """Head inputs for one episode, built as the runtime builds them.

        Args:
            enc_q: encoder outputs of the query {name: (1,...)}.
            enc_s: list of K encoder output dicts of the supports.
            s_masks: list of K (S,S) float32 {0,1} masks (network_mask) or None (None: the
                model's own pseudo-mask).
            cls: class name (TLG text row).
            q_mask: TLG external query pseudo-mask (S,S) float32 or None.
            use_given: TLG: feed q_mask as the query pseudo-mask (pseudo_given=1) when present;
                otherwise the head uses its on-device prior (pseudo_given=0).
        Returns:
            {input name: float32 array} in `head_inputs` order.
        """
        if self.kind == "imr_hsnet":
            # its head needs both CAM slots: the episode's masks stand in, all-ones where it has none
            ones = np.ones((self.grid, self.grid), np.float32)
            s_masks = [ones if m is None else m for m in s_masks]
            q_mask, use_given = (ones if q_mask is None else q_mask), True
        with warnings.catch_warnings():
            # TLG says a support mask does not change the query prediction; true, and known here
            warnings.filterwarnings("ignore", message="TLG: a support mask")
            entries = [self.adapter.support_entry(e, m, cls) for e, m in zip(enc_s, s_masks)]
        B = len(entries)
        refine = None
        if self.kind in ("tlg", "imr_hsnet") and use_given and q_mask is not None:
            refine = np.repeat(np.asarray(q_mask, np.float32)[None], B, 0)
        feeds = {**self.adapter.query_entry(enc_q), **stack_entries(entries),
                 **self.adapter.head_extras(B, refine)}
        missing = [n for n in self.head_inputs if n not in feeds]
        if missing:
            raise InputError(f"head inputs {missing} cannot be built for model {self.kind!r}")
        return {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self.head_inputs}

    def query_mask(self, head_out: dict) -> np.ndarray:
        """(B,h4,w4) bool foreground from the head's query logits (argmax over 2 classes)."""
        lg = self.adapter.split_outputs(head_out)[0]
        return lg[:, 1] > lg[:, 0]
