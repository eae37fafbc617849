"""A tiny CST bundle whose head really correlates: used by test_runtime_ops_path.py and test_refine.py.

Unlike test_runtime.build_tiny_bundle, the `head` graph here starts with CST's head-wise cosine
correlation written in plain ONNX ops (Reshape/Transpose/ReduceL2/Div/MatMul, 6 heads x 12 layers,
channels head-major, norm + 1e-12), which is an independent implementation of what the runtime
computes with `edgefss.ops.cosine_correlation`. Both `head` and `learner` then run the same small
"learner": per query token, the (channel-weighted) mean similarity to the support tokens kept by the support mask
(CLS always kept) minus the mean similarity to the masked-out ones. So predictions depend on the
images and on the support masks, which the refinement tests need. S = 64: grid 8, T = 64,
support tokens Ns = 1 + 8*8 (the support grid equals the query grid here). The support mask comes
in at S x S like CST's and is area-averaged to the grid (8x8 AveragePool): each support token's
keep weight is its cell's coverage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


S = 64
G = S // 8
T = G * G
NS = 1 + T
L, C, HEADS = 12, 384, 6


def _model(nodes, inputs, outputs, inits, name):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def vi(n, shape):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)

    g = helper.make_graph(nodes, name, [vi(n, s) for n, s in inputs], [vi(n, s) for n, s in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _learner_nodes():
    """corr (B,72,T,NS), support_mask (B,S,S) -> cls_logits (B,2), seg_logits (B,2,2G,2G)."""
    from onnx import helper as h

    return [
        h.make_node("Mul", ["corr", "chw"], ["corr_w"]),  # per-channel weights: channel order matters
        h.make_node("ReduceMean", ["corr_w"], ["sim"], axes=[1], keepdims=0),           # (B,T,NS)
        h.make_node("Unsqueeze", ["support_mask", "ax1"], ["m4"]),                       # (B,1,S,S)
        h.make_node("AveragePool", ["m4"], ["mg"], kernel_shape=[8, 8], strides=[8, 8]),  # (B,1,G,G)
        h.make_node("Reshape", ["mg", "flat"], ["mflat"]),                               # (B,T)
        h.make_node("ReduceSum", ["mflat", "ax1"], ["msum"], keepdims=1),                # (B,1)
        h.make_node("Mul", ["msum", "zero"], ["mz"]),
        h.make_node("Add", ["mz", "one"], ["ones"]),                                     # (B,1)
        h.make_node("Concat", ["ones", "mflat"], ["keep"], axis=1),                      # (B,NS)
        h.make_node("Unsqueeze", ["keep", "ax1"], ["keep3"]),                            # (B,1,NS)
        h.make_node("Sub", ["one", "keep3"], ["drop3"]),
        h.make_node("Mul", ["sim", "keep3"], ["sk"]),
        h.make_node("ReduceSum", ["sk", "ax2"], ["sks"], keepdims=0),                    # (B,T)
        h.make_node("ReduceSum", ["keep3", "ax2"], ["kc"], keepdims=0),                  # (B,1)
        h.make_node("Div", ["sks", "kc"], ["fgm"]),
        h.make_node("Mul", ["sim", "drop3"], ["sd"]),
        h.make_node("ReduceSum", ["sd", "ax2"], ["sds"], keepdims=0),
        h.make_node("ReduceSum", ["drop3", "ax2"], ["dc0"], keepdims=0),
        h.make_node("Add", ["dc0", "one"], ["dc"]),
        h.make_node("Div", ["sds", "dc"], ["bgm"]),
        h.make_node("Sub", ["fgm", "bgm"], ["contrast"]),
        h.make_node("Mul", ["contrast", "gain"], ["sc"]),
        h.make_node("Add", ["sc", "bias"], ["score"]),                                   # (B,T)
        h.make_node("Reshape", ["score", "grid"], ["fg0"]),                              # (B,1,G,G)
        h.make_node("Resize", ["fg0", "", "scales"], ["fg"], mode="nearest"),            # (B,1,2G,2G)
        h.make_node("Mul", ["fg", "k_bg"], ["bg"]),
        h.make_node("Concat", ["bg", "fg"], ["seg_logits"], axis=1),
        h.make_node("ReduceMean", ["fg"], ["fgm_all"], axes=[1, 2, 3], keepdims=1),
        h.make_node("Reshape", ["fgm_all", "col"], ["c1"]),
        h.make_node("Mul", ["c1", "k_bg"], ["c0"]),
        h.make_node("Concat", ["c0", "c1"], ["cls_logits"], axis=1),
    ]


def _learner_inits(gain: float, bias: float, chw: np.ndarray) -> dict:
    return {"chw": chw,
        "flat": np.array([-1, T], np.int64), "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64),
        "zero": np.float32(0.0), "one": np.float32(1.0), "gain": np.float32(gain), "bias": np.float32(bias),
        "grid": np.array([-1, 1, G, G], np.int64), "scales": np.array([1, 1, 2, 2], np.float32),
        "k_bg": np.float32(-0.5), "col": np.array([-1, 1], np.int64),
    }


def _corr_nodes():
    """query_feats (1,12,384,T), support_feats (B,12,384,NS) -> corr (B,72,T,NS), head-major."""
    from onnx import helper as h

    nodes = []
    for x, shape in (("query_feats", "q5"), ("support_feats", "s5")):
        nodes += [
            h.make_node("Reshape", [x, shape], [f"{x}_r"]),                                  # (.,12,6,64,N)
            h.make_node("Transpose", [f"{x}_r"], [f"{x}_t"], perm=[0, 2, 1, 3, 4]),          # (.,6,12,64,N)
            h.make_node("ReduceL2", [f"{x}_t"], [f"{x}_n"], axes=[3], keepdims=1),
            h.make_node("Add", [f"{x}_n", "eps"], [f"{x}_ne"]),
            h.make_node("Div", [f"{x}_t", f"{x}_ne"], [f"{x}_u"]),
        ]
    nodes += [
        h.make_node("Transpose", ["query_feats_u"], ["qT"], perm=[0, 1, 2, 4, 3]),            # (1,6,12,T,64)
        h.make_node("MatMul", ["qT", "support_feats_u"], ["c5"]),                             # (B,6,12,T,NS)
        h.make_node("Reshape", ["c5", "c4"], ["corr"]),
    ]
    return nodes


def build_corr_bundle(out_dir, seed: int = 0, gain: float = 60.0, bias: float = 0.0) -> Path:
    """Write the tiny CST bundle (encoder, head, learner); returns its path.

    Args:
        gain, bias: the learner's score = gain * (fg similarity - bg similarity) + bias.
    """
    from onnx import helper as h

    rng = np.random.default_rng(seed)
    chw = rng.uniform(0.0, 2.0, (1, HEADS * L, 1, 1)).astype(np.float32)
    enc_in = [("image", [1, 3, S, S])]
    enc_out = [("query_feats", [1, L, C, T]), ("support_feats", [1, L, C, NS]), ("pseudo_prob", [1, G, G])]
    enc = _model([
        h.make_node("AveragePool", ["image"], ["x"], kernel_shape=[8, 8], strides=[8, 8]),
        h.make_node("Conv", ["x", "w1"], ["h0"]),
        h.make_node("Tanh", ["h0"], ["h1"]),
        h.make_node("Conv", ["h1", "w2"], ["f"]),
        h.make_node("Reshape", ["f", "qshape"], ["query_feats"]),
        h.make_node("ReduceMean", ["query_feats"], ["cls"], axes=[3], keepdims=1),
        h.make_node("Concat", ["cls", "query_feats"], ["support_feats"], axis=3),
        # pseudo-mask prior: brighter-than-average cells (a stand-in for the attention map)
        h.make_node("ReduceMean", ["x"], ["xm"], axes=[1], keepdims=0),                   # (1,G,G)
        h.make_node("ReduceMean", ["xm"], ["xmm"], axes=[1, 2], keepdims=1),
        h.make_node("Sub", ["xm", "xmm"], ["xc"]),
        h.make_node("Mul", ["xc", "k3"], ["xs"]),
        h.make_node("Sigmoid", ["xs"], ["pseudo_prob"]),
    ], enc_in, enc_out, {
        "w1": rng.standard_normal((32, 3, 1, 1)).astype(np.float32),
        "w2": rng.standard_normal((L * C, 32, 1, 1)).astype(np.float32),
        "qshape": np.array([1, L, C, T], np.int64), "k3": np.float32(3.0),
    }, "cst_encoder")

    mask_in = ("support_mask", ["B", S, S])
    outs = [("cls_logits", ["B", 2]), ("seg_logits", ["B", 2, 2 * G, 2 * G])]
    head_in = [("query_feats", [1, L, C, T]), ("support_feats", ["B", L, C, NS]), mask_in]
    head = _model(_corr_nodes() + _learner_nodes(), head_in, outs, {
        **_learner_inits(gain, bias, chw), "eps": np.float32(1e-12),
        "q5": np.array([1, L, HEADS, C // HEADS, T], np.int64),
        "s5": np.array([-1, L, HEADS, C // HEADS, NS], np.int64),
        "c4": np.array([-1, HEADS * L, T, NS], np.int64),
    }, "cst_head")
    learner_in = [("corr", ["B", HEADS * L, T, NS]), mask_in]
    learner = _model(_learner_nodes(), learner_in, outs, _learner_inits(gain, bias, chw), "cst_learner")

    io = {"encoder": (enc_in, enc_out), "head": (head_in, outs), "learner": (learner_in, outs)}
    graphs = {"encoder": enc, "head": head, "learner": learner}

    from _bundles import write_bundle

    return write_bundle(out_dir, "cst", graphs, io, S)
