"""The IMR-HSNet CLIP Grad-CAM recipe, torch-free: constants, class lists, pre- and post-processing.

Shared by the PyTorch generator (edgefss.cam.generator), the offline CLI and the on-device runtime
(edgefss.runtime), so every path sees the same pixels and the same normalisation. Citations are
to `Whileherham/IMR-HSNet@5757227`; see docs/cam.md for the full derivation.

Preprocessing (`clip.py:65-72`, `_transform(224)` applied to a PIL image, `generate_cam_voc.py:23-24`):
  Resize(224, BICUBIC) on the shorter side (torchvision on a PIL image: PIL `resize` with the
  antialiased bicubic filter; the long side is `int(224 * long / short)`, and an image whose short
  side already is 224 is left as is), CenterCrop(224) (offsets `int(round((size - 224) / 2))`),
  ToTensor (/255), Normalize(CLIP mean/std). QUIRK: the CAM only sees this centre crop, yet the
  50x50 map is later used as the mask of the WHOLE image (the IMR-HSNet loader feeds it for the
  400x400-stretched image, `data/pascal.py:62-80`): on a non-square image the crop's CAM is
  stretched over the full frame, and what lies outside the crop never gets a CAM response.

Post-processing of the raw layer-4 CAM (`pytorch_grad_cam/base_cam.py:115-160`,
`generate_cam_voc.py:32-33`): cam[cam < 0] = 0; cam -= min; cam /= (1e-7 + max); cv2.resize to
(224, 224) (INTER_LINEAR); max(., 0); cam -= min; cam /= (1e-7 + max); cv2.resize to (50, 50).
"""

from __future__ import annotations

import numpy as np

from edgefss.errors import InputError

TEMPLATE = "a photo of a {}"  # generate_cam_voc.py:20, generate_cam_coco.py:49 (no final period)
LOGIT_SCALE = 100.0  # model_clip.py:479: softmax(100 * cos), the fixed 100, not the checkpoint's logit_scale
EPS = 1e-7  # base_cam.py:153
OUT_SIZE = 50  # generate_cam_voc.py:33
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # clip.py:71
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# generate_cam_voc.py:10-13, the spellings the prompts use ('diningtable', not 'dining table')
IMR_VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

SOURCE_VOC = "dataset:voc"
SOURCE_COCO = "dataset:coco"
SOURCE_SUPPORT_BG = "support+background"
SOURCE_GIVEN = "given"


def imr_coco_classes() -> tuple:
    """generate_cam_coco.py:10-23: the 80 COCO names in HSNet's id order (= edgefss COCO_CLASSES)."""
    from edgefss.text.prompts import COCO_CLASSES

    return tuple(COCO_CLASSES)


def background_vocabulary() -> list[str]:
    """Background words for a user's own class names: edgefss's scene vocabulary
    (edgefss.text.background.background_vocabulary: the released TLG scene words plus the built-in
    table's co-occurring background prompts), canonical, deduplicated, in its order."""
    from edgefss.text.background import background_vocabulary as scene_words
    from edgefss.text.prompts import canonical_name

    return list(dict.fromkeys(canonical_name(w) for w in scene_words()))


def softmax_classes(targets, classes="support+background") -> tuple[list[str], str]:
    """The class list the softmax(100 cos) runs over, and where it comes from.

    Args:
        targets: the class names CAMs are wanted for (a support set's names).
        classes: "voc" / "coco" (the benchmark's list, official spellings and order), "support+background"
            (the targets then every background_vocabulary() word that is not a target), or an explicit
            list of names (must contain every target).

    Returns:
        (names as put into the template, source: 'dataset:voc' | 'dataset:coco' | 'support+background' |
        'given').

    Raises:
        InputError: no targets, an unknown keyword, or a target missing from the list.
    """
    from edgefss.text.prompts import canonical_name

    targets = [canonical_name(t) for t in targets]
    if not targets:
        raise InputError("classes: expected at least one target class name, got none")
    if isinstance(classes, str):
        key = classes.strip().lower()
        if key == "voc":
            names, source = list(IMR_VOC_CLASSES), SOURCE_VOC
        elif key == "coco":
            names, source = list(imr_coco_classes()), SOURCE_COCO
        elif key == SOURCE_SUPPORT_BG:
            t = list(dict.fromkeys(targets))
            names, source = t + [w for w in background_vocabulary() if w not in t], SOURCE_SUPPORT_BG
        else:
            raise InputError(
                f"softmax classes: '{classes}' is not 'voc', 'coco', '{SOURCE_SUPPORT_BG}' or a list"
            )
    else:
        names, source = [str(c) for c in classes], SOURCE_GIVEN
        if not names:
            raise InputError("softmax classes: the given list is empty")
    target_index(targets, names)  # every target must be in the list
    return names, source


def target_index(targets, names) -> list[int]:
    """Index of each target in `names`, matching canonical spellings ('dining table' = 'diningtable').

    Raises:
        InputError: a target not in the list (named, with the list's first entries).
    """
    from edgefss.text.prompts import canonical_name

    canon = {}
    for i, n in enumerate(names):
        canon.setdefault(canonical_name(n), i)
    out = []
    for t in targets:
        c = canonical_name(t)
        if c not in canon:
            raise InputError(
                f"class '{t}': not in the CAM softmax class list ({', '.join(list(names)[:8])}"
                f"{' …' if len(names) > 8 else ''}); add it or use the support+background list"
            )
        out.append(canon[c])
    return out


def prompts(names) -> list[str]:
    """'a photo of a {c}' for each softmax class, as the official generator tokenizes them."""
    return [TEMPLATE.format(n) for n in names]


def preprocess(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 CLIP input: the official `_transform(size)`, PIL image.

    Raises:
        InputError: not an (H, W, 3) uint8 array.
    """
    from edgefss.errors import require

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"image: expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    Image = require("PIL.Image", "CAM preprocessing")
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:  # torchvision returns the image untouched when the short side already fits
        new_long = int(size * long / short)
        img = img.resize((size, new_long) if w <= h else (new_long, size), Image.BICUBIC)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _minmax(cam: np.ndarray) -> np.ndarray:
    cam = cam - np.min(cam)
    return (cam / (np.float32(EPS) + np.max(cam))).astype(np.float32)


def postprocess(cam: np.ndarray, size: int = 224, out_size: int = OUT_SIZE) -> np.ndarray:
    """Raw layer-4 Grad-CAM(s) (..., g, g) -> (..., out_size, out_size) float32 in [0, 1], the official
    steps (module docstring). `size` is the CLIP input resolution the first resize goes to."""
    from edgefss.errors import require

    cv2 = require("cv2", "CAM post-processing")
    cam = np.asarray(cam, np.float32)
    lead = cam.shape[:-2]
    flat = cam.reshape((-1,) + cam.shape[-2:])
    out = np.empty((flat.shape[0], out_size, out_size), np.float32)
    for i, c in enumerate(flat):
        c = np.where(c < 0, np.float32(0), c)
        c = cv2.resize(_minmax(c), (size, size), interpolation=cv2.INTER_LINEAR)
        c = _minmax(np.maximum(c, 0))
        out[i] = cv2.resize(c, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    return out.reshape(lead + (out_size, out_size))


def to_image_size(cam: np.ndarray, hw: tuple) -> np.ndarray:
    """A (50, 50) CAM -> (H, W) float32 over the whole image (the quirk: the centre crop's map is
    stretched over the full frame, as the IMR-HSNet loader pairs it with the stretched image);
    bilinear, align_corners=True, as every edgefss map resize."""
    from edgefss.transforms import resize_prob

    return resize_prob(np.asarray(cam, np.float32), tuple(hw)).astype(np.float32)
