"""Few-shot evaluation datasets: PASCAL-5i, COCO-20i, FSS-1000, plain folders and the shared
sets (DAVIS subset, COCO-tiny, FSS example, PerSeg), all as one `FewShotDataset` (torch-free).

Two kinds of masks exist:
- label maps (PASCAL `SegmentationClassAug`, HSNet-converted COCO): one PNG per image whose
  values are class ids; PASCAL boundaries are 255 and are ignored (spec §6.3);
- binary masks, one per (image, class): values {0,1} or {0,255}, any non-zero is foreground.
A class that an image has no mask for is absent from it (used by FS-CS episodes).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefss.errors import InputError
from edgefss.index_csv import read_index
from edgefss.transforms import load_image

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")
KINDS = ("auto", "pascal", "coco", "fss", "folder", "davis", "coco_tiny", "perseg")

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
# COCO category names in the order of HSNet's class ids 1..80 (one list, shared with the prompts).
from edgefss.text.prompts import COCO_CLASSES  # noqa: E402


@dataclass(frozen=True)
class Item:
    """One (image, class) annotation.

    image/mask: file paths. label: the class's value in a label-map mask, None for a binary
    mask. group: supports are taken from another group than the query when one exists (DAVIS:
    the video sequence, so a support never shows the query's own object instance).
    """

    image: str
    mask: str
    cls: str
    label: int | None = None
    group: str = ""


@dataclass
class FewShotDataset:
    """Annotated images of the evaluated classes.

    Attributes:
        name: layout name ("pascal", "davis", ...).
        classes: evaluated class names (the metric's columns).
        items: every (image, class) annotation.
        query_order: "cycle" (episode i takes query i mod len, as HSNet PASCAL) or
            "class_uniform" (draw a class, then an image, as HSNet COCO).
        ignore_label: label-map value excluded from the metrics (255 for PASCAL), or None.
    """

    name: str
    root: str
    classes: list[str]
    items: list[Item]
    query_order: str = "cycle"
    ignore_label: int | None = None
    by_class: dict = field(init=False, repr=False)
    by_image: dict = field(init=False, repr=False)

    def __post_init__(self):
        if not self.items:
            raise InputError(f"dataset '{self.root}' ({self.name}): no image/mask pairs found")
        self.by_class = defaultdict(list)
        self.by_image = defaultdict(dict)
        for it in self.items:
            self.by_class[it.cls].append(it)
            self.by_image[it.image][it.cls] = it
        missing = [c for c in self.classes if c not in self.by_class]
        if missing:
            raise InputError(f"dataset '{self.root}' ({self.name}): no images for classes {missing}")

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, item: Item) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the item's image."""
        return load_image(item.image, f"{self.name} image")

    def load_gt(self, query: Item, cls: str) -> tuple[np.ndarray, np.ndarray | None]:
        """GT of class `cls` on the query image.

        Returns:
            (mask (H, W) uint8 {0,1}, ignore (H, W) bool or None). The mask is all zeros when
            the image has no annotation of `cls`.
        """
        if query.label is not None:
            arr = read_png(query.mask, f"{self.name} label map")
            label = self._label_of(cls)
            fg = (arr == label).astype(np.uint8)
            ign = (arr == self.ignore_label) if self.ignore_label is not None else None
            return fg, ign
        it = self.by_image[query.image].get(cls)
        if it is None:
            h, w = read_png(query.mask, f"{self.name} mask").shape
            return np.zeros((h, w), np.uint8), None
        return (read_png(it.mask, f"{self.name} mask") > 0).astype(np.uint8), None

    def load_support_mask(self, item: Item) -> np.ndarray:
        """(H, W) uint8 {0,1} mask of the item's own class (ignored pixels are background)."""
        return self.load_gt(item, item.cls)[0]

    def _label_of(self, cls: str) -> int:
        for it in self.by_class.get(cls, ()):
            return it.label
        names = PASCAL_CLASSES if self.name == "pascal" else COCO_CLASSES
        return names.index(cls) + 1


def read_png(path: str, name: str = "mask") -> np.ndarray:
    """Read a mask PNG as an (H, W) integer array of its stored values.

    Palette (P-mode) PNGs give their indices, not palette colours (why PIL and not OpenCV,
    whose IMREAD_UNCHANGED expands palettes to BGR). RGB masks give their first channel.
    """
    from edgefss.imageio import read_label_map

    return read_label_map(path, name)  # the one reader: EXIF orientation like the images


# ------------------------------------------------------------------------------------- layouts


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _index_csv(root: Path, name: str) -> FewShotDataset:
    items = []
    for r in read_index(root):
        if r.mask is None:
            raise InputError(f"{root / 'index.csv'}: {r.image.name} has no mask; evaluation needs one per row")
        items.append(Item(str(r.image), str(r.mask), r.cls, group=r.group))
    return FewShotDataset(name, str(root), sorted({i.cls for i in items}), items)


def load_davis(root: Path) -> FewShotDataset:
    """`davis2016_val_subset`: index.csv (image, mask, sequence, coarse_class); class = coarse class,
    group = sequence, so supports come from another video of the class when there is one."""
    return _index_csv(root, "davis")


def load_coco_tiny(root: Path) -> FewShotDataset:
    """`coco_tiny16`: index.csv (image, mask, class); one binary mask per (image, class)."""
    return _index_csv(root, "coco_tiny")


def load_perseg(root: Path) -> FewShotDataset:
    """PerSeg: `Images/<class>/<n>.jpg` + `Annotations/<class>/<n>.png`."""
    items = []
    for cdir in sorted(p for p in (root / "Images").iterdir() if p.is_dir()):
        for img in sorted(cdir.iterdir()):
            m = root / "Annotations" / cdir.name / (img.stem + ".png")
            if img.suffix.lower() in IMG_EXT and m.is_file():
                items.append(Item(str(img), str(m), _pretty(cdir.name)))
    return FewShotDataset("perseg", str(root), sorted({i.cls for i in items}), items)


def load_folder(root: Path, class_list: list[str] | None = None, name: str = "folder") -> FewShotDataset:
    """Plain folder / FSS-1000: `<class>/<image>.jpg` + `<class>/<image>.png` (binary masks).

    class_list: restrict to these class folders (FSS-1000 test split), else all of them.
    """
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_list is not None:
        have = {d.name for d in dirs}
        missing = [c for c in class_list if c not in have]
        if missing:
            raise InputError(f"{name} '{root}': split lists {len(missing)} class folders that do not exist, "
                             f"e.g. {missing[:3]}")
        keep = set(class_list)
        dirs = [d for d in dirs if d.name in keep]
    items = []
    for cdir in dirs:
        for img in sorted(cdir.iterdir()):
            if img.suffix.lower() in (".jpg", ".jpeg", ".bmp") and img.with_suffix(".png").is_file():
                items.append(Item(str(img), str(img.with_suffix(".png")), _pretty(cdir.name)))
    if not items:
        raise InputError(f"{name} '{root}': no <class>/<image>.jpg + <class>/<image>.png pairs found")
    return FewShotDataset(name, str(root), sorted({i.cls for i in items}), items)


def _splits_dir(root: Path, splits: str | None, sub: str) -> Path:
    cands = [Path(splits)] if splits else [root / "splits", root.parent / "splits"]
    for c in cands:
        if (c / sub).is_dir():
            return c / sub
    raise InputError(f"split files '{sub}/' not found in {[str(c) for c in cands]}; pass --splits DIR "
                     "(the folder holding pascal/, coco/, fss/ split files)")


def load_pascal(root: Path, fold: int, splits: str | None = None) -> FewShotDataset:
    """PASCAL-5i val fold: VOC2012 `JPEGImages` + `SegmentationClassAug`, split lines `image__cc`.

    root may be the VOC2012 folder or its parent. Episodes cycle through the split lines.
    """
    voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
    for sub in ("JPEGImages", "SegmentationClassAug"):
        if not (voc / sub).is_dir():
            raise InputError(f"pascal '{root}': folder '{sub}' not found (expected VOC2012/{sub})")
    split = _splits_dir(root, splits, "pascal") / "val" / f"fold{fold}.txt"
    if not split.is_file():
        raise InputError(f"pascal: split file '{split}' not found (fold must be 0..3)")
    items = []
    for line in split.read_text().split():
        img, _, cc = line.partition("__")
        label = int(cc)
        items.append(Item(str(voc / "JPEGImages" / f"{img}.jpg"), str(voc / "SegmentationClassAug" / f"{img}.png"),
                          PASCAL_CLASSES[label - 1], label))
    classes = [PASCAL_CLASSES[fold * 5 + i] for i in range(5)]
    return FewShotDataset("pascal", str(root), classes, items, ignore_label=255)


def load_coco(root: Path, fold: int, splits: str | None = None) -> FewShotDataset:
    """COCO-20i val fold (interleaved split): `val2014/*.jpg`, HSNet masks `annotations/val2014/*.png`.

    root may be the COCO2014 folder or its parent. Episodes draw the class uniformly.
    """
    coco = root / "COCO2014" if (root / "COCO2014").is_dir() else root
    if not (coco / "annotations").is_dir():
        raise InputError(f"coco '{root}': folder 'annotations/' not found (expected COCO2014/annotations/val2014/*.png)")
    split = _splits_dir(root, splits, "coco") / "val" / f"fold{fold}.json"
    if not split.is_file():
        raise InputError(f"coco: split file '{split}' not found (fold must be 0..3)")
    lists = json.loads(split.read_text())
    items = []
    for k, paths in lists.items():
        label = int(k) + 1
        for rel in paths:
            stem = Path(rel).stem
            items.append(Item(str(coco / rel), str(coco / "annotations" / Path(rel).parent.name / f"{stem}.png"),
                              COCO_CLASSES[label - 1], label))
    classes = [COCO_CLASSES[4 * k + fold] for k in range(20)]
    return FewShotDataset("coco", str(root), classes, items, query_order="class_uniform")


def load_fss(root: Path, splits: str | None = None, split: str = "test") -> FewShotDataset:
    """FSS-1000: `<class>/<n>.jpg` + `<n>.png`; uses `fss/<split>.txt` when a split folder is
    found, else every class folder under root."""
    try:
        sdir = _splits_dir(root, splits, "fss")
    except InputError:
        return load_folder(root, name="fss")
    names = (sdir / f"{split}.txt").read_text().split()
    present = [n for n in names if (root / n).is_dir()]
    return load_folder(root, present if present else None, name="fss")


def detect_kind(root: Path) -> str:
    """Guess the layout of `root` (see KINDS)."""
    if (root / "index.csv").is_file():
        header = (root / "index.csv").read_text().splitlines()[0].split(",")
        return "davis" if "coarse_class" in header else "coco_tiny"
    if (root / "Images").is_dir() and (root / "Annotations").is_dir():
        return "perseg"
    if (root / "JPEGImages").is_dir() or (root / "VOC2012").is_dir():
        return "pascal"
    if (root / "COCO2014").is_dir() or ((root / "annotations").is_dir() and (root / "val2014").is_dir()):
        return "coco"
    return "folder"


def load_dataset(root, kind: str = "auto", fold: int = 0, splits: str | None = None) -> FewShotDataset:
    """Load an evaluation dataset.

    Args:
        root: dataset folder.
        kind: one of KINDS; "auto" detects it.
        fold: PASCAL-5i / COCO-20i test fold 0..3.
        splits: folder with the split files (pascal/, coco/, fss/); default root/splits or
            root/../splits.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data: '{root}' is not a directory")
    if kind not in KINDS:
        raise InputError(f"--dataset: '{kind}' is not one of {KINDS}")
    if fold not in (0, 1, 2, 3):
        raise InputError(f"--fold: {fold} is not one of 0, 1, 2, 3")
    if kind == "auto":
        kind = detect_kind(root)
    if kind == "pascal":
        return load_pascal(root, fold, splits)
    if kind == "coco":
        return load_coco(root, fold, splits)
    if kind == "fss":
        return load_fss(root, splits)
    if kind == "davis":
        return load_davis(root)
    if kind == "coco_tiny":
        return load_coco_tiny(root)
    if kind == "perseg":
        return load_perseg(root)
    return load_folder(root)
