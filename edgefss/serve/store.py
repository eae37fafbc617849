"""Support sets as files addressed by a content hash, shared by every server process.

A support set is one zip file `<id>.zip` in the support folder holding the uploaded bytes as
sent (images, optional masks) and `support.json` (class names, file names, creation time). The
id is the SHA-256 of the class names and of each image/mask's bytes, so the same upload gives
the same id in any process, and a file whose contents do not hash to its name is refused.
Writes go to a temp file in the same folder and are renamed into place (atomic on POSIX), so a
reader in another process sees either no file or the whole file. Processes keep their own
encoded copies (edgefss.serve.engines); the file only holds what is needed to rebuild them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ID_RE = re.compile(r"^[0-9a-f]{64}$")
FORMAT = 1


@dataclass(frozen=True)
class SupportSet:
    """A stored support set: images[i] (encoded bytes) shows classes[i]; masks[i] is PNG bytes or None."""

    id: str
    classes: tuple
    images: tuple
    masks: tuple
    created: float = 0.0

    def summary(self) -> dict:
        return {
            "id": self.id,
            "classes": list(dict.fromkeys(self.classes)),
            "image_classes": list(self.classes),
            "shots": len(self.images),
            "masks": sum(m is not None for m in self.masks),
            "created": self.created,
        }


def content_id(classes, images, masks) -> str:
    """SHA-256 hex over the class names and each image's / mask's bytes (order matters)."""
    h = hashlib.sha256(b"edgefss-support-v1\0")
    for c, img, m in zip(classes, images, masks):
        for part in (
            c.encode("utf-8"),
            hashlib.sha256(img).digest(),
            b"" if m is None else hashlib.sha256(m).digest(),
        ):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


class SupportStore:
    """The support folder: put / get / list / delete support sets by id (see the module docstring)."""

    def __init__(self, folder, max_sets: int = 10_000):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_sets = max_sets

    def path(self, sid: str) -> Path:
        if not ID_RE.match(sid):
            raise KeyError(sid)
        return self.folder / f"{sid}.zip"

    def exists(self, sid: str) -> bool:
        try:
            return self.path(sid).is_file()
        except KeyError:
            return False

    def content(self, classes, images, masks) -> SupportSet:
        """The SupportSet (with its id) for uploaded bytes, not stored yet."""
        classes, images, masks = tuple(classes), tuple(images), tuple(masks)
        return SupportSet(content_id(classes, images, masks), classes, images, masks, round(time.time(), 3))

    def put(self, s: SupportSet) -> tuple[SupportSet, bool]:
        """Store a support set from `content`; returns (it, created). An identical stored set is reused.

        Raises:
            OverflowError: the folder already holds max_sets support sets.
        """
        sid = s.id
        path = self.path(sid)
        if path.is_file():
            try:
                return self.get(sid), False
            except ValueError:
                pass  # corrupt: replace it with the good copy below
        elif sum(1 for _ in self.folder.glob("*.zip")) >= self.max_sets:
            raise OverflowError(f"the support folder holds {self.max_sets} sets (server flag --max-supports)")
        classes, images, masks = s.classes, s.images, s.masks
        meta = {
            "format": FORMAT,
            "id": sid,
            "classes": list(classes),
            "created": s.created,
            "images": [f"image_{i}" for i in range(len(images))],
            "masks": [None if m is None else f"mask_{i}" for i, m in enumerate(masks)],
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{sid[:16]}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:  # images are compressed already
                    z.writestr("support.json", json.dumps(meta))
                    for i, img in enumerate(images):
                        z.writestr(f"image_{i}", img)
                    for i, m in enumerate(masks):
                        if m is not None:
                            z.writestr(f"mask_{i}", m)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return s, True

    def get(self, sid: str) -> SupportSet:
        """Read and verify a support set. Raises KeyError when absent, ValueError when corrupt."""
        path = self.path(sid)
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("support.json"))
                images = tuple(z.read(n) for n in meta["images"])
                masks = tuple(None if n is None else z.read(n) for n in meta["masks"])
        except FileNotFoundError:
            raise KeyError(sid) from None
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ValueError(f"support set {sid}: '{path}' is corrupt ({exc})") from None
        classes = tuple(meta["classes"])
        if content_id(classes, images, masks) != sid:
            raise ValueError(f"support set {sid}: '{path}' does not hash to its name (modified on disk)")
        return SupportSet(sid, classes, images, masks, float(meta.get("created", 0.0)))

    def summaries(self) -> list[dict]:
        """SupportSet.summary() of every stored set, oldest first, from each file's support.json only
        (listing does not read or hash the images; `get` verifies a set when it is used)."""
        out = []
        for p in self.folder.glob("*.zip"):
            if not ID_RE.match(p.stem):
                continue
            try:
                with zipfile.ZipFile(p) as z:
                    meta = json.loads(z.read("support.json"))
                classes = list(meta["classes"])
                out.append({"id": p.stem, "classes": list(dict.fromkeys(classes)), "image_classes": classes,
                            "shots": len(meta["images"]), "masks": sum(m is not None for m in meta["masks"]),
                            "created": float(meta.get("created", 0.0))})
            except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError):
                continue  # being deleted, or unreadable: skipped, never deleted
        return sorted(out, key=lambda d: (d["created"], d["id"]))

    def delete(self, sid: str) -> bool:
        """Remove a support set file; False when it was not there."""
        try:
            self.path(sid).unlink()
            return True
        except (FileNotFoundError, KeyError):
            return False
