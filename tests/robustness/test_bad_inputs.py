"""The bad-input corpus: every case gives one clear edgefss error naming the input and what was
expected, never a traceback from inside OpenCV or an engine; odd-but-valid images are converted."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgefss.errors import BackendUnavailableError, BundleError, InputError, StateError
from edgefss.transforms import load_image


def _png(path, arr):
    import cv2

    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, davis_pair):
    """name -> (path or array, substring the message must contain)."""
    d = tmp_path_factory.mktemp("corpus")
    jpg = davis_pair[0].read_bytes()
    png = _png(d / "ok.png", np.full((20, 20, 3), 90, np.uint8)).read_bytes()
    (d / "empty.jpg").write_bytes(b"")
    (d / "trunc.jpg").write_bytes(jpg[: len(jpg) // 3])
    (d / "trunc.png").write_bytes(png[: len(png) // 2])
    (d / "notes.jpg").write_text("this is not an image\n" * 20)
    _png(d / "one.png", np.zeros((1, 1, 3), np.uint8))
    # a 10000 x 10000 gray PNG is ~100 kB on disk; the loader must refuse it by its size
    _png(d / "huge.png", np.zeros((10000, 10000), np.uint8))
    return {
        "missing file": (d / "nope.jpg", "not found"),
        "0-byte file": (d / "empty.jpg", "empty"),
        "truncated JPEG": (d / "trunc.jpg", "truncated"),
        "truncated PNG": (d / "trunc.png", "could not be decoded"),
        "non-image file": (d / "notes.jpg", "could not be decoded"),
        "1x1 image": (d / "one.png", "at least 2x2"),
        "10000x10000 image": (d / "huge.png", "at most"),
        "NaN array": (np.full((16, 16, 3), np.nan, np.float32), "NaN"),
        "Inf array": (np.full((16, 16, 3), np.inf, np.float64), "NaN or Inf"),
        "int32 array": (np.zeros((16, 16, 3), np.int32), "dtype int32"),
        "5-channel array": (np.zeros((16, 16, 5), np.uint8), "not an image"),
        "float out of range": (np.full((16, 16, 3), 3.0, np.float32), "outside [0, 1]"),
        "a list": ([[1, 2], [3, 4]], "expected a file path"),
    }


CASES = ["missing file", "0-byte file", "truncated JPEG", "truncated PNG", "non-image file", "1x1 image",
         "10000x10000 image", "NaN array", "Inf array", "int32 array", "5-channel array",
         "float out of range", "a list"]


@pytest.mark.parametrize("case", CASES)
def test_bad_query_gives_one_clear_error(seg, corpus, case):
    bad, phrase = corpus[case]
    with pytest.raises(InputError) as ei:
        seg.predict(bad)
    msg = str(ei.value)
    assert msg.startswith("query"), msg                      # names the input...
    assert phrase in msg, msg                                 # ...and what is wrong / expected
    if not isinstance(bad, (np.ndarray, list)):
        assert bad.name in msg, msg


@pytest.mark.parametrize("case", ["0-byte file", "truncated PNG", "non-image file", "NaN array"])
def test_bad_support_names_its_index(seg, corpus, small_rgb, case):
    bad, phrase = corpus[case]
    with pytest.raises(InputError, match=r"images\[1\]") as ei:
        seg.set_support([small_rgb, bad], ["a", "b"])
    assert phrase in str(ei.value)


def test_cli_prints_one_line_not_a_traceback(cst_bundle, corpus, davis_pair, tmp_path, capsys):
    from edgefss.cli import main

    rc = main(["predict", "--bundle", str(cst_bundle), "--support", f"{davis_pair[0]}:dog",
               "--query", str(corpus["truncated JPEG"][0]), "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("edgefss predict: error: --source:"), err  # the flag, not `query`
    assert "Traceback" not in err[0]


def _convert_cases(tmp_path):
    import cv2

    r = np.random.default_rng(5)
    gray = (r.random((40, 50)) * 255).astype(np.uint8)
    rgba = (r.random((40, 50, 4)) * 255).astype(np.uint8)
    u16 = (r.random((40, 50, 3)) * 65535).astype(np.uint16)
    _png(tmp_path / "gray.png", gray)
    _png(tmp_path / "rgba.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    _png(tmp_path / "u16.png", u16[:, :, ::-1].copy())
    a = rgba[:, :, 3:4].astype(np.float32) / 255
    # expected RGB: the documented conversions (gray replicated, alpha composited on black, /257)
    return {
        "gray": (tmp_path / "gray.png", np.repeat(gray[:, :, None], 3, 2)),
        "rgba": (tmp_path / "rgba.png", (rgba[:, :, :3] * a + 0.5).astype(np.uint8)),
        "16-bit": (tmp_path / "u16.png", (u16 / 257.0 + 0.5).astype(np.uint8)),
    }


def test_gray_rgba_16bit_are_converted_not_rejected(seg, tmp_path):
    for name, (path, want) in _convert_cases(tmp_path).items():
        got = load_image(path)
        assert got.shape == want.shape and got.dtype == np.uint8, name
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
        p_file, p_arr = seg.predict(path), seg.predict(want)
        np.testing.assert_allclose(p_file.logits, p_arr.logits, atol=1e-3, err_msg=name)
        assert p_file.mask.shape == (40, 50)


@pytest.mark.parametrize("case,phrase", [
    ("non-binary", "not binary"),
    ("wrong size", "does not match images[0]"),
    ("empty", "empty"),
    ("NaN", "NaN"),
    ("missing", "not found"),
])
def test_bad_support_masks(cst_bundle, small_rgb, tmp_path, case, phrase):
    from edgefss.runtime import Segmenter

    h, w = small_rgb.shape[:2]
    m = {"non-binary": np.arange(h * w).reshape(h, w) % 3,
         "wrong size": np.ones((h + 1, w), np.uint8),
         "empty": np.zeros((h, w), np.uint8),
         "NaN": np.full((h, w), np.nan, np.float32),
         "missing": tmp_path / "no_mask.png"}[case]
    seg = Segmenter.load(cst_bundle)
    with pytest.raises(InputError, match=r"masks\[0\]") as ei:
        seg.set_support([small_rgb], ["thing"], masks=[m])
    assert phrase in str(ei.value)
    with pytest.raises(StateError):  # a failed set_support leaves no half-built support set
        seg.predict(small_rgb)


def test_class_name_errors(tlg_bundle, cst_bundle, small_rgb):
    from edgefss.runtime import Segmenter

    tlg = Segmenter.load(tlg_bundle)
    with pytest.raises(InputError, match="zebra") as ei:
        tlg.set_support([small_rgb], ["zebra"])
    assert "dog" in str(ei.value) or "classes" in str(ei.value)  # says what would be accepted
    cst = Segmenter.load(cst_bundle)
    for bad in ("", "  ", None, 3, "dog\x00", "\x07bell"):  # control characters too, on every model
        with pytest.raises(InputError, match=r"class_names\[0\]"):
            cst.set_support([small_rgb], [bad])
    cst.set_support([small_rgb], ["two\twords\n"])  # whitespace is a separator, not refused
    with pytest.raises(InputError, match="class_names"):
        cst.set_support([small_rgb, small_rgb], ["a"])


def test_predict_before_set_support(cst_bundle, small_rgb, seg):
    from edgefss.runtime import Segmenter

    with pytest.raises(StateError, match="set_support"):
        Segmenter.load(cst_bundle).predict(small_rgb)
    seg.reset_support()
    with pytest.raises(StateError, match="set_support"):
        seg.predict(small_rgb)


# ----------------------------------------------------------------------------- bundles
def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bundle_missing_or_changed_file(cst_bundle, tmp_path):
    from edgefss.runtime import Segmenter

    b = _copy(cst_bundle, tmp_path / "missing")
    (b / "head.onnx").unlink()
    with pytest.raises(BundleError, match="missing file 'head.onnx'"):
        Segmenter.load(b)

    b = _copy(cst_bundle, tmp_path / "changed")
    data = bytearray((b / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content: only the SHA-256 can tell
    (b / "encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256") as ei:
        Segmenter.load(b)
    assert "encoder.onnx" in str(ei.value)

    b = _copy(cst_bundle, tmp_path / "nomanifest")
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Segmenter.load(b)
    with pytest.raises(BundleError, match="not a directory"):
        Segmenter.load(tmp_path / "does_not_exist")


def test_manifest_from_a_newer_version(cst_bundle, tmp_path):
    from edgefss.runtime import Segmenter

    b = _copy(cst_bundle, tmp_path / "newer")
    man = json.loads((b / "manifest.json").read_text())
    man.update(format_version=99, edgefss_version="9.0.0")
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="upgrade edgefss") as ei:
        Segmenter.load(b)
    assert "99" in str(ei.value) and "9.0.0" in str(ei.value)


def test_backend_not_installed_names_the_pip_line(cst_bundle, monkeypatch):
    from edgefss.runtime import Segmenter

    # None in sys.modules makes `import openvino` raise ImportError, as on a machine without it
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match="pip install") as ei:
        Segmenter.load(cst_bundle, backend="openvino")
    assert "openvino" in str(ei.value)
    with pytest.raises(InputError, match="not a backend"):
        Segmenter.load(cst_bundle, backend="tflite")


def test_int8_bundle_on_a_backend_it_was_not_built_for(tmp_path):
    from test_runtime import build_tiny_bundle

    from edgefss.runtime import Segmenter

    b = build_tiny_bundle(tmp_path / "int8", "cst", backend="onnxruntime", precision="int8")
    Segmenter.load(b)  # its own backend is fine
    with pytest.raises(BundleError, match="INT8 bundle built for onnxruntime") as ei:
        Segmenter.load(b, backend="openvino")
    assert "re-export" in str(ei.value)


def test_oversized_image_refused_before_decoding(corpus, monkeypatch):
    """The side-length limit is checked from the file header: the decoder never runs."""
    import cv2

    def boom(*a, **k):
        raise AssertionError("cv2.imdecode ran on an over-sized image")

    monkeypatch.setattr(cv2, "imdecode", boom)
    with pytest.raises(InputError, match="from its header"):
        load_image(corpus["10000x10000 image"][0], "query")
