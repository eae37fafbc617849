"""Episode-level runs of an encoder + head pair (torch-free).

Used to produce calibration feeds (from the FP32 encoder) and, for the gate, to run the FP32 and
INT8 graph pairs on the same held-out episodes.
"""

from __future__ import annotations

from tqdm import tqdm

from edgefss.quant.episodes import Episode
from edgefss.quant.feeds import FeedBuilder


def load_episode(builder: FeedBuilder, ep: Episode) -> dict:
    """Preprocess an episode's images and masks: dict(query (1,3,S,S), supports [..], s_masks, q_mask)."""
    return {
        "query": builder.image(ep.query.image),
        "supports": [builder.image(s.image) for s in ep.support],
        "s_masks": [builder.small_mask(s.mask) for s in ep.support],
        "q_mask": builder.small_mask(ep.query.mask),
        "cls": ep.cls,
    }


def run_episode(builder: FeedBuilder, encoder, head, data: dict, use_given: bool):
    """Encoder on query and supports, then the head.

    Returns:
        (encoder feeds list, head feeds, outputs {query encoder + head outputs}, query mask (B,h,w) bool).
    """
    enc_feeds = [{"image": data["query"]}] + [{"image": s} for s in data["supports"]]
    enc_q = encoder(enc_feeds[0])
    enc_s = [encoder(f) for f in enc_feeds[1:]]
    hf = builder.head_feeds(enc_q, enc_s, data["s_masks"], data["cls"], data["q_mask"], use_given)
    out = head(hf)
    merged = {**{f"encoder.{k}": v for k, v in enc_q.items()}, **{f"head.{k}": v for k, v in out.items()}}
    return enc_feeds, hf, merged, builder.query_mask(out)


def calibration_feeds(builder: FeedBuilder, encoder, head, episodes: list, label: str = "calibration episodes"):
    """Feeds for quantizing both graphs: every episode image for the encoder, and head inputs
    built from the FP32 encoder's outputs (so correlation inputs see real ranges).

    Even episodes feed the caller's masks (pseudo_given=1), odd ones the on-device prior, so
    both branches of the TLG blend are calibrated.

    Returns:
        (encoder feeds list, head feeds list).
    """
    enc_all, head_all = [], []
    for i, ep in enumerate(tqdm(episodes, desc=label, unit="episode")):
        data = load_episode(builder, ep)
        ef, hf, _, _ = run_episode(builder, encoder, head, data, use_given=(i % 2 == 0))
        enc_all.extend(ef)
        head_all.append(hf)
    return enc_all, head_all


def compare_pipelines(builder: FeedBuilder, ref: tuple, test: tuple, episodes: list, threshold: float,
                      label: str = "INT8 gate"):
    """Run (encoder, head) pairs `ref` (FP32) and `test` (INT8) on episodes; return GateResult."""
    from edgefss.quant.gate import agreement

    ro, to, rm, tm = [], [], [], []
    for i, ep in enumerate(tqdm(episodes, desc=label, unit="episode")):
        data = load_episode(builder, ep)
        _, _, o1, m1 = run_episode(builder, *ref, data, use_given=(i % 2 == 0))
        _, _, o2, m2 = run_episode(builder, *test, data, use_given=(i % 2 == 0))
        ro.append(o1), to.append(o2), rm.append(m1), tm.append(m2)
    return agreement(ro, to, rm, tm, threshold)
