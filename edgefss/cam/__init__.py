"""CLIP Grad-CAM pseudo-masks from a class name (the IMR-HSNet / TLG-line generator).

Public API (torch):

    from edgefss.cam import build_cam_generator
    gen = build_cam_generator(targets, classes="support+background" | "voc" | "coco" | [names...],
                              clip_checkpoint=None | "RN50.pt", bpe_path=None)
    masks = gen(image, targets)   # image (H,W,3) uint8 RGB, targets list[str] -> (M,50,50) float32 in [0,1]
    raw = gen(x, idx)             # x (B,3,224,224) float32 (recipe.preprocess), idx (B,M) int64 -> (B,M,7,7)

    edgefss.cam.recipe.to_image_size(mask50, (H, W)) -> (H, W) float32: the 50x50 map stretched over
    the whole image (the official quirk: it was computed on the 224 centre crop).

Torch-free parts (runtime): edgefss.cam.recipe (class lists, preprocess, postprocess). The gradient
is a forward computation (edgefss.cam.gradient), so the generator exports to ONNX. See docs/cam.md.
This package's __init__ stays torch-free: the torch modules are imported on first use.
"""

from edgefss.cam.recipe import (  # noqa: F401
    IMR_VOC_CLASSES,
    TEMPLATE,
    background_vocabulary,
    postprocess,
    preprocess,
    softmax_classes,
    to_image_size,
)


def build_cam_generator(*args, **kwargs):
    """See edgefss.cam.generator.build_cam_generator (needs torch)."""
    from edgefss.cam.generator import build_cam_generator as build

    return build(*args, **kwargs)


__all__ = [
    "IMR_VOC_CLASSES",
    "TEMPLATE",
    "background_vocabulary",
    "build_cam_generator",
    "postprocess",
    "preprocess",
    "softmax_classes",
    "to_image_size",
]
