"""TextTable: precomputed CLIP text embeddings per class (torch-free to read; torch only to build).

Stored as `text_table.npz` in a bundle: `classes` (N,) str, `support`, `query_fg`, `query_bg`
(N, D) float32 unit vectors (D = 512 for TLG), `source` 0-d str. At inference a class name is
looked up here, so no text encoder runs on the device.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss.errors import BundleError, CheckpointError, InputError
from edgefss.text.prompts import TEMPLATE, canonical_name, default_classes, resolve_prompts

__all__ = ["RANDOM_SOURCE", "TextTable", "build_text_table", "default_classes"]

RANDOM_SOURCE = "random (no CLIP weights)"
_FIELDS = ("support", "query_fg", "query_bg")
_NORM_TOL = 1e-3


@dataclass
class TextTable:
    """Per-class text embeddings.

    Attributes:
        classes: (N,) str canonical class names (normalised, see prompts.canonical_name).
        support / query_fg / query_bg: (N, D) float32, rows L2-normalised.
        source: where the vectors come from ('clip ViT-B/32 <file>' or RANDOM_SOURCE).
    """

    classes: np.ndarray
    support: np.ndarray
    query_fg: np.ndarray
    query_bg: np.ndarray
    source: str

    def __post_init__(self):
        self.classes = np.asarray(self.classes, dtype=str)
        for f in _FIELDS:
            setattr(self, f, np.asarray(getattr(self, f), dtype=np.float32))
        problem = _problem(self)
        if problem:
            raise InputError(f"TextTable: {problem}")

    @property
    def dim(self) -> int:
        return int(self.support.shape[1])

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM_SOURCE

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def __contains__(self, name) -> bool:
        try:
            return canonical_name(name) in set(self.classes.tolist())
        except InputError:
            return False

    def index(self, class_name) -> int:
        """Row of `class_name` (any case / '_' spelling). Raises InputError listing close matches."""
        n = canonical_name(class_name)
        names = self.classes.tolist()
        if n in names:
            return names.index(n)
        hint = close_matches_hint(n, names)
        raise InputError(
            f"class name {class_name!r} is not in the text table ({len(names)} classes){hint} "
            "Rebuild the table with this class: build_text_table(class_names=[...])."
        )

    def lookup(self, class_name) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(support, query_fg, query_bg), each (D,) float32, for one class."""
        i = self.index(class_name)
        return self.support[i], self.query_fg[i], self.query_bg[i]

    def lookup_many(self, class_names) -> dict[str, np.ndarray]:
        """Head inputs for a support set: {'support','query_fg','query_bg'} each (B, D) float32."""
        rows = [self.index(c) for c in class_names]
        return {f: getattr(self, f)[rows] for f in _FIELDS}

    def save(self, path) -> Path:
        """Write an .npz atomically (fsio.write_bytes_atomic: temp file in the same folder, then rename).

        Raises:
            edgefss.fsio.OutputError: the file cannot be written (names the path and why).
        """
        from edgefss.fsio import write_bytes_atomic

        buf = io.BytesIO()  # a file object keeps numpy from appending '.npz'
        np.savez(buf, classes=self.classes, source=np.array(self.source), **{f: getattr(self, f) for f in _FIELDS})
        return write_bytes_atomic(path, buf.getvalue(), what="text table")

    @classmethod
    def load(cls, path, dim: int | None = 512) -> TextTable:
        """Read and validate a table written by save().

        Args:
            dim: required embedding size (512 for TLG); None accepts any.

        Raises:
            InputError: the file does not exist.
            BundleError: not an npz, missing arrays, wrong dtype/shape, non-finite or non-unit rows.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"text table: file not found: '{path}'")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("classes", "source") + _FIELDS if k not in z.files]
                if missing:
                    raise BundleError(f"text table '{path}': missing arrays {missing}")
                data = {k: z[k] for k in ("classes", "source") + _FIELDS}
        except BundleError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise BundleError(f"text table '{path}' is not a readable .npz file: {exc}") from exc
        if data["classes"].dtype.kind != "U" or data["source"].dtype.kind != "U" or data["source"].ndim != 0:
            raise BundleError(f"text table '{path}': 'classes' must be a str array and 'source' a str scalar")
        for f in _FIELDS:
            if data[f].dtype != np.float32:
                raise BundleError(f"text table '{path}': '{f}' is {data[f].dtype}, expected float32")
        table = object.__new__(cls)  # skip __post_init__ so the error names the file and is a BundleError
        table.classes, table.source = data["classes"], str(data["source"])
        for f in _FIELDS:
            setattr(table, f, data[f])
        problem = _problem(table)
        if not problem and dim is not None and table.dim != dim:
            problem = f"embeddings are {table.dim}-d, expected {dim}-d (TLG uses CLIP ViT-B/32 text, 512-d)"
        if problem:
            raise BundleError(f"text table '{path}': {problem}")
        return table


def close_matches_hint(name: str, names: list) -> str:
    """'; did you mean: a, b?' for up to 5 names close to `name` (canonical), or ''."""
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return f"; did you mean: {', '.join(close)}?" if close else ""


def _problem(t: TextTable) -> str | None:
    """First inconsistency of a table, or None."""
    if t.classes.ndim != 1 or len(t.classes) == 0:
        return f"'classes' must be a non-empty 1-D array, got shape {t.classes.shape}"
    names = t.classes.tolist()
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        return f"duplicate classes {dup}"
    for f in _FIELDS:
        a = getattr(t, f)
        if a.ndim != 2 or a.shape[0] != len(names) or a.shape != t.support.shape:
            return f"'{f}' has shape {a.shape}, expected ({len(names)}, D) like 'support' {t.support.shape}"
        if not np.isfinite(a).all():
            return f"'{f}' holds NaN/inf values"
        bad = np.abs(np.linalg.norm(a, axis=1) - 1.0) > _NORM_TOL
        if bad.any():
            return f"'{f}' rows are not unit-norm (first bad class: {names[int(np.argmax(bad))]!r})"
    return None


def _random_unit(text: str, dim: int) -> np.ndarray:
    """Deterministic stand-in embedding: a unit Gaussian vector seeded by sha256 of the text."""
    seed = int.from_bytes(hashlib.sha256(f"{dim}:{text}".encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def build_text_table(class_names=None, clip_checkpoint=None, bpe_path=None, prompts=None,
                     template: str = TEMPLATE, dim: int = 512, batch_size: int = 64) -> TextTable:
    """Embed every class's (refine, fg, bg) prompts once.

    Args:
        class_names: names in any spelling; None = default_classes().
        clip_checkpoint: OpenAI CLIP `ViT-B-32.pt` or an open_clip state dict; None = random stand-ins.
        bpe_path: CLIP merges file (see tokenizer.find_bpe_file); only used with a checkpoint.
        prompts: per-class overrides, see prompts.resolve_prompts.
        template: CLIP prompt template; TLG uses 'a clean origami {}.'.
        dim: embedding size required by the head (512 for TLG).

    Returns:
        TextTable; with a checkpoint the rows are CLIP features at EOT, projected and L2-normalised
        (zeroshot_classifier with a single template).

    Raises:
        CheckpointError: unreadable checkpoint or its text tower is not `dim`-d.
        InputError: bad class names/prompts, missing merges file.
    """
    triples = resolve_prompts(default_classes() if class_names is None else class_names, prompts)
    names = list(triples)
    texts = {f: [triples[n].texts(template)[j] for n in names] for j, f in enumerate(_FIELDS)}
    if clip_checkpoint is None:
        warnings.warn(
            "build_text_table: no CLIP checkpoint given, text embeddings are deterministic RANDOM unit "
            "vectors. TLG predictions are meaningless until you rebuild the table with the CLIP "
            "ViT-B/32 weights (clip_checkpoint=ViT-B-32.pt).",
            stacklevel=2,
        )
        arrays = {f: np.stack([_random_unit(t, dim) for t in texts[f]]) for f in _FIELDS}
        return TextTable(np.array(names), source=RANDOM_SOURCE, **arrays)
    arrays = _encode_with_clip(texts, clip_checkpoint, bpe_path, dim, batch_size)
    return TextTable(np.array(names), source=f"clip ViT-B/32 {Path(clip_checkpoint).name}", **arrays)


def _encode_with_clip(texts: dict, clip_checkpoint, bpe_path, dim: int, batch_size: int) -> dict:
    from edgefss.errors import require

    torch = require("torch", "building a text table from CLIP weights")
    from tqdm import tqdm

    from edgefss.text.clip_text import load_clip_text
    from edgefss.text.tokenizer import ClipTokenizer

    model = load_clip_text(clip_checkpoint)
    if model.cfg.embed_dim != dim:
        raise CheckpointError(
            f"clip_checkpoint: '{clip_checkpoint}' gives {model.cfg.embed_dim}-d text features, the head "
            f"needs {dim}-d (TLG uses CLIP ViT-B/32; RN50 gives 1024-d)"
        )
    tok = ClipTokenizer(bpe_path)
    if tok.vocab_size != model.cfg.vocab_size:
        raise InputError(
            f"bpe_path: the merges file gives {tok.vocab_size} tokens but the checkpoint's vocabulary has "
            f"{model.cfg.vocab_size}; use the merges file that belongs to this CLIP model"
        )
    out = {}
    total = sum(len(v) for v in texts.values())
    with torch.no_grad(), tqdm(total=total, desc="CLIP text", unit="prompt", leave=False) as bar:
        for f, items in texts.items():
            chunks = []
            for i in range(0, len(items), batch_size):
                ids = tok(items[i : i + batch_size], context_length=model.cfg.context_length)
                # The causal mask keeps padding after EOT from reaching the EOT feature, so the
                # batch can be cut to its longest prompt (same result, ~5x less compute).
                ids = ids[:, : int((ids != 0).sum(axis=1).max())]
                chunks.append(model.encode(torch.from_numpy(ids)).numpy())
                bar.update(len(items[i : i + batch_size]))
            out[f] = np.concatenate(chunks).astype(np.float32)
    return out
