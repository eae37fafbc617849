"""Latency benchmark engine shared by `edgefss benchmark` and `python bench/latency.py`.

- `stats`: percentiles, spread, stability and run-agreement rules;
- `machine`: CPU/ISA facts, load, peak RSS, the per-ISA peak driver (bench/peaks);
- `worker`: one configuration (torch eager or a bundle on a backend) in its own process,
  driven round by round over a pipe, and the export of a bundle in a fresh process;
- `engine`: the plan, interleaved rounds until the medians are stable, ratios, roofline;
- `report`: table, CSV, JSON, optional PNG;
- `flops`: the one MAC counter (torch with CPU attention; ONNX / OpenVINO graphs per node, fp32/int8);
- `profile`: random feeds and per-node engine profiles of bundle graphs (bench/profile_graph.py);
- `recount`: an earlier latency.json's rooflines with the current counter.

Nothing here imports torch or an engine at import time.
"""
