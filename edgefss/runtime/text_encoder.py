"""Open vocabulary on the device: the TLG bundle's text table, plus its CLIP text tower when exported.

A TLG bundle always carries `text_table.npz` (the class names frozen at export). One exported with
`edgefss export --model tlg --text-encoder` also carries (manifest key "text_encoder"):
- `text_encoder.onnx`: the CLIP text tower, `text_ids` (N, T) int64 -> `text_embed` (N, D) float32
  unit rows (FP32, or INT8 QDQ with its gate, exporters/text_graph.py);
- the CLIP merges file (`clip_bpe.txt.gz`) for the torch-free tokenizer (text/tokenizer.py);
- `background_vocab.npz`: scene words and their embeddings for the maximum matching (text/background.py).

`OpenVocabText` is what the TLG adapter looks class names up in (`index`, `lookup`, `classes`):
a table name gives its table rows; any other name, with the tower, gives rows computed on first
use and cached, in memory and on disk (`EDGEFSS_TEXT_CACHE`, see `default_cache_dir`); without the
tower, an InputError with close matches and the exact export command that adds the tower.

Prompts for a name outside the table: its built-in triple when text/prompts.py has one (refine, fg,
bg all embedded by the tower); otherwise refine = fg = the bare name in the template ('a clean
origami {name}.') and bg = the top-2 background words by maximum matching with the class embedding,
joined with ',' and embedded. The tower runs on ONNX Runtime on the CPU whatever the bundle's
backend (it runs once per new name; onnxruntime is a core dependency). Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss.errors import BundleError, InputError
from edgefss.fsio import write_bytes_atomic
from edgefss.text.background import BackgroundVocab, match_backgrounds
from edgefss.text.prompts import BUILTIN_PROMPTS, PromptTriple, canonical_name, check_printable
from edgefss.text.table import TextTable, close_matches_hint

MANIFEST_KEY = "text_encoder"
GRAPH = "text_encoder"
INPUT, OUTPUT = "text_ids", "text_embed"
_OFF = ("", "0", "off", "none", "false", "no")


def default_cache_dir() -> Path | None:
    """Where embeddings of new names are kept between runs: $EDGEFSS_TEXT_CACHE (a folder; 'off'
    keeps them in memory only), else ~/.cache/edgefss/text (created by edgefss, said once)."""
    env = os.environ.get("EDGEFSS_TEXT_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env)
    return Path.home() / ".cache" / "edgefss" / "text"


def export_command(manifest: dict, bundle_dir) -> str:
    """The `edgefss export` command that re-creates this bundle with the CLIP text tower added
    (same model, backend, precision, size and weights; CLIP files as placeholders when unknown)."""
    o = manifest.get("export_options") or {}
    parts = ["edgefss", "export", "--model", str(manifest.get("model", "tlg"))]
    if o.get("checkpoint"):
        parts += ["--checkpoint", str(o["checkpoint"])]
    parts += ["--backend", str(manifest.get("backend", "onnxruntime"))]
    if manifest.get("precision") == "int8":
        parts.append("--int8")
        if o.get("calib"):
            parts += ["--calib", str(o["calib"])]
    elif manifest.get("precision") == "fp16":
        parts.append("--fp16")
    if o.get("target_isa"):
        parts += ["--target-isa", str(o["target_isa"])]
    parts += ["--imgsz", str((manifest.get("preprocess") or {}).get("imgsz", 400))]
    parts += ["--clip-checkpoint", str(o.get("clip_checkpoint") or "ViT-B-32.pt"),
              "--clip-bpe", str(o.get("clip_bpe") or "bpe_simple_vocab_16e6.txt.gz"),
              "--text-encoder", "--out", str(bundle_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def _bundle_file(manifest: dict, bundle_dir, name, what: str) -> Path:
    if not isinstance(name, str) or Path(name).name != name or name not in manifest.get("files", {}):
        raise BundleError(f"bundle: '{bundle_dir}' text encoder {what} {name!r} is not a file its manifest "
                          "lists with a SHA-256; re-export the bundle")
    return Path(bundle_dir) / name


class TextTower:
    """The bundle's text graph and tokenizer, both opened on first use.

    Args:
        graph: path of text_encoder.onnx; precision: 'fp32' | 'int8'; bpe: the merges file;
        context_length: the tower's largest T; template: the prompt template.
    """

    def __init__(self, graph: Path, precision: str, bpe: Path, context_length: int, template: str):
        self.graph, self.precision, self.bpe = Path(graph), precision, Path(bpe)
        self.context_length, self.template = int(context_length), template
        self._engine = self._tok = None
        self._lock = threading.Lock()

    def _open(self):
        with self._lock:
            if self._engine is None:
                from edgefss.runtime.session import open_graphs
                from edgefss.text.tokenizer import ClipTokenizer

                self._tok = ClipTokenizer(self.bpe)
                self._engine = open_graphs("onnxruntime", self.precision, {GRAPH: self.graph}, device="cpu")
        return self._engine, self._tok

    def encode(self, prompts: list[str]) -> np.ndarray:
        """Prompts (already templated) -> (N, D) float32 unit rows.

        The ids are cut to the longest prompt: the causal mask keeps the padding after EOT from
        reaching the EOT feature, so this gives the result of the full context (the graph takes T
        as a dynamic axis), at a fraction of the cost.

        Raises:
            InputError: a prompt is longer than the tower's context (names it).
        """
        engine, tok = self._open()
        ids = tok(list(prompts), context_length=self.context_length)
        ids = ids[:, : int((ids != 0).sum(axis=1).max())]
        out = engine.run(GRAPH, {INPUT: np.ascontiguousarray(ids)})[OUTPUT]
        return np.asarray(out, np.float32)

    def close(self) -> None:
        eng, self._engine = self._engine, None
        if eng is not None and hasattr(eng, "close"):
            eng.close()


@dataclass(frozen=True)
class ClassText:
    """The three head rows of one class and how they were made.

    Attributes:
        support, query_fg, query_bg: (D,) float32 unit vectors.
        origin: 'table' (exported), 'tower' (computed now) or 'disk cache'.
        prompts: the (refine, fg, bg) prompt texts before the template (None for table rows: the
            table's own source says where they come from).
    """

    support: np.ndarray
    query_fg: np.ndarray
    query_bg: np.ndarray
    origin: str
    prompts: PromptTriple | None = None


class OpenVocabText:
    """Class-name lookup of a TLG bundle (see the module doc); thread-safe.

    Args:
        table: the bundle's TextTable. tower: TextTower or None. background: BackgroundVocab (with
        the tower). manifest, bundle_dir: for the cache key and the export command in errors.
        cache_dir: folder for the disk cache; "default" = default_cache_dir(); None = memory only.
    """

    def __init__(self, table: TextTable, manifest: dict, bundle_dir, tower: TextTower | None = None,
                 background: BackgroundVocab | None = None, cache_dir="default"):
        self.table, self.tower, self.background = table, tower, background
        self.manifest, self.bundle_dir = manifest, bundle_dir
        # the home-folder default is said once when first written; a folder the user chose is not
        self._default_dir = cache_dir == "default" and os.environ.get("EDGEFSS_TEXT_CACHE") is None
        self.cache_dir = (default_cache_dir() if cache_dir == "default"
                          else None if cache_dir is None else Path(cache_dir))
        self._mem: dict[str, ClassText] = {}
        self._lock = threading.Lock()
        self._said = False
        self.tower_runs = 0  # prompts embedded by the tower so far (benchmarks, tests)

    # ---- what the TLG adapter uses (TextTable's interface) ------------------------------
    @property
    def classes(self) -> np.ndarray:
        """(N,) str: the names of the exported table (any other name works when has_tower)."""
        return self.table.classes

    @property
    def source(self) -> str:
        return self.table.source

    @property
    def has_tower(self) -> bool:
        return self.tower is not None

    def __contains__(self, name) -> bool:
        return name in self.table or self.has_tower

    def index(self, class_name) -> int:
        """The table row of a name, or -1 for a name the tower embeds (computed and cached here,
        so a bad name fails at set_support). InputError without the tower, naming the command."""
        if class_name in self.table:
            return self.table.index(class_name)
        self.entry(class_name)
        return -1

    def lookup(self, class_name) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(support, query_fg, query_bg), each (D,) float32, for one class."""
        e = self.entry(class_name)
        return e.support, e.query_fg, e.query_bg

    # ---- open vocabulary ------------------------------------------------------------------
    def entry(self, class_name) -> ClassText:
        """The rows of `class_name` (any spelling) with their origin; computed on first use."""
        n = canonical_name(class_name)
        if n in self.table:
            s, fg, bg = self.table.lookup(n)
            return ClassText(s, fg, bg, "table")
        hit = self._mem.get(n)
        if hit is not None:
            return hit
        if self.tower is None:
            raise InputError(
                f"class name {class_name!r} is not in this bundle's text table ({len(self.table)} classes)"
                f"{close_matches_hint(n, self.table.classes.tolist()) or '.'} This bundle has no CLIP text tower, so "
                f"it knows only those names. To segment any name, re-export it with the tower: "
                f"{export_command(self.manifest, self.bundle_dir)}"
            )
        check_printable(class_name)
        with self._lock:  # one computation per name even when several threads ask at once
            hit = self._mem.get(n) or self._read_disk(n)
            if hit is None:
                self._check_length(class_name, n)
                hit = self._compute(n)
                self._write_disk(n, hit)
            self._mem[n] = hit
        return hit

    def _check_length(self, class_name: str, n: str) -> None:
        """InputError naming the class when its prompt does not fit the tower's context (the
        tokenizer's own error would name only 'texts[0]')."""
        if n in BUILTIN_PROMPTS:
            return
        _, tok = self.tower._open()
        k = len(tok.encode(self.tower.template.format(n))) + 2  # + SOT, EOT
        if k > self.tower.context_length:
            short = class_name if len(class_name) <= 60 else class_name[:57] + "..."
            raise InputError(f"class name {short!r}: {k} tokens in the prompt {self.tower.template!r}, more than "
                             f"the CLIP text tower's context of {self.tower.context_length}; use a shorter name")

    def cached_classes(self) -> list[str]:
        """Names embedded by the tower (or read from the disk cache) in this process."""
        return sorted(self._mem)

    def _compute(self, n: str) -> ClassText:
        t = self.tower.template
        builtin = BUILTIN_PROMPTS.get(n)
        if builtin is not None:  # the hand-written triple exists: embed it as the table would have
            rows = self.tower.encode(list(builtin.texts(t)))
            self.tower_runs += 3
            return ClassText(rows[0], rows[1], rows[2], "tower", builtin)
        # unseen name: the bare name for refine and fg (one prompt), backgrounds by maximum matching
        fg = self.tower.encode([t.format(n)])[0]
        words = match_backgrounds(fg, self.background, n, self.background.k)
        bg_text = ",".join(words)
        bg = self.tower.encode([t.format(bg_text)])[0]
        self.tower_runs += 2
        return ClassText(fg, fg, bg, "tower", PromptTriple(n, n, bg_text))

    # ---- disk cache -----------------------------------------------------------------------
    def _cache_file(self, n: str) -> Path | None:
        if self.cache_dir is None:
            return None
        from edgefss.runtime.support_pack import bundle_identity

        # the seal covers the tower's file hashes; a manifest without one (hand-made) gets the hash of
        # its content, never a folder shared with other towers
        key = bundle_identity(self.manifest)[:16]
        return self.cache_dir / key / (hashlib.sha256(n.encode("utf-8")).hexdigest()[:32] + ".npz")

    def _read_disk(self, n: str) -> ClassText | None:
        p = self._cache_file(n)
        if p is None or not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["name"]) != n:
                    return None
                rows = [np.asarray(z[k], np.float32) for k in ("support", "query_fg", "query_bg")]
                prompts = PromptTriple(*[str(x) for x in z["prompts"]])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
            return None  # a damaged cache entry is recomputed, never trusted
        if any(r.shape != (self.table.dim,) or not np.isfinite(r).all() or abs(np.linalg.norm(r) - 1) > 1e-3
               for r in rows):
            return None
        return ClassText(*rows, "disk cache", prompts)

    def _write_disk(self, n: str, e: ClassText) -> None:
        p = self._cache_file(n)
        if p is None:
            return
        buf = io.BytesIO()
        np.savez(buf, name=np.array(n), support=e.support, query_fg=e.query_fg, query_bg=e.query_bg,
                 prompts=np.array([e.prompts.refine, e.prompts.fg, e.prompts.bg]))
        try:  # concurrent writers of one name each rename a whole file: the last one wins
            write_bytes_atomic(p, buf.getvalue(), what="text cache")
        except OSError as exc:  # a read-only home or full disk costs the cache, not the prediction
            if not self._said:
                warnings.warn(f"text embeddings of new class names are kept in memory only: {exc}",
                              UserWarning, stacklevel=4)
                self._said = True
            return
        if self._default_dir and not self._said:
            warnings.warn(f"text embeddings of new class names are cached in '{self.cache_dir}' "
                          "(EDGEFSS_TEXT_CACHE=DIR to choose another folder, =off for memory only)",
                          UserWarning, stacklevel=4)
            self._said = True

    def close(self) -> None:
        if self.tower is not None:
            self.tower.close()


def open_vocabulary(manifest: dict, bundle_dir, cache_dir="default") -> OpenVocabText:
    """The class-name lookup of a TLG bundle: its table, and its text tower when it has one.

    Raises:
        BundleError: the table or a text-encoder file is missing from the manifest or malformed.
    """
    tt = (manifest.get("text_table") or {}).get("file", "text_table.npz")
    if tt not in manifest.get("files", {}):
        raise BundleError(f"bundle: '{bundle_dir}' is a TLG bundle without its text table '{tt}'")
    table = TextTable.load(Path(bundle_dir) / tt)
    info = manifest.get(MANIFEST_KEY)
    if info is None:
        return OpenVocabText(table, manifest, bundle_dir, cache_dir=cache_dir)
    if not isinstance(info, dict):
        raise BundleError(f"bundle: '{bundle_dir}' manifest field {MANIFEST_KEY} is {info!r}; expected an object")
    precision = info.get("precision")
    if precision not in ("fp32", "int8"):
        raise BundleError(f"bundle: '{bundle_dir}' text encoder precision {precision!r}; expected 'fp32' or 'int8'")
    ctx, template = info.get("context_length"), info.get("template")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or not 3 <= ctx <= 4096:
        raise BundleError(f"bundle: '{bundle_dir}' text encoder context_length {ctx!r}; expected an int")
    if not isinstance(template, str) or "{}" not in template:
        raise BundleError(f"bundle: '{bundle_dir}' text encoder template {template!r}; expected a str with '{{}}'")
    graph = _bundle_file(manifest, bundle_dir, info.get("file"), "graph")
    bpe = _bundle_file(manifest, bundle_dir, info.get("bpe"), "merges file")
    bg = BackgroundVocab.load(_bundle_file(manifest, bundle_dir, info.get("background"), "background vocabulary"),
                              dim=table.dim)
    tower = TextTower(graph, precision, bpe, ctx, template)
    return OpenVocabText(table, manifest, bundle_dir, tower, bg, cache_dir=cache_dir)


@dataclass(frozen=True)
class Vocabulary:
    """What class names a bundle can segment (`edgefss classes`, Segmenter.vocabulary()).

    Attributes:
        any_name: True when every name works (CST: class-agnostic; TLG: the text tower).
        table: the exported table's names (TLG), None for CST.
        source: where the table's vectors come from. tower: 'fp32' | 'int8' | None.
        reason: one phrase saying why any name works or which names do.
    """

    any_name: bool
    table: list | None
    source: str
    tower: str | None
    reason: str


def describe(manifest: dict, text=None, bundle_dir=None) -> Vocabulary:
    """The Vocabulary of a bundle from its manifest (and its OpenVocabText when already open)."""
    if manifest.get("model") != "tlg":
        return Vocabulary(True, None, "", None, "CST: class-agnostic pseudo-mask; the name only labels the output")
    if text is None:
        text = open_vocabulary(manifest, bundle_dir)
    tower = (manifest.get(MANIFEST_KEY) or {}).get("precision") if text.has_tower else None
    if tower:
        reason = f"TLG with the CLIP text tower ({tower.upper()}): any name; the table's names need no tower run"
    else:
        reason = "TLG without the text tower: only the table's names (add it: `edgefss export ... --text-encoder`)"
    return Vocabulary(bool(tower), [str(c) for c in text.classes], text.source, tower, reason)


def bundle_vocabulary(bundle_dir) -> Vocabulary:
    """describe() of a bundle on disk: reads the manifest, the table and the tower's side files only
    (no engine starts)."""
    from edgefss.bundle import read_manifest

    man = read_manifest(bundle_dir, verify=True)
    return describe(man, None if man.get("model") != "tlg" else open_vocabulary(man, bundle_dir, cache_dir=None),
                    bundle_dir)
