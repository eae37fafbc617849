"""IMR-style mutual refinement of CST support masks: `Segmenter.predict(query, refine_steps=k)`.

CST's head has no query-mask input, so the refinement runs the other way round (IMR-HSNet's
"mutual" strategy, Wang et al. 2022 §4.2 / Table 5: query mask -> support mask -> query mask).
All masks are at the network input size S x S, as the head takes them (the official model's
support-mask resolution; the head resizes them to its token grids).
One step, for every support shot j of class c:
1. query mask Q_c: class c's shot-averaged fg probability, its logits upsampled to S x S
   (bilinear, align_corners=True, as the official code upsamples logits), > 0.5;
2. reverse episode: the query image acts as the support (its `support_feats`, mask Q_c) and the
   support image as the query (its `query_feats`) -> support fg probability at S x S -> R_j (> 0.5);
3. new mask M_j = M0_j AND R_j, where M0_j is the shot's original pseudo-mask;
4. the query is predicted again with the new masks.
Step i+1 repeats 1-4 from step i's query prediction; M0 stays the reference every step.

Why the intersection: M0 (the thresholded key/CLS cosine map) is a coarse, inclusive
region, and the image-level label says the object is in the image; R_j says which pixels look like
what the query shows. Averaging the binary M0 with R_j and thresholding at 0.5 can change nothing
((1 + r)/2 > 0.5 for every r > 0, r/2 > 0.5 never); replacing M0 by R_j (IMR's plain "mutual")
lets a wrong query prediction pull in background the pseudo-mask excluded, and over several steps
both masks can drift together. The intersection only removes pixels the reverse episode does not
confirm and stays inside M0. M_j = M0_j when the intersection is empty, when Q_c is empty (no
reverse episode is run), and for masks the caller gave (ground truth by the API's contract).

Cost per step: N*K reverse head calls of batch 1 + one query pass. The reverse episodes need each
support image's `query_feats`: the first refinement on a support set re-encodes every support
image once (the snapshot keeps its resized uint8 copy, S*S*3 bytes = 0.48 MB at S=400) and caches
the features as float16 in the snapshot: 12*384*(S/8)^2*2 bytes = 23 MB per support image at
S=400 (1.5 MB at 224), freed with the support set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgefss.runtime import postprocess as post


def fg_mask(prob: np.ndarray) -> np.ndarray:
    """(S, S) float fg probability -> (S, S) float32 {0,1}: p > 0.5."""
    return (prob > post.FG_THRESHOLD).astype(np.float32)


def combine(original: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """(S, S) {0,1} original pseudo-mask and reverse-episode mask -> the refined mask.

    The intersection, or `original` when the intersection is empty (module docstring says why).
    """
    both = original * reverse
    return both if both.any() else original.copy()


def refine_support_masks(seg: np.ndarray, groups, base_masks: np.ndarray, given, size: int,
                         query_support_feats: np.ndarray, support_query_feats: Callable,
                         reverse_head: Callable) -> np.ndarray:
    """One mutual-refinement step: new support masks from the current query prediction.

    Args:
        seg: (B, 2, h, w) float32 query logits of the previous pass, B = head batch (class-major).
        groups: groups[c] = head-batch indices of class c's shots.
        base_masks: (B, S, S) float32 {0,1} original support masks M0.
        given: B bools, True where the caller gave the mask (kept as is).
        size: network input size S.
        query_support_feats: (1, 12, 384, Ns) float32 the query image's support tokens.
        support_query_feats: j -> (1, 12, 384, T) float32 query tokens of support image j.
        reverse_head: feeds {query_feats, support_feats, support_mask (1, S, S)} -> (1, 2, h, w) logits.

    Returns:
        (B, S, S) float32 {0,1} support masks for the next query pass.
    """
    p_query = post.fg_probability(seg, groups, (size, size))  # (N, S, S), shot-averaged
    out = base_masks.copy()
    for c, shots in enumerate(groups):
        q_mask = fg_mask(p_query[c])
        if not q_mask.any():
            continue  # nothing predicted in the query: no evidence to refine with
        for j in shots:
            if given[j]:
                continue
            logits = reverse_head({"query_feats": support_query_feats(j),
                                   "support_feats": query_support_feats,
                                   "support_mask": q_mask[None]})
            p_support = post.fg_probability(logits, [[0]], (size, size))[0]
            out[j] = combine(base_masks[j], fg_mask(p_support))
    return out
