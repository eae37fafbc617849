"""INT8 target instruction set checked when a bundle loads (quant/ort_int8.check_bundle_target,
wired into Segmenter.load): refused where ONNX Runtime's results would be wrong, a warning where
the bundle only runs slower than one made for this CPU, silent elsewhere."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgefss.errors import BundleError
from edgefss.quant import ort_int8 as Q
from edgefss.runtime import Segmenter


def _manifest(fmt: str, isa: str, precision: str = "int8") -> dict:
    g = {"format": fmt, "target_isa": isa}
    return {"precision": precision, "quantization": {"graphs": {"encoder": dict(g), "head": dict(g)}}}


def test_u8s8_refused_only_on_x86_without_vnni():
    m = _manifest("qdq_u8s8_pc", "avx512_vnni")
    with pytest.raises(BundleError, match="encoder.*avx2.*--target-isa avx2"):
        Q.check_bundle_target(m, "onnxruntime", "cpu", isa="avx2")
    assert Q.check_bundle_target(m, "onnxruntime", "cpu", isa="avx512_vnni") is None
    assert Q.check_bundle_target(m, "onnxruntime", "cpu", isa="avx_vnni") is None
    # where ONNX Runtime's CPU kernels do not run the graphs, the format does not matter
    assert Q.check_bundle_target(m, "onnxruntime", "cuda", isa="avx2") is None
    assert Q.check_bundle_target(m, "openvino", "CPU", isa="avx2") is None
    assert Q.check_bundle_target(_manifest("qdq_u8s8_pc", "avx512_vnni", "fp32"), "onnxruntime", "cpu",
                                 isa="avx2") is None
    # bundles that predate the format record are not judged
    assert Q.check_bundle_target({"precision": "int8", "quantization": {"graphs": {"encoder": {}}}},
                                 "onnxruntime", "cpu", isa="avx2") is None


def test_other_isa_is_a_warning_line_not_a_refusal():
    note = Q.check_bundle_target(_manifest("qdq_s8s8_pc", "avx2"), "onnxruntime", "cpu", isa="avx512_vnni")
    assert "qdq_u8s8_pc" in note and "--target-isa avx512_vnni" in note and "correctly" in note
    assert Q.check_bundle_target(_manifest("qdq_s8s8_pc", "avx2"), "onnxruntime", "cpu", isa="avx2") is None
    assert Q.check_bundle_target(_manifest("qdq_s8s8_pc", "neon_dot"), "onnxruntime", "cpu", isa="neon_dot") is None


def _int8_bundle(path, fmt, isa):
    from _bundles import write_bundle
    from test_runtime import S, _cst_graphs

    graphs, io = _cst_graphs(np.random.default_rng(0))

    def extra(w, manifest):
        manifest["quantization"] = {"method": "test", "graphs": {
            n: {"format": fmt, "target_isa": isa} for n in ("encoder", "head")}}

    return write_bundle(path, "cst", graphs, io, S, precision="int8", extra=extra)


def test_segmenter_load_refuses_or_warns(tmp_path, monkeypatch):
    u8 = _int8_bundle(tmp_path / "u8", "qdq_u8s8_pc", "avx512_vnni")
    s8 = _int8_bundle(tmp_path / "s8", "qdq_s8s8_pc", "avx2")
    monkeypatch.setattr(Q, "target_isa", lambda cpuinfo_text=None: "avx2")
    with pytest.raises(BundleError, match="saturate"):
        Segmenter.load(u8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights note
        Segmenter.load(s8).close()
    monkeypatch.setattr(Q, "target_isa", lambda cpuinfo_text=None: "avx512_vnni")
    with pytest.warns(UserWarning, match="exported for avx2.*--target-isa avx512_vnni"):
        Segmenter.load(s8).close()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Segmenter.load(u8).close()
    assert not [x for x in w if "target-isa" in str(x.message)]
