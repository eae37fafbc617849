"""A bundle cannot be edited without detection (issue 14, class 4), and its files are readable
by other accounts (class 8): real bundle folders, edited the ways a user or a tool would."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgefss.bundle import MANIFEST, SEAL, read_manifest, seal, sha256_file
from edgefss.errors import BundleError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tlg(tlg_bundle, tmp_path):
    d = tmp_path / "tlg"
    shutil.copytree(tlg_bundle, d)
    return d


@pytest.fixture
def cst(cst_bundle, tmp_path):
    d = tmp_path / "cst"
    shutil.copytree(cst_bundle, d)
    return d


def _man(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text())


def _write(d: Path, man: dict, reseal: bool) -> None:
    """Write an edited manifest; reseal=True also recomputes the hashes and the seal, as a
    deliberate tamperer who read this code would."""
    if reseal:
        for name in man["files"]:
            p = d / name
            man["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        man[SEAL] = seal(man)
    (d / MANIFEST).write_text(json.dumps(man, indent=2))


def _load(d):
    from edgefss.runtime import Segmenter

    return Segmenter.load(d)


def test_untouched_bundle_loads(tlg, cst):
    for d in (tlg, cst):
        assert read_manifest(d)[SEAL] == seal(_man(d))
        _load(d)


@pytest.mark.parametrize("edit", ["std", "imgsz_ok", "swap_files", "add_field"])
def test_edited_manifest_is_refused(cst, edit):
    man = _man(cst)
    if edit == "std":
        man["preprocess"]["std"] = [0.3, 0.3, 0.3]  # valid numbers: silently different results before
    elif edit == "imgsz_ok":
        man["preprocess"]["imgsz"] = 64
    elif edit == "swap_files":
        g = man["graphs"]
        g["encoder"]["file"], g["head"]["file"] = g["head"]["file"], g["encoder"]["file"]
    else:
        man["note"] = "harmless?"
    _write(cst, man, reseal=False)
    with pytest.raises(BundleError, match="edited after export"):
        read_manifest(cst)


def test_file_dropped_from_files_then_changed_is_refused(tlg):
    man = _man(tlg)
    del man["files"]["text_table.npz"]
    _write(tlg, man, reseal=True)
    (tlg / "text_table.npz").write_bytes(b"changed")
    with pytest.raises(BundleError, match="text_table.npz.*does not list"):
        read_manifest(tlg)


def test_swapped_graph_table_is_refused_at_load(cst):
    man = _man(cst)
    g = man["graphs"]
    g["encoder"]["file"], g["head"]["file"] = g["head"]["file"], g["encoder"]["file"]
    _write(cst, man, reseal=True)
    read_manifest(cst)  # sealed again: only the graphs' own I/O can tell
    with pytest.raises(BundleError, match=r"head\.onnx.*graph 'encoder'.*inputs"):
        _load(cst)


def test_replaced_graph_is_refused_at_load(cst, tlg):
    shutil.copyfile(tlg / "head.onnx", cst / "head.onnx")  # another model's head, hashes redone
    _write(cst, _man(cst), reseal=True)
    with pytest.raises(BundleError, match=r"head\.onnx.*graph 'head'"):
        _load(cst)


def test_graph_dtype_or_shape_mismatch_names_file_and_tensor(cst):
    man = _man(cst)
    name, t = next(iter(man["graphs"]["encoder"]["inputs"].items()))
    t["shape"] = [d if isinstance(d, str) else d + 8 for d in t["shape"]]
    _write(cst, man, reseal=True)
    with pytest.raises(BundleError, match=rf"encoder\.onnx.*input '{name}' has shape"):
        _load(cst)
    t["shape"] = [d if isinstance(d, str) else d - 8 for d in t["shape"]]
    t["dtype"] = "float16"
    _write(cst, man, reseal=True)
    with pytest.raises(BundleError, match=rf"input '{name}' is float32; the manifest says float16"):
        _load(cst)


@pytest.mark.parametrize("field, value", [
    ("max_batch", 0), ("max_batch", -3), ("max_batch", 1.5), ("max_batch", True),
    ("imgsz", 12), ("imgsz", 1 << 20), ("std", [0.0, 0.2, 0.2]), ("std", [1e9, 1, 1]),
    ("mean", [-4, 0, 0]), ("threshold", 7),
])
def test_numeric_fields_are_validated(cst, field, value):
    man = _man(cst)
    if field == "max_batch":
        man["graphs"]["head"]["max_batch"] = value
    elif field == "threshold":
        man["pseudo_mask"]["threshold"] = value
    else:
        man["preprocess"][field] = value
    _write(cst, man, reseal=True)  # even a correctly sealed manifest must make sense
    with pytest.raises(BundleError, match=field):
        _load(cst)


@pytest.mark.parametrize("kind", ["nan", "infinity", "deep", "huge", "duplicate", "not_utf8"])
def test_pathological_json_is_refused_cleanly(cst, kind):
    mp = cst / MANIFEST
    text = mp.read_text()
    if kind == "nan":
        text = text.replace('"threshold": 0.4', '"threshold": NaN')
    elif kind == "infinity":
        text = text.replace('"threshold": 0.4', '"threshold": -Infinity')
    elif kind == "deep":
        text = text[:-2] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}"
    elif kind == "huge":
        text = text[:-2] + ', "x": "' + "a" * (5 << 20) + '"}'
    elif kind == "duplicate":
        text = text.replace('"model": "cst"', '"model": "cst", "model": "tlg"')
    mp.write_bytes(text.encode() if kind != "not_utf8" else b"\xff\xfe" + text.encode("utf-16-le"))
    with pytest.raises(BundleError, match="^bundle: "):
        read_manifest(cst)


def test_max_batch_zero_via_the_cli_is_one_line(cst, tmp_path, small_rgb):
    from PIL import Image

    man = _man(cst)
    man["graphs"]["head"]["max_batch"] = 0
    _write(cst, man, reseal=True)
    img = tmp_path / "a.png"
    Image.fromarray(small_rgb).save(img)
    r = subprocess.run([sys.executable, "-m", "edgefss", "predict", "--bundle", str(cst), "--support",
                        f"{img}:thing", "--query", str(img), "--out", str(tmp_path / "m.png")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "max_batch" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bundle_files_have_normal_permissions(tmp_path):
    """Written under umask 022 (in a child process, the umask is per process): files 0644,
    the folder 0755, the text table included (it is staged through mkstemp, 0600)."""
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); os.umask(0o022)\n"
            "from test_runtime import build_tiny_bundle\n"
            "build_tiny_bundle(sys.argv[1], 'tlg')\n")
    out = tmp_path / "b"
    subprocess.run([sys.executable, "-c", code, str(out), str(REPO / "tests")], check=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "text_table.npz" in modes and set(modes.values()) == {0o644}, modes


def test_resealed_imgsz_that_the_graph_does_not_take_is_refused(cst):
    man = _man(cst)
    man["preprocess"]["imgsz"] = 64  # the tiny graphs take 32
    _write(cst, man, reseal=True)
    with pytest.raises(BundleError, match=r"encoder\.onnx.*takes images of 32x32.*imgsz is 64"):
        _load(cst)


def test_graph_io_check_covers_outputs(cst):
    man = _man(cst)
    k, t = next((k, t) for k, t in man["graphs"]["head"]["outputs"].items() if any(isinstance(d, int) for d in t["shape"]))
    t["shape"] = [d if isinstance(d, str) else d * 2 for d in t["shape"]]
    _write(cst, man, reseal=True)
    with pytest.raises(BundleError, match=rf"head\.onnx.*output '{k}' has shape"):
        _load(cst)
