"""`edgefss benchmark`: latency of TLG/CST on torch eager and exported bundles (same engine as
`python bench/latency.py`); writes <out>/latency.{json,csv,png}."""

from __future__ import annotations


def add_arguments(p) -> None:
    from edgefss.benchmark.engine import MODES
    from edgefss.benchmark.engine import add_arguments as add

    add(p)
    # options whose default depends on --quick / --full: say each mode's value in --help
    per_mode = {"warmup": "warmup", "min_rounds": "min_rounds", "max_rounds": "max_rounds",
                "queries": "queries", "budget_s": "budget"}
    for a in p._actions:
        key = per_mode.get(a.dest)
        if key is not None and a.default is None and "default" not in (a.help or "").lower():
            d = {m: MODES[m][key] for m in MODES}
            a.help = ((a.help + " ") if a.help else "") + \
                f"(default: {d['default']}; with --quick {d['quick']}, with --full {d['full']})"


def run(args) -> int:
    from edgefss.benchmark.engine import finish_args
    from edgefss.benchmark.engine import run as run_bench

    return run_bench(finish_args(args), log=lambda s: print(s, flush=True))
