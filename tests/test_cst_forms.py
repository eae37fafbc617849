"""CST attention blocks in the export's pool-first form (exporters/cst_forms.py) equal the official
order: per block, on the whole learner, and as an exported graph run by ONNX Runtime."""

from __future__ import annotations

import warnings

import pytest
import torch

from edgefss.exporters.cst_forms import BACKEND_FORM, OFFICIAL, POOL_FIRST, cst_learner_export, set_cst_forms
from edgefss.models import build_model
from edgefss.models.cst_learner import CorrAttention, CorrelationLearner

S = 128


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max-abs difference relative to the reference's magnitude (the random heads reach 1e3)."""
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _randomize(m: torch.nn.Module, seed: int) -> None:
    """Non-trivial GroupNorm affines and conv biases, so a dropped bias or norm shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] > 2 else 0.0))


@pytest.mark.parametrize("cin,cout,k,g", [(72, 32, 4, 12), (32, 128, 3, 3), (72, 32, 4, 16)])
@pytest.mark.parametrize("masked", [False, True])
def test_pool_first_block_equals_official(cin, cout, k, g, masked):
    blk = CorrAttention(cin, cout, k).eval()
    _randomize(blk, cin + g)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, cin, 36, 1 + g * g, generator=gen)
    mask = (torch.rand(2, 64, 64, generator=gen) > 0.5).float() if masked else None
    with torch.no_grad():
        ref = blk(x, mask)
        with cst_learner_export(blk, POOL_FIRST) as n:
            got = blk(x, mask)
    assert n == 1 and not blk.pool_first  # switched inside the block only
    assert got.shape == ref.shape
    err = _rel(got, ref)
    assert err < 1e-5, err
    # the two orders are different code: not bit-identical (float reassociation)
    assert err > 0


def test_pool_first_learner_equals_official():
    lr = CorrelationLearner().eval()
    _randomize(lr, 3)
    gen = torch.Generator().manual_seed(2)
    corr = torch.rand(2, 72, 16 * 16, 1 + 12 * 12, generator=gen) * 2 - 1
    mask = torch.zeros(2, S, S)
    mask[:, 20:90, 30:100] = 1
    with torch.no_grad():
        ref = lr(corr, mask)
        with cst_learner_export(lr, POOL_FIRST) as n:
            got = lr(corr, mask)
    assert n == 2
    for key in ref:
        assert _rel(got[key], ref[key]) < 1e-5


def test_exported_head_in_pool_first_form_matches_torch_and_drops_the_qkv_split(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgefss.exporters.cst_graphs import CST_IO, CSTHeadGraph, cst_example_inputs
    from edgefss.exporters.graphs import GraphDef
    from edgefss.exporters.onnx_export import export_graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("cst", imgsz=S).eval()
    _randomize(m.learner, 5)
    ins, outs, dyn = CST_IO["head"]
    traced = cst_example_inputs(m, S, n_support=2)["head"]
    feeds = cst_example_inputs(m, S, n_support=3, seed=1)["head"]
    counts, results = {}, {}
    for form in (OFFICIAL, POOL_FIRST):
        wrapper = CSTHeadGraph(m)
        g = GraphDef(wrapper, ins, outs, dynamic_axes=dyn)
        assert set_cst_forms({"head": g}, "onnxruntime", "fp32") == {"head": BACKEND_FORM[("onnxruntime", "fp32")]}
        wrapper.learner_form = form
        path = export_graph(g, dict(zip(ins, traced)), tmp_path / f"{form}.onnx")
        nodes = onnx.load(str(path)).graph.node
        counts[form] = {op: sum(n.op_type == op for n in nodes) for op in ("Split", "Slice", "Conv")}
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results[form] = sess.run(None, {k: v.numpy() for k, v in zip(ins, feeds)})
        assert not any(b.pool_first for b in m.modules() if isinstance(b, CorrAttention))  # torch model untouched
    with torch.no_grad():
        ref = CSTHeadGraph(m)(*feeds)
    for form in (OFFICIAL, POOL_FIRST):
        for r, t in zip(results[form], ref):
            assert _rel(torch.from_numpy(r), t) < 1e-5
    # torch exports chunk(3) as 3 Slices (OpenVINO fuses them into one VariadicSplit copy); per block
    # pool-first drops those and one of its two token pools (2 Slices each), and adds 2 convs (q, k, v)
    assert counts[POOL_FIRST]["Split"] == 0
    assert counts[POOL_FIRST]["Slice"] == counts[OFFICIAL]["Slice"] - 2 * (3 + 2)
    assert counts[POOL_FIRST]["Conv"] == counts[OFFICIAL]["Conv"] + 2 * 2


def test_backend_table_keeps_the_official_order_where_unmeasured():
    """TensorRT (and anything not measured) exports the official order; the measured CPU engines
    pool first; the manifest records what was set."""

    class _G:
        def __init__(self, module):
            self.module = module

    class _Wrapper:
        learner_form = OFFICIAL

    for target, want in ((("tensorrt", "fp16"), OFFICIAL), (("tensorrt", "int8"), OFFICIAL),
                         (("onnxruntime", "int8"), POOL_FIRST), (("openvino", "fp32"), POOL_FIRST)):
        g = {"head": _G(_Wrapper()), "encoder": _G(object())}
        assert set_cst_forms(g, *target) == {"head": want}
        assert g["head"].module.learner_form == want
