"""Accuracy gate: a reduced-precision bundle (INT8, FP16) against FP32 on held-out episodes (torch-free).

Three outcomes:
- **fail**: one measured figure is below its threshold (any of the three below);
- **uninformative**: nothing failed, but no episode has an informative FP32 mask (all foreground
  or all background, as with random weights), so mask agreement cannot be judged;
- **pass**: every figure holds, and the mask IoU rests on at least one informative episode.

Figures, each with its threshold:
- mask IoU: mean over the *informative* episodes (FP32 foreground fraction in
  (TRIVIAL_FG, 1 - TRIVIAL_FG)) of IoU(reduced fg, FP32 fg) >= `threshold` (export --agreement,
  0.95 by default);
- margin correlation: for every 2-class segmentation head output (B,2,h,w), the Pearson r of the
  fg-bg logit margins, min over episodes, >= MIN_MARGIN_R. It sees what the masks hide (an
  inverted or rescrambled margin under an all-background mask);
- presence decisions kept: for every 2-class classification head output (B,2), the share of
  margin signs the reduced model keeps, >= MIN_PRESENCE_KEPT.
The output cosines (per output, min over episodes) are reported, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PASS, FAIL, UNINFORMATIVE = "pass", "fail", "uninformative"

# FP32 foreground fraction below this (or above 1 - this): the episode's mask is empty/full, so
# mask IoU on it is trivially 1 (two empty masks) and says nothing about the reduced model.
TRIVIAL_FG = 0.01
# Margin correlation: INT8 noise that keeps masks at the 0.95 IoU default leaves r around 0.98 or
# more; r < 0.9 means the noise carries over 19 % of the margin's variance (1 - r^2), and an
# inverted margin (r = -1) is a broken model even when every mask is empty.
MIN_MARGIN_R = 0.9
# Presence: a flip on a near-zero FP32 margin is noise, so one flip in the default 8 held-out
# episodes (0.875) is tolerated; two (0.75) or a systematic flip is not.
MIN_PRESENCE_KEPT = 0.85


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


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two equal-size arrays (the cosine of the centred values); 1.0 when both are
    constant, 0.0 when one is."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return cosine(a - a.mean(), b - b.mean())


def informative(mask: np.ndarray) -> bool:
    """True when an FP32 mask is neither (nearly) empty nor (nearly) full."""
    fg = float(np.mean(mask))
    return TRIVIAL_FG < fg < 1.0 - TRIVIAL_FG


@dataclass
class GateResult:
    """Outcome of the gate (see the module doc for the rule).

    Attributes:
        agreement: mean mask IoU over the informative episodes (None when there are none).
        cosine: output name -> min cosine over episodes (reported only).
        threshold: the mask IoU threshold. episodes: episodes run.
        per_episode: mask IoU of every episode; informative_episodes: indices of the informative ones.
        fg_fraction: mean FP32 foreground fraction over all episodes.
        margin_corr: seg output -> min Pearson r of the fg-bg margins.
        presence: class output -> share of presence decisions kept.
        precision: what was gated ('int8' | 'fp16'); device: where the reduced graphs ran.
    """

    agreement: float | None
    cosine: dict
    threshold: float
    episodes: int
    per_episode: list = field(default_factory=list)
    informative_episodes: list = field(default_factory=list)
    fg_fraction: float = 0.0
    margin_corr: dict = field(default_factory=dict)
    presence: dict = field(default_factory=dict)
    precision: str = "int8"
    device: str | None = None

    def failures(self) -> list[str]:
        """The figures below their thresholds, one phrase each (empty when none)."""
        out = []
        if self.agreement is not None and self.agreement < self.threshold:
            out.append(f"mask IoU {self.agreement:.4f} < {self.threshold} on {len(self.informative_episodes)} "
                       "informative episodes")
        out += [f"{k} margin r {v:.4f} < {MIN_MARGIN_R}" for k, v in self.margin_corr.items() if v < MIN_MARGIN_R]
        out += [f"{k} presence kept {v:.3f} < {MIN_PRESENCE_KEPT}" for k, v in self.presence.items()
                if v < MIN_PRESENCE_KEPT]
        return out

    @property
    def status(self) -> str:
        if self.failures():
            return FAIL
        return UNINFORMATIVE if self.agreement is None else PASS

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def informative(self) -> bool:
        return self.agreement is not None

    def to_dict(self) -> dict:
        """The manifest's "gate" entry (the caller adds "forced")."""
        r5 = lambda d: {k: round(v, 5) for k, v in d.items()}  # noqa: E731
        return {"status": self.status, "precision": self.precision, "device": self.device,
                "episodes": self.episodes, "failures": self.failures(),
                "mask_iou": None if self.agreement is None else round(self.agreement, 5),
                "mask_iou_threshold": self.threshold,
                "informative_episodes": len(self.informative_episodes),
                "per_episode_iou": [round(x, 4) for x in self.per_episode],
                "fp32_fg_fraction": round(self.fg_fraction, 4),
                "margin_corr_min": r5(self.margin_corr), "margin_corr_threshold": MIN_MARGIN_R,
                "presence_kept": r5(self.presence), "presence_kept_threshold": MIN_PRESENCE_KEPT,
                "output_cosine_min": r5(self.cosine)}

    def summary(self) -> str:
        name = f"{self.precision.upper()} gate"
        figs = ([f"mask IoU {self.agreement:.4f} (>= {self.threshold}) on {len(self.informative_episodes)}/"
                 f"{self.episodes} informative episodes" if self.agreement is not None else
                 f"mask IoU not judged (0/{self.episodes} informative episodes)"]
                + [f"{k} margin r {v:.4f} (>= {MIN_MARGIN_R})" for k, v in self.margin_corr.items()]
                + [f"{k} presence kept {v:.3f} (>= {MIN_PRESENCE_KEPT})" for k, v in self.presence.items()])
        cos = ", ".join(f"{k} {v:.4f}" for k, v in self.cosine.items())
        text = f"{name} {self.status.upper()}: " + "; ".join(figs) + f"; min output cosine: {cos}"
        if self.status == FAIL:
            text += "\n  failed: " + "; ".join(self.failures())
        return text


class GateAccumulator:
    """The gate's figures reduced episode by episode (the outputs of one episode are dropped
    once added: a CST episode's encoder outputs alone are ~50 MB per engine at 400 px).

    add(fp32 outputs, reduced outputs, fp32 mask, reduced mask) per episode, then result().
    """

    def __init__(self):
        self.ious, self.keep, self.fg = [], [], []
        self.cos: dict = {}
        self.corr: dict = {}
        self.kept: dict = {}

    def add(self, fo: dict, io: dict, fm: np.ndarray, tm: np.ndarray) -> None:
        """One episode: {output name: array} of both engines (head outputs prefixed "head.") and
        their (B,h,w) bool query masks."""
        if informative(fm):
            self.keep.append(len(self.ious))
        self.ious.append(mask_iou(fm, tm))
        self.fg.append(float(np.mean(fm)))
        for k in fo:
            self.cos[k] = min(self.cos.get(k, 1.0), cosine(fo[k], io[k]))
        self.add_margins(fo, io)

    def add_margins(self, fo: dict, io: dict) -> None:
        """The margin figures of one episode (see `margin_figures`)."""
        for k in fo:
            a, b = np.asarray(fo[k], np.float64), np.asarray(io[k], np.float64)
            if not k.startswith("head.") or a.ndim < 2 or a.shape[1] != 2 or a.shape != b.shape:
                continue
            ma, mb = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
            if a.ndim == 2:
                self.kept.setdefault(k, []).extend((np.sign(ma) == np.sign(mb)).tolist())
            else:
                self.corr[k] = min(self.corr.get(k, 1.0), pearson(ma, mb))

    def margins(self) -> tuple[dict, dict]:
        return dict(self.corr), {k: float(np.mean(v)) for k, v in self.kept.items()}

    def result(self, threshold: float, precision: str = "int8", device: str | None = None) -> GateResult:
        fg = float(np.mean(self.fg)) if self.fg else 0.0
        margin, presence = self.margins()
        agree = float(np.mean([self.ious[i] for i in self.keep])) if self.keep else None
        return GateResult(agree, dict(self.cos), threshold, len(self.ious), list(self.ious), list(self.keep), fg,
                          margin, presence, precision, device)


def agreement(fp32_outs: list, test_outs: list, fp32_masks: list, test_masks: list, threshold: float,
              precision: str = "int8", device: str | None = None) -> GateResult:
    """Judge per-episode outputs (all episodes at once; `GateAccumulator` takes them one by one).

    Args:
        fp32_outs, test_outs: lists (one per episode) of {output name: array} (encoder + head;
            head outputs are prefixed "head.").
        fp32_masks, test_masks: lists of (B,h,w) bool query masks.
        threshold: minimum mean mask IoU over the informative episodes.
        precision, device: recorded in the result.
    """
    acc = GateAccumulator()
    for fo, io, fm, tm in zip(fp32_outs, test_outs, fp32_masks, test_masks):
        acc.add(fo, io, fm, tm)
    return acc.result(threshold, precision=precision, device=device)


def margin_figures(fp32_outs: list, test_outs: list) -> tuple[dict, dict]:
    """Per head output with a 2-class axis 1 ((B,2,h,w) logits or (B,2) class logits):
    min over episodes of the Pearson r of the fg-bg margins (seg outputs), and the share of
    margin signs (presence decisions) the reduced model keeps (class outputs).
    Returns (margin_corr, presence)."""
    acc = GateAccumulator()
    for fo, io in zip(fp32_outs, test_outs):
        acc.add_margins(fo, io)
    return acc.margins()


def node_groups(model, depth: int = 3) -> dict:
    """Group quantizable node names by their module-path prefix (e.g. '/model/backbone/layer3').

    Args:
        model: onnx.ModelProto (the FP32 graph); depth: number of path components kept.
    Returns:
        {group name: [node names]}, groups with at least one node the policy may quantize.
    """
    from edgefss.quant.ort_int8 import quantizable_nodes

    allowed = set(quantizable_nodes(model))
    groups: dict = {}
    for n in model.graph.node:
        if n.name not in allowed:
            continue
        parts = [p for p in n.name.split("/") if p][:-1] or [n.op_type]
        groups.setdefault("/" + "/".join(parts[:depth]), []).append(n.name)
    return groups


def format_sensitivity(rows: list) -> str:
    """rows: [(group, n_nodes, gate result when the group stays float)] -> table, most sensitive
    first (the group whose float copy helps the failed figures most)."""
    def score(r):
        res = r[2]
        return (-(res.agreement if res.agreement is not None else 0.0)
                - sum(res.margin_corr.values()) - sum(res.presence.values()))

    lines = ["per-layer sensitivity (gate figures when this group stays float; most helpful first):"]
    for g, n, res in sorted(rows, key=score):
        figs = [f"mask IoU {res.agreement:.4f}" if res.agreement is not None else "mask IoU n/a"]
        figs += [f"margin r {v:.4f}" for v in res.margin_corr.values()]
        figs += [f"presence {v:.3f}" for v in res.presence.values()]
        lines.append(f"  {g:<48s} {n:4d} nodes  {', '.join(figs)}")
    return "\n".join(lines)
