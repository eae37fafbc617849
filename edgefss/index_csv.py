"""The one reader of a data folder's `index.csv` (DAVIS subset, COCO-tiny layout), torch-free.

Used by evaluation (eval/datasets.py), calibration/verification episodes (quant/episodes.py) and
training records (train/records.py), so the three read the same rows with the same class names.

Columns: `image` and `mask` (paths relative to the folder), the class in `class` or, when that
column is absent or empty, `coarse_class` (DAVIS); `sequence`, when present, is the row's group
(the video a frame comes from). Class names are written with spaces (`traffic_light` ->
`traffic light`), the spelling of the text tables and the metrics' columns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edgefss.errors import InputError

CLASS_COLUMNS = ("class", "coarse_class")


@dataclass(frozen=True)
class IndexRow:
    """One row: absolute `image`/`mask` paths (mask None when the row has none), class, group."""

    image: Path
    mask: Path | None
    cls: str
    group: str = ""


def has_index(folder) -> bool:
    return (Path(folder) / "index.csv").is_file()


def read_index(folder) -> list[IndexRow]:
    """Rows of `folder/index.csv`.

    Raises:
        InputError: no image column value or no class (`class` / `coarse_class`) in a row, naming
            the file and the row.
    """
    folder = Path(folder)
    path = folder / "index.csv"
    rows = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
            cls = next((row[c] for c in CLASS_COLUMNS if row.get(c)), None)
            if not row.get("image") or not cls:
                raise InputError(f"{path}: line {n} lacks an image or a class (columns image and "
                                 f"{' or '.join(CLASS_COLUMNS)}); got {dict(row)}")
            rows.append(IndexRow(folder / row["image"], folder / row["mask"] if row.get("mask") else None,
                                 cls.replace("_", " "), row.get("sequence") or ""))
    return rows
