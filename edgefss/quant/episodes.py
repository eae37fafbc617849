"""Calibration episodes: a query image and K support images of the same class.

FSS heads see a query *and* support features plus the support mask; calibrating on episodes
(not lone images) makes the correlation and Sinkhorn inputs cover the ranges they see when
deployed. Folders understood:

- a folder with `index.csv` (edgefss/index_csv.py: image, mask, class or coarse_class): DAVIS,
  COCO-tiny layout;
- `<root>/Images/<class>/*.jpg` + `<root>/Annotations/<class>/*.png` (PerSeg layout);
- `<root>/<class>/N.jpg` + `N.png` (FSS-1000 layout), masks optional;
- any folder of images (sub-folders = classes; no masks: the model's own pseudo-mask is used).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from edgefss.errors import InputError
from edgefss.index_csv import read_index

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# layout folder names that are never class names (issue 14: 'images', 'masks' became TLG classes)
IMAGE_FOLDERS = ("images", "image", "imgs", "img", "jpegimages", "photos")
MASK_FOLDERS = ("masks", "mask", "annotations", "labels", "gt", "segmentationclass", "segmentationobject")
DEFAULT_FOLDERS = ("davis2016_val_subset", "coco_tiny16", "fss1000_example_eiffel", "perseg_examples")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None
    cls: str


@dataclass(frozen=True)
class Episode:
    """One calibration/verification episode: K supports and one query of class `cls`."""

    cls: str
    support: tuple = field(default_factory=tuple)  # tuple[Sample]
    query: Sample | None = None


def shared_data_root() -> Path:
    """../shared/data next to the repository (or $EDGEFSS_SHARED_DATA)."""
    env = os.environ.get("EDGEFSS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def default_calib_folders() -> list[Path]:
    """The default calibration mix: the DAVIS, COCO-tiny, FSS-1000 and PerSeg folders."""
    root = shared_data_root()
    found = [root / f for f in DEFAULT_FOLDERS if (root / f).is_dir()]
    if not found:
        raise InputError(
            f"--int8 without --calib: no default calibration data under '{root}' "
            f"(expected folders {DEFAULT_FOLDERS}); pass --calib DIR with images of your classes"
        )
    return found


def _from_index(folder: Path) -> list[Sample]:
    return [Sample(r.image, r.mask, r.cls) for r in read_index(folder)]


def _mask_next_to(img: Path) -> Path | None:
    for ext in (".png",):
        m = img.with_suffix(ext)
        if m.is_file() and m != img:
            return m
    return None


def _scan(folder: Path) -> list[Sample]:
    if (folder / "index.csv").is_file():
        return _from_index(folder)
    if (folder / "Images").is_dir() and (folder / "Annotations").is_dir():
        out = []
        for cdir in sorted(p for p in (folder / "Images").iterdir() if p.is_dir()):
            for img in sorted(cdir.iterdir()):
                if img.suffix.lower() in IMAGE_EXT:
                    m = folder / "Annotations" / cdir.name / (img.stem + ".png")
                    out.append(Sample(img, m if m.is_file() else None, cdir.name))
        return out
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        root = Path(root)
        cls = root.name if root != folder else folder.name
        if root != folder and root.name.lower() in MASK_FOLDERS:
            continue  # `masks/` holds masks, not images (paired below by stem)
        if cls.lower() in IMAGE_FOLDERS:  # `<class>/images/`: a layout folder, not a class name
            cls = root.parent.name
        stems_with_jpg = {Path(f).stem for f in files if Path(f).suffix.lower() in (".jpg", ".jpeg")}
        for f in sorted(files):
            p = root / f
            if p.suffix.lower() not in IMAGE_EXT:
                continue
            # FSS-1000 keeps N.jpg beside its mask N.png: the PNG is a mask, not an image
            if p.suffix.lower() == ".png" and p.stem in stems_with_jpg:
                continue
            m = _mask_next_to(p) if p.suffix.lower() != ".png" else None
            if m is None and root.name.lower() in IMAGE_FOLDERS:  # <class>/masks/<stem>.png
                m = next((q for q in root.parent.glob(f"*/{p.stem}.png") if q.parent.name.lower() in MASK_FOLDERS),
                         None)
            out.append(Sample(p, m, cls))
    return out


def find_episodes(folders, n: int, shots: int = 1, seed: int = 0) -> list[Episode]:
    """Draw `n` episodes pairing images of the same class.

    Args:
        folders: a folder or list of folders (layouts in the module docstring).
        n: number of episodes; shots: supports per episode (K).
        seed: episodes are drawn reproducibly, round-robin over classes so a folder with many
            images of one class does not dominate.

    Returns:
        list of `n` Episode (fewer only if the folders hold fewer distinct pairs).

    Raises:
        InputError: a folder is missing or holds no class with at least shots+1 images.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    by_class: dict[str, list[Sample]] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"--calib: '{folder}' is not a directory; expected a folder of images")
        for s in _scan(folder):
            by_class.setdefault(f"{folder.name}/{s.cls}", []).append(s)
    usable = {k: v for k, v in sorted(by_class.items()) if len(v) >= shots + 1}
    if not usable:
        n_img = sum(len(v) for v in by_class.values())
        raise InputError(
            f"--calib: found {n_img} images in {[str(f) for f in folders]} but no class with at least "
            f"{shots + 1} images; episodes need a support and a query of the same class"
        )
    rng = random.Random(seed)
    pools = {k: rng.sample(v, len(v)) for k, v in usable.items()}
    keys = list(pools)
    rng.shuffle(keys)
    out, i, cursor = [], 0, {k: 0 for k in keys}
    max_eps = sum(len(v) // (shots + 1) for v in pools.values())
    while len(out) < min(n, max(max_eps, 1)):
        k = keys[i % len(keys)]
        i += 1
        pool, c = pools[k], cursor[k]
        if c + shots + 1 > len(pool):
            if all(cursor[q] + shots + 1 > len(pools[q]) for q in keys):
                break
            continue
        cursor[k] = c + shots + 1
        sup, q = pool[c:c + shots], pool[c + shots]
        out.append(Episode(cls=k.split("/", 1)[1], support=tuple(sup), query=q))
    return out
