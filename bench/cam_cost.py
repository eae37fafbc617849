"""Cost of the CLIP Grad-CAM pseudo-mask generator vs TLG's backbone prior, for a 400 px query.

    python bench/cam_cost.py [--repeat 5] [--classes 1,5] [--threads N] [--out runs/bench_cam_cost.json]

Rows (median ms over interleaved repeats, bench/_harness.time_interleaved, so load on a shared
machine hits every row alike; random weights: the cost does not depend on their values):
  tlg backbone 400        TLG.encode of one 400x400 image (ResNet-50): the features every query needs anyway
  prior 400               TLG.prior from those features (query + 1 support): the default pseudo-mask,
                          its marginal cost (the baseline of the ratios)
  cam torch M=m           CamGenerator(image, m classes): PIL preprocessing of the 400 px image to the
                          224 centre crop, CLIP RN50 forward, the Grad-CAM gradient as a forward
                          computation (edgefss/cam/gradient.py), post-processing to 50x50
  cam autograd M=1        the same CAM with torch.autograd's backward instead (what the official
                          pytorch_grad_cam does), one class
  cam onnx M=m            runtime/cam.py CamPseudo.masks: the exported cam.onnx on ONNX Runtime CPU, with the
                          same pre/post-processing (what a --pseudo cam bundle runs per query)
Ratios are against "prior 400" and "tlg backbone 400" of the same run. Also prints the max-abs
difference of the ONNX and PyTorch CAMs (full-size random RN50). Prints the load average
before and after (a shared machine: compare ratios, not ms).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--classes", default="1,5", help="numbers of target classes per CAM call")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_cam_cost.json")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    from edgefss.cam import recipe
    from edgefss.cam.generator import build_cam_generator
    from edgefss.exporters.cam_graph import export_cam_graph
    from edgefss.imageio import load_image
    from edgefss.models.tlg import tlg_resnet50
    from edgefss.runtime.cam import IMAGE, OUTPUT, TARGETS, TEXT
    from edgefss.runtime.session import open_graphs
    from edgefss.transforms import normalize, resize_image
    from edgefss.config import PreprocessCfg

    img = load_image(REPO.parent / "shared" / "data" / "coco_tiny16" / "images" / "000000318219.jpg")
    img = np.asarray(resize_image(img, 400))  # the 400 px query
    counts = [int(c) for c in a.classes.split(",")]
    names = ["person", "dog", "cat", "car", "horse", "bird", "boat", "sofa"][: max(counts)]
    gen = build_cam_generator(names, "support+background")
    tlg = tlg_resnet50(imgsz=400).eval()
    x400 = torch.from_numpy(normalize(img, PreprocessCfg(imgsz=400)))
    with torch.no_grad():
        feats = tlg.encode(x400)
    work = Path(tempfile.mkdtemp())
    export_cam_graph(gen.image_model, work / "cam.onnx")
    engine = open_graphs("onnxruntime", "fp32", {"cam": work / "cam.onnx"}, threads=a.threads, device="cpu")
    text = gen.text.numpy()

    def onnx_cam(m):
        idx = np.array([list(range(m))], np.int64)
        x = recipe.preprocess(img, 224)[None]
        return recipe.postprocess(engine.run("cam", {IMAGE: x, TEXT: text, TARGETS: idx})[OUTPUT][0], 224)

    def autograd_cam():
        x = torch.from_numpy(recipe.preprocess(img, 224))[None]
        with torch.enable_grad():
            x4 = gen.image_model.features(x).detach().requires_grad_(True)
            y = gen.image_model.pool(x4)
            p = (100 * torch.nn.functional.normalize(y, dim=-1) @ gen.text.t()).softmax(-1)
            (g,) = torch.autograd.grad(p[0, 0], x4)
        cam = torch.relu((g.mean((2, 3), keepdim=True) * x4).sum(1))
        return recipe.postprocess(cam.detach().numpy(), 224)

    def backbone():
        with torch.no_grad():
            tlg.encode(x400)

    fns = {"tlg backbone 400": backbone, "prior 400": lambda: tlg.prior(feats, feats)}
    for m in counts:
        fns[f"cam torch M={m}"] = lambda m=m: gen(img, names[:m])
    fns["cam autograd M=1"] = autograd_cam
    for m in counts:
        fns[f"cam onnx M={m}"] = lambda m=m: onnx_cam(m)
    m = max(counts)
    agree = float(np.abs(gen(img, names[:m]) - onnx_cam(m)).max())  # the graph vs PyTorch, full-size RN50
    print(f"cam onnx vs cam torch on this image, {m} classes: max-abs {agree:.3g} on the 50x50 maps")
    load0 = os.getloadavg()
    res = H.time_interleaved(fns, warmup=1, repeat=a.repeat)
    load1 = os.getloadavg()
    base, bb = res["prior 400"]["median"], res["tlg backbone 400"]["median"]
    print(
        f"load average before {load0[0]:.2f}, after {load1[0]:.2f}; torch threads {torch.get_num_threads()}"
    )
    print(f"{'row':22s} {'median ms':>10s} {'p90 ms':>8s} {'x prior':>8s} {'x backbone':>10s}")
    for k, v in res.items():
        print(
            f"{k:22s} {v['median']:10.1f} {v['p90']:8.1f} {v['median'] / base:8.1f} {v['median'] / bb:10.2f}"
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": res,
                "onnx_vs_torch_max_abs": agree,
                "load": [load0[0], load1[0]],
                "repeat": a.repeat,
                "threads": torch.get_num_threads(),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
