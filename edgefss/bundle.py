"""Bundle directories: the one artifact `edgefss export` writes and the runtime loads.

A bundle is a directory holding the graphs (ONNX / OpenVINO IR / TensorRT plan), side files
(e.g. the TLG text table) and `manifest.json`, which records the model, preprocessing, graph
I/O, precision, backend, verification figures and the SHA-256 of every file. Bundles are
written atomically: everything goes to a temporary sibling directory which is renamed into
place only when complete, so a killed export leaves the previous bundle or nothing.
Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from edgefss._version import __version__
from edgefss.errors import BundleError

FORMAT = "edgefss-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BundleWriter:
    """Stage files for a bundle in a temp dir; `commit()` renames it into place.

    Usage:
        with BundleWriter(out_dir) as w:
            onnx.save(model, w.path("encoder.onnx"))
            w.commit(manifest)
    Leaving the `with` block without `commit` (an exception, a signal) deletes the temp dir.
    """

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}-{int(time.time() * 1e3)}"
        self.tmp.mkdir()
        self.committed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def path(self, name: str) -> Path:
        """Where to write bundle file `name` (a plain file name, no folders)."""
        if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"bad bundle file name {name!r}")
        return self.tmp / name

    def commit(self, manifest: dict) -> Path:
        """Hash every staged file, write manifest.json, and atomically replace `out_dir`."""
        files = {}
        for p in sorted(self.tmp.iterdir()):
            if p.is_file() and p.name != MANIFEST:
                files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        man = dict(manifest)
        man.update(format=FORMAT, format_version=FORMAT_VERSION, edgefss_version=__version__,
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files=files)
        tmp_man = self.tmp / (MANIFEST + ".part")
        with open(tmp_man, "w") as f:
            json.dump(man, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp_man.replace(self.tmp / MANIFEST)
        _fsync_dir(self.tmp)
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
            self.out_dir.replace(old)
        self.tmp.replace(self.out_dir)
        _fsync_dir(self.out_dir.parent)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def read_manifest(bundle_dir, verify: bool = True) -> dict:
    """Read and check a bundle's manifest.

    Args:
        bundle_dir: the bundle directory.
        verify: check every listed file exists with the recorded size and SHA-256.

    Raises:
        BundleError: naming the directory/file and what was expected.
    """
    d = Path(bundle_dir)
    if not d.is_dir():
        raise BundleError(f"bundle: '{d}' is not a directory; expected the folder written by 'edgefss export'")
    mp = d / MANIFEST
    if not mp.is_file():
        raise BundleError(f"bundle: '{d}' has no {MANIFEST}; it is not an edgefss bundle or was not written completely")
    try:
        man = json.loads(mp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle: '{mp}' is not valid JSON ({exc})") from exc
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise BundleError(f"bundle: '{mp}' is not an edgefss manifest (format != {FORMAT!r})")
    fv = man.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION:
        raise BundleError(
            f"bundle: '{d}' has format_version {fv!r}, written by edgefss {man.get('edgefss_version')}; "
            f"this edgefss {__version__} reads format_version <= {FORMAT_VERSION}: upgrade edgefss"
        )
    for key in ("model", "backend", "precision", "preprocess", "graphs", "files"):
        if key not in man:
            raise BundleError(f"bundle: '{mp}' lacks the required field {key!r}")
    _check_schema(man, mp)
    if verify:
        for name, info in man["files"].items():
            p = d / name
            if not p.is_file():
                raise BundleError(f"bundle: '{d}' is missing file '{name}' listed in its manifest")
            if p.stat().st_size != info.get("bytes"):
                raise BundleError(f"bundle: '{p}' has {p.stat().st_size} bytes, manifest says {info.get('bytes')}: file changed or truncated")
            if sha256_file(p) != info.get("sha256"):
                raise BundleError(f"bundle: '{p}' does not match its SHA-256 in the manifest: file changed or corrupt")
    return man


def _check_schema(man: dict, mp: Path) -> None:
    """Types of the fields the runtime reads, so a hand-edited manifest fails here with one
    BundleError instead of a KeyError/AttributeError deep inside the runtime."""

    def get(field: str):
        cur = man
        for k in field.split("."):
            cur = cur.get(k) if isinstance(cur, dict) else None
        return cur

    def bad(field: str, want: str):
        raise BundleError(f"bundle: '{mp}' field {field} is {get(field)!r}; expected {want}")

    def is_num(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    for key in ("model", "backend", "precision"):
        if not isinstance(man[key], str):
            bad(key, "a string")
    pre = man["preprocess"]
    if not isinstance(pre, dict):
        bad("preprocess", "an object {imgsz, mean, std}")
    imgsz = pre.get("imgsz")
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 8 or imgsz % 8:
        bad("preprocess.imgsz", "a positive int multiple of 8")
    for k in ("mean", "std"):
        v = pre.get(k)
        if not (isinstance(v, list) and len(v) == 3 and all(is_num(x) for x in v)):
            bad(f"preprocess.{k}", "a list of 3 numbers")
    if not all(x > 0 for x in pre["std"]):
        bad("preprocess.std", "3 positive numbers")
    graphs = man["graphs"]
    if not isinstance(graphs, dict):
        bad("graphs", "an object {graph name: {file, inputs, outputs}}")
    for g, info in graphs.items():
        if not (isinstance(info, dict) and isinstance(info.get("file"), str)
                and all(isinstance(info.get(k, {}), dict) for k in ("inputs", "outputs"))):
            bad(f"graphs.{g}", "an object with 'file' (str), 'inputs' and 'outputs' (objects)")
    pm = man.get("pseudo_mask")
    thr = pm.get("threshold") if isinstance(pm, dict) else None
    if pm is not None and not (isinstance(pm, dict) and (thr is None or is_num(thr))):
        bad("pseudo_mask", "an object with a numeric (or null) 'threshold'")
    files = man["files"]
    if not isinstance(files, dict):
        bad("files", "an object {file name: {sha256, bytes}}")
    for name, info in files.items():
        # A plain file name inside the bundle: '../x' or 'a/b' would hash files outside it.
        if Path(name).name != name or name in (".", "..") or not isinstance(info, dict):
            raise BundleError(f"bundle: '{mp}' has a bad 'files' entry {name!r}: expected a plain file name "
                              'mapped to {"sha256": ..., "bytes": ...}')
