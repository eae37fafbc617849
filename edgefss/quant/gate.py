"""INT8 accuracy gate: INT8 vs FP32 agreement on held-out episodes (torch-free).

Figures: mask IoU agreement (mean over episodes of IoU(INT8 fg, FP32 fg); two empty masks agree
fully) and the cosine between INT8 and FP32 outputs (flattened, per output, min over episodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold

    def to_dict(self) -> dict:
        return {"mask_iou_agreement": round(self.agreement, 5), "threshold": self.threshold,
                "passed": self.passed, "episodes": self.episodes,
                "output_cosine_min": {k: round(v, 5) for k, v in self.cosine.items()},
                "per_episode_iou": [round(x, 4) for x in self.per_episode],
                "fp32_fg_fraction": round(self.fg_fraction, 4)}

    def summary(self) -> str:
        cos = ", ".join(f"{k} {v:.4f}" for k, v in self.cosine.items())
        verdict = "PASS" if self.passed else "FAIL"
        return (f"INT8 gate {verdict}: mask IoU agreement {self.agreement:.4f} (threshold {self.threshold}) "
                f"over {self.episodes} held-out episodes (FP32 foreground fraction {self.fg_fraction:.3f}); "
                f"min output cosine: {cos}")


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
    return GateResult(float(np.mean(ious)) if ious else 0.0, cos, threshold, len(ious), ious, fg)


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
