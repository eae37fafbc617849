"""Episode-level runs of a model's encoder + head graphs on an engine (torch-free).

Used to produce calibration feeds (from the FP32 graphs) and, for the accuracy gate, to run the
FP32 and the reduced-precision graphs on the same held-out episodes. The engines are
`edgefss.runtime` backends (anything with `run(graph, feeds) -> outputs`), opened through
`edgefss.runtime.session.open_graphs` with the settings the runtime uses.
"""

from __future__ import annotations

from tqdm import tqdm

from edgefss.quant.episodes import Episode
from edgefss.quant.feeds import FeedBuilder


def load_episode(builder: FeedBuilder, ep: Episode) -> dict:
    """Preprocess an episode: dict(query (1,3,S,S), supports [..], s_masks [(S,S) | None], q_mask, cls)."""
    return {
        "query": builder.image(ep.query.image),
        "supports": [builder.image(s.image) for s in ep.support],
        "s_masks": [builder.network_mask(s.mask) for s in ep.support],
        "q_mask": builder.network_mask(ep.query.mask),
        "cls": ep.cls,
    }


def run_episode(builder: FeedBuilder, engine, data: dict, use_given: bool):
    """Encoder on query and supports, then the head, on `engine` (a Backend with graphs
    "encoder" and "head").

    Returns:
        (encoder feeds list, head feeds, outputs {"encoder.<name>" (query) and "head.<name>": array},
         query mask (B,h,w) bool).
    """
    enc_feeds = [{"image": data["query"]}] + [{"image": s} for s in data["supports"]]
    enc_q = engine.run("encoder", enc_feeds[0])
    enc_s = [engine.run("encoder", f) for f in enc_feeds[1:]]
    hf = builder.head_feeds(enc_q, enc_s, data["s_masks"], data["cls"], data["q_mask"], use_given)
    out = engine.run("head", hf)
    merged = {**{f"encoder.{k}": v for k, v in enc_q.items()}, **{f"head.{k}": v for k, v in out.items()}}
    return enc_feeds, hf, merged, builder.query_mask(out)


def calibration_feeds(builder: FeedBuilder, engine, episodes: list, label: str = "calibration episodes"):
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
        ef, hf, _, _ = run_episode(builder, engine, data, use_given=(i % 2 == 0))
        enc_all.extend(ef)
        head_all.append(hf)
    return enc_all, head_all


def compare_pipelines(builder: FeedBuilder, ref, test, episodes: list, threshold: float,
                      precision: str = "int8", label: str | None = None):
    """Run engines `ref` (FP32) and `test` (reduced precision) on episodes; return the GateResult."""
    from edgefss.quant.gate import agreement

    ro, to, rm, tm = [], [], [], []
    for i, ep in enumerate(tqdm(episodes, desc=label or f"{precision.upper()} gate", unit="episode")):
        data = load_episode(builder, ep)
        _, _, o1, m1 = run_episode(builder, ref, data, use_given=(i % 2 == 0))
        _, _, o2, m2 = run_episode(builder, test, data, use_given=(i % 2 == 0))
        ro.append(o1), to.append(o2), rm.append(m1), tm.append(m2)
    return agreement(ro, to, rm, tm, threshold, precision=precision, device=getattr(test, "device", None))
