"""Export-only rewrites set on modules for the time of a trace, and on graph wrappers per target.

The exporters write some ops differently from the torch model (4D-conv forms, CST attention blocks,
fused ViT attention): each sets an attribute on every module of one kind while the export traces
and puts the old values back after, whatever happens (`swapped`); the per-backend choice is set
on the graph wrappers that carry the attribute (`set_on_wrappers`).
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def swapped(targets: list, attr: str, value):
    """Within the block every module of `targets` has `attr` = `value`; restored on exit.

    Yields the number of modules set.
    """
    saved = [getattr(m, attr) for m in targets]
    try:
        for m in targets:
            setattr(m, attr, value)
        yield len(targets)
    finally:
        for m, v in zip(targets, saved):
            setattr(m, attr, v)


def set_on_wrappers(graphs: dict, attr: str, value, label: str) -> dict:
    """Set `attr` = `value` on each graph wrapper (GraphDef.module) that has `attr`.

    Returns {graph name: label} of the wrappers set (what the manifest records).
    """
    done = {}
    for name, g in graphs.items():
        if hasattr(g.module, attr):
            setattr(g.module, attr, value)
            done[name] = label
    return done
