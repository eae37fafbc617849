"""CST's support-key mask as ONNX Runtime runs it: broadcast Where vs broadcast Add (+ Softmax).

    PYTHONPATH=. python bench/cst_mask_op.py [--threads 2] [--repeats 7]

The 400 px CST head masks (1,8,2500,10,145) attention logits over the 145 support keys
(edgefss/models/cst_learner.py CorrAttention._mask). Both forms are timed interleaved in one
process on the same random logits and mask; prints p50 ms, the Where/Add ratio, and whether the
softmax outputs are bit-identical (they must be: exp(x - 1e9 - max) underflows to 0 exactly).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

SHAPE = [1, 8, 2500, 10, 145]


def _model(kind: str) -> bytes:
    from onnx import TensorProto as T
    from onnx import helper as h

    x = h.make_tensor_value_info("x", T.FLOAT, SHAPE)
    z = h.make_tensor_value_info("z", T.FLOAT, SHAPE)
    if kind == "where":
        c = h.make_tensor_value_info("c", T.BOOL, [1, 1, 1, 1, SHAPE[-1]])
        nodes = [h.make_node("Constant", [], ["f"], value=h.make_tensor("fv", T.FLOAT, [], [-1e9])),
                 h.make_node("Where", ["c", "f", "x"], ["y"])]
    else:
        c = h.make_tensor_value_info("c", T.FLOAT, [1, 1, 1, 1, SHAPE[-1]])
        nodes = [h.make_node("Add", ["x", "c"], ["y"])]
    nodes.append(h.make_node("Softmax", ["y"], ["z"], axis=-1))
    g = h.make_graph(nodes, kind, [x, c], [z])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def main(argv=None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(SHAPE) * 5).astype(np.float32)
    keep = rng.random((1, 1, 1, 1, SHAPE[-1])) > 0.5
    keep[..., 0] = True  # the CLS key is never masked
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    runs = {"where": (ort.InferenceSession(_model("where"), so), {"x": x, "c": ~keep}),
            "add": (ort.InferenceSession(_model("add"), so),
                    {"x": x, "c": np.where(keep, 0, -1e9).astype(np.float32)})}
    outs = {k: s.run(None, f)[0] for k, (s, f) in runs.items()}
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, (s, f) in runs.items():
            t = time.perf_counter()
            s.run(None, f)
            times[k].append((time.perf_counter() - t) * 1e3)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    print(f"shape {SHAPE}, {args.threads} threads, {args.repeats} interleaved repeats")
    print(f"Where+Softmax p50 {p50['where']:.1f} ms, Add+Softmax p50 {p50['add']:.1f} ms, "
          f"ratio {p50['where'] / p50['add']:.2f}x; outputs bit-identical: {np.array_equal(outs['where'], outs['add'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
