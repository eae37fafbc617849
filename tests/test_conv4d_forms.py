"""The export-only 4D conv formulations (models/hsnet.py Conv4dForm, exporters/conv4d_forms.py)
compute what the eager HSNet learner computes: per conv, per learner direction, and in an exported
TLG head run on ONNX Runtime / OpenVINO against the torch head."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from edgefss.exporters.conv4d_forms import BACKEND_FORM, FORMS, conv4d_export, form_for, set_export_forms
from edgefss.models.hsnet import EAGER_FORM, CenterPivotConv4d, Conv4dForm, HPNLearner, center_pivot_form

TOL = 1e-5
ALL_FORMS = [Conv4dForm(o, i, s, w) for o, i, s, w in
             itertools.product(("perm", "c3d", "dil"), ("perm", "c3d"), ("perm", "c3d"), (False, True))]


def _swap(x):
    return x.permute(0, 1, 4, 5, 2, 3)


# (cin, cout, kernel, stride, x shape (B,C,Ha,Wa,Hb,Wb)); odd sizes, and stride 4 over 7 / 9 / 6
# support rows, where the pruned count (2, 3, 2) is not size/stride
CASES = [(3, 16, 3, 2, (2, 3, 5, 7, 9, 6)), (4, 8, 5, 4, (1, 4, 7, 6, 9, 7)),
         (6, 5, 3, 1, (2, 6, 4, 5, 3, 7)), (2, 4, 5, 4, (1, 2, 6, 9, 6, 9))]


@pytest.mark.parametrize("cin,cout,k,s,shape", CASES)
def test_each_form_equals_the_eager_center_pivot_conv_in_both_directions(cin, cout, k, s, shape):
    torch.manual_seed(k * 10 + s)
    m = CenterPivotConv4d(cin, cout, k, s)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = m(x)
        ref_swapped = _swap(m(_swap(x)))  # query pair = dims (4,5)
        for f in ALL_FORMS:
            a = center_pivot_form(m, x, f, swapped=False)
            b = center_pivot_form(m, x, f, swapped=True)
            assert a.shape == ref.shape and b.shape == ref_swapped.shape, f.name
            assert (a - ref).abs().max() <= TOL, f.name
            assert (b - ref_swapped).abs().max() <= TOL, f.name


def test_dilated_form_refuses_a_stride():
    m = CenterPivotConv4d(2, 3, 3, 2)
    from edgefss.models.hsnet import conv_outer

    with pytest.raises(ValueError, match="stride 1"):
        conv_outer(torch.randn(1, 2, 5, 5, 3, 3), m.conv2, "dil")
    with pytest.raises(ValueError, match="outer"):
        Conv4dForm(outer="nope")


@pytest.fixture(scope="module")
def learner_case():
    torch.manual_seed(0)
    learner = HPNLearner((3, 6, 4)).eval()
    # ResNet-50 grids of an 80 px image (3, 5, 10), support grids different from the query's
    pyr = [torch.rand(1, 3, 3, 3, 4, 3), torch.rand(1, 6, 5, 5, 7, 5), torch.rand(1, 4, 10, 10, 9, 11)]
    with torch.no_grad():
        ref_q = learner.forward_conv4d(pyr)
        ref_s = learner.forward_conv4d([_swap(c).contiguous() for c in pyr])
    return learner, pyr, ref_q, ref_s


def test_eager_swapped_pass_is_the_pass_on_the_transposed_pyramid(learner_case):
    learner, pyr, _, ref_s = learner_case
    with torch.no_grad():
        assert torch.equal(learner.forward_conv4d(pyr, swapped=True), ref_s)


@pytest.mark.parametrize("key", sorted(FORMS))
def test_whole_learner_in_each_form_equals_eager_both_directions(learner_case, key):
    learner, pyr, ref_q, ref_s = learner_case
    with torch.no_grad(), conv4d_export(learner, FORMS[key]):
        q = learner.forward_conv4d(pyr)
        s = learner.forward_conv4d(pyr, swapped=True)
    assert learner.conv4d_form is None  # restored after the block
    assert q.shape == ref_q.shape and s.shape == ref_s.shape
    assert (q - ref_q).abs().max() <= TOL
    assert (s - ref_s).abs().max() <= TOL


def test_table_names_known_forms_and_only_head_wrappers_get_one():
    assert all(k in FORMS for k in BACKEND_FORM.values())
    assert form_for("tensorrt", "fp32") == EAGER_FORM  # TensorRT not measured: eager

    class G:  # a GraphDef stand-in
        def __init__(self, module):
            self.module = module

    head, enc = G(torch.nn.Module()), G(torch.nn.Module())
    head.module.conv4d_form = EAGER_FORM
    done = set_export_forms({"encoder": enc, "head": head}, "openvino", "fp32")
    assert set(done) == {"head"} and head.module.conv4d_form == form_for("openvino", "fp32")
    assert not hasattr(enc.module, "conv4d_form")


class _Both(torch.nn.Module):
    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def forward(self, c4, c3, c2):
        return self.learner.forward_conv4d([c4, c3, c2]), self.learner.forward_conv4d([c4, c3, c2], swapped=True)


def _export_learner(learner, pyr, form, path):
    with torch.no_grad(), conv4d_export(learner, form):
        torch.onnx.export(_Both(learner), tuple(pyr), str(path), input_names=["c4", "c3", "c2"],
                          opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def eager_transposes(learner_case, tmp_path_factory):
    import onnx

    learner, pyr, _, _ = learner_case
    path = _export_learner(learner, pyr, EAGER_FORM, tmp_path_factory.mktemp("eager") / "eager.onnx")
    return sum(n.op_type == "Transpose" for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("key", ["c3d_swap", "dil_c3d_swap"])
def test_exported_learner_form_runs_on_onnxruntime_equal_to_eager_with_fewer_transposes(
        learner_case, eager_transposes, tmp_path, key):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    learner, pyr, ref_q, ref_s = learner_case
    path = _export_learner(learner, pyr, FORMS[key], tmp_path / f"{key}.onnx")
    n_tr = sum(n.op_type == "Transpose" for n in onnx.load(str(path)).graph.node)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    q, sp = s.run(None, {n: c.numpy() for n, c in zip(("c4", "c3", "c2"), pyr)})
    assert np.abs(q - ref_q.numpy()).max() <= TOL and np.abs(sp - ref_s.numpy()).max() <= TOL
    # eager: 4 per conv x 15 convs x 2 passes + resizes + support copies; left: the 2 query-dim resizes
    assert n_tr <= 4 < eager_transposes, (n_tr, eager_transposes)


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A 64 px TLG head exported in the 'dil_c3d_swap' form (all three new conv kinds and the swapped
    support pass), with its torch (eager) outputs."""
    from edgefss.exporters.graphs import GraphDef
    from edgefss.exporters.onnx_export import export_graph
    from edgefss.exporters.tlg_graphs import TLGHeadGraph, tlg_example_inputs, tlg_io
    from edgefss.models.tlg import tlg_resnet50

    torch.manual_seed(0)
    model = tlg_resnet50(imgsz=64).eval()
    feeds = tlg_example_inputs(model, 64, n_support=2)["head"]
    io = tlg_io(model)["head"]
    graph = TLGHeadGraph(model).eval()
    graph.conv4d_form = FORMS["dil_c3d_swap"]
    with torch.no_grad():
        ref = [r.numpy() for r in graph(*feeds.values())]  # torch: eager whatever conv4d_form says
    path = tmp_path_factory.mktemp("head") / "head.onnx"
    export_graph(GraphDef(graph, io["inputs"], io["outputs"], io["dynamic_axes"]), feeds, path)
    assert model.hpn_learner.conv4d_form is None  # the export left the torch model eager
    return path, io, {k: v.numpy() for k, v in feeds.items()}, ref


def test_exported_tiny_tlg_head_in_the_new_form_equals_torch_on_onnxruntime(tiny_head):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    path, io, feeds, ref = tiny_head
    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    assert ops.count("Conv") >= 30  # 15 center-pivot convs x 2, now Conv3d / dilated Conv
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for name, a, b in zip(io["outputs"], out, ref):
        assert np.abs(a - b).max() <= 1e-4, name


def test_exported_tiny_tlg_head_in_the_new_form_equals_torch_on_openvino(tiny_head):
    ov = pytest.importorskip("openvino")
    path, io, feeds, ref = tiny_head
    c = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = c.create_infer_request().infer(feeds)
    for name, b in zip(io["outputs"], ref):
        assert np.abs(out[name] - b).max() <= 1e-4, name


def test_openvino_int8_export_writes_the_head_in_its_form_and_stays_close_to_fp32(tmp_path):
    """OpenVINO INT8 (NNCF) quantizes the head in the form BACKEND_FORM names for it: the bundle
    records the form, and the gate's INT8-vs-FP32 output cosines show the graph still computes the
    head (a wrong form would decorrelate them)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from edgefss.bundle import read_manifest
    from edgefss.exporters import export

    out = export("tlg", backend="openvino", int8=True, imgsz=64, out=str(tmp_path / "b"), verify_episodes=1,
                 force=True, log=lambda *_: None)
    man = read_manifest(out)
    assert man["graphs"]["head"]["conv4d_form"] == BACKEND_FORM[("openvino", "int8")] == "dil_c3d_swap"
    cos = man["gate"]["output_cosine_min"]
    assert min(v for k, v in cos.items() if k.startswith("head.")) > 0.8, cos
