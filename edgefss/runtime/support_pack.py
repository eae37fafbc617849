"""Support sets as data: the cached-snapshot builder, support packs, incremental edits, shot quality.

One implementation of "caller-ordered support records -> the Segmenter's cached `_Support`"
(`build_support`): `Segmenter.set_support` uses it after encoding, the edits (`add_support`,
`remove_class`, `remove_shot`) and `load_support` use it on records taken from a snapshot or a
pack, so each equals a fresh `set_support` of the resulting set bit for bit (no encoder run for the
entries kept).

A support pack (`Segmenter.save_support`, conventionally `*.efs`, format_version 2) is one file:
  - MAGIC (8 bytes), then the header's length H as a little-endian uint64;
  - the header, H bytes of UTF-8 JSON: format "edgefss-support-pack", format_version, the edgefss
    and NumPy versions, the bundle's identity (its manifest's `manifest_sha256`; for a manifest
    without one, the SHA-256 of its canonical JSON) with model/variant/precision/imgsz for
    messages, the classes (display order), groups, order, given flags and the caller's spellings
    per head-batch entry, and `arrays`: {name: {dtype, shape, offset, nbytes}};
  - zero padding to a multiple of ALIGN bytes, then every array's raw C-order bytes at its
    `offset` (from the end of that padding, a multiple of ALIGN):
      `entry__<head input>`: (B, ...) float32, the snapshot's head-batch chunks concatenated,
        exactly as cached (B = number of shots, class-major);
      `images`: (B, S, S, 3) uint8 network-size support images, only for models that refine by
        re-encoding supports (CST mutual refinement); refine_steps > 0 after a load re-encodes
        them lazily, as after set_support;
  - the last 32 bytes: the SHA-256 of every byte before them, so a tampered or truncated pack is
    refused at load. The digest detects corruption and edits; it is not a signature (anyone can
    write a valid pack).
Loading reads the file once into one buffer, hashing it as it streams in (no decompression, no
CRC, no per-array copy), and the cached chunks are aligned views of that buffer: the same float32
bits `set_support` cached, so predictions are bit-identical. Format 1 (a NumPy .npz) is refused
with a line saying to create the pack again.
Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefss._version import __version__
from edgefss.errors import InputError, StateError

FORMAT = "edgefss-support-pack"
FORMAT_VERSION = 2
PACK_SUFFIX = ".efs"
MAGIC = b"EFSPACK\x00"
ALIGN = 64  # array offsets: aligned views for the engines
_DIGEST = 32
_MAX_HEADER = 16 << 20  # a real header is a few KiB
_CHUNK = 8 << 20  # streamed read + hash
_DTYPES = {"<f4": np.float32, "|u1": np.uint8}
_ENTRY = "entry__"
# CST indistinguishable classes: two shots are "the same support" when their support features'
# cosine similarity and their masks' IoU are both at least these (see indistinguishable_classes)
SAME_FEATURE_COS = 0.9999
SAME_MASK_IOU = 0.99


@dataclass
class Record:
    """One support shot in caller order.

    Attributes:
        name: the class name as the caller spelt it.
        entry: head inputs of this shot without the batch axis ({name: float32 array}).
        given: the caller gave this shot's mask (refinement keeps it).
        image: (S, S, 3) uint8 network-size image (models that re-encode supports) or None.
    """

    name: str
    entry: dict
    given: bool
    image: np.ndarray | None = None


# ----------------------------------------------------------------------------- snapshot <-> records
def build_support(records: list, max_batch: int, keep_images: bool, model: str = "", query_feats=None,
                  stacked_entries: dict | None = None):
    """Caller-ordered records -> the Segmenter's immutable `_Support` snapshot.

    Classes are one per canonical name (text.prompts.canonical_name), shown as first spelt (spaces
    collapsed), in order of first appearance; head-batch entries are class-major, each class's
    shots in caller order, chunked by `max_batch`.

    Args:
        records: list of Record in caller (set_support) order.
        keep_images: store the records' images (models whose refinement re-encodes supports).
        model: the adapter's model; "cst" warns about indistinguishable classes.
        query_feats: optional {caller index: cached query_feats} carried over from an old snapshot.
        stacked_entries: optional {head input: (B, ...) float32 C-contiguous} already in this
            set's head-batch order (a verified pack's arrays, see `load`, which checks the order):
            the chunks are then row slices of these (views, no copy) instead of new stacks.
    """
    from edgefss.runtime.adapters import stack_entries
    from edgefss.runtime.segmenter import _Support
    from edgefss.text.prompts import canonical_name as class_key

    if not records:
        raise InputError("support set: no support image left; use reset_support() to drop it")
    keys = [class_key(r.name) for r in records]
    shown: dict = {}
    for k, r in zip(keys, records):
        shown.setdefault(k, " ".join(r.name.split()))
    classes = list(shown)
    if len(classes) > 255:
        raise InputError(f"class_names: {len(classes)} classes; at most 255 fit the uint8 label mask")
    order = [i for c in classes for i, n in enumerate(keys) if n == c]
    groups, pos = [], 0
    for c in classes:
        k = keys.count(c)
        groups.append(tuple(range(pos, pos + k)))
        pos += k
    if stacked_entries is not None:
        chunks = tuple({k: v[s:s + max_batch] for k, v in stacked_entries.items()}
                       for s in range(0, len(order), max_batch))
    else:
        ordered = [records[i].entry for i in order]
        chunks = tuple(stack_entries(ordered[s:s + max_batch]) for s in range(0, len(ordered), max_batch))
    qf = {}
    if query_feats:
        qf = {j: query_feats[i] for j, i in enumerate(order) if i in query_feats}
    snap = _Support(classes=tuple(shown[c] for c in classes), groups=tuple(groups), chunks=chunks,
                    order=tuple(order), given=tuple(records[i].given for i in order),
                    images=tuple(records[i].image for i in order) if keep_images else (),
                    names=tuple(records[i].name for i in order), query_feats=qf)
    if model == "cst" and len(classes) > 1:
        warn_indistinguishable(snap)
    return snap


def entry_names(snap) -> list:
    """The caller's spelling of each head-batch entry's class (falls back to the class's display)."""
    if len(snap.names) == len(snap.order):
        return list(snap.names)
    out = [""] * len(snap.order)
    for c, shots in enumerate(snap.groups):
        for j in shots:
            out[j] = snap.classes[c]
    return out


def stacked(snap) -> dict:
    """{head input: (B, ...) float32} the snapshot's chunks concatenated (head-batch order)."""
    keys = list(snap.chunks[0])
    return {k: np.concatenate([c[k] for c in snap.chunks]) if len(snap.chunks) > 1 else snap.chunks[0][k]
            for k in keys}


def records_of(snap) -> tuple[list, dict]:
    """Snapshot -> (records in caller order, {caller index: cached query_feats})."""
    arrays = stacked(snap)
    names = entry_names(snap)
    recs: list = [None] * len(snap.order)
    qf = {}
    for j, i in enumerate(snap.order):
        recs[i] = Record(names[j], {k: v[j] for k, v in arrays.items()}, bool(snap.given[j]),
                         snap.images[j] if snap.images else None)
        if j in snap.query_feats:
            qf[i] = snap.query_feats[j]
    return recs, qf


def without(records: list, qf: dict, drop: set) -> tuple[list, dict]:
    """Records and query_feats cache without caller indices `drop` (later indices shift down)."""
    keep = [i for i in range(len(records)) if i not in drop]
    new = {old: new for new, old in enumerate(keep)}
    return [records[i] for i in keep], {new[i]: v for i, v in qf.items() if i in new}


# ----------------------------------------------------------------------------- identity
def bundle_identity(manifest: dict) -> str:
    """The bundle's identity: its manifest's seal `manifest_sha256`, else the SHA-256 of its canonical JSON."""
    from edgefss.bundle import SEAL, seal

    s = manifest.get(SEAL)
    return s if isinstance(s, str) and s else seal(manifest)


def _bundle_info(manifest: dict, bundle_dir) -> dict:
    return {"identity": bundle_identity(manifest), "model": manifest.get("model"),
            "variant": manifest.get("variant"), "precision": manifest.get("precision"),
            "backend": manifest.get("backend"), "imgsz": int(manifest["preprocess"]["imgsz"]),
            "format_version": manifest.get("format_version"),
            "edgefss_version": manifest.get("edgefss_version"), "path": str(bundle_dir)}


# ----------------------------------------------------------------------------- pack file
def _pad(n: int) -> int:
    return -n % ALIGN


def pack_bytes(snap, manifest: dict, bundle_dir) -> bytes:
    """The bytes of a support pack (format_version 2, module doc) for snapshot `snap` of the bundle `manifest`."""
    arrays = {_ENTRY + k: np.ascontiguousarray(v, np.float32) for k, v in stacked(snap).items()}
    if snap.images:
        arrays["images"] = np.ascontiguousarray(np.stack(snap.images), np.uint8)
    table, off = {}, 0
    for k in sorted(arrays):
        a = arrays[k]
        table[k] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": off, "nbytes": int(a.nbytes)}
        off += a.nbytes + _pad(a.nbytes)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "edgefss_version": __version__,
        "numpy_version": np.__version__, "bundle": _bundle_info(manifest, bundle_dir),
        "classes": list(snap.classes), "groups": [list(g) for g in snap.groups],
        "order": list(snap.order), "given": [bool(g) for g in snap.given], "names": entry_names(snap),
        "arrays": table,
    }
    hb = json.dumps(header, sort_keys=True, ensure_ascii=True, allow_nan=False).encode()
    parts = [MAGIC, struct.pack("<Q", len(hb)), hb, bytes(_pad(len(MAGIC) + 8 + len(hb)))]
    for k in sorted(arrays):
        parts += [memoryview(arrays[k]).cast("B"), bytes(_pad(arrays[k].nbytes))]
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def save(snap, manifest: dict, bundle_dir, path) -> Path:
    """Write `snap` as a support pack at `path` atomically (temp + rename); returns the path.

    Raises:
        StateError: no support set.
        edgefss.fsio.OutputError: the file cannot be written (names the path and why).
    """
    from edgefss.fsio import write_bytes_atomic

    if snap is None:
        raise StateError("save_support: no support set; call set_support(images, class_names) first")
    return write_bytes_atomic(path, pack_bytes(snap, manifest, bundle_dir), what="support pack")


def _read_verified(p: Path, what: str) -> np.ndarray:
    """The whole file in one (size,) uint8 buffer, its SHA-256 trailer checked while it streams in
    (one pass; np.empty, not bytearray: no zero-fill, and NumPy asks for huge pages, which makes
    the page faults of a 100 MB pack ~3x cheaper)."""
    try:
        with open(p, "rb", buffering=0) as f:
            head = f.read(len(MAGIC))
            if head != MAGIC:
                if head.startswith(b"PK"):
                    raise InputError(f"{what}: format 1 (.npz), written by an earlier edgefss; this edgefss "
                                     f"{__version__} reads format {FORMAT_VERSION}: create the pack again")
                raise InputError(f"{what}: not an edgefss support pack (no {MAGIC!r} signature)")
            size = os.fstat(f.fileno()).st_size
            if size < len(MAGIC) + 8 + _DIGEST:
                raise InputError(f"{what}: {size} bytes, truncated or corrupt; create the pack again")
            buf = np.empty(size, np.uint8)
            mv = memoryview(buf)
            mv[: len(MAGIC)] = head
            h = hashlib.sha256(head)
            n, end = len(MAGIC), size - _DIGEST
            while n < size:
                k = f.readinto(mv[n:n + _CHUNK])
                if not k:
                    break
                if n < end:
                    h.update(mv[n:min(n + k, end)])  # hashed while still in the CPU cache
                n += k
    except OSError as exc:
        raise InputError(f"{what}: unreadable ({exc.strerror or exc})") from None
    if n != size or h.digest() != mv[end:].tobytes():
        raise InputError(f"{what}: content does not match its SHA-256: the file was changed, truncated or "
                         "is corrupt; create the pack again")
    return buf


def read(path) -> tuple[dict, dict]:
    """Read and verify a pack -> (header, {name: array view of one buffer}). Torch-free; no bundle needed.

    Raises:
        InputError: "support pack '<path>': <reason>" for a missing, truncated, tampered, foreign
            or other-format file.
    """
    p = Path(path)
    what = f"support pack '{p}'"
    if not p.is_file():
        raise InputError(f"{what}: no such file; expected a file written by save_support / `edgefss support create`")
    buf = _read_verified(p, what)
    try:
        (hl,) = struct.unpack_from("<Q", buf.data, len(MAGIC))
        start = len(MAGIC) + 8
        if hl > min(_MAX_HEADER, len(buf) - start - _DIGEST):
            raise ValueError(f"header length {hl}")
        header = json.loads(buf[start:start + hl].tobytes().decode())
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
    except (TypeError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise InputError(f"{what}: unreadable header ({exc}); create the pack again") from None
    if header.get("format") != FORMAT:
        raise InputError(f"{what}: not an edgefss support pack (format != {FORMAT!r})")
    fv = header.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int) or fv != FORMAT_VERSION:
        raise InputError(f"{what}: format_version {fv!r} written by edgefss {header.get('edgefss_version')}; "
                         f"this edgefss {__version__} reads {FORMAT_VERSION}: "
                         + ("upgrade edgefss" if isinstance(fv, int) and fv > FORMAT_VERSION else "create the pack again"))
    data = start + hl + _pad(start + hl)
    arrays = _views(buf, header.get("arrays"), data, len(buf) - _DIGEST, what)
    _check_structure(header, arrays, what)
    return header, arrays


def _views(buf: np.ndarray, table, data: int, end: int, what: str) -> dict:
    """{name: ndarray view of buf} from the header's array table, every range checked."""
    out = {}
    try:
        for k, t in table.items():
            dt = _DTYPES[t["dtype"]]
            shape, off, nb = tuple(t["shape"]), t["offset"], t["nbytes"]
            ok = (all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (*shape, off, nb))
                  and off % ALIGN == 0 and nb == int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                  and data + off + nb <= end)
            if not ok:
                raise ValueError(k)
            out[k] = buf[data + off:data + off + nb].view(dt).reshape(shape)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise InputError(f"{what}: inconsistent array table; create the pack again "
                         "with `edgefss support create`") from None
    return out


def _check_structure(header: dict, arrays: dict, what: str) -> None:
    """Consistent header and arrays (a hand-made pack with a valid digest gets a clear error too)."""
    try:
        classes, groups, order = header["classes"], header["groups"], header["order"]
        given, names = header["given"], header["names"]
        B = len(order)
        flat = [j for g in groups for j in g]
        ok = (len(classes) == len(groups) and flat == list(range(B)) and sorted(order) == list(range(B))
              and len(given) == B and len(names) == B and all(isinstance(n, str) and n.strip() for n in names)
              and any(k.startswith(_ENTRY) for k in arrays)
              and all(a.shape[:1] == (B,) for a in arrays.values())
              and all(a.dtype == np.float32 for k, a in arrays.items() if k.startswith(_ENTRY))
              and ("images" not in arrays or arrays["images"].dtype == np.uint8))
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise InputError(f"{what}: inconsistent header/arrays (classes, groups, order, shots); "
                         "create the pack again with `edgefss support create`")


def check_bundle(header: dict, manifest: dict, bundle_dir, path) -> None:
    """InputError unless the pack was made for this bundle (same manifest identity)."""
    b = header.get("bundle") or {}
    mine = bundle_identity(manifest)
    if b.get("identity") != mine:
        raise InputError(
            f"support pack '{path}': made for another bundle ({b.get('model')} {b.get('precision')}, "
            f"identity {str(b.get('identity'))[:12]}, was at '{b.get('path')}'), not '{bundle_dir}' "
            f"(identity {mine[:12]}); create the pack again with this bundle")


def load(path, manifest: dict, bundle_dir, max_batch: int, keep_images: bool):
    """Read, verify and check a pack against the bundle -> `_Support` (no encoder run)."""
    header, arrays = read(path)
    check_bundle(header, manifest, bundle_dir, path)
    if keep_images and "images" not in arrays:
        raise InputError(f"support pack '{path}': has no support images, which this bundle's refinement needs; "
                         "create the pack again")
    entries = {k[len(_ENTRY):]: v for k, v in arrays.items() if k.startswith(_ENTRY)}
    recs: list = [None] * len(header["order"])
    for j, i in enumerate(header["order"]):
        recs[i] = Record(header["names"][j], {}, bool(header["given"][j]),
                         arrays["images"][j] if keep_images else None)
    # the pack's arrays are in head-batch order: the chunks are views of them, valid only when the
    # records rebuild exactly that order (checked below, before the snapshot is used)
    snap = build_support(recs, max_batch, keep_images, model=str(manifest.get("model")), stacked_entries=entries)
    if (list(snap.classes) != list(header["classes"]) or [list(g) for g in snap.groups] != header["groups"]
            or list(snap.order) != list(header["order"])):
        raise InputError(f"support pack '{path}': its class order does not rebuild; create the pack again")
    return snap


def describe(header: dict, arrays: dict, path) -> str:
    """Human-readable summary of a verified pack (`edgefss support show`)."""
    b = header.get("bundle") or {}
    size = Path(path).stat().st_size
    lines = [f"support pack: {path} ({size / 1e6:.2f} MB), SHA-256 verified",
             f"  format {header['format']} v{header['format_version']}, edgefss {header.get('edgefss_version')}, "
             f"numpy {header.get('numpy_version')}",
             f"  bundle: {b.get('model')} {b.get('variant')} {b.get('precision')} {b.get('backend')} "
             f"imgsz {b.get('imgsz')}, identity {b.get('identity')}",
             f"          (was at '{b.get('path')}')",
             f"  classes ({len(header['classes'])}, display order):"]
    for c, g in zip(header["classes"], header["groups"]):
        n_given = sum(bool(header["given"][j]) for j in g)
        lines.append(f"    {c}: {len(g)} shot(s), {n_given} with a given mask, {len(g) - n_given} pseudo-mask")
    for k, a in sorted(arrays.items()):
        lines.append(f"  array {k}: {tuple(a.shape)} {a.dtype}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CST: indistinguishable classes
def indistinguishable_classes(snap, cos_min: float = SAME_FEATURE_COS, iou_min: float = SAME_MASK_IOU) -> list:
    """Pairs (class a, class b) whose support sets CST cannot tell apart.

    CST ignores the class name: a class's prediction is a function of its shots' support features
    and masks only. Two classes are indistinguishable when every shot of each has a shot of the
    other with the same support: support-feature cosine similarity >= cos_min (flattened
    `support_feats`) and support-mask IoU >= iou_min (an empty pair of masks counts as equal). The
    same image (or a near-copy) under two names with the same pseudo-mask is the typical case: both
    classes then get the same logits and the label mask gives every such pixel to the first.
    """
    arr = stacked(snap)
    if "support_feats" not in arr or "support_mask" not in arr:
        return []
    B = arr["support_feats"].shape[0]
    f = arr["support_feats"].reshape(B, -1)
    # one Gram matrix (BLAS, float32: identical vectors give cos 1 within ~1e-6, far inside cos_min)
    gram = (f @ f.T).astype(np.float64)
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-30))
    cos = gram / np.outer(norms, norms)
    m = arr["support_mask"].reshape(B, -1) > 0.5

    def same(i, j):
        if cos[i, j] < cos_min:
            return False
        inter, union = np.count_nonzero(m[i] & m[j]), np.count_nonzero(m[i] | m[j])
        return (inter / union if union else 1.0) >= iou_min

    def covered(a, b):
        return all(any(same(i, j) for j in snap.groups[b]) for i in snap.groups[a])

    out = []
    for a in range(len(snap.classes)):
        for b in range(a + 1, len(snap.classes)):
            if covered(a, b) and covered(b, a):
                out.append((snap.classes[a], snap.classes[b]))
    return out


def warn_indistinguishable(snap) -> None:
    """One UserWarning per pair from indistinguishable_classes."""
    for a, b in indistinguishable_classes(snap):
        warnings.warn(
            f"CST: classes {a!r} and {b!r} have indistinguishable support sets (same features, cosine >= "
            f"{SAME_FEATURE_COS}, and same masks, IoU >= {SAME_MASK_IOU}); CST's pseudo-mask is class-agnostic "
            f"and the name only labels the output, so every pixel goes to {a!r}. Give each class its own "
            "images or masks", UserWarning, stacklevel=4)


# ----------------------------------------------------------------------------- shot quality
def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    inter, union = np.count_nonzero(a & b), np.count_nonzero(a | b)
    return inter / union if union else 1.0


def shot_quality(seg, snap) -> list:
    """Leave-one-out score per shot, in caller (set_support) order.

    For a class with K >= 2 shots, shot j is predicted as a query from the class's other K-1 shots
    (one pass, no refinement) and the IoU of that mask (fg probability > 0.5 at the network size
    S x S) against shot j's reference is its score: the caller's mask when given, else the model's
    support pseudo-mask (CST), else (TLG without a given mask: its support pseudo-mask is made inside
    the head) shot j's prediction of itself from itself alone. A shot scoring far below its class's
    others is the one that hurts (wrong image, wrong mask, object too small).

    Returns:
        list of dicts {"shot": caller index, "class", "score": float in [0, 1] or None (K = 1),
        "reference": "given" | "pseudo-mask" | "self" | None}.

    Raises:
        StateError: no support set.
    """
    from edgefss.runtime import postprocess as post

    if snap is None:
        raise StateError("shot_quality: no support set; call set_support(images, class_names) first")
    S = seg.cfg.imgsz
    arr = stacked(snap)
    recs, _ = records_of(snap)
    keep = bool(snap.images)
    out: list = [None] * len(snap.order)

    def fg(query: dict, shots: list) -> np.ndarray:
        sub = build_support([recs[i] for i in shots], seg.max_batch, keep)
        logits, _ = seg._head(query, sub)
        return post.fg_probability(logits, list(sub.groups), (S, S))[0] > post.FG_THRESHOLD

    for c, shots in enumerate(snap.groups):
        callers = [snap.order[j] for j in shots]
        for j, i in zip(shots, callers):
            row = {"shot": i, "class": snap.classes[c], "score": None, "reference": None}
            out[i] = row
            if len(shots) < 2:
                continue
            query = _query_entry(seg, arr, snap, j)
            if "support_mask" in arr:
                ref, row["reference"] = arr["support_mask"][j] > 0.5, ("given" if snap.given[j] else "pseudo-mask")
            elif snap.given[j] and "support_pseudo" in arr:
                ref, row["reference"] = arr["support_pseudo"][j].reshape(S, S) > 0.5, "given"
            else:
                ref, row["reference"] = fg(query, [i]), "self"
            row["score"] = round(float(iou(fg(query, [k for k in callers if k != i]), ref)), 6)
    return out


def _query_entry(seg, arr: dict, snap, j: int) -> dict:
    """Head query inputs for head-batch support j: from its stored support features when the model
    uses the same encoder outputs for both sides (TLG), else by encoding its network-size image."""
    enc = {k[len("support_"):]: v[j][None] for k, v in arr.items() if k.startswith("support_")}
    try:
        return seg.adapter.query_entry(enc)
    except KeyError:
        pass
    if not snap.images:
        raise InputError("shot_quality: this model needs the support images, which this support set does not keep")
    return seg.adapter.query_entry(seg._encode(snap.images[j]))
