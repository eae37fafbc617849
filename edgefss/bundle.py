"""Bundle directories: the one artifact `edgefss export` writes and the runtime loads.

A bundle is a directory holding the graphs (ONNX / OpenVINO IR / TensorRT plan), side files
(e.g. the TLG text table) and `manifest.json`, which records the model, preprocessing, graph
I/O, precision, backend, verification figures and the SHA-256 of every file. Bundles are
written atomically: everything goes to a temporary sibling directory which is swapped into
place only when complete (Linux renameat2 RENAME_EXCHANGE; two renames elsewhere), so a killed
export leaves the previous bundle or nothing; the next writer removes what a killed one left.
Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
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


_RENAME_EXCHANGE = 2  # linux/fs.h: atomically swap two paths (Linux >= 3.15, most local filesystems)
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap directories a and b (renameat2 RENAME_EXCHANGE). False where unsupported
    (not Linux, old kernel/libc, filesystem without it); the caller then falls back to renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(out_dir) -> list[Path]:
    """Clean up after writers of `out_dir` that were killed (SIGKILL runs no cleanup).

    - `.NAME.tmp-PID-*`: a staging dir of a dead writer -> deleted (it was never committed).
    - `.NAME.old-PID`: the previous bundle moved aside by a dead writer's fallback commit -> put back
      at `out_dir` if nothing is there, else deleted.
    Directories of live PIDs are left alone. Returns the paths removed or restored.
    """
    out_dir = Path(out_dir)
    parent, name = out_dir.parent, out_dir.name
    done = []
    if not parent.is_dir():
        return done
    for kind in ("old", "tmp"):
        for p in sorted(parent.glob(f".{name}.{kind}-*")):
            try:
                pid = int(p.name[len(f".{name}.{kind}-"):].split("-")[0])
            except ValueError:
                continue
            if not p.is_dir() or _pid_alive(pid):
                continue
            if kind == "old" and not out_dir.exists():
                p.replace(out_dir)
            else:
                shutil.rmtree(p, ignore_errors=True)
            done.append(p)
    return done


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
        recover_stale(self.out_dir)
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
        if self.out_dir.exists() and _exchange(self.tmp, self.out_dir):
            old = self.tmp  # the swap put the previous bundle here; out_dir was never absent
        elif self.out_dir.exists():
            # no atomic swap on this OS/filesystem: two renames, with a moment where out_dir is
            # absent; recover_stale() puts '.name.old-PID' back if a kill lands in that moment
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
            self.out_dir.replace(old)
            self.tmp.replace(self.out_dir)
        else:
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
