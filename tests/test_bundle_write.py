"""Export writes bundles atomically: a failure mid-export leaves no partial bundle, and an
existing bundle survives a failed re-export untouched."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgefss.bundle import read_manifest, sha256_file  # noqa: E402
from edgefss.exporters import core, export  # noqa: E402

S = 64


def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _fail_on_second_graph(monkeypatch):
    real = core._stage_graph
    calls = []

    def stage(g, example, path):
        calls.append(path.name)
        if len(calls) == 2:  # the encoder is already written: die half-way through the export
            raise RuntimeError("injected failure while exporting the head")
        return real(g, example, path)

    monkeypatch.setattr(core, "_stage_graph", stage)
    return calls


def test_failure_mid_export_leaves_nothing(tmp_path, monkeypatch):
    calls = _fail_on_second_graph(monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure"):
        export("tlg", imgsz=S, out=str(tmp_path / "bundle"), verify_episodes=1, log=lambda *_: None)
    assert calls == ["encoder.onnx", "head.onnx"]
    assert not (tmp_path / "bundle").exists()
    assert _leftovers(tmp_path, "bundle") == []


def test_failed_reexport_keeps_previous_bundle_and_hashes_match(tmp_path, monkeypatch):
    out = export("tlg", imgsz=S, out=str(tmp_path / "bundle"), verify_episodes=1, log=lambda *_: None)
    man = read_manifest(out, verify=True)  # every file's SHA-256 and size as recorded
    for name, info in man["files"].items():
        assert sha256_file(out / name) == info["sha256"] and (out / name).stat().st_size == info["bytes"]
    before = {p.name: sha256_file(p) for p in out.iterdir()}
    _fail_on_second_graph(monkeypatch)
    with pytest.raises(RuntimeError):
        export("tlg", imgsz=S, out=str(out), verify_episodes=1, log=lambda *_: None)
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before
    assert _leftovers(tmp_path, "bundle") == []
