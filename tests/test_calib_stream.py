"""Export memory: lazy calibration feeds, streamed gate, lean reference engine (edgefss/quant/pipeline.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefss.config import PreprocessCfg
from edgefss.quant import gate as G
from edgefss.quant.episodes import find_episodes
from edgefss.quant.feeds import FeedBuilder
from edgefss.quant.pipeline import LazyFeeds, calibration_feeds, compare_pipelines, lean, release_memory
from edgefss.quant.reader import FeedReader
from edgefss.runtime.session import open_graphs
from test_runtime import S, build_tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """(FP32 graph files, FeedBuilder, FP32 engine, 5 DAVIS episodes) for the tiny CST graphs (S=32)."""
    b = build_tiny_bundle(tmp_path_factory.mktemp("calib") / "cst", "cst")
    files = {g: b / f"{g}.onnx" for g in ("encoder", "head")}
    man = json.loads((b / "manifest.json").read_text())
    builder = FeedBuilder("cst", PreprocessCfg(imgsz=S), list(man["graphs"]["head"]["inputs"]))
    eps = find_episodes([shared_data / "davis2016_val_subset"], 5, shots=1, seed=0)
    return files, builder, open_graphs("onnxruntime", "fp32", files), eps


def _eager_reference(builder, engine, eps):
    """The feeds as the exporter built them before (all up front), written out by hand."""
    enc, head = [], []
    for i, ep in enumerate(eps):
        q = builder.image(ep.query.image)
        sup = [builder.image(s.image) for s in ep.support]
        enc += [{"image": q}] + [{"image": s} for s in sup]
        eq = engine.run("encoder", {"image": q})
        es = [engine.run("encoder", {"image": s}) for s in sup]
        head.append(builder.head_feeds(eq, es, [builder.network_mask(s.mask) for s in ep.support], ep.cls,
                                       builder.network_mask(ep.query.mask), use_given=(i % 2 == 0)))
    return enc, head


def test_lazy_feeds_equal_eager_feeds(tiny):
    files, builder, engine, eps = tiny
    enc, head = calibration_feeds(builder, engine, eps)
    assert isinstance(enc, LazyFeeds) and isinstance(head, LazyFeeds)
    ref_enc, ref_head = _eager_reference(builder, engine, eps)
    assert len(enc) == len(ref_enc) == 2 * len(eps) and len(head) == len(ref_head) == len(eps)
    for got, ref in [(enc, ref_enc), (head, ref_head)]:
        for i in range(len(ref)):
            a, b = got[i], ref[i]
            assert list(a) == list(b)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(enc[-1]["image"], ref_enc[-1]["image"])
    with pytest.raises(IndexError):
        enc[len(enc)]


def test_reader_makes_samples_one_at_a_time():
    made = []

    def make(i):
        made.append(i)
        return {"x": np.full((1,), i, np.float32)}

    r = FeedReader(LazyFeeds(6, make))
    assert made == [] and len(r) == 6  # nothing made up front
    r.set_range(2, 4)
    assert r.get_next()["x"][0] == 2 and made == [2]
    assert r.get_next()["x"][0] == 3 and r.get_next() is None and made == [2, 3]


def test_quantized_graph_identical_with_lazy_and_eager_feeds(tiny, tmp_path):
    from edgefss.quant.ort_int8 import quantize_onnx

    files, builder, engine, eps = tiny
    enc, _ = calibration_feeds(builder, engine, eps)
    ref_enc, _ = _eager_reference(builder, engine, eps)
    out = {}
    for name, feeds in [("lazy", enc), ("eager", ref_enc)]:
        info = quantize_onnx(files["encoder"], tmp_path / f"{name}.onnx", feeds, keep_last=False,
                             cache_path=tmp_path / f"{name}.calib.json", label="", isa="avx512_vnni")
        assert info["quantized_nodes"] == 1
        out[name] = (tmp_path / f"{name}.onnx").read_bytes()
    assert out["lazy"] == out["eager"]
    assert json.loads((tmp_path / "lazy.calib.json").read_text()) == \
        json.loads((tmp_path / "eager.calib.json").read_text())


def test_streamed_gate_equals_gate_on_all_outputs(tiny, tmp_path):
    """compare_pipelines reduces per episode; the figures equal agreement() on every output kept."""
    from edgefss.quant.ort_int8 import quantize_onnx
    from edgefss.quant.pipeline import load_episode, run_episode

    files, builder, engine, eps = tiny
    enc, _ = calibration_feeds(builder, engine, eps)
    quantize_onnx(files["encoder"], tmp_path / "enc8.onnx", enc, keep_last=False, label="", isa="avx512_vnni")
    test = open_graphs("onnxruntime", "int8", {"encoder": tmp_path / "enc8.onnx", "head": files["head"]})
    streamed = compare_pipelines(builder, lean(open_graphs("onnxruntime", "fp32", files)), test, eps, 0.9)
    ro, to, rm, tm = [], [], [], []
    for i, ep in enumerate(eps):
        data = load_episode(builder, ep)
        _, _, o1, m1 = run_episode(builder, engine, data, i % 2 == 0)
        _, _, o2, m2 = run_episode(builder, test, data, i % 2 == 0)
        ro.append(o1), to.append(o2), rm.append(m1), tm.append(m2)
    full = G.agreement(ro, to, rm, tm, 0.9, device=test.device)
    assert streamed.to_dict() == full.to_dict()
    assert streamed.cosine["encoder.query_feats"] < 1.0  # INT8 changed something the gate measured


def test_lean_engine_same_outputs_and_passes_attributes(tiny):
    files, builder, engine, eps = tiny
    le = lean(open_graphs("onnxruntime", "fp32", files))
    assert le.device == engine.device and le.name == "onnxruntime"
    assert all(not sess.get_session_options().enable_cpu_mem_arena for sess in le.sessions.values())
    x = builder.image(eps[0].query.image)
    a, b = engine.run("encoder", {"image": x}), le.run("encoder", {"image": x})
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = object()
    assert lean(other) is other  # not an ONNX Runtime engine: unchanged
    release_memory()  # callable anywhere (glibc malloc_trim, else only gc)


def test_calibrate_ranges_equal_onnxruntime_calibrator(tiny, tmp_path):
    """Our one-sample-at-a-time, arena-less calibration writes the ranges quantize_static's own
    calibrator (CalibStridedMinMax=1) writes for the same graph and samples."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    from edgefss.quant.ort_int8 import QUANT_OPS, calibrate

    files, builder, engine, eps = tiny
    enc, _ = calibration_feeds(builder, engine, eps)
    ours = calibrate(files["encoder"], enc, tmp_path / "ours.json", label="")
    quantize_static(str(files["encoder"]), str(tmp_path / "ort.onnx"), FeedReader(list(enc)),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, extra_options={"CalibStridedMinMax": 1},
                    calibration_cache_path=str(tmp_path / "ort.json"))
    a, b = load_tensors_data(ours).data, load_tensors_data(tmp_path / "ort.json").data
    assert sorted(a) == sorted(b) and len(a) >= 2
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k].range_value, np.float64), np.asarray(b[k].range_value, np.float64))
