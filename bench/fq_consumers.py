#!/usr/bin/env python
"""Where an OpenVINO INT8 graph is quantized: FakeQuantize nodes counted by the op type they feed.

    python bench/fq_consumers.py runs/latency/bundles/tlg_400_openvino_int8/head.xml

Prints the number of FakeQuantize nodes and, per consumer op type, how many inputs they feed (the
project's INT8 policy for heads: Convolution and MatMul inputs only, edgefss/quant/nncf_int8.py).
"""

from __future__ import annotations

import collections
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".xml"):
        print("usage: python bench/fq_consumers.py GRAPH.xml", file=sys.stderr)
        return 2
    import openvino as ov

    fed, n = collections.Counter(), 0
    for op in ov.Core().read_model(argv[0]).get_ops():
        if op.get_type_name() == "FakeQuantize":
            n += 1
            fed.update(t.get_node().get_type_name() for out in op.outputs() for t in out.get_target_inputs())
    print(f"{argv[0]}: {n} FakeQuantize; inputs fed per op type: "
          + ", ".join(f"{k} {v}" for k, v in fed.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
