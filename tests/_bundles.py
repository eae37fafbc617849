"""The one writer of hand-built test bundles (tests/test_runtime.py, tests/tiny_cst_corr.py)."""

from __future__ import annotations

from pathlib import Path

from edgefss.config import PreprocessCfg


def io_dict(items) -> dict:
    """[(name, shape), ...] -> the manifest's {name: {shape, dtype}} (float32 graphs only)."""
    return {n: {"shape": list(s), "dtype": "float32"} for n, s in items}


def write_bundle(out_dir, model: str, graphs: dict, io: dict, imgsz: int, backend: str = "onnxruntime",
                 precision: str = "fp32", extra=None) -> Path:
    """Commit `graphs` ({name: onnx.ModelProto}) as a bundle through BundleWriter.

    Args:
        io: {graph: (inputs [(name, shape)], outputs [(name, shape)])}.
        extra: optional callable(writer, manifest) adding side files / manifest fields before commit.
    """
    import onnx

    from edgefss.bundle import BundleWriter

    manifest = {
        "model": model, "variant": "vit_small_patch8" if model == "cst" else "resnet50",
        "backend": backend, "precision": precision,
        "preprocess": PreprocessCfg(imgsz=imgsz).to_dict(),
        "graphs": {g: {"file": f"{g}.onnx", "inputs": io_dict(io[g][0]), "outputs": io_dict(io[g][1])}
                   for g in graphs},
        "pseudo_mask": {"threshold": 0.4, "generator": "tiny test graph"},
        "weights": {"checkpoint": None, "random_init": True},
    }
    with BundleWriter(out_dir) as w:
        for g, m in graphs.items():
            onnx.save(m, str(w.path(f"{g}.onnx")))
        if extra is not None:
            extra(w, manifest)
        return w.commit(manifest)
