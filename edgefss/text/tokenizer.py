"""CLIP's byte-level BPE tokenizer (torch-free), written from the published algorithm.

Pipeline per text: html-unescape, whitespace cleanup, lower-case, split with CLIP's regex into
words, map each word's UTF-8 bytes to printable unicode characters, apply the BPE merges in rank
order (the last symbol of a word carries the '</w>' end-of-word marker), look the symbols up in the
vocabulary, and wrap the ids in <|startoftext|> / <|endoftext|> (49406 / 49407 with the official
merges file), zero-padded to the context length (77).

The merges file (`bpe_simple_vocab_16e6.txt.gz`, ~1.3 MB) ships with OpenAI `clip` and
`open_clip`. It is never downloaded: pass its path, or have one of those packages installed (found
with importlib.util.find_spec, so torch is not imported). ftfy is used when installed, as CLIP does;
without it, text that needs mojibake repair may tokenize differently (plain ASCII prompts do not).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgefss.errors import InputError

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
# The official vocabulary uses the first 49152 - 256 - 2 merges; ids = 512 byte symbols + merges + 2.
_MAX_MERGES = 49152 - 256 - 2

try:  # CLIP's own pattern needs the `regex` module for \p{L} / \p{N}
    import regex as _re_mod

    _PATTERN = _re_mod.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        _re_mod.IGNORECASE,
    )
except ImportError:
    # Standard-library equivalent: [^\W\d_] = letters, \d = digits, the last class = everything that
    # is neither whitespace nor letter/digit (underscore included, as in \p-based CLIP).
    _PATTERN = re.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
        re.IGNORECASE,
    )


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values to a printable unicode character (GPT-2 / CLIP scheme).

    Printable Latin-1 bytes map to themselves; the rest are shifted to code points 256+n so BPE
    symbols never contain whitespace or control characters.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def clean_text(text: str) -> str:
    """CLIP's basic_clean + whitespace_clean + lower()."""
    try:
        import ftfy  # optional; CLIP applies it first

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def find_bpe_file(bpe_path=None) -> Path:
    """Locate the merges file: the given path, $EDGEFSS_CLIP_BPE, or an installed clip/open_clip.

    Raises:
        InputError: no file found (the message says how to provide one).
    """
    if bpe_path is not None:
        p = Path(bpe_path)
        if not p.is_file():
            raise InputError(f"bpe_path: CLIP merges file not found: '{p}' (expected {BPE_FILENAME})")
        return p
    env = os.environ.get("EDGEFSS_CLIP_BPE")
    if env:
        return find_bpe_file(env)
    for pkg in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(pkg)  # locates the package without executing it
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            cand = Path(loc) / BPE_FILENAME
            if cand.is_file():
                return cand
    raise InputError(
        f"bpe_path: the CLIP merges file {BPE_FILENAME} was not given and no installed 'clip' or "
        "'open_clip' package provides it; pass bpe_path=<file> or set EDGEFSS_CLIP_BPE "
        "(it ships inside the open_clip_torch wheel: open_clip/" + BPE_FILENAME + ")"
    )


def _read_merges(path: Path) -> list[tuple[str, str]]:
    raw = path.read_bytes()
    try:
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"bpe_path: '{path}' is not a (gzipped) UTF-8 CLIP merges file: {exc}") from exc
    lines = text.split("\n")[1 : _MAX_MERGES + 1]  # line 0 is the '#version' header
    merges = []
    for i, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"bpe_path: '{path}' line {i} is not a merge pair 'a b': {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    if not merges:
        raise InputError(f"bpe_path: '{path}' holds no merges")
    return merges


class ClipTokenizer:
    """CLIP BPE tokenizer.

    Args:
        bpe_path: merges file (.txt.gz or .txt); None = search (see find_bpe_file).
    """

    def __init__(self, bpe_path=None):
        self.path = find_bpe_file(bpe_path)
        merges = _read_merges(self.path)
        self.byte_encoder = bytes_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT]
        self.eot_id = self.encoder[EOT]
        self._cache = {SOT: SOT, EOT: EOT}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> list[str]:
        """Apply the merges to one word (already byte-mapped); returns its symbols."""
        if token in self._cache:
            return self._cache[token].split(" ")
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            # Merge the lowest-ranked adjacent pair everywhere it occurs, as in the reference BPE.
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = " ".join(word)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without SOT/EOT."""
        ids = []
        for tok in _PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(mapped))
        return ids

    def decode(self, ids) -> str:
        """Inverse of encode (SOT/EOT/padding dropped); word ends become spaces."""
        byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in (0, self.sot_id, self.eot_id))
        return bytearray(byte_decoder[c] for c in text).decode("utf-8", "replace").replace("</w>", " ").strip()

    def __call__(self, texts, context_length: int = CONTEXT_LENGTH, truncate: bool = False) -> np.ndarray:
        """Tokenize a string or list of strings.

        Returns:
            (N, context_length) int64 ids: SOT, tokens, EOT, zero padding. The EOT holds the
            largest id of each row, which is how the text model finds it (argmax).

        Raises:
            InputError: a text is too long and truncate=False, or an entry is not a string.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{row}]: expected a string, got {type(text).__name__}")
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > context_length:
                if not truncate:
                    raise InputError(
                        f"texts[{row}]: {len(ids)} tokens exceed the context length {context_length}: {text[:60]!r}"
                    )
                ids = ids[:context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out
