"""The CLI never overwrites its inputs or its own outputs, and fails on a full disk, a read-only
file system or a parent that is a file with one line naming the path and nothing half-written
(issue 14, class 3); the mask PNG is viewable (class 8). Real files, real tmpfs mounts."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefss.cli import main
from edgefss.fsio import OutputError, write_bytes_atomic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def photos(tmp_path, small_rgb):
    """a.png (support), q.png (query), and two queries named x.png in different folders."""
    d = tmp_path / "in"
    (d / "one").mkdir(parents=True)
    (d / "two").mkdir()
    for p in ("a.png", "q.png", "one/x.png", "two/x.png", "m.png", "m_overlay.png"):
        Image.fromarray(small_rgb).save(d / p)
    return d


def _predict(cst_bundle, support, queries, out, *extra):
    return main(["predict", "--bundle", str(cst_bundle), "--support", *support, "--query",
                 *[str(q) for q in queries], "--out", str(out), *extra])


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def _digests(d: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("which", ["query", "support"])
def test_output_over_an_input_is_refused(cst_bundle, photos, capsys, which):
    before = _digests(photos)
    out = photos / ("q.png" if which == "query" else "a.png")
    rc = _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], [photos / "q.png"], out)
    assert rc == 1
    _one_error_line(capsys, str(out), "--source" if which == "query" else "--support")  # --query is --source's alias
    assert _digests(photos) == before


def test_overlay_name_over_an_input_is_refused(cst_bundle, photos, capsys):
    before = _digests(photos)
    # --out m.png puts the overlay at m_overlay.png, which is the query itself
    rc = _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], [photos / "m_overlay.png"], photos / "m.png")
    assert rc == 1
    _one_error_line(capsys, str(photos / "m_overlay.png"), "--source")
    assert _digests(photos) == before


def test_collisions_get_unique_names_and_a_note(cst_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out" / "r.png"
    queries = [photos / "one/x.png", photos / "two/x.png", photos / "m.png", photos / "m_overlay.png"]
    assert _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], queries, out) == 0
    stdout = capsys.readouterr().out
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == sorted(["r_x.png", "r_x_overlay.png", "r_x-2.png", "r_x_overlay-2.png",
                            "r_m.png", "r_m_overlay.png", "r_m_overlay-2.png", "r_m_overlay_overlay.png"])
    assert stdout.count("note:") == 3 and "r_x-2.png" in stdout and "r_m_overlay-2.png" in stdout


def test_out_suffix_case_is_kept(cst_bundle, photos, tmp_path):
    out = tmp_path / "X.PNG"
    assert _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], [photos / "q.png"], out) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["X.PNG", "X_overlay.PNG"]


def test_mask_png_is_viewable(cst_bundle, photos, tmp_path):
    one, two, raw = tmp_path / "one.png", tmp_path / "two.png", tmp_path / "raw.png"
    a = f"{photos / 'a.png'}:dog"
    b = f"{photos / 'q.png'}:cat"
    assert _predict(cst_bundle, [a], [photos / "q.png"], one) == 0
    assert _predict(cst_bundle, [a, b], [photos / "q.png"], two) == 0
    assert _predict(cst_bundle, [a, b], [photos / "q.png"], raw, "--raw-mask") == 0
    with Image.open(one) as im:
        assert im.mode == "L" and set(np.unique(np.asarray(im)).tolist()) <= {0, 255}
    with Image.open(two) as im, Image.open(raw) as r:
        assert im.mode == "P" and r.mode == "L"
        idx = np.asarray(im)
        assert np.array_equal(idx, np.asarray(r))  # the palette PNG's values are the class indices
        assert idx.max() <= 2
        pal = np.array(im.getpalette()[:9]).reshape(3, 3)
        assert pal[0].tolist() == [0, 0, 0] and pal[1:].max(axis=1).min() >= 128  # visible colours


def test_parent_that_is_a_file(cst_bundle, photos, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "m.png"
    assert _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], [photos / "q.png"], out) == 1
    _one_error_line(capsys, str(out), "is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@contextlib.contextmanager
def _tmpfs(path: Path, size="128k"):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'not permitted'}); CI runs as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(d: Path) -> None:
    with open(d / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def _run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefss", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)


def test_disk_full_one_line_nothing_half_written(cst_bundle, photos, tmp_path):
    with _tmpfs(tmp_path / "full") as d:
        _fill(d)
        out = d / "mask.png"
        r = _run_cli("predict", "--bundle", str(cst_bundle), "--support", f"{photos / 'a.png'}:dog",
                     "--query", str(photos / "q.png"), "--out", str(out))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.strip().splitlines() if ": warning: " not in ln]
        assert len(lines) == 1 and str(out) in lines[0] and "no space left" in lines[0], lines
        assert sorted(p.name for p in d.iterdir()) == ["filler"]  # no mask, no temp file


def test_read_only_fs_one_line(cst_bundle, photos, tmp_path):
    with _tmpfs(tmp_path / "ro") as d:
        (d / "old.png").write_bytes(b"previous result")
        r = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.decode().strip()}")
        out = d / "new.png"  # (an existing --out file is never replaced: it would get new-2.png)
        r = _run_cli("predict", "--bundle", str(cst_bundle), "--support", f"{photos / 'a.png'}:dog",
                     "--query", str(photos / "q.png"), "--out", str(out))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.strip().splitlines() if ": warning: " not in ln]
        assert len(lines) == 1 and str(out) in lines[0] and "read-only" in lines[0], lines
        assert (d / "old.png").read_bytes() == b"previous result"


def test_write_bytes_atomic_keeps_the_old_content_when_the_disk_fills(tmp_path):
    with _tmpfs(tmp_path / "small", size="64k") as d:
        target = d / "r.bin"
        target.write_bytes(b"old")
        with pytest.raises(OutputError, match=r"cannot write '.*r\.bin': no space left"):
            write_bytes_atomic(target, b"x" * (1 << 20))
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in d.iterdir()) == ["r.bin"]


def test_random_weight_results_say_so_in_the_log_the_overlay_and_a_warning(cst_bundle, photos, tmp_path, capsys):
    """A result of a bundle exported without a checkpoint is labelled wherever it is shown."""
    import warnings

    from edgefss.bundle import read_manifest
    from edgefss.runtime import Segmenter
    from edgefss.runtime.segmenter import random_weights_note
    from edgefss.runtime.visualize import overlay

    man = read_manifest(cst_bundle)
    assert man["weights"]["random_init"] is True and random_weights_note(man)
    assert random_weights_note({**man, "weights": {"checkpoint": "x.pth", "random_init": False}}) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Segmenter.load(cst_bundle)
    assert sum("RANDOMLY initialised" in str(w.message) for w in caught) == 1
    out = tmp_path / "m.png"
    assert _predict(cst_bundle, [f"{photos / 'a.png'}:dog"], [photos / "q.png"], out) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    # the overlay carries the note: it differs from the same overlay drawn without it
    img = np.asarray(Image.open(photos / "q.png").convert("RGB"))
    mask = np.zeros(img.shape[:2], np.uint8)
    with_note = overlay(img, mask, ["dog"], probs=[0.5], note=random_weights_note(man))
    assert not np.array_equal(with_note, overlay(img, mask, ["dog"], probs=[0.5]))
    saved = np.asarray(Image.open(tmp_path / "m_overlay.png").convert("RGB"))
    assert saved.shape == img.shape
