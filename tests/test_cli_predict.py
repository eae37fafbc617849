"""`edgefss predict` over many inputs (issue 19): --source files/folders/globs/videos, numbered
runs/predict/N, --conf, --save-json, and the CLI's help, typo and error-naming behaviour.

Tiny S=32 bundles built with onnx.helper (tests/test_runtime.build_tiny_bundle, no torch); 64x48
images. Expected values are recomputed independently (NumPy on the saved mask; postprocess's
full-resolution rule for --conf)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from test_runtime import build_tiny_bundle

from edgefss.cli import build_parser, main

H, W = 48, 64


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_predict")
    return {"cst": build_tiny_bundle(d / "cst", "cst"), "tlg": build_tiny_bundle(d / "tlg", "tlg")}


def _img(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    img = (r.random((H, W, 3)) * 100).astype(np.uint8)
    img[8 + seed % 5 : 30, 12 + 2 * (seed % 7) : 44] += 140
    return img


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: a default runs/predict/N never lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def photos(tmp_path):
    """sup.png (support), q/0.png .. q/3.png (queries), q/sub/deep.png (not taken from q/)."""
    (tmp_path / "q" / "sub").mkdir(parents=True)
    Image.fromarray(_img(0)).save(tmp_path / "sup.png")
    for i in range(4):
        Image.fromarray(_img(i + 1)).save(tmp_path / "q" / f"{i}.png")
    Image.fromarray(_img(9)).save(tmp_path / "q" / "sub" / "deep.png")
    return tmp_path


def _predict(bundle, photos, *extra, cls="dog"):
    return main(
        [
            "predict",
            "--bundle",
            str(bundle),
            "--support",
            f"{photos / 'sup.png'}:{cls}",
            "--no-progress",
            *[str(e) for e in extra],
        ]
    )


def _err(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ": warning: " not in ln]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ----------------------------------------------------------------------------- sources
def test_folder_glob_file_mixed(bundles, photos, tmp_path, capsys):
    out = tmp_path / "res"
    rc = _predict(
        bundles["cst"],
        photos,
        "--source",
        photos / "q",
        str(photos / "q" / "[12].png"),
        photos / "sup.png",
        "--query",
        photos / "q" / "sub" / "deep.png",
        "--out",
        out,
    )
    assert rc == 0
    masks = sorted(p.name for p in out.iterdir() if not p.name.endswith("_overlay.png"))
    # folder: 0..3 sorted, not sub/; glob: 1, 2 again (-2); the file; --query is an alias of --source
    assert masks == sorted(["0.png", "1.png", "2.png", "3.png", "1-2.png", "2-2.png", "sup.png", "deep.png"])
    assert len([p for p in out.iterdir() if p.name.endswith("_overlay.png")]) == 8
    assert "8 inputs" in capsys.readouterr().out
    m = np.asarray(Image.open(out / "deep.png"))
    assert m.shape == (H, W)


def test_bad_sources_name_the_flag_and_the_pattern(bundles, photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _predict(bundles["cst"], photos, "--source", tmp_path / "empty") == 1
    line = _err(capsys)
    assert "--source" in line and str(tmp_path / "empty") in line and "no images" in line
    pattern = str(photos / "q" / "*.jpeg")
    assert _predict(bundles["cst"], photos, "--source", pattern) == 1
    line = _err(capsys)
    assert "--source" in line and pattern in line and "matches" in line
    assert _predict(bundles["cst"], photos, "--source", tmp_path / "missing.png") == 1
    assert "--source" in _err(capsys)
    assert not (tmp_path / "runs").exists()  # nothing created


def test_unreadable_inputs_are_skipped_listed_and_fail_the_run(bundles, photos, tmp_path, capsys):
    """A corrupt image in a folder and a video that does not open: the other inputs are still
    written, each bad one gets a warning line, and the run ends with one error listing them (exit 1)."""
    (photos / "q" / "1b.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "res"
    assert _predict(bundles["cst"], photos, "--source", photos / "q", tmp_path / "broken.mp4", "--out", out) == 1
    cap = capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.png") if "overlay" not in p.name) == [f"{i}.png" for i in range(4)]
    warn = [ln for ln in cap.err.splitlines() if ln.endswith("; skipped")]
    assert len(warn) == 2 and "1b.jpg" in warn[0] and "broken.mp4" in warn[1], cap.err
    err = [ln for ln in cap.err.splitlines() if ": error: " in ln]
    assert len(err) == 1 and "2 of 6 inputs" in err[0] and "1b.jpg" in err[0] and "broken.mp4" in err[0], cap.err
    assert "4 inputs in" in cap.out and "Traceback" not in cap.err
    # a single unreadable input stays one error line, and no run folder is left with nothing in it
    assert _predict(bundles["cst"], photos, "--source", photos / "q" / "1b.jpg") == 1
    assert "1b.jpg" in _err(capsys) and list((tmp_path / "runs" / "predict").iterdir()) == []  # no empty runs/predict/1


def test_resume_makes_only_the_missing_files(bundles, photos, tmp_path, capsys):
    """An interrupted run (here: files removed as if it stopped there) continued with --resume:
    complete inputs are skipped, missing files are made under the same names (no -2), and the
    files already there are not rewritten."""
    out = tmp_path / "res"
    assert _predict(bundles["cst"], photos, "--source", photos / "q", "--out", out, "--save-json") == 0
    (out / "1_overlay.png").unlink()  # stopped between the mask and the overlay of input 1
    for f in ("3.png", "3_overlay.png", "3.json"):  # and before input 3
        (out / f).unlink()
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    assert _predict(bundles["cst"], photos, "--source", photos / "q", "--out", out, "--save-json", "--resume") == 0
    text = capsys.readouterr().out
    assert "2 inputs in" in text and "(2 already done: --resume)" in text, text
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{i}{suf}" for i in range(4) for suf in (".png", "_overlay.png", ".json")), names
    assert {n: (out / n).stat().st_ino for n in kept} == {n: v[0] for n, v in kept.items()}  # never replaced
    assert json.loads((out / "3.json").read_text())["mask"] == "3.png"
    assert _predict(bundles["cst"], photos, "--source", photos / "q", "--resume") == 1
    assert "--resume" in _err(capsys)


def test_missing_camera_is_one_error_line(bundles, photos, capfd):
    """A camera index with no device: one line naming --source and the camera, none of OpenCV's own
    WARN lines (read at the file-descriptor level, where OpenCV writes them)."""
    pytest.importorskip("cv2", reason="cameras are read through OpenCV")
    assert _predict(bundles["cst"], photos, "--source", "97", "--max-frames", "1") == 1
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip() and ": warning: " not in ln]
    assert len(err) == 1 and "--source" in err[0] and "camera 97" in err[0], err


def test_out_in_a_source_or_bundle_folder_is_refused(bundles, photos, capsys):
    for out in (photos / "q", photos / "q" / "mask.png"):
        assert _predict(bundles["cst"], photos, "--source", photos / "q", "--out", out) == 1
        line = _err(capsys)
        assert "--out" in line and "--source folder" in line
    assert sorted(p.name for p in (photos / "q").iterdir()) == ["0.png", "1.png", "2.png", "3.png", "sub"]
    before = sorted(p.name for p in bundles["cst"].rglob("*"))
    for out in (bundles["cst"], bundles["cst"] / "masks", bundles["cst"] / "m.png"):
        assert _predict(bundles["cst"], photos, "--source", photos / "q" / "0.png", "--out", out) == 1
        line = _err(capsys)
        assert "--out" in line and "--bundle folder" in line
    assert sorted(p.name for p in bundles["cst"].rglob("*")) == before


def _write_video(path, n=5):
    cv2 = pytest.importorskip("cv2", reason="OpenCV reads and writes the test video")
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    if not w.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG .avi files")
    for i in range(n):
        w.write(np.ascontiguousarray(_img(i)[:, :, ::-1]))
    w.release()
    return path


def test_video_source_is_read_frame_by_frame(bundles, photos, tmp_path, capsys):
    clip = _write_video(tmp_path / "clip.avi", n=5)
    out = tmp_path / "res"
    assert (
        _predict(
            bundles["cst"],
            photos,
            "--source",
            clip,
            photos / "q" / "0.png",
            "--out",
            out,
            "--max-frames",
            "3",
            "--save-json",
            "--no-save-overlay",
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"clip_{i:06d}.{s}" for i in range(3) for s in ("png", "json")] + ["0.png", "0.json"]
    )
    doc = json.loads((out / "clip_000002.json").read_text())
    assert doc["source"] == str(clip) and doc["frame"] == 2 and doc["overlay"] is None
    assert np.asarray(Image.open(out / "clip_000001.png")).shape == (H, W)
    # every frame: the CLI's mask equals Segmenter.predict on the same decoded frame
    from edgefss.cli.sources import Source, frames
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(bundles["cst"])
    seg.set_support([str(photos / "sup.png")], ["dog"])
    for name, idx, rgb in frames(Source("video", str(clip), str(clip)), max_frames=3):
        saved = np.asarray(Image.open(out / f"{name}.png")) > 0
        assert np.array_equal(saved, seg.predict(rgb).mask > 0), name


def test_missing_opencv_for_a_video_gives_the_pip_line(monkeypatch, tmp_path):
    import sys

    from edgefss.cli.sources import Source, frames
    from edgefss.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now fails
    with pytest.raises(BackendUnavailableError, match=r"pip install opencv-python-headless"):
        next(frames(Source("video", str(tmp_path / "x.mp4"), "x.mp4")))


# ----------------------------------------------------------------------------- outputs
def test_runs_are_numbered_and_nothing_is_overwritten(bundles, photos, tmp_path, capsys):
    q = photos / "q" / "0.png"
    assert _predict(bundles["cst"], photos, "--source", q) == 0
    assert _predict(bundles["cst"], photos, "--source", q) == 0
    runs = tmp_path / "runs" / "predict"
    assert sorted(p.name for p in runs.iterdir()) == ["1", "2"]
    assert sorted(p.name for p in (runs / "2").iterdir()) == ["0.png", "0_overlay.png"]
    (runs / "7").mkdir()  # numbering continues after the highest, never reusing a folder
    assert _predict(bundles["cst"], photos, "--source", q) == 0
    assert (runs / "8" / "0.png").is_file() and not any((runs / "7").iterdir())
    # --out DIR holding a file of the user's: kept, the result goes to 0-2.*
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "0.png").write_bytes(b"my file")
    capsys.readouterr()
    assert _predict(bundles["cst"], photos, "--source", q, "--out", mine) == 0
    assert (mine / "0.png").read_bytes() == b"my file"
    assert (mine / "0-2.png").is_file() and (mine / "0-2_overlay.png").is_file()
    assert "note:" in capsys.readouterr().out
    # the single-file form: an existing --out file is not replaced either
    (tmp_path / "m.png").write_bytes(b"older result")
    assert _predict(bundles["cst"], photos, "--source", q, "--out", tmp_path / "m.png") == 0
    assert (tmp_path / "m.png").read_bytes() == b"older result" and (tmp_path / "m-2.png").is_file()


def test_save_json_boxes_and_areas_equal_numpy_on_the_saved_mask(bundles, photos, tmp_path):
    from edgefss.bundle import read_manifest
    from edgefss.runtime.results import MAX_BOXES
    from edgefss.runtime.support_pack import bundle_identity

    out = tmp_path / "res"
    b = bundles["cst"]
    rc = main(
        [
            "predict",
            "--bundle",
            str(b),
            "--support",
            f"{photos / 'sup.png'}:dog",
            f"{photos / 'q' / '3.png'}:cat",
            "--source",
            str(photos / "q" / "1.png"),
            "--out",
            str(out),
            "--save-json",
            "--raw-mask",
            "--no-progress",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "1.json").read_text())
    mask = np.asarray(Image.open(out / doc["mask"]))
    assert doc["classes"] == ["dog", "cat"] and (doc["width"], doc["height"]) == (W, H)
    assert doc["bundle"]["id"] == bundle_identity(read_manifest(b)) and doc["random_weights"] is True
    assert doc["conf"] == 0.5 and {"read", "encode", "head", "total"} <= set(doc["timings"])
    seen = 0
    for r in doc["results"]:
        ys, xs = np.nonzero(mask == r["label"])
        assert r["area"] == len(ys)
        assert 0.0 <= r["score"] <= 1.0 and isinstance(r["present"], bool)
        if len(ys):
            seen += 1
            assert r["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            for reg in r["boxes"]:
                x0, y0, x1, y1 = reg["box"]
                assert r["box"][0] <= x0 < x1 <= r["box"][2] and r["box"][1] <= y0 < y1 <= r["box"][3]
                assert 0 < reg["area"] <= int((mask[y0:y1, x0:x1] == r["label"]).sum())
            if len(r["boxes"]) < MAX_BOXES:
                assert sum(reg["area"] for reg in r["boxes"]) == r["area"]  # the regions partition the class
        else:
            assert r["box"] is None and r["boxes"] == []
    assert seen >= 1  # the check compared at least one real box


@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_conf_changes_the_result_monotonically(bundles, photos, tmp_path, model):
    from edgefss.runtime import Segmenter
    from edgefss.runtime import postprocess as post
    from edgefss.runtime.results import with_threshold

    q = photos / "q" / "2.png"
    fg = {}
    for conf in ("0.2", "0.5", "0.65", "0.8"):
        out = tmp_path / conf
        assert (
            _predict(
                bundles[model],
                photos,
                "--source",
                q,
                "--out",
                out,
                "--conf",
                conf,
                "--raw-mask",
                "--save-json",
            )
            == 0
        )
        fg[float(conf)] = np.asarray(Image.open(out / "2.png")) > 0
        fg[("json", float(conf))] = json.loads((out / "2.json").read_text())["results"][0]
    confs = [0.2, 0.5, 0.65, 0.8]
    for lo, hi in ((confs[i], confs[i + 1]) for i in range(len(confs) - 1)):
        assert not (fg[hi] & ~fg[lo]).any()  # a higher threshold labels a subset of the pixels
        if model == "tlg":  # presence = fraction of pixels above conf: non-increasing
            assert fg[("json", hi)]["score"] <= fg[("json", lo)]["score"]
    assert fg[0.2].sum() > fg[0.8].sum()  # and it does change the mask
    # independent reference: the full-resolution rule of postprocess on the fg probabilities
    seg = Segmenter.load(bundles[model])
    seg.set_support([str(photos / "sup.png")], ["dog"])
    pred = seg.predict(str(q))
    p_fg = np.asarray(pred.fg_prob)
    for conf in confs:
        assert np.array_equal(fg[conf], post.label_mask(p_fg, conf) > 0), conf
        got = with_threshold(pred, conf, class_head=model == "cst")
        if model == "cst":
            assert got.present[0] == (pred.probs[0] > conf)
        else:
            assert np.isclose(got.probs[0], (p_fg[0] > conf).mean())
    assert np.array_equal(fg[0.5], pred.mask > 0)  # the default is the runtime's own threshold


def test_progress_bar_stays_off_when_stderr_is_not_a_terminal(bundles, photos, tmp_path, capsys):
    assert _predict(bundles["cst"], photos, "--source", photos / "q", "--out", tmp_path / "o") == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "img/s" not in err and "it/s" not in err


# ----------------------------------------------------------------------------- parser and errors
def _parse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    return capsys.readouterr().err


def test_typos_get_did_you_mean(bundles, photos, capsys):
    b = str(bundles["cst"])
    err = _parse_error(
        capsys, ["predict", "--bundle", b, "--support", "a.png:dog", "--source", "x", "--conff", "0.3"]
    )
    assert "did you mean --conf?" in err and "edgefss predict: error" in err
    err = _parse_error(capsys, ["predict", "--bundle", b, "--suport", "a.png:dog", "--source", "x"])
    assert "did you mean --support?" in err
    err = _parse_error(capsys, ["predict", "--bundle", b, "--support", "a.png:dog", "--sorce", "x"])
    assert "required" in err and "did you mean --source?" in err
    assert "did you mean 'predict'?" in _parse_error(capsys, ["predcit"])
    assert "did you mean 'create'?" in _parse_error(capsys, ["support", "craete"])


def test_errors_name_the_cli_flag_not_the_python_argument(bundles, photos, tmp_path, capsys):
    bad_mask = tmp_path / "bad.png"
    Image.fromarray(np.ones((10, 10), np.uint8) * 255).save(bad_mask)  # wrong size for sup.png
    assert (
        _predict(
            bundles["cst"],
            photos,
            "--support-mask",
            f"{photos / 'sup.png'}:{bad_mask}",
            "--source",
            photos / "q" / "0.png",
            "--out",
            tmp_path / "o",
        )
        == 1
    )
    line = _err(capsys)
    assert "--support-mask" in line and "--support" in line and "masks[" not in line and "images[" not in line
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert (
        main(
            [
                "predict",
                "--bundle",
                str(bundles["cst"]),
                "--support",
                f"{photos / 'sup.png'}:dog",
                f"{broken}:cat",
                "--source",
                str(photos / "q" / "0.png"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    line = _err(capsys)
    assert line.startswith("edgefss predict: error: --support #2:") and str(broken) in line
    assert _predict(bundles["cst"], photos, "--source", photos / "q" / "0.png", "--refine-steps", "-1") == 1
    assert "--refine-steps" in _err(capsys)


def test_rename_args_replaces_whole_names_only():
    from edgefss.cli._args import rename_args, support_labels

    labels = support_labels([f"i{k}.png" for k in range(11)], {"i1.png": "m1.png"})
    msg = "masks[1]: shape (3, 4) does not match images[1]; images[10] is fine"
    assert (
        rename_args(msg, labels) == "--support-mask for #2: shape (3, 4) does not match --support #2; "
        "--support #11 is fine"
    )


def test_folder_where_a_file_is_expected(bundles, photos, tmp_path, capsys):
    d = photos / "q"
    assert _predict(bundles["cst"], photos, "--support", f"{d}:cat", "--source", d / "0.png") == 1
    assert f"--support: '{d}' is a folder; expected an image file" in _err(capsys)
    assert (
        main(
            [
                "predict",
                "--bundle",
                str(bundles["cst"]),
                "--support-pack",
                str(d),
                "--source",
                str(d / "0.png"),
            ]
        )
        == 1
    )
    assert f"--support-pack: '{d}' is a folder; expected a support pack file" in _err(capsys)
    assert (
        main(
            [
                "support",
                "create",
                "--bundle",
                str(bundles["cst"]),
                "--support",
                f"{d}:dog",
                "--out",
                str(tmp_path / "p.efs"),
            ]
        )
        == 1
    )
    assert "is a folder; expected an image file" in _err(capsys)
    assert main(["support", "show", str(d)]) == 1
    assert "is a folder" in _err(capsys)
    assert _predict(d / "0.png", photos, "--source", d / "0.png") == 1
    assert "--bundle" in (line := _err(capsys)) and "is a file; expected a bundle folder" in line


def _parsers(parser, name="edgefss"):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for k, sp in a.choices.items():
                yield f"{name} {k}", sp
                yield from _parsers(sp, f"{name} {k}")


def test_help_of_every_verb_shows_defaults(capsys):
    from edgefss.cli import VERBS

    parsers = dict(_parsers(build_parser()))
    assert set(VERBS) <= {n.split()[1] for n in parsers}
    checked = 0
    for name, p in parsers.items():
        fmt = p._get_formatter()
        for a in p._actions:
            d = a.default
            if (
                not a.option_strings
                or a.help == argparse.SUPPRESS
                or d in (None, False, argparse.SUPPRESS)
                or (isinstance(d, list) and not d)
            ):
                continue
            text = fmt._expand_help(a)
            assert "default" in text.lower() and str(d) in text, f"{name} {a.option_strings[0]}: {text!r}"
            checked += 1
    assert checked >= 30
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "(default: 0.5)" in out and "runs/predict" in out
