"""How the HSNet 4D center-pivot convolutions are written in exported graphs, per backend.

The eager learner (edgefss/models/hsnet.py) folds the other dim pair of each (B,C,Ha,Wa,Hb,Wb)
tensor into the batch with permutes, and TLG's support pass runs on a transposed copy of the
correlation pyramid. Exported as is, those are Transpose nodes that move every 4D tensor 4 times
per conv (ONNX Runtime at 400 px: 14 % of the FP32 head, 28 % of the INT8 head). The same
arithmetic can be written without them (`Conv4dForm`); which form is fastest differs per backend,
so the export picks one from `BACKEND_FORM`, measured with bench/conv4d_forms.py. Only the export
changes: the torch model keeps the eager form (goldens), tests/test_conv4d_forms.py proves the
forms equal it.
"""

from __future__ import annotations

from edgefss.errors import InputError
from edgefss.exporters.swap import set_on_wrappers, swapped
from edgefss.models.hsnet import EAGER_FORM, Conv4dForm, HPNLearner

FORMS = {
    "eager": EAGER_FORM,
    "dil_c3d_swap": Conv4dForm("dil", "c3d", "c3d", True),
    "c3d_swap": Conv4dForm("c3d", "c3d", "c3d", True),
    "dil_perm": Conv4dForm("dil", "perm", "perm", False),
    "dil_c3d": Conv4dForm("dil", "c3d", "c3d", False),
    "c3d": Conv4dForm("c3d", "c3d", "c3d", False),
    "dil_perm_swap": Conv4dForm("dil", "perm", "perm", True),
    "dil_perm_c3d_swap": Conv4dForm("dil", "perm", "c3d", True),
}

# (backend, precision) -> FORMS key the TLG head is exported with; a pair not listed (TensorRT,
# OpenVINO FP16: not measured) keeps the eager form. Measured on the 2-core AVX-512/VNNI EPYC
# under load, interleaved, learner of both directions at 400 px (docs/conv4d.md has the tables):
#   python bench/conv4d_forms.py --backends ort_int8,ov_fp32 --forms eager,dil_perm_c3d_swap,...
#   ORT FP32: dil_perm_c3d_swap 1.17x eager (CPU time; wall 1.12x); the Conv3d over the support pair
#     is SLOWER on ORT (c3d_swap 0.94x, c3d 0.84x), the dilated 2D conv and the swapped pass pay.
#   ORT INT8: dil_perm_c3d_swap 1.25x (wall 1.35x); dil_c3d_swap 1.09x, c3d_swap 0.92x.
#   OpenVINO FP32: dil_c3d_swap 1.56x (wall 1.60x); c3d_swap 1.52x, dil_perm_c3d_swap 1.40x.
# Whole TLG head at 400 px (bench/conv4d_forms.py --what head), CPU time x eager: ORT FP32 1.08x,
# ORT INT8 1.13x (dil_perm_c3d_swap), OpenVINO FP32 1.32x (dil_c3d_swap; wall 1.41x).
# OpenVINO INT8 (NNCF), whole 400 px TLG bundles A/B on the idle machine (bench/bundle_ab.py):
#   dil_c3d_swap 1.54x eager per query (head 677 -> 421 ms); c3d_swap 1.01x dil_c3d_swap.
BACKEND_FORM: dict[tuple[str, str], str] = {
    ("onnxruntime", "fp32"): "dil_perm_c3d_swap",
    ("onnxruntime", "int8"): "dil_perm_c3d_swap",
    ("openvino", "fp32"): "dil_c3d_swap",
    ("openvino", "int8"): "dil_c3d_swap",
}


def form_for(backend: str, precision: str) -> Conv4dForm:
    """The Conv4dForm for a backend ('onnxruntime' | 'openvino' | 'tensorrt') and precision."""
    key = BACKEND_FORM.get((backend, precision), "eager")
    if key not in FORMS:
        raise InputError(f"conv4d form {key!r} for {backend}/{precision}; expected one of {sorted(FORMS)}")
    return FORMS[key]


def conv4d_export(module, form: Conv4dForm):
    """Within the block every HPNLearner in `module` (itself included) runs in `form`.

    Yields the number of learners switched (0 for the eager form).
    """
    if not isinstance(form, Conv4dForm):
        raise InputError(f"conv4d form must be a Conv4dForm, got {type(form).__name__}")
    targets = [m for m in module.modules() if isinstance(m, HPNLearner)] if form != EAGER_FORM else []
    return swapped(targets, "conv4d_form", form)


def set_export_forms(graphs: dict, backend: str, precision: str) -> dict:
    """Give every graph wrapper that has a `conv4d_form` (TLGHeadGraph) the form for this target.

    Args: graphs {name: GraphDef}; backend, precision as in ExportOptions.
    Returns: {graph name: FORMS key} of the wrappers set.
    """
    key = BACKEND_FORM.get((backend, precision), "eager")
    return set_on_wrappers(graphs, "conv4d_form", form_for(backend, precision), key)
