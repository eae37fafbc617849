"""Accuracy gate of an INT8 CLIP text tower against its FP32 graph, on held-out prompts (torch-free).

The image graphs' gate compares masks; the text tower's product is an embedding that is (a) fed
to the TLG head and (b) matched against other embeddings (the table's neighbours, the background
vocabulary). So its figures are:
- cosine: min over the held-out prompts of cos(INT8_i, FP32_i) >= MIN_TEXT_COSINE (0.99): the
  head sees the row through a linear map, so a 0.99 cosine bounds the change of its input to
  ~14 % of the row's norm (sqrt(2 - 2 * 0.99));
- retrieval: share of prompts whose INT8 embedding's nearest FP32 embedding (cosine, among all
  held-out prompts) is its own, >= MIN_RETRIEVAL (0.98): what a lookup by similarity sees;
- background matching (reported, not judged): share of class prompts whose top-k background words
  (text/background.py) are the same set under INT8 and FP32.

Uninformative: when the FP32 prompts are closer to each other than the error the cosine bound
allows (median over prompts of 1 - max_{j != i} cos(FP32_i, FP32_j) <= 1 - MIN_TEXT_COSINE, as with
untrained weights whose embeddings all point one way), retrieval cannot tell a good INT8 tower
from a bad one: it is reported, not judged, and the status is "uninformative" unless the cosine
fails. Status values are quant.gate's PASS / FAIL / UNINFORMATIVE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefss.quant.gate import FAIL, PASS, UNINFORMATIVE

MIN_TEXT_COSINE = 0.99
MIN_RETRIEVAL = 0.98


def _unit(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@dataclass
class TextGateResult:
    """Figures of the text-tower gate (module doc). `separation` is the FP32 median distance
    (1 - cosine) of a prompt to its nearest other prompt."""

    prompts: int
    min_cosine: float
    retrieval: float
    separation: float
    background_agreement: float | None = None
    precision: str = "int8"
    per_prompt_cosine: list = field(default_factory=list)

    @property
    def informative(self) -> bool:
        return self.separation > 1.0 - MIN_TEXT_COSINE

    def failures(self) -> list[str]:
        out = []
        if self.min_cosine < MIN_TEXT_COSINE:
            out.append(f"text embedding cosine {self.min_cosine:.4f} < {MIN_TEXT_COSINE}")
        if self.informative and self.retrieval < MIN_RETRIEVAL:
            out.append(f"top-1 retrieval {self.retrieval:.4f} < {MIN_RETRIEVAL}")
        return out

    @property
    def status(self) -> str:
        if self.failures():
            return FAIL
        return PASS if self.informative else UNINFORMATIVE

    def to_dict(self) -> dict:
        """The manifest's text_encoder "gate" entry (the caller adds "forced")."""
        return {"status": self.status, "precision": self.precision, "prompts": self.prompts,
                "failures": self.failures(), "min_cosine": round(self.min_cosine, 6),
                "min_cosine_threshold": MIN_TEXT_COSINE, "retrieval_top1": round(self.retrieval, 5),
                "retrieval_threshold": MIN_RETRIEVAL, "retrieval_judged": self.informative,
                "fp32_separation_median": round(self.separation, 6),
                "background_agreement": None if self.background_agreement is None
                else round(self.background_agreement, 5)}

    def summary(self) -> str:
        judged = "" if self.informative else " (not judged: FP32 prompts too close, uninformative)"
        bg = "" if self.background_agreement is None else f"; background matching kept {self.background_agreement:.3f}"
        return (f"text tower {self.precision.upper()} gate {self.status.upper()} on {self.prompts} held-out prompts: "
                f"min cosine {self.min_cosine:.5f} (>= {MIN_TEXT_COSINE}); top-1 retrieval {self.retrieval:.4f} "
                f"(>= {MIN_RETRIEVAL}){judged}; FP32 nearest-prompt distance (median) {self.separation:.4g}{bg}"
                + ("\n  failed: " + "; ".join(self.failures()) if self.failures() else ""))


def text_gate(ref: np.ndarray, test: np.ndarray, precision: str = "int8", class_rows=None,
              background: np.ndarray | None = None, k: int = 2) -> TextGateResult:
    """Judge (N, D) reduced-precision embeddings `test` against FP32 `ref` of the same N prompts.

    Args:
        class_rows: indices of the prompts that are class prompts (background matching figure).
        background: (V, D) background-vocabulary embeddings; k: words matched per class.
    """
    r, t = _unit(ref), _unit(test)
    if r.shape != t.shape or r.ndim != 2 or len(r) < 2:
        raise ValueError(f"text_gate: expected two (N>=2, D) arrays of equal shape, got {r.shape} and {t.shape}")
    cos = np.sum(r * t, axis=1)
    sim = t @ r.T
    retrieval = float(np.mean(np.argmax(sim, axis=1) == np.arange(len(r))))
    rr = r @ r.T
    np.fill_diagonal(rr, -np.inf)
    separation = float(np.median(1.0 - rr.max(axis=1)))
    bg = None
    if class_rows is not None and background is not None and len(class_rows):
        b = _unit(background)
        top = lambda x: {tuple(sorted(np.argsort(-(b @ row), kind="stable")[:k].tolist())) for row in x}
        same = [top(r[[i]]) == top(t[[i]]) for i in class_rows]
        bg = float(np.mean(same))
    return TextGateResult(len(r), float(cos.min()), retrieval, separation, bg, precision,
                          [round(float(c), 6) for c in cos])
