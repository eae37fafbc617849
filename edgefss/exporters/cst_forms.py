"""How CST's correlation-transformer attention blocks are written in exported graphs, per backend.

The official block (models/cst_learner.py `CorrAttention`) runs its 1x1 convs (shortcut, qkv) on
all 1+g^2 support tokens of the (B,72,T,1+g^2) correlation and then average-pools the shortcut and
q branches to 1+(g/k)^2 tokens, and chunks the qkv output into q, k, v. `pool_first` pools x before
those two convs (exact: a 1x1 conv is per token, the pool is a mean over tokens) and computes k and
v with their own convs, so at 400 px the first block's shortcut and q convs see 10 tokens instead
of 145 and no split copies the (B,48,2500,145) qkv tensor. Only the export changes: the torch model
keeps the official order (goldens); tests/test_cst_forms.py proves both equal.

Measured with `python bench/cst_forms.py` (docs/profiles.md has the figures); TensorRT keeps the
official order (not measured).
"""

from __future__ import annotations

from edgefss.errors import InputError
from edgefss.exporters.swap import set_on_wrappers, swapped

OFFICIAL, POOL_FIRST = "official", "pool_first"
FORMS = (OFFICIAL, POOL_FIRST)
BACKEND_FORM: dict[tuple[str, str], str] = {
    ("onnxruntime", "fp32"): POOL_FIRST,
    ("onnxruntime", "int8"): POOL_FIRST,
    ("openvino", "fp32"): POOL_FIRST,
    ("openvino", "int8"): POOL_FIRST,
}


def _blocks(module):
    from edgefss.models.cst_learner import CorrAttention

    return [m for m in module.modules() if isinstance(m, CorrAttention)]


def cst_learner_export(module, form: str):
    """Within the block every CorrAttention in `module` runs in `form` (OFFICIAL or POOL_FIRST).

    Yields the number of blocks switched.
    """
    if form not in FORMS:
        raise InputError(f"CST learner form {form!r}; expected one of {list(FORMS)}")
    return swapped(_blocks(module) if form == POOL_FIRST else [], "pool_first", True)


def set_cst_forms(graphs: dict, backend: str, precision: str) -> dict:
    """Give every graph wrapper with a `learner_form` (CSTHeadGraph, CSTLearnerGraph) the form for
    this target. Args: graphs {name: GraphDef}. Returns {graph name: form} of the wrappers set."""
    form = BACKEND_FORM.get((backend, precision), OFFICIAL)
    return set_on_wrappers(graphs, "learner_form", form, form)
