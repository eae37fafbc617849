"""The CLIP RN50 Grad-CAM pseudo-mask generator (IMR-HSNet `generate_cam_voc.py`) in PyTorch.

`CamGenerator(image (H,W,3) uint8, targets: list[str]) -> (M, 50, 50) float32 in [0,1]`: one
pseudo-mask per target class, computed as the official generator does (edgefss.cam.recipe for the
pre/post-processing, edgefss.cam.gradient for the gradient, written as a forward computation).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefss.cam import recipe
from edgefss.cam.gradient import gradcam
from edgefss.models.clip_image import ClipImageConfig, ClipImageModel, build_clip_image

RANDOM_TEXT = "random (no CLIP weights)"


class CamGenerator(nn.Module):
    """Grad-CAM pseudo-masks from class names.

    Attributes:
        image_model: ClipImageModel (RN50 for the official recipe).
        text: (K, D) float32 buffer, unit-norm CLIP text features of `classes` ('a photo of a {c}').
        classes: the softmax class list (prompt spellings); class_source: where it comes from
            (recipe.SOURCE_*); text_source: which CLIP weights made `text`.
    """

    def __init__(
        self,
        image_model: ClipImageModel,
        text: torch.Tensor,
        classes,
        class_source: str,
        text_source: str = "",
    ):
        super().__init__()
        text = torch.as_tensor(text, dtype=torch.float32)
        if text.ndim != 2 or text.shape[0] != len(classes) or text.shape[1] != image_model.cfg.output_dim:
            raise ValueError(
                f"text: expected ({len(classes)}, {image_model.cfg.output_dim}) features, "
                f"got {tuple(text.shape)}"
            )
        self.image_model = image_model.eval()
        self.register_buffer("text", text, persistent=False)
        self.classes = list(classes)
        self.class_source = class_source
        self.text_source = text_source

    @property
    def resolution(self) -> int:
        return self.image_model.cfg.input_resolution

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Raw CAMs, no autograd anywhere (the exportable part).

        Args:
            x: (B, 3, R, R) float32 from recipe.preprocess (R = the tower's input resolution, 224).
            targets: (B, M) int64 indices into `classes`.
        Returns:
            (B, M, R/32, R/32) float32: ReLU(sum_c w_c A_c), before recipe.postprocess.
        """
        x4 = self.image_model.features(x)
        return gradcam(self.image_model.attnpool, x4, self.text, targets)

    def target_indices(self, targets) -> list[int]:
        return recipe.target_index(targets, self.classes)

    @torch.no_grad()
    def __call__(self, image, targets) -> np.ndarray:
        """(H, W, 3) uint8 RGB image, target class names -> (M, 50, 50) float32 pseudo-masks in [0, 1]
        (the official 50x50 map of the 224 centre crop; recipe.to_image_size stretches it over the image)."""
        if isinstance(image, torch.Tensor):  # nn.Module.__call__ with tensors: the raw forward
            return super().__call__(image, targets)
        idx = torch.tensor([self.target_indices(targets)], dtype=torch.long)
        x = torch.from_numpy(recipe.preprocess(image, self.resolution))[None]
        raw = self.forward(x, idx)[0].numpy()
        return recipe.postprocess(raw, self.resolution)


def encode_prompts(clip_checkpoint, names, bpe_path=None) -> torch.Tensor:
    """(K, D) unit-norm CLIP text features of 'a photo of a {c}' for each name (edgefss's text tower)."""
    from edgefss.errors import InputError
    from edgefss.text.clip_text import load_clip_text
    from edgefss.text.tokenizer import ClipTokenizer

    model = load_clip_text(clip_checkpoint)
    tok = ClipTokenizer(bpe_path)
    if tok.vocab_size != model.cfg.vocab_size:
        raise InputError(
            f"bpe_path: the merges file gives {tok.vocab_size} tokens but the checkpoint's "
            f"vocabulary has {model.cfg.vocab_size}"
        )
    ids = tok(recipe.prompts(names), context_length=model.cfg.context_length)
    with torch.no_grad():
        return model.encode(torch.from_numpy(np.asarray(ids)))


def build_cam_generator(
    targets,
    classes="support+background",
    clip_checkpoint=None,
    bpe_path=None,
    cfg: ClipImageConfig | None = None,
    seed: int = 0,
) -> CamGenerator:
    """The generator for `targets` with its softmax class list.

    Args:
        targets: class names CAMs will be asked for (a support set's names).
        classes: "voc" | "coco" | "support+background" | an explicit list (recipe.softmax_classes).
        clip_checkpoint: OpenAI `RN50.pt` or an open_clip RN50 state dict (image AND text towers);
            None = seeded random towers (warned: the masks are then meaningless).
        bpe_path: CLIP merges file (edgefss.text.tokenizer); only used with a checkpoint.
        cfg: random tower size (tests); ignored with a checkpoint.
    """
    from edgefss.text.table import _random_unit

    names, source = recipe.softmax_classes(targets, classes)
    image_model = build_clip_image(clip_checkpoint, cfg=cfg, seed=seed)
    if clip_checkpoint is None:
        warnings.warn(
            "CAM generator: no CLIP checkpoint, text features are deterministic RANDOM unit vectors",
            stacklevel=2,
        )
        dim = image_model.cfg.output_dim
        text = torch.from_numpy(np.stack([_random_unit(p, dim) for p in recipe.prompts(names)]))
        text_source = RANDOM_TEXT
    else:
        text = encode_prompts(clip_checkpoint, names, bpe_path)
        text_source = f"clip {Path(clip_checkpoint).name}"
    return CamGenerator(image_model, text, names, source, text_source)
