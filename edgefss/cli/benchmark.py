"""`edgefss benchmark`: latency of TLG/CST on torch eager and exported bundles (same engine as
`python bench/latency.py`); writes <out>/latency.{json,csv,png}."""

from __future__ import annotations


def add_arguments(p) -> None:
    from edgefss.benchmark.engine import add_arguments as add

    add(p)


def run(args) -> int:
    from edgefss.benchmark.engine import finish_args
    from edgefss.benchmark.engine import run as run_bench

    return run_bench(finish_args(args), log=lambda s: print(s, flush=True))
