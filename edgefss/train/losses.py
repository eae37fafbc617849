"""Training losses of the two methods (spec §3.4 CST, §1.4 TLG).

CST: 0.1 * NLL(cls) + NLL(seg), seg target = the query pseudo-mask from the frozen backbone
(self-distillation, image-level labels only: the query's keys against the support's CLS query,
spec §3.3) or the GT mask when the data has one.
TLG: 1.4 * CE(query) + 0.6 * CE(support) against base-class pixel masks. The official extra
term 1e-4 * sum_p ||p||_2 over all parameters (backbone included) is replaced by AdamW weight
decay on the trained parameters: the backbone is frozen here, as the paper intends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cst_loss(out: dict, batch: dict, sup: str = "pseudo") -> tuple[torch.Tensor, dict]:
    """Args:
        out: CST forward dict: cls_logits (B,2), seg_logits (B,2,S,S), query_pseudo_mask (B,S,S)
            float {0,1} (already thresholded by the model).
        batch: episode batch (see EpisodeDataset): present (B,), query_mask (B,S,S) int64.
        sup: 'pseudo' (weak: target = query pseudo-mask, zeroed when the class is absent) or
            'mask' (pixel GT).
    Returns:
        (scalar loss, {'cls': float, 'seg': float})
    """
    present = batch["present"].long()
    if sup == "pseudo":
        target = out["query_pseudo_mask"].detach().long()
        target = target * present[:, None, None]
    else:
        target = batch["query_mask"]
    l_cls = F.cross_entropy(out["cls_logits"], present)
    l_seg = F.cross_entropy(out["seg_logits"], target)
    return 0.1 * l_cls + l_seg, {"cls": float(l_cls), "seg": float(l_seg)}


def tlg_loss(out: dict, batch: dict, sup: str = "mask") -> tuple[torch.Tensor, dict]:
    """Args:
        out: TLG forward dict: query_logits, support_logits (B,2,S,S).
        batch: query_mask (B,S,S) int64, support_mask (B,K,S,S) float (first shot is used).
    """
    lq = F.cross_entropy(out["query_logits"], batch["query_mask"])
    ls = F.cross_entropy(out["support_logits"], batch["support_mask"][:, 0].long())
    return 1.4 * lq + 0.6 * ls, {"query": float(lq), "support": float(ls)}
