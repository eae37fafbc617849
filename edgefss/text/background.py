"""Co-occurring backgrounds of a class TLG has never seen: "maximum matching" on a background vocabulary.

TLG's query branch fuses the class prompt with a co-occurring background prompt ('sky,runway' for
aeroplane). The released code (jarch-ma/TLG, model/clip_text.py) hand-writes one background prompt
per VOC/COCO class (mostly two comma-joined scene words) and also defines a scene vocabulary
(`voc_background_category`, `coco_background_category`) that no code path uses; the paper says the
backgrounds were found by "maximum matching". For a name outside the bundle's table edgefss does
that matching on the device (docs/open_vocabulary.md):

    scores_w = cos(e_class, e_w) for every word w of the vocabulary (e = CLIP text embedding of
               TEMPLATE.format(text), computed at export for the words, on first use for the class)
    bg       = ",".join(the BG_TOPK best-scoring words, best first)   -> embedded like any prompt

Words that are the class name or one of its words are skipped (an unseen 'lake' does not get the
background 'lake'). Ties keep vocabulary order. Torch-free.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss.errors import BundleError, InputError
from edgefss.text.prompts import BUILTIN_PROMPTS, GENERIC_BG, TEMPLATE, canonical_name

BG_TOPK = 2  # the released background prompts join two scene words ('sky,runway', 'water,harbor')
BACKGROUND_FILE = "background_vocab.npz"

# The scene nouns of the released code's (unused) background category lists, VOC and COCO merged
# (COCO's list is VOC's without 'keyboard' and 'sign'): plain English words, listed here as data.
RELEASED_SCENE_WORDS = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
    "street", "valley", "bridge", "sign",
)


def background_vocabulary() -> list[str]:
    """The vocabulary shipped with a bundle: RELEASED_SCENE_WORDS, then every word of the built-in
    table's background prompts (prompts.BUILTIN_PROMPTS[*].bg split on ','), first occurrence kept,
    GENERIC_BG's words left out (they name no scene)."""
    generic = {w.strip() for w in GENERIC_BG.split(",")}
    words = list(RELEASED_SCENE_WORDS)
    for t in BUILTIN_PROMPTS.values():
        words += [w.strip() for w in t.bg.split(",") if w.strip()]
    return [w for w in dict.fromkeys(words) if w not in generic]


def match_backgrounds(class_vec: np.ndarray, vocab: BackgroundVocab, class_name: str,
                      k: int = BG_TOPK) -> list[str]:
    """Maximum matching: the k vocabulary words whose embeddings have the largest cosine with
    `class_vec` ((D,) float32, unit norm), best first; the class's own words are skipped."""
    own = set(canonical_name(class_name).split())
    own.add(canonical_name(class_name))
    scores = vocab.embeddings @ np.asarray(class_vec, np.float32)
    order = np.argsort(-scores, kind="stable")
    out = [str(vocab.words[i]) for i in order if str(vocab.words[i]) not in own]
    return out[:k]


@dataclass
class BackgroundVocab:
    """Scene words and their CLIP text embeddings (the template applied), as shipped in a bundle.

    Attributes:
        words: (V,) str. embeddings: (V, D) float32, unit rows. template: the prompt template used.
        k: words joined into one background prompt.
    """

    words: np.ndarray
    embeddings: np.ndarray
    template: str = TEMPLATE
    k: int = BG_TOPK

    def __post_init__(self):
        self.words = np.asarray(self.words, dtype=str)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        problem = self.problem()
        if problem:
            raise InputError(f"BackgroundVocab: {problem}")

    def problem(self) -> str | None:
        w, e = self.words, self.embeddings
        if w.ndim != 1 or len(w) < self.k:
            return f"expected at least {self.k} words in a 1-D array, got shape {w.shape}"
        if len(set(w.tolist())) != len(w):
            return "duplicate words"
        if e.ndim != 2 or e.shape[0] != len(w):
            return f"embeddings have shape {e.shape}, expected ({len(w)}, D)"
        if not np.isfinite(e).all() or (np.abs(np.linalg.norm(e, axis=1) - 1.0) > 1e-3).any():
            return "embeddings must be finite unit rows"
        if "{}" not in self.template or not 1 <= int(self.k) <= len(w):
            return f"template {self.template!r} must hold '{{}}' and k {self.k} lie in [1, {len(w)}]"
        return None

    def save(self, path) -> Path:
        """Write an .npz atomically (fsio.write_bytes_atomic: temp file in the same folder, then rename).

        Raises:
            edgefss.fsio.OutputError: the file cannot be written (names the path and why).
        """
        from edgefss.fsio import write_bytes_atomic

        buf = io.BytesIO()
        np.savez(buf, words=self.words, embeddings=self.embeddings, template=np.array(self.template),
                 k=np.array(int(self.k)))
        return write_bytes_atomic(path, buf.getvalue(), what="background vocabulary")

    @classmethod
    def load(cls, path, dim: int | None = None) -> BackgroundVocab:
        """Read a vocabulary written by save(). BundleError names the file and what is wrong."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("words", "embeddings", "template", "k") if k not in z.files]
                if missing:
                    raise BundleError(f"background vocabulary '{path}': missing arrays {missing}")
                words, emb, template, k = z["words"], z["embeddings"], z["template"], z["k"]
        except BundleError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise BundleError(f"background vocabulary '{path}' is not a readable .npz file: {exc}") from exc
        if words.dtype.kind != "U" or emb.dtype != np.float32 or template.dtype.kind != "U" or k.dtype.kind != "i":
            raise BundleError(f"background vocabulary '{path}': expected str words, float32 embeddings, "
                              "a str template and an int k")
        v = object.__new__(cls)
        v.words, v.embeddings, v.template, v.k = words, emb, str(template), int(k)
        problem = v.problem()
        if not problem and dim is not None and emb.shape[1] != dim:
            problem = f"embeddings are {emb.shape[1]}-d, the text table's are {dim}-d"
        if problem:
            raise BundleError(f"background vocabulary '{path}': {problem}")
        return v
