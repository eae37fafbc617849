"""`edgefss label`: a teacher segments a folder of images; the masks feed `edgefss train`/`eval`.

Output folder (the `index.csv` layout of the shared COCO-tiny set, which `edgefss train --data`
(train/records.py) and `edgefss eval --data` (eval/datasets.py, kind coco_tiny) both read):

    OUT/index.csv                    image,mask,class (image paths relative to OUT)
    OUT/masks/<class>/<stem>.png     0 background, 255 the class (one binary mask per image and class)
    OUT/label_manifest.json          teacher, config, checkpoint hash, thresholds, supports

Every file is written atomically (edgefss.fsio); a mask that exists is complete, so a re-run
skips it (resume; Ctrl-C loses at most the mask being made). An image that cannot be read is
skipped with a warning, listed at the end, and retried by the next run. A re-run with other settings than the manifest's is refused, as is an OUT
that holds files this command did not write.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss.errors import InputError
from edgefss.fsio import OutputError, _why, check_not_input, write_bytes_atomic, write_png_atomic
from edgefss.train.records import IMG_EXT  # the images `edgefss train --data` reads back

MANIFEST = "label_manifest.json"


@dataclass(frozen=True)
class Support:
    """A support image of `cls`; `mask` a binary PNG path, or None (CST pseudo-mask)."""

    image: str
    cls: str
    mask: str | None = None


def class_dir(cls: str) -> str:
    """Folder name of a class (index_csv reads '_' back as a space). InputError for a name that
    would not be a folder of its own ('.', '..': masks would land outside masks/<class>/)."""
    name = cls.strip().replace(" ", "_").replace("/", "_").replace("\\", "_")
    if name in ("", ".", ".."):
        raise InputError(f"--support: class name {cls!r}; expected a name such as 'dog'")
    return name


def list_images(folder) -> list[Path]:
    """Images directly in `folder` (sorted). InputError when none, or two share a stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--images: '{folder}' is not a directory")
    imgs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXT)
    if not imgs:
        raise InputError(f"--images: no {'/'.join(IMG_EXT)} images in '{folder}'")
    seen: dict = {}
    for p in imgs:
        if p.stem in seen:
            raise InputError(f"--images: '{seen[p.stem].name}' and '{p.name}' would share the mask "
                             f"'{p.stem}.png'; rename one")
        seen[p.stem] = p
    return imgs


def file_digest(paths) -> str:
    """sha256 over the bytes of `paths` in order (the checkpoint hash in the manifest)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def checkpoint_files(checkpoint, vae_checkpoint) -> list[Path]:
    """The weight files a DiffewS checkpoint resolves to (what the hash covers)."""
    from edgefss.teacher.checkpoint import PROMPT_NAMES, find_part

    if checkpoint is None:
        return []
    root = Path(checkpoint)
    if root.is_file():
        return [root]
    vroot = Path(vae_checkpoint) if vae_checkpoint else root
    files = [find_part(root, "unet"), find_part(vroot, "vae") if (vroot / "vae").is_dir() else None]
    files += [r / n for r in dict.fromkeys([root, vroot]) for n in PROMPT_NAMES if (r / n).is_file()]
    return [f for f in files if f is not None]


class PseudoMasker:
    """Support masks from class names alone: the CST on-device pseudo-mask (CST.support_pseudo_mask,
    the official last-block CLS-attention rule, thresholded at CST_PSEUDO_THRESHOLD)."""

    def __init__(self, checkpoint=None, backbone_checkpoint=None, imgsz: int = 400):
        from edgefss.models import build_model

        self.imgsz = imgsz
        self.model = build_model("cst", checkpoint=checkpoint, backbone_checkpoint=backbone_checkpoint,
                                 imgsz=imgsz)

    def __call__(self, image) -> np.ndarray:
        """Image path -> (imgsz, imgsz) uint8 {0,1} pseudo-mask."""
        import torch

        from edgefss.config import PreprocessCfg
        from edgefss.transforms import preprocess

        x = torch.from_numpy(preprocess(image, PreprocessCfg(imgsz=self.imgsz)))
        with torch.no_grad():
            m = self.model.support_pseudo_mask(self.model.encode(x))
        return m[0].numpy().astype(np.uint8)


class DiffewSTeacher:
    """`segment(query_rgb, shots)` with a DiffewS model: K shots of one class, one query. The support
    pass (VAE latents + UNet key/value bank) is computed once per shot set and reused."""

    name = "diffews"

    def __init__(self, model):
        self.model = model
        self._banks: dict = {}  # id(shots) -> (shots, bank); one per class (~60 MB per shot at 512)

    def _support_bank(self, shots: list):
        import torch

        from edgefss.models.diffews import preprocess_image, preprocess_mask

        if id(shots) not in self._banks:
            S = self.model.cfg.imgsz
            imgs = torch.stack([preprocess_image(rgb, S) for rgb, _ in shots])
            masks = torch.stack([preprocess_mask(mask, S) for _, mask in shots])
            with torch.no_grad():
                bank = self.model.support_bank(self.model.support_latents(imgs, masks))
            self._banks[id(shots)] = (shots, bank)
        return self._banks[id(shots)][1]

    def segment(self, query_rgb: np.ndarray, shots: list) -> np.ndarray:
        """query_rgb (H,W,3) uint8; shots [(rgb (h,w,3) uint8, mask (h',w') {0,1})] -> (H,W) bool."""
        import torch

        from edgefss.models.diffews import preprocess_image

        bank = self._support_bank(shots)
        q = preprocess_image(query_rgb, self.model.cfg.imgsz)[None]
        with torch.no_grad():
            mask = self.model.predict_from_bank(q, bank)["mask"][0].numpy().astype(np.uint8)
        return _resize_nearest(mask, query_rgb.shape[:2]) > 0


def _resize_nearest(mask: np.ndarray, hw) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((int(hw[1]), int(hw[0])), Image.NEAREST))


def check_supports(supports: list) -> None:
    """InputError unless there is a support and every support image/mask is a file (before any model
    is built)."""
    if not supports:
        raise InputError("--support: give at least one IMG:CLASS")
    for s in supports:
        for p, flag in ((s.image, "--support"), (s.mask, "--support-mask")):
            if p is not None and not Path(p).is_file():
                raise InputError(f"{flag}: '{p}' is not a file")


def _check_out(out: Path, manifest: dict) -> None:
    """Refuse an OUT this command did not create, or one labelled with other settings."""
    mpath = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: '{out}' is a file; expected a labels folder (new, or one to resume)")
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"--out: '{mpath}' cannot be read as a label manifest ({exc}); "
                             "choose a new --out") from exc
        diff = [k for k in manifest if k != "progress" and old.get(k) != manifest[k]]
        if diff:
            raise InputError(f"--out '{out}' holds labels made with other settings ({', '.join(diff)} differ "
                             f"from {MANIFEST}); resume needs the same ones, or choose a new --out")
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"--out '{out}' exists and was not written by `edgefss label` (no {MANIFEST}); "
                         "choose a new or empty folder")


def _write_index(out: Path, rows: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "mask", "class"])
    w.writerows(rows)
    write_bytes_atomic(out / "index.csv", buf.getvalue().encode(), "index.csv")


def label(teacher, supports: list, images, out, meta: dict, pseudo=None, log=print,
          progress: bool = True) -> dict:
    """Label every image of `images` for every support class.

    Args:
        teacher: `segment(query_rgb, shots) -> (H,W) bool` (DiffewSTeacher).
        supports: [Support]; the shots of a class are its supports in the given order.
        images: folder of images to label. out: output folder (module docstring).
        meta: teacher facts for the manifest (teacher, config, checkpoint, hash, thresholds).
        pseudo: callable image path -> {0,1} mask, for supports without a mask (PseudoMasker).
    Returns:
        dict(labelled, skipped, rows, out, failed): `failed` lists the images that could not be read
        (each said in a warning line and left out of index.csv; a re-run retries them). With a
        single image its error is raised instead.
    """
    from tqdm import tqdm

    from edgefss.imageio import load_image, read_label_map

    out = Path(out)
    imgs = list_images(images)
    check_supports(supports)
    inputs = {s.image: "--support" for s in supports}
    inputs.update({s.mask: "--support-mask" for s in supports if s.mask})
    for p in (MANIFEST, "index.csv"):
        check_not_input(out / p, inputs)
    classes = list(dict.fromkeys(s.cls.strip() for s in supports))
    for c in classes:
        class_dir(c)  # a name that is no folder fails before anything is written
    manifest = dict(meta, supports=[{"image": str(Path(s.image).resolve()), "class": s.cls.strip(),
                                     "mask": str(Path(s.mask).resolve()) if s.mask else "cst-pseudo-mask"}
                                    for s in supports],
                    images=str(Path(images).resolve()), layout="index.csv: image,mask,class; masks 0/255")
    _check_out(out, manifest)
    # supports are read (and pseudo-masked) before anything is written: a bad one leaves no folder
    shots = {}
    for c in classes:
        shots[c] = []
        for s in (s for s in supports if s.cls.strip() == c):
            rgb = load_image(s.image, "--support")
            if s.mask is not None:
                m = (read_label_map(s.mask, "--support-mask") > 0).astype(np.uint8)
                if m.shape != rgb.shape[:2]:
                    raise InputError(f"--support-mask: '{s.mask}' is {m.shape[1]}x{m.shape[0]} but its "
                                     f"--support image '{s.image}' is {rgb.shape[1]}x{rgb.shape[0]}; "
                                     "expected a mask of the image's size")
            else:
                if pseudo is None:
                    raise InputError(f"--support {s.image}: no --support-mask and no pseudo-mask source")
                m = pseudo(s.image)
                log(f"support {Path(s.image).name} ({c}): CST pseudo-mask, {m.mean():.1%} foreground")
            shots[c].append((rgb, m))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out: cannot create '{out}': {_why(exc, out / 'x')}") from exc
    write_bytes_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(), MANIFEST)
    plan = [(img, c) for img in imgs for c in classes]
    rows, done, skipped, failed = [], 0, 0, []
    # disable=None: the bar is drawn on a terminal only (logs stay clean)
    bar = tqdm(plan, desc="label", unit="mask", disable=None if progress else True, file=sys.stderr)
    query = None
    for img, c in bar:
        if img in failed:
            continue
        mpath = out / "masks" / class_dir(c) / f"{img.stem}.png"
        if mpath.is_file():
            skipped += 1
        else:
            check_not_input(mpath, inputs, "mask")
            if query is None or query[0] != img:  # decoded once per image, not once per class
                try:
                    query = (img, load_image(img, "--images"))
                except InputError as exc:
                    if len(imgs) == 1:
                        raise
                    # one unreadable file does not lose the others; listed at the end, retried on resume
                    failed.append(img)
                    bar.write(f"edgefss label: warning: {exc}; skipped", file=sys.stderr)
                    continue
            mask = teacher.segment(query[1], shots[c])
            write_png_atomic(mpath, mask.astype(np.uint8) * 255, rgb=False, what="mask")
            done += 1
        rel_img = os.path.relpath(os.path.abspath(img), os.path.abspath(out))
        rows.append((rel_img, mpath.relative_to(out).as_posix(), class_dir(c)))
        if c == classes[-1]:  # after each image: an interrupted run leaves an index of finished masks
            _write_index(out, rows)
    _write_index(out, rows)
    log(f"[label] {done} masks written, {skipped} already there (resumed); index: {out / 'index.csv'}")
    return {"labelled": done, "skipped": skipped, "rows": len(rows), "out": out, "failed": [str(f) for f in failed]}
