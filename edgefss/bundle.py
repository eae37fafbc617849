"""Bundle directories: the one artifact `edgefss export` writes and the runtime loads.

A bundle is a directory holding the graphs (ONNX / OpenVINO IR / TensorRT plan), side files
(e.g. the TLG text table) and `manifest.json`, which records the model, preprocessing, graph
I/O, precision, backend, verification figures and the SHA-256 of every file. Bundles are
written atomically: everything goes to a temporary sibling directory which is swapped into
place only when complete (Linux renameat2 RENAME_EXCHANGE; two renames elsewhere), so a killed
export leaves the previous bundle or nothing; the next writer removes what a killed one left.
A writer never replaces what it did not create: the output must be absent, an empty folder or an
edgefss bundle holding only its own files. SIGTERM/SIGHUP during a write unwind like Ctrl-C, so the
staging folders are removed; SIGKILL leftovers are removed by the next export.

The manifest seals itself: `manifest_sha256` is the SHA-256 of its canonical JSON without that
field, so an edited manifest (a changed `preprocess.std`, a swapped graph table) is refused, and
every file the runtime reads must be listed with its SHA-256. Never imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from edgefss._version import __version__
from edgefss.errors import BundleError, InputError
from edgefss.signals import _Terminated, deferred_signals, unwind_on_signals  # noqa: F401 (re-exported)

FORMAT = "edgefss-bundle"
# 2: the manifest carries `manifest_sha256` over its own canonical JSON (1 had none: re-export)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SEAL = "manifest_sha256"
MAX_MANIFEST_BYTES = 4 << 20  # a real manifest is a few KiB; more is not a manifest
MAX_JSON_DEPTH = 32
MAX_IMGSZ = 4096
MAX_BATCH_LIMIT = 1024
WORK_PREFIX = "edgefss-export-"


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


def _is_bundle_dir(d: Path) -> tuple[bool, list]:
    """(is an edgefss bundle, entries in it that its manifest does not list)."""
    try:
        man = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return False, []
    if not isinstance(man, dict) or man.get("format") != FORMAT or not isinstance(man.get("files"), dict):
        return False, []
    own = set(man["files"]) | {MANIFEST}
    return True, sorted(p.name for p in d.iterdir() if p.name not in own)


def check_output_dir(out_dir) -> Path:
    """Refuse an output the export did not create: it must be absent, an empty folder, or an
    edgefss bundle holding only the files its manifest lists (then it is replaced atomically).
    Never the current folder or one above it.

    Returns:
        the resolved path. Raises InputError naming the path and what was expected.
    """
    out = Path(out_dir).resolve()
    want = "expected a new folder name or an existing edgefss bundle to replace; nothing was written"
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: '{out_dir}' is an existing file, not a folder; {want}")
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise InputError(f"--out: '{out_dir}' is the current folder or one above it; {want}")
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise InputError(f"--out: cannot read the existing folder '{out_dir}' ({exc.strerror}); {want}") from exc
        if entries:
            ok, foreign = _is_bundle_dir(out)
            if not ok:
                raise InputError(f"--out: '{out_dir}' is an existing folder that is not an edgefss bundle "
                                 f"(holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}); {want}")
            if foreign:
                raise InputError(f"--out: the bundle '{out_dir}' also holds files it does not list "
                                 f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); move them "
                                 "out first, or choose another --out; nothing was written")
    return out


def _remove_stale_workdirs(root: Path, max_age_s: float = 6 * 3600) -> list[Path]:
    """Remove export work folders (`edgefss-export-PID-*`) of dead processes, and unnamed ones
    (`edgefss-export-XXXX`, older edgefss) not touched for `max_age_s`."""
    done = []
    for p in root.glob(WORK_PREFIX + "*"):
        m = re.match(re.escape(WORK_PREFIX) + r"(\d+)-", p.name)
        try:
            if not p.is_dir() or p.is_symlink():
                continue
            if m:
                if _pid_alive(int(m.group(1))):
                    continue
            elif time.time() - p.stat().st_mtime < max_age_s:
                continue
        except OSError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


@contextlib.contextmanager
def export_workdir():
    """A private work folder under the system temp dir for intermediate graphs, removed on exit,
    on SIGTERM/SIGHUP/Ctrl-C, and (after SIGKILL or a crash) by the next export. Yields its Path."""
    root = Path(tempfile.gettempdir())
    _remove_stale_workdirs(root)
    with unwind_on_signals():
        try:
            d = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=root))
        except OSError as exc:
            _raise_output_error(exc, f"export: cannot create a work folder in '{root}' (set TMPDIR elsewhere)")
            raise
        try:
            yield d
        except OSError as exc:
            _raise_output_error(exc, f"export: cannot write intermediate graphs in '{d}' (set TMPDIR elsewhere)",
                                only_disk=True)
            raise
        finally:
            shutil.rmtree(d, ignore_errors=True)


def _raise_output_error(exc, what: str, only_disk: bool = False) -> None:
    """Re-raise a plain OSError of a write (disk full, read-only, permissions) as one-line
    OutputError naming `what`; anything else is left alone. only_disk: just ENOSPC/EDQUOT/EROFS
    (inside the work folder another OSError may be a reading problem with its own message)."""
    import errno

    from edgefss.errors import EdgeFSSError
    from edgefss.fsio import OutputError, _why

    if not isinstance(exc, OSError) or isinstance(exc, EdgeFSSError):
        return
    if only_disk and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return
    path = Path(exc.filename) if getattr(exc, "filename", None) else Path(".")
    raise OutputError(f"{what}: {_why(exc, path)}") from exc


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def _normal_permissions(d: Path) -> None:
    """Files 0666 and folders 0777 minus the umask (0644/0755 by default): staged files may come
    from mkstemp/mkdtemp (0600/0700), which would hide a bundle from a service account."""
    mask = _umask()
    os.chmod(d, 0o777 & ~mask)
    for p in d.iterdir():
        if p.is_file() and not p.is_symlink():
            os.chmod(p, 0o666 & ~mask)


def canonical_json(man: dict) -> bytes:
    """The bytes the manifest seal is computed over: sorted keys, no spaces, ASCII, no NaN."""
    body = {k: v for k, v in man.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def seal(man: dict) -> str:
    return hashlib.sha256(canonical_json(man)).hexdigest()


class BundleWriter:
    """Stage files for a bundle in a temp dir; `commit()` renames it into place.

    Usage:
        with BundleWriter(out_dir) as w:
            onnx.save(model, w.path("encoder.onnx"))
            w.commit(manifest)
    Leaving the `with` block without `commit` (an exception, Ctrl-C, SIGTERM) deletes the temp
    dir. `out_dir` must pass `check_output_dir` (InputError otherwise, before anything is written).
    """

    def __init__(self, out_dir):
        self.out_dir = check_output_dir(out_dir)
        self._given = out_dir
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out: cannot create the folder '{self.out_dir.parent}' ({exc.strerror})") from exc
        recover_stale(self.out_dir)
        self.tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}-{int(time.time() * 1e3)}"
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise InputError(f"--out: cannot write in '{self.out_dir.parent}' ({exc.strerror})") from exc
        self.committed = False
        self._signals = None

    def __enter__(self):
        self._signals = unwind_on_signals()
        self._signals.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if not self.committed:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            if self._signals is not None:
                self._signals.__exit__(None, None, None)
                self._signals = None
        _raise_output_error(exc, f"export: cannot write the bundle '{self.out_dir}'")
        return False

    def path(self, name: str) -> Path:
        """Where to write bundle file `name` (a plain file name, no folders)."""
        if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"bad bundle file name {name!r}")
        return self.tmp / name

    def commit(self, manifest: dict) -> Path:
        """Hash every staged file, write the sealed manifest.json, and atomically replace `out_dir`."""
        files = {}
        for p in sorted(self.tmp.iterdir()):
            if p.is_file() and p.name != MANIFEST:
                files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        man = dict(manifest)
        man.pop(SEAL, None)
        man.update(format=FORMAT, format_version=FORMAT_VERSION, edgefss_version=__version__,
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files=files)
        man[SEAL] = seal(man)
        tmp_man = self.tmp / (MANIFEST + ".part")
        with open(tmp_man, "w") as f:
            json.dump(man, f, indent=2, sort_keys=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        tmp_man.replace(self.tmp / MANIFEST)
        _normal_permissions(self.tmp)
        _fsync_dir(self.tmp)
        check_output_dir(self._given)  # again: the user may have put files there during the export
        old = None
        # a Ctrl-C/SIGTERM landing between the renames and `committed` would make __exit__ remove
        # what the renames just put in place: they and their record happen together
        try:
            with deferred_signals():
                if self.out_dir.exists() and _exchange(self.tmp, self.out_dir):
                    old = self.tmp  # the swap put the previous bundle here; out_dir was never absent
                elif self.out_dir.exists():
                    # no atomic swap on this OS/filesystem: two renames, with a moment where out_dir is
                    # absent; recover_stale() puts '.name.old-PID' back if a SIGKILL lands in that moment
                    old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
                    self.out_dir.replace(old)
                    self.tmp.replace(self.out_dir)
                else:
                    self.tmp.replace(self.out_dir)
                self.committed = True
        finally:  # also when a held signal is delivered at the end of the block
            if self.committed:
                _fsync_dir(self.out_dir.parent)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def _load_json(mp: Path) -> object:
    """Parse manifest.json, refusing what no writer produces: huge files, NaN/Infinity,
    duplicate keys, deep nesting."""
    size = mp.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle: '{mp}' is {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes")

    def no_constant(name):
        raise BundleError(f"bundle: '{mp}' contains {name}; expected finite numbers only")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise BundleError(f"bundle: '{mp}' repeats the key(s) {dup} in one object")
        return dict(pairs)

    try:
        text = mp.read_bytes().decode("utf-8")
        # nesting is bounded before parsing: the parser would recurse once per level
        depth = peak = 0
        in_str = esc = False
        for ch in text:
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch in "[{":
                depth += 1
                peak = max(peak, depth)
                if peak > MAX_JSON_DEPTH:
                    raise BundleError(f"bundle: '{mp}' nests deeper than {MAX_JSON_DEPTH} levels; not a manifest")
            elif ch in "]}":
                depth -= 1
        return json.loads(text, parse_constant=no_constant, object_pairs_hook=no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"bundle: '{mp}' is not valid JSON ({exc})") from exc


def runtime_files(man: dict) -> dict[str, str]:
    """file name -> what reads it, for every file the runtime opens (graphs, weights, text table)."""
    need = {}
    for g, info in man["graphs"].items():
        need[info["file"]] = f"graph '{g}'"
        if isinstance(info.get("weights"), str):
            need[info["weights"]] = f"graph '{g}' weights"
    tt = man.get("text_table")
    if man.get("model") == "tlg" or tt is not None:
        f = tt.get("file", "text_table.npz") if isinstance(tt, dict) else "text_table.npz"
        need[f] = "the text table"
    return need


def read_manifest(bundle_dir, verify: bool = True) -> dict:
    """Read and check a bundle's manifest.

    Always: the manifest parses (bounded size and nesting, no NaN, no duplicate keys), its fields
    have the types and ranges the runtime needs, its seal `manifest_sha256` matches its content,
    and every file the runtime reads is listed in `files`.

    Args:
        bundle_dir: the bundle directory.
        verify: also check every listed file exists with the recorded size and SHA-256.

    Raises:
        BundleError: naming the directory/file and what was expected.
    """
    d = Path(bundle_dir)
    if not d.is_dir():
        raise BundleError(f"bundle: '{d}' is not a directory; expected the folder written by 'edgefss export'")
    mp = d / MANIFEST
    if not mp.is_file():
        raise BundleError(f"bundle: '{d}' has no {MANIFEST}; it is not an edgefss bundle or was not written completely")
    man = _load_json(mp)
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise BundleError(f"bundle: '{mp}' is not an edgefss manifest (format != {FORMAT!r})")
    fv = man.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int) or fv > FORMAT_VERSION:
        raise BundleError(
            f"bundle: '{d}' has format_version {fv!r}, written by edgefss {man.get('edgefss_version')}; "
            f"this edgefss {__version__} reads format_version <= {FORMAT_VERSION}: upgrade edgefss"
        )
    for key in ("model", "backend", "precision", "preprocess", "graphs", "files"):
        if key not in man:
            raise BundleError(f"bundle: '{mp}' lacks the required field {key!r}")
    _check_schema(man, mp)
    if fv < 2 or SEAL not in man:
        raise BundleError(f"bundle: '{mp}' has no {SEAL} (format_version {fv}, edgefss "
                          f"{man.get('edgefss_version')}), so edits to it cannot be detected; re-export the "
                          f"bundle with this edgefss {__version__}")
    try:
        ok = isinstance(man[SEAL], str) and man[SEAL] == seal(man)
    except ValueError:  # not JSON-serialisable canonically
        ok = False
    if not ok:
        raise BundleError(f"bundle: '{mp}' was edited after export (its content does not match {SEAL}); "
                          "re-export the bundle instead of editing its manifest")
    for name, what in runtime_files(man).items():
        if name not in man["files"]:
            raise BundleError(f"bundle: '{d}' {what} reads '{name}', which the manifest's 'files' does not "
                              "list with a SHA-256; re-export the bundle")
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


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_schema(man: dict, mp: Path) -> None:
    """Types and ranges of the fields the runtime reads, so a hand-edited manifest fails here with
    one BundleError instead of a KeyError/ZeroDivisionError deep inside the runtime."""

    def get(field: str):
        cur = man
        for k in field.split("."):
            cur = cur.get(k) if isinstance(cur, dict) else None
        return cur

    def bad(field: str, want: str):
        raise BundleError(f"bundle: '{mp}' field {field} is {get(field)!r}; expected {want}")

    def is_num(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    for key in ("model", "backend", "precision"):
        if not isinstance(man[key], str):
            bad(key, "a string")
    pre = man["preprocess"]
    if not isinstance(pre, dict):
        bad("preprocess", "an object {imgsz, mean, std}")
    imgsz = pre.get("imgsz")
    if not is_int(imgsz) or not 8 <= imgsz <= MAX_IMGSZ or imgsz % 8:
        bad("preprocess.imgsz", f"an int multiple of 8 in [8, {MAX_IMGSZ}]")
    for k in ("mean", "std"):
        v = pre.get(k)
        if not (isinstance(v, list) and len(v) == 3 and all(is_num(x) for x in v)):
            bad(f"preprocess.{k}", "a list of 3 finite numbers")
    if not all(0.0 <= x <= 1.0 for x in pre["mean"]):
        bad("preprocess.mean", "3 numbers in [0, 1] (RGB scaled to [0, 1])")
    if not all(1e-3 <= x <= 1.0 for x in pre["std"]):
        bad("preprocess.std", "3 numbers in [0.001, 1] (RGB scaled to [0, 1])")
    graphs = man["graphs"]
    if not isinstance(graphs, dict):
        bad("graphs", "an object {graph name: {file, inputs, outputs}}")
    for g, info in graphs.items():
        if not (isinstance(info, dict) and isinstance(info.get("file"), str)
                and all(isinstance(info.get(k, {}), dict) for k in ("inputs", "outputs"))):
            bad(f"graphs.{g}", "an object with 'file' (str), 'inputs' and 'outputs' (objects)")
        for kind in ("inputs", "outputs"):
            for n, t in info.get(kind, {}).items():
                shape = t.get("shape") if isinstance(t, dict) else None
                if not (isinstance(t, dict) and isinstance(t.get("dtype", ""), str) and isinstance(shape, list)
                        and all((is_int(x) and x >= 0) or isinstance(x, str) or x is None for x in shape)):
                    raise BundleError(f"bundle: '{mp}' graphs.{g}.{kind}.{n} is {t!r}; expected "
                                      '{"shape": [ints or axis names], "dtype": "float32"}')
        if "weights" in info and not isinstance(info["weights"], str):
            bad(f"graphs.{g}.weights", "a file name")
        if "max_batch" in info and not (is_int(info["max_batch"]) and 1 <= info["max_batch"] <= MAX_BATCH_LIMIT):
            bad(f"graphs.{g}.max_batch", f"an int in [1, {MAX_BATCH_LIMIT}]")
    pm = man.get("pseudo_mask")
    thr = pm.get("threshold") if isinstance(pm, dict) else None
    if pm is not None and not (isinstance(pm, dict) and (thr is None or (is_num(thr) and 0.0 <= thr <= 1.0))):
        bad("pseudo_mask", "an object with a 'threshold' in [0, 1] (or null)")
    tt = man.get("text_table")
    if tt is not None and not (isinstance(tt, dict) and isinstance(tt.get("file", ""), str)):
        bad("text_table", "an object with a 'file' name")
    files = man["files"]
    if not isinstance(files, dict):
        bad("files", "an object {file name: {sha256, bytes}}")
    for name, info in files.items():
        # A plain file name inside the bundle: '../x' or 'a/b' would hash files outside it.
        if (Path(name).name != name or name in (".", "..", MANIFEST) or not isinstance(info, dict)
                or not (isinstance(info.get("sha256"), str) and _HEX64.fullmatch(info["sha256"]))
                or not (is_int(info.get("bytes")) and info["bytes"] >= 0)):
            raise BundleError(f"bundle: '{mp}' has a bad 'files' entry {name!r}: expected a plain file name "
                              'mapped to {"sha256": 64 hex digits, "bytes": int}')
    for g, info in graphs.items():
        for k in ("file", "weights"):
            f = info.get(k)
            if isinstance(f, str) and (Path(f).name != f or f in (".", "..", MANIFEST)):
                bad(f"graphs.{g}.{k}", "a plain file name inside the bundle")


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _engine_io(backend, graph: str):
    """{"inputs"/"outputs": {name: (dtype or None, [dims, None/str = dynamic])}} of a loaded graph,
    or None when the engine does not tell (tensorrt)."""
    sess = getattr(backend, "sessions", {}).get(graph)
    if sess is not None and hasattr(sess, "get_inputs"):  # onnxruntime
        def sig(vals):
            return {v.name: (_ORT_DTYPES.get(v.type), [d if isinstance(d, int) else None for d in v.shape])
                    for v in vals}

        return {"inputs": sig(sess.get_inputs()), "outputs": sig(sess.get_outputs())}
    comp = getattr(backend, "compiled", {}).get(graph)
    if comp is not None and hasattr(comp, "inputs"):  # openvino: names and static dims
        def sig(vals):
            out = {}
            for v in vals:
                try:
                    dims = [d.get_length() if d.is_static else None for d in v.get_partial_shape()]
                except Exception:  # noqa: BLE001 — a dynamic rank: leave the shape unchecked
                    dims = None
                out[v.get_any_name()] = (None, dims)
            return out

        return {"inputs": sig(comp.inputs), "outputs": sig(comp.outputs)}
    return None


def check_graph_io(bundle_dir, manifest: dict, backend) -> None:
    """Compare every loaded graph's input/output names, dtypes and static dims with the manifest.

    Raises:
        BundleError naming the graph file and the first mismatch (a replaced or swapped graph).
    """
    for g, info in manifest["graphs"].items():
        io = _engine_io(backend, g)
        if io is None:
            continue
        where = f"bundle: '{Path(bundle_dir) / info['file']}' (graph '{g}')"
        for kind in ("inputs", "outputs"):
            want, have = info.get(kind, {}), io[kind]
            if set(want) != set(have):
                raise BundleError(f"{where} has {kind} {sorted(have)}; the manifest lists {sorted(want)}: "
                                  "the graph was replaced or does not belong to this bundle")
            for n, (dtype, dims) in have.items():
                wd, ws = want[n].get("dtype"), want[n].get("shape")
                if dtype is not None and wd is not None and dtype != wd:
                    raise BundleError(f"{where} {kind[:-1]} '{n}' is {dtype}; the manifest says {wd}")
                if dims is None or ws is None:
                    continue
                if len(dims) != len(ws) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                               for a, b in zip(dims, ws)):
                    raise BundleError(f"{where} {kind[:-1]} '{n}' has shape {dims}; the manifest says {ws}")
        # the runtime resizes every image to preprocess.imgsz: the graph must take that size
        dims = io["inputs"].get("image", (None, None))[1]
        S = manifest["preprocess"]["imgsz"]
        if dims and len(dims) == 4 and any(isinstance(d, int) and d != S for d in dims[2:]):
            raise BundleError(f"{where} takes images of {dims[2]}x{dims[3]}; the manifest's preprocess.imgsz "
                              f"is {S}")
