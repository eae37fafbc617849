"""INT8 accuracy gate: INT8 vs FP32 agreement on held-out episodes (torch-free).

Figures: mask IoU agreement (mean over episodes of IoU(INT8 fg, FP32 fg); two empty masks agree
fully), the cosine between INT8 and FP32 outputs (flattened, per output, min over episodes), the
Pearson correlation of the fg-bg logit margin of every 2-class head output (min over episodes;
informative even when the masks are all background), and for classification outputs the share of
presence decisions (sign of the margin) INT8 keeps.

The pass rule is the mask agreement alone. When the FP32 masks are nearly all background or all
foreground (random or weak weights) that agreement is trivially high: the result is then flagged
`informative = False` and the summary says so, pointing at the margin and presence figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


TRIVIAL_FG = 0.01  # FP32 foreground fraction below this (or above 1 - this): agreement is trivial


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of equal shape; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


@dataclass
class GateResult:
    """Outcome of the gate. `passed` iff agreement >= threshold."""

    agreement: float
    cosine: dict
    threshold: float
    episodes: int
    per_episode: list = field(default_factory=list)
    fg_fraction: float = 0.0  # mean FP32 foreground fraction: ~0 or ~1 means the agreement is trivial
    margin_corr: dict = field(default_factory=dict)  # head 2-class output -> min Pearson r of fg-bg margins
    presence: dict = field(default_factory=dict)     # (B,2) output -> share of margin signs INT8 keeps

    @property
    def informative(self) -> bool:
        """False when the FP32 masks are (nearly) empty or full, so mask agreement proves little."""
        return TRIVIAL_FG < self.fg_fraction < 1.0 - TRIVIAL_FG

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold

    def to_dict(self) -> dict:
        return {"mask_iou_agreement": round(self.agreement, 5), "threshold": self.threshold,
                "passed": self.passed, "episodes": self.episodes,
                "output_cosine_min": {k: round(v, 5) for k, v in self.cosine.items()},
                "per_episode_iou": [round(x, 4) for x in self.per_episode],
                "fp32_fg_fraction": round(self.fg_fraction, 4), "informative": self.informative,
                "margin_corr_min": {k: round(v, 5) for k, v in self.margin_corr.items()},
                "presence_agreement": {k: round(v, 5) for k, v in self.presence.items()}}

    def summary(self) -> str:
        cos = ", ".join(f"{k} {v:.4f}" for k, v in self.cosine.items())
        verdict = "PASS" if self.passed else "FAIL"
        extra = ", ".join([f"{k} margin r {v:.4f}" for k, v in self.margin_corr.items()]
                          + [f"{k} presence kept {v:.3f}" for k, v in self.presence.items()])
        text = (f"INT8 gate {verdict}: mask IoU agreement {self.agreement:.4f} (threshold {self.threshold}) "
                f"over {self.episodes} held-out episodes (FP32 foreground fraction {self.fg_fraction:.3f}); "
                f"min output cosine: {cos}" + (f"; {extra}" if extra else ""))
        if not self.informative:
            text += ("\n  WARNING: the FP32 masks are nearly all background or all foreground (untrained or "
                     "weak weights), so the mask agreement is trivial; judge INT8 by the margin "
                     "correlation and presence figures, or gate again with trained weights")
        return text


def agreement(fp32_outs: list, int8_outs: list, fp32_masks: list, int8_masks: list, threshold: float) -> GateResult:
    """Compare per-episode outputs.

    Args:
        fp32_outs, int8_outs: lists (one per episode) of {output name: array} (encoder + head).
        fp32_masks, int8_masks: lists of (B,h,w) bool query masks.
        threshold: minimum mean mask IoU agreement.
    """
    ious = [mask_iou(a, b) for a, b in zip(fp32_masks, int8_masks)]
    cos: dict = {}
    for fo, io in zip(fp32_outs, int8_outs):
        for k in fo:
            cos[k] = min(cos.get(k, 1.0), cosine(fo[k], io[k]))
    fg = float(np.mean([np.mean(m) for m in fp32_masks])) if fp32_masks else 0.0
    margin, presence = margin_figures(fp32_outs, int8_outs)
    return GateResult(float(np.mean(ious)) if ious else 0.0, cos, threshold, len(ious), ious, fg, margin, presence)


def margin_figures(fp32_outs: list, int8_outs: list) -> tuple[dict, dict]:
    """Per head output with a 2-class axis 1 ((B,2,h,w) logits or (B,2) class logits):
    min over episodes of the Pearson r of the fg-bg margins (seg outputs), and the share of
    margin signs (presence decisions) INT8 keeps (class outputs). Returns (margin_corr, presence)."""
    corr: dict = {}
    kept: dict = {}
    for fo, io in zip(fp32_outs, int8_outs):
        for k in fo:
            a, b = np.asarray(fo[k], np.float64), np.asarray(io[k], np.float64)
            if not k.startswith("head.") or a.ndim < 2 or a.shape[1] != 2 or a.shape != b.shape:
                continue
            ma, mb = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
            if a.ndim == 2:
                kept.setdefault(k, []).extend((np.sign(ma) == np.sign(mb)).tolist())
            else:
                corr[k] = min(corr.get(k, 1.0), pearson(ma, mb))
    return corr, {k: float(np.mean(v)) for k, v in kept.items()}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two equal-size arrays (the cosine of the centred values); 1.0 when both are
    constant, 0.0 when one is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return cosine(a - a.mean(), b - b.mean())


def node_groups(model, depth: int = 3) -> dict:
    """Group quantizable node names by their module-path prefix (e.g. '/model/backbone/layer3').

    Args:
        model: onnx.ModelProto (the FP32 graph); depth: number of path components kept.
    Returns:
        {group name: [node names]}, groups with at least one Conv/MatMul/Gemm.
    """
    from edgefss.quant.ort_int8 import QUANT_OPS

    groups: dict = {}
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS:
            continue
        parts = [p for p in n.name.split("/") if p][:-1] or [n.op_type]
        groups.setdefault("/" + "/".join(parts[:depth]), []).append(n.name)
    return groups


def format_sensitivity(rows: list) -> str:
    """rows: [(group, n_nodes, agreement_when_kept_float)] -> table, most sensitive first."""
    rows = sorted(rows, key=lambda r: -r[2])
    lines = ["per-layer sensitivity (agreement when this group stays float; higher = more sensitive):"]
    lines += [f"  {g:<48s} {n:4d} nodes  agreement {a:.4f}" for g, n, a in rows]
    return "\n".join(lines)
