"""`edgefss export --model diffews`: the tiny teacher's UNet step as FP32/FP16 ONNX (external data),
verified against PyTorch; edge targets refused with the reason; a wrong graph is caught."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
ort = pytest.importorskip("onnxruntime")

from edgefss.cli import main
from edgefss.errors import StateError
from edgefss.teacher.export import export_diffews

S = 64


def _quiet(*a):
    pass


@pytest.mark.parametrize("fp16", [False, True])
def test_unet_step_onnx_is_verified_and_runs_k_shots(tmp_path, fp16):
    from edgefss.models import build_model

    out = export_diffews(config="tiny", imgsz=S, fp16=fp16, out=str(tmp_path / "b"), verify_episodes=1, log=_quiet)
    man = json.loads((out / "manifest.json").read_text())
    ver = man["verification"][f"onnxruntime_{'fp16' if fp16 else 'fp32'}"]
    assert ver["passed"] and ver["episodes"] == 1 and man["weights"]["random_init"]
    assert (out / "unet_step.onnx.data").stat().st_size > (out / "unet_step.onnx").stat().st_size  # external data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_model("diffews", config="tiny", imgsz=S)  # same seed: the exported weights
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 4, 8, 8, generator=g), torch.randn(6, 8, 8, 8, generator=g)  # B=2, K=3 (dynamic axes)
    with torch.no_grad():
        ref = m.unet_step(q, s).numpy()
    dt = np.float16 if fp16 else np.float32
    sess = ort.InferenceSession(str(out / "unet_step.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"query_latent": q.numpy().astype(dt), "support_latent": s.numpy().astype(dt)})[0]
    assert got.dtype == dt and got.shape == (2, 4, 8, 8)
    rtol = 2e-2 if fp16 else 1e-4
    assert np.abs(got.astype(np.float64) - ref).max() <= rtol * np.abs(ref).max()


def test_wrong_graph_fails_verification_and_writes_nothing(tmp_path, monkeypatch):
    import edgefss.teacher.export as E

    real = E.UNetStep

    def skewed(model):
        step = real(model)
        fwd = step.forward
        step.forward = lambda q, s: fwd(q, s) * 1.01  # a 1% defect in the exported graph
        return step

    monkeypatch.setattr(E, "UNetStep", skewed)
    with pytest.raises(StateError, match="verification failed: unet_step.v"):
        export_diffews(config="tiny", imgsz=S, out=str(tmp_path / "b"), verify_episodes=1, log=_quiet)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("flags", [["--backend", "openvino"], ["--backend", "tensorrt"], ["--int8"],
                                   ["--target", "jetson-orin-trt-int8"], ["--target", "onnxruntime-cpu-int8"]])
def test_edge_targets_are_refused_with_the_reason(tmp_path, capsys, flags):
    rc = main(["export", "--model", "diffews", *flags, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and "workstation teacher" in err and "edgefss label" in err
    assert not (tmp_path / "x").exists()


def test_options_without_meaning_are_refused(tmp_path, capsys):
    assert main(["export", "--model", "diffews", "--calib", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "--calib has no meaning for --model diffews" in capsys.readouterr().err
