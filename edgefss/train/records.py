"""Find (image, mask, class) records in a data folder, whatever its known layout.

Layouts: an `index.csv` with columns image, mask and class (or coarse_class) — the shared
DAVIS and COCO-tiny folders; FSS-1000 / plain folders `class/x.jpg` + `class/x.png`; PerSeg
`Images/class/x.jpg` + `Annotations/class/x.png`. A folder holding several datasets is searched
recursively. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefss.errors import InputError
from edgefss.index_csv import read_index


@dataclass(frozen=True)
class Record:
    """One annotated image: `mask` is a binary PNG path (or None for image-level labels only)."""

    image: str
    mask: str | None
    cls: str


IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def _from_index(d: Path) -> list[Record]:
    return [Record(str(r.image), str(r.mask), r.cls) for r in read_index(d) if r.mask is not None]


def _from_perseg(d: Path) -> list[Record]:
    out = []
    for cdir in sorted((d / "Images").iterdir()):
        for img in sorted(cdir.glob("*.jpg")):
            m = d / "Annotations" / cdir.name / (img.stem + ".png")
            if m.is_file():
                out.append(Record(str(img), str(m), cdir.name.replace("_", " ")))
    return out


def _from_class_dirs(d: Path) -> list[Record]:
    out = []
    for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
        for img in sorted(cdir.iterdir()):
            if img.suffix.lower() in (".jpg", ".jpeg", ".bmp"):
                m = img.with_suffix(".png")
                if m.is_file():
                    out.append(Record(str(img), str(m), cdir.name.replace("_", " ")))
    return out


def find_records(root) -> list[Record]:
    """All records under `root`.

    Raises:
        InputError: the folder does not exist or holds no image/mask pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data: '{root}' is not a directory")
    recs = _walk(root, depth=0)
    if not recs:
        raise InputError(f"data: no image/mask pairs found under '{root}' (expected index.csv, "
                         "class/x.jpg + class/x.png, or PerSeg Images/ + Annotations/)")
    return recs


def _walk(d: Path, depth: int) -> list[Record]:
    if (d / "index.csv").is_file():
        return _from_index(d)
    if (d / "Images").is_dir() and (d / "Annotations").is_dir():
        return _from_perseg(d)
    recs = _from_class_dirs(d)
    if recs:
        return recs
    if depth >= 2:
        return []
    out = []
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(_walk(sub, depth + 1))
    return out
