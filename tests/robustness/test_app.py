"""The embedded app (`edgefss demo`, examples/camera_app.py) run headless on DAVIS frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefss.errors import InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dog(shared_data):
    d = shared_data / "davis2016_val_subset" / "dog"
    return sorted((d / "images").iterdir()), sorted((d / "masks").iterdir()), d / "images"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    return env


def test_demo_cli_headless_video_without_torch(cst_bundle, dog, tmp_path):
    """`edgefss demo` writes one annotated video frame per DAVIS frame, with torch unimportable."""
    import cv2

    imgs, masks, folder = dog
    out = tmp_path / "demo.avi"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgefss.cli import main\n"
            f"sys.exit(main(sys.argv[1:]))\n")
    args = ["demo", "--bundle", str(cst_bundle), "--support", f"{imgs[0]}:dog",
            "--support-mask", f"{imgs[0]}:{masks[0]}", "--source", str(folder), "--output", str(out)]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=_env(),
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(imgs)} frames" in r.stdout
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == len(imgs)
    first = cv2.imread(str(imgs[0]))
    assert frames[0].shape == first.shape
    # annotated: legend box (top-left) and FPS box (bottom-left) darken the corners
    assert frames[0][:10, :10].mean() < first[:10, :10].mean()
    assert frames[0][-8:, :40].mean() < first[-8:, :40].mean()
    assert not list(tmp_path.glob(".demo.*"))  # no temporary video left behind


def test_camera_app_writes_pngs_with_overlay(cst_bundle, dog, tmp_path):
    imgs, masks, folder = dog
    out = tmp_path / "frames"
    r = subprocess.run([sys.executable, str(REPO / "examples" / "camera_app.py"), "--bundle", str(cst_bundle),
                        "--support", f"{imgs[0]}:dog", "--source", str(folder), "--output", str(out),
                        "--max-frames", "3"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == [p.stem for p in imgs[:3]]


def test_run_demo_overlay_matches_prediction(cst_bundle, dog, tmp_path):
    """In-process: every frame is predicted once, and labelled pixels are recoloured, others not."""
    from edgefss.app import DemoConfig, run_demo
    from edgefss.runtime import Segmenter
    from edgefss.transforms import load_image

    imgs, masks, folder = dog
    seg = Segmenter.load(cst_bundle)
    preds = {}
    real_stream = seg.predict_stream  # the demo segments its frames through predict_stream

    def spy(frames, *a, **k):
        for p in real_stream(frames, *a, **k):
            preds[len(preds)] = p
            yield p

    seg.predict_stream = spy
    cfg = DemoConfig(bundle=str(cst_bundle), support=(str(imgs[0]),), classes=("dog",), masks=(str(masks[0]),),
                     source=str(folder), output=str(tmp_path / "o"), max_frames=2, alpha=0.5)
    stats = run_demo(cfg, segmenter=seg)
    assert stats.frames == 2 == len(preds) and len(stats.latency_ms) == 2 and stats.fps > 0
    import cv2

    got = cv2.imread(str(tmp_path / "o" / f"{imgs[1].stem}.png"))[:, :, ::-1]
    src = load_image(imgs[1])
    mask = preds[1].mask
    h, w = src.shape[:2]
    body = np.zeros((h, w), bool)
    body[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True  # away from legend, HUD and contour lines
    changed = np.abs(got.astype(int) - src.astype(int)).sum(-1) > 3
    inner = (cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0) & body
    outer = (cv2.dilate(mask, np.ones((5, 5), np.uint8)) == 0) & body
    assert inner.any() and outer.any()  # the seeded tiny model labels part of the frame
    assert changed[inner].mean() > 0.9
    assert changed[outer].mean() < 0.05


def test_bad_sources_and_outputs(cst_bundle, dog, tmp_path, monkeypatch):
    from edgefss.app import DemoConfig, open_source, run_demo

    imgs, _, _ = dog
    with pytest.raises(InputError, match="not found"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        open_source(tmp_path / "empty")
    with pytest.raises(InputError, match="single image"):
        open_source(imgs[0])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="could not open video"):
        open_source(tmp_path / "broken.mp4")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    cfg = DemoConfig(bundle=str(cst_bundle), support=(str(imgs[0]),), classes=("dog",), source=str(imgs[0]))
    with pytest.raises(InputError, match="no display"):
        run_demo(cfg)


def test_demo_cli_errors_are_one_line(cst_bundle, dog, tmp_path, capsys):
    from edgefss.cli import main

    imgs, _, folder = dog
    rc = main(["demo", "--bundle", str(cst_bundle), "--support", f"{imgs[0]}:dog", "--support-mask",
               f"{imgs[1]}:{imgs[1]}", "--source", str(folder), "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "--support-mask" in err[0], err
