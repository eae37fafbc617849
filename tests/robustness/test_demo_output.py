"""The demo never loses the video (issue 14, class 5): SIGINT/SIGTERM mid-run (real processes),
an unreadable frame, frames of a second size, two files sharing a stem, an unsupported suffix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from _procs import sigint_default  # noqa: E402

cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[2]


def _frames(d: Path, n: int, size=(48, 64), start=0, suffix=".png") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(0)
    for i in range(start, start + n):
        img = (r.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}{suffix}")
    return d


def _count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened(), video
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def _cmd(bundle, support, source, output, *extra):
    return [sys.executable, "-m", "edgefss", "demo", "--bundle", str(bundle), "--support", f"{support}:thing",
            "--source", str(source), "--output", str(output), *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("sig, suffix", [(signal.SIGINT, ".mp4"), (signal.SIGTERM, ".avi")])
def test_signal_keeps_every_frame_so_far_in_a_playable_video(cst_bundle, tmp_path, sig, suffix):
    src = _frames(tmp_path / "frames", 600, size=(32, 40))
    out = tmp_path / f"out{suffix}"
    p = subprocess.Popen(_cmd(cst_bundle, src / "00000.png", src, out), stderr=subprocess.PIPE,
                         preexec_fn=sigint_default,
                         stdout=subprocess.PIPE, text=True, env=_env())
    t0, seen = time.monotonic(), []
    for line in p.stderr:
        seen.append(line)
        if line.startswith("frame 50 "):
            p.send_signal(sig)
            break
        assert time.monotonic() - t0 < 300, "".join(seen)
    _, err = p.communicate(timeout=120)
    err = "".join(seen) + err
    assert p.returncode != 0 and "Traceback" not in err, err  # stopped, not finished
    kept = [ln for ln in err.splitlines() if "kept the" in ln]
    assert len(kept) == 1 and str(out) in kept[0], err
    n = int(kept[0].split("kept the ")[1].split()[0])
    assert 50 <= n < 600
    assert _count(out) == n  # every frame written so far, in a file OpenCV plays
    assert [q.name for q in tmp_path.iterdir() if q.name.startswith(".")] == []  # no temp left


def _run(args):
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)


def test_bad_frame_and_second_size_keep_all_frames(cst_bundle, tmp_path):
    src = _frames(tmp_path / "f", 10, size=(48, 64))
    _frames(src, 10, size=(40, 30), start=10)
    (src / "00005x.png").write_bytes(b"not an image")  # sorts between 00005 and 00006
    out = tmp_path / "v.avi"
    r = _run(_cmd(cst_bundle, src / "00000.png", src, out))
    assert r.returncode == 0, r.stderr
    assert _count(out) == 20  # 10 + 10 resized, none dropped
    assert r.stderr.count("frames of another size are resized") == 1, r.stderr
    assert r.stderr.count("skipped frame") == 1 and "00005x.png" in r.stderr
    assert "1 unreadable source frames skipped, 10 frames resized" in r.stdout


def test_same_stem_frames_do_not_collide(cst_bundle, tmp_path):
    src = _frames(tmp_path / "f", 2, suffix=".png")
    _frames(src, 2, suffix=".jpg")
    out = tmp_path / "pngs"
    r = _run(_cmd(cst_bundle, src / "00000.png", src, out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["00000_jpg.png", "00000_png.png", "00001_jpg.png",
                                                     "00001_png.png"]


@pytest.mark.parametrize("name", ["out.gif", "out.jpg"])
def test_unsupported_output_suffix_is_refused_not_made_a_folder(cst_bundle, tmp_path, name):
    src = _frames(tmp_path / "f", 2)
    r = _run(_cmd(cst_bundle, src / "00000.png", src, tmp_path / name))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ": warning: " not in ln]
    assert len(lines) == 1 and name in lines[0] and ".mp4" in lines[0], lines
    assert not (tmp_path / name).exists()


def test_output_over_the_source_folder_is_refused(cst_bundle, tmp_path):
    src = _frames(tmp_path / "f", 2)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    r = _run(_cmd(cst_bundle, src / "00000.png", src, src))
    assert r.returncode == 1 and "is the source itself" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
