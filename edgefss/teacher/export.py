"""`edgefss export --model diffews`: the DiffewS UNet step as a verified ONNX for GPU servers.

The graph is the one denoising step with KV fusion (DiffewS.unet_step): inputs `query_latent`
(B,4,h,w) and `support_latent` (B*K,8,h,w) (cat[support image latent, support mask latent], the K
shots of query b at rows b*K..), output `v` (B,4,h,w); x0 = -v is decoded by the SD2.1 VAE. The
empty-prompt embedding and the timestep are constants inside the graph. Weights go to one
external-data file (`unet_step.onnx.data`; the SD2.1 UNet exceeds protobuf's 2 GB).

Verified like every other export (edgefss.exporters.verify): ONNX Runtime against PyTorch on
real images (VAE latents of shared support/query pairs), per output max-abs <= max(rtol x scale,
floor): FP32_RTOL for FP32; FP16 graphs (weights and compute in float16) against the FP32 PyTorch
model with FP16_RTOL. Edge targets are refused: the model is the workstation teacher.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edgefss.errors import InputError, StateError, require
from edgefss.exporters.onnx_export import OPSET
from edgefss.exporters.verify import (
    FP32_ATOL_FLOOR,
    FP32_RTOL,
    _update,
    failure_line,
    format_verification,
    tolerance,
)

FP16_RTOL = 2e-2  # float16 keeps ~3 decimal digits; a UNet a few hundred ops deep lands at ~1e-3..1e-2
GRAPH = "unet_step"
INPUTS, OUTPUTS = ["query_latent", "support_latent"], ["v"]
EDGE_REASON = ("--model diffews is the workstation teacher (Stable Diffusion 2.1 UNet + VAE, 950 M parameters, "
               "3.8 TMACs per 512 px query; docs/teacher.md): it is exported only as an FP32/FP16 ONNX UNet for GPU servers "
               "(--backend onnxruntime, optionally --fp16). For edge targets label your images with it "
               "(`edgefss label --teacher diffews`), distil into TLG or CST (`edgefss train --sup mask`) and "
               "export those")


def check_options(backend=None, int8=None, target=None, **others) -> None:
    """Refuse what a DiffewS export cannot be (InputError with the reason), before any work."""
    if target:
        raise InputError(f"--target {target}: the recipes are edge deployments; {EDGE_REASON}")
    if backend not in (None, "onnxruntime"):
        raise InputError(f"--backend {backend}: {EDGE_REASON}")
    if int8:
        raise InputError(f"--int8 (CPU INT8 / Jetson engines): {EDGE_REASON}")
    bad = sorted(k for k, v in others.items() if v is not None)
    if bad:
        raise InputError(f"--{bad[0].replace('_', '-')} has no meaning for --model diffews (ONNX UNet step for "
                         "GPU servers: options --checkpoint, --fp16, --imgsz, --out, --verify-episodes)")


class UNetStep(torch.nn.Module):
    """(query_latent, support_latent) -> v: the DiffewS UNet step as one traceable module."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, query_latent, support_latent):
        return self.m.unet_step(query_latent, support_latent)


def _verification_inputs(model, n: int, imgsz: int) -> list:
    """[(query_latent, support_latent)] float32 from real image pairs (shared data, else packaged)."""
    import torch

    from edgefss.imageio import load_image, read_label_map
    from edgefss.models.diffews import preprocess_image, preprocess_mask
    from edgefss.packaged import verification_folder
    from edgefss.quant.episodes import default_calib_folders, find_episodes

    try:
        folders = default_calib_folders()
    except InputError:
        folders = [verification_folder()]
    out = []
    for ep in find_episodes(folders, n, shots=1, seed=1):
        s = ep.support[0]
        img = preprocess_image(load_image(s.image), imgsz)[None]
        m = preprocess_mask(read_label_map(s.mask) if s.mask else np.ones((8, 8)), imgsz)
        m = (m * 2 - 1)[None, None].expand(-1, 3, -1, -1)
        q = preprocess_image(load_image(ep.query.image), imgsz)[None]
        with torch.no_grad():
            sl = torch.cat([model.encode(img), model.encode(m)], dim=1)
            out.append((model.encode(q), sl))
    return out


def export_diffews(checkpoint=None, vae_checkpoint=None, fp16=None, imgsz=None, out=None, verify_episodes=None,
                   config: str = "sd21", log=print, **options) -> Path:
    """Export the DiffewS UNet step; returns the bundle folder. Options as `edgefss export`.

    Raises:
        InputError: an edge target or an option with no meaning here (check_options).
        StateError: the verification failed (nothing written).
    """
    check_options(**options)
    onnx = require("onnx", "DiffewS export")
    import onnxruntime as ort

    from edgefss.bundle import BundleWriter, check_output_dir, export_workdir
    from edgefss.models import build_model

    imgsz = 512 if imgsz is None else imgsz
    precision = "fp16" if fp16 else "fp32"
    out = Path(out or f"diffews_{imgsz}_onnxruntime_{precision}")
    check_output_dir(out)
    n_eps = 2 if verify_episodes is None else int(verify_episodes)
    if n_eps < 1:
        raise InputError(f"--verify-episodes must be >= 1, got {verify_episodes!r}")
    model = build_model("diffews", checkpoint=checkpoint, vae_checkpoint=vae_checkpoint, config=config,
                        imgsz=imgsz)
    feeds = _verification_inputs(model, n_eps, imgsz)
    with torch.no_grad():
        refs = [model.unet_step(q, s).numpy() for q, s in feeds]
    step = UNetStep(model).eval()
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        step = step.half()
    h = imgsz // model.vae_factor
    ex = (torch.zeros(1, 4, h, h, dtype=dtype), torch.zeros(2, 8, h, h, dtype=dtype))
    with export_workdir() as tmp, BundleWriter(out) as w:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on diffusers' shape checks
            torch.onnx.export(step, ex, str(raw), input_names=INPUTS, output_names=OUTPUTS, opset_version=OPSET,
                              dynamic_axes={"query_latent": {0: "B"}, "support_latent": {0: "BK"},
                                            "v": {0: "B"}},
                              do_constant_folding=True, dynamo=False)
        m = onnx.load(str(raw))
        dst = w.path(f"{GRAPH}.onnx")
        onnx.save_model(m, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{GRAPH}.onnx.data", size_threshold=0)
        del m
        onnx.checker.check_model(str(dst), full_check=False)
        n_nodes = len(onnx.load(str(dst), load_external_data=False).graph.node)
        log(f"exported {GRAPH}.onnx ({n_nodes} nodes, opset {OPSET}, {precision.upper()}, weights in "
            f"{GRAPH}.onnx.data {w.path(GRAPH + '.onnx.data').stat().st_size / 2**20:.1f} MiB)")
        sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        rtol = FP16_RTOL if fp16 else FP32_RTOL
        stats: dict = {}
        np_dtype = np.float16 if fp16 else np.float32
        for (q, s), ref in zip(feeds, refs):
            feed = {"query_latent": q.numpy().astype(np_dtype), "support_latent": s.numpy().astype(np_dtype)}
            got = sess.run(None, feed)[0]
            _update(stats, GRAPH, {"v": ref.astype(np.float64)}, {"v": got.astype(np.float32)})
        outputs = {k: {"max_abs": float(f"{e:.3g}"), "scale": float(f"{sc:.3g}"),
                       "tol": float(f"{tolerance(sc, rtol):.3g}")} for k, (e, sc) in stats.items()}
        worst = max(stats, key=lambda k: stats[k][0] / tolerance(stats[k][1], rtol))
        ver = {"backend": f"onnxruntime-{precision}", "episodes": len(feeds), "rtol": rtol,
               "atol_floor": FP32_ATOL_FLOOR, "outputs": outputs, "max_abs": {k: v["max_abs"] for k, v in outputs.items()}, "worst": worst,
               "passed": all(e <= tolerance(sc, rtol) for e, sc in stats.values())}
        log(format_verification(ver))
        if not ver["passed"]:
            raise StateError(failure_line(ver))
        del sess
        n_params = sum(p.numel() for p in model.unet.parameters())
        manifest = {
            "model": "diffews", "variant": config, "backend": "onnxruntime", "precision": precision,
            "purpose": "workstation/GPU-server teacher (edgefss label); not an edge bundle",
            "graphs": {GRAPH: {"file": f"{GRAPH}.onnx", "weights": f"{GRAPH}.onnx.data", "input_names": INPUTS,
                               "output_names": OUTPUTS, "inputs": {"query_latent": ["B", 4, h, h],
                                                                   "support_latent": ["BK", 8, h, h]},
                               "outputs": {"v": ["B", 4, h, h]}, "dtype": np.dtype(np_dtype).name}},
            "teacher": {"imgsz": imgsz, "latent_scale": model.latent_scale, "timestep": 1, "x0": "-v",
                        "r_threshold": model.cfg.r_threshold, "unet_params": n_params,
                        "vae": "not in the bundle: decode x0 = -v with the SD2.1 VAE (latent / latent_scale)"},
            "weights": {"checkpoint": str(checkpoint) if checkpoint else None,
                        "random_init": checkpoint is None},
            "verification": {f"onnxruntime_{precision}": ver}, "opset": OPSET,
        }
        w.commit(manifest)
    log(f"bundle written: {out}")
    return out
