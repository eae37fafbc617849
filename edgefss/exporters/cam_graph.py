"""The CLIP Grad-CAM pseudo-mask generator as a TLG bundle graph (`edgefss export --model tlg --pseudo cam`).

`cam.onnx`: `cam_image` (1, 3, R, R) float32 (edgefss.cam.recipe.preprocess), `cam_text` (K, D)
float32 unit rows (the softmax classes' 'a photo of a {c}' features), `cam_targets` (1, M) int64
-> `cam` (1, M, R/32, R/32) float32, the raw ReLU'd Grad-CAM (its gradient written as a forward
computation, edgefss/cam/gradient.py). K and M are dynamic. Pre/post-processing is NumPy/PIL/cv2
(edgefss.cam.recipe), shared with the PyTorch generator.

`cam_text.npz` ships the RN50 text features the runtime composes `cam_text` from: the bundle's
class names, the scene vocabulary and the VOC/COCO benchmark names (recipe.softmax_classes), so a
torch-free device needs no text tower for CAMs of those names. The runtime side is runtime/cam.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefss.cam import recipe
from edgefss.errors import StateError
from edgefss.exporters.graphs import GraphDef
from edgefss.exporters.onnx_export import export_graph, io_signature
from edgefss.exporters.verify import FP32_RTOL
from edgefss.runtime.cam import GRAPH_FILE, IMAGE, OUTPUT, TARGETS, TEXT, TEXT_FILE

# ONNX Runtime vs PyTorch on the post-processed maps (unit scale): the project's FP32 rule, rtol 1e-4
# x scale (exporters/verify.py); a full-size RN50 exceeds 1e-5 across engines (bench/cam_cost.py
# prints its figure). The 1e-5 parities are PyTorch vs PyTorch (tests/test_cam.py).
FP32_TOL = FP32_RTOL


class CamGraph(nn.Module):
    """(cam_image, cam_text, cam_targets) -> cam: `gradcam(features(x))` with the text as an input."""

    def __init__(self, image_model):
        super().__init__()
        self.image_model = image_model.eval()

    def forward(self, cam_image, cam_text, cam_targets):
        from edgefss.cam.gradient import gradcam

        return gradcam(self.image_model.attnpool, self.image_model.features(cam_image), cam_text, cam_targets)


def graph_def(image_model) -> GraphDef:
    # eval: torch.onnx.export restores the wrapper's train/eval mode on the shared tower afterwards
    return GraphDef(
        CamGraph(image_model).eval(),
        [IMAGE, TEXT, TARGETS],
        [OUTPUT],
        {TEXT: {0: "K"}, TARGETS: {1: "M"}, OUTPUT: {1: "M"}},
    )


def export_cam_graph(image_model, path, n_classes: int = 4) -> Path:
    """Export `cam.onnx` for `image_model` (ClipImageModel) to `path` (onnx.checker + op policy)."""
    r, d = image_model.cfg.input_resolution, image_model.cfg.output_dim
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(n_classes, d, generator=g), dim=-1)
    example = {
        IMAGE: torch.randn(1, 3, r, r, generator=g),
        TEXT: text,
        TARGETS: torch.tensor([[0, n_classes - 1]], dtype=torch.long),
    }
    return export_graph(graph_def(image_model), example, path)


def verify_cam_graph(gen, engine, images) -> dict:
    """The graph on `engine` (runtime session, graph 'cam') vs the PyTorch generator `gen` (CamGenerator)
    on `images` ((H, W, 3) uint8), every class of gen.classes a target.

    Returns:
        max_abs on the post-processed 50x50 maps; raw_rel: max-abs of the raw CAMs over their largest
        value (a saturated softmax makes the maps all zero, so the raw check is what stays informative);
        ref_max: the largest reference map value (near 0: the images gave no CAM response); passed.
    """
    worst, raw_diff, raw_max, ref_max, n = 0.0, 0.0, 0.0, 0.0, 0
    idx = torch.arange(len(gen.classes))[None]
    for img in images:
        x = recipe.preprocess(img, gen.resolution)[None]
        with torch.no_grad():
            raw = gen(torch.from_numpy(x), idx)[0].numpy()
        out = engine.run("cam", {IMAGE: x, TEXT: gen.text.numpy(), TARGETS: idx.numpy()})[OUTPUT][0]
        ref = recipe.postprocess(raw, gen.resolution)
        worst = max(worst, float(np.abs(recipe.postprocess(out, gen.resolution) - ref).max()))
        raw_diff = max(raw_diff, float(np.abs(out - raw).max()))
        raw_max, ref_max = max(raw_max, float(np.abs(raw).max())), max(ref_max, float(ref.max()))
        n += len(gen.classes)
    raw_rel = raw_diff / raw_max if raw_max > 0 else raw_diff
    return {"max_abs": worst, "raw_rel": raw_rel, "ref_max": ref_max, "tol": FP32_TOL, "maps": n,
            "passed": worst <= FP32_TOL and raw_rel <= FP32_TOL}


def cam_vocabulary(table_classes) -> list[str]:
    """Names whose RN50 text features a bundle ships: the table's classes, the scene vocabulary,
    the VOC and COCO benchmark names (official spellings), deduplicated by canonical name."""
    from edgefss.text.prompts import canonical_name

    names = (
        list(table_classes)
        + recipe.background_vocabulary()
        + list(recipe.IMR_VOC_CLASSES)
        + list(recipe.imr_coco_classes())
    )
    out, seen = [], set()
    for n in names:
        c = canonical_name(n)
        if c not in seen:
            seen.add(c)
            out.append(n)
    return out


def stage_cam_generator(
    clip_checkpoint, bpe_path, classes: str, table_classes, work: Path, writer, verify_images, log=print
) -> dict:
    """Export + verify the CAM graph and stage `cam.onnx` and `cam_text.npz` in the bundle writer.

    Args:
        clip_checkpoint: CLIP RN50 weights (image and text towers); None = random (warned).
        classes: the softmax list recipe: 'voc' | 'coco' | 'support+background'.
        table_classes: the bundle's class names (their text features are shipped).
        verify_images: (H, W, 3) uint8 images for the FP32 check.
    Returns:
        the manifest's "pseudo" entry.
    Raises:
        StateError: the graph differs from the PyTorch generator by more than FP32_TOL.
    """
    from edgefss.cam.generator import RANDOM_TEXT, build_cam_generator
    from edgefss.runtime.session import open_graphs

    names = cam_vocabulary(table_classes)
    gen = build_cam_generator(names[:1], names, clip_checkpoint=clip_checkpoint, bpe_path=bpe_path)
    path = export_cam_graph(gen.image_model, work / GRAPH_FILE)
    engine = open_graphs("onnxruntime", "fp32", {"cam": path}, device="cpu")
    # verified on the first 6 shipped names, every one a target (each CAM checked)
    check = type(gen)(gen.image_model, gen.text[:6], gen.classes[:6], gen.class_source, gen.text_source)
    ver = verify_cam_graph(check, engine, verify_images)
    log(
        f"verification cam onnxruntime vs PyTorch on {ver['maps']} CAMs: max-abs {ver['max_abs']:g}, raw "
        f"relative {ver['raw_rel']:g} (tol {ver['tol']:g}; largest map value {ver['ref_max']:.3g}): "
        f"{'PASS' if ver['passed'] else 'FAIL'}"
    )
    if not ver["passed"]:
        raise StateError(
            f"CAM graph verification failed: max-abs {ver['max_abs']:g}, raw relative {ver['raw_rel']:g} "
            f"(tol {ver['tol']:g}); bundle not written"
        )
    from edgefss.text.prompts import canonical_name

    np.savez_compressed(
        writer.path(TEXT_FILE),
        names=np.array([canonical_name(n) for n in names]),
        prompts=np.array(recipe.prompts(names)),
        embeddings=gen.text.numpy().astype(np.float32),
    )
    shutil.copyfile(path, writer.path(GRAPH_FILE))
    cfg = gen.image_model.cfg
    return {
        "kind": "cam",
        "file": GRAPH_FILE,
        "text": TEXT_FILE,
        "classes": classes,
        "class_source": {"voc": recipe.SOURCE_VOC, "coco": recipe.SOURCE_COCO}.get(
            classes, recipe.SOURCE_SUPPORT_BG
        ),
        "template": recipe.TEMPLATE,
        "resolution": int(cfg.input_resolution),
        "size": recipe.OUT_SIZE,
        "text_source": gen.text_source,
        "random_init": gen.text_source == RANDOM_TEXT,
        "clip_checkpoint": None if clip_checkpoint is None else str(clip_checkpoint),
        "recipe": "IMR-HSNet generate_cam_voc.py: CLIP RN50 Grad-CAM on visual.layer4[-1] (docs/cam.md)",
        "runs_on": "onnxruntime cpu (any bundle backend)",
        "verification": {"onnxruntime_fp32": ver},
        **io_signature(
            path,
            graph_def(gen.image_model).dynamic_axes,
            {
                IMAGE: (1, 3, cfg.input_resolution, cfg.input_resolution),
                TEXT: (len(names), cfg.output_dim),
                TARGETS: (1, 2),
                OUTPUT: (1, 2, cfg.grid, cfg.grid),
            },
        ),
    }


def verify_images(n: int = 2) -> list:
    """(H, W, 3) uint8 images of the packaged verification set (edgefss/data/verify) for the FP32 check."""
    from edgefss.imageio import load_image
    from edgefss.packaged import verification_folder

    files = sorted((verification_folder() / "images").glob("*.png"))[:n]
    return [load_image(f, "verification image") for f in files]
