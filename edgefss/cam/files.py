"""On-disk layout of offline CAM pseudo-masks (written by `edgefss pseudo-masks`, read by
`edgefss eval --query-pseudo cam`), torch-free.

    <out>/pseudo_masks.json                       the recipe: images root, targets, softmax classes and
                                                  their source, CLIP weights, size (50)
    <out>/<image path under --images, no ext>--<class>.npy
                                                  (50, 50) float32 in [0, 1], one per (image, class)

The per-(image, class) naming follows the official `<CAM_dir>/<img>--<cls>.pt`
(`generate_cam_voc.py:35`) with the class NAME (spaces as '_') instead of its index, and NumPy
instead of torch.save so a torch-free device can read it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from edgefss.errors import InputError

MANIFEST = "pseudo_masks.json"
FORMAT = "edgefss-cam-pseudo-masks/1"


def class_slug(name: str) -> str:
    from edgefss.text.prompts import canonical_name

    return canonical_name(name).replace(" ", "_")


def relative_key(image, images_root) -> str:
    """The image's path under images_root without its extension ('dog/00001'), '/'-separated.

    Raises:
        InputError: the image is not under images_root.
    """
    # absolute, NOT symlink-resolved: a dataset of links keeps its own names
    p, root = Path(os.path.abspath(image)), Path(os.path.abspath(images_root))
    try:
        rel = p.relative_to(root)
    except ValueError:
        raise InputError(f"image '{image}' is not under the pseudo-masks' --images folder '{root}'") from None
    return rel.with_suffix("").as_posix()


def mask_path(out_dir, key: str, cls: str) -> Path:
    return Path(out_dir) / f"{key}--{class_slug(cls)}.npy"


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, np.float32), allow_pickle=False)
    return buf.getvalue()


class CamDir:
    """A folder written by `edgefss pseudo-masks`.

    `query_masks(image_path, classes, hw)` -> list of (H, W) float32 maps, the 50x50 CAM stretched
    over the whole image (recipe.to_image_size), one per class: the `query_pseudo` of Segmenter.predict.
    """

    def __init__(self, root):
        self.root = Path(root)
        f = self.root / MANIFEST
        if not f.is_file():
            raise InputError(
                f"--cam-dir: '{self.root}' holds no {MANIFEST}; make the masks with "
                f"`edgefss pseudo-masks --images <dataset folder> --classes ... --out {self.root}`"
            )
        try:
            self.manifest = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--cam-dir: '{f}' could not be read: {exc}") from exc
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"--cam-dir: '{f}' is not an edgefss CAM manifest (format {FORMAT})")
        self.images_root = Path(self.manifest["images"])

    def load(self, image, cls: str) -> np.ndarray:
        """(50, 50) float32 CAM of `cls` on `image` (a path under the manifest's images folder)."""
        path = mask_path(self.root, relative_key(image, self.images_root), cls)
        if not path.is_file():
            raise InputError(
                f"--cam-dir: no CAM pseudo-mask for class '{cls}' on '{image}' (expected '{path}'); "
                f"the folder was made for classes {self.manifest.get('targets')}"
            )
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2 or arr.dtype != np.float32:
            raise InputError(f"--cam-dir: '{path}' holds {arr.dtype} {arr.shape}, expected a 2-D float32 map")
        return arr

    def query_masks(self, image, classes, hw) -> list[np.ndarray]:
        from edgefss.cam.recipe import to_image_size

        return [to_image_size(self.load(image, c), hw) for c in classes]
