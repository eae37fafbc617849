"""Property-based tests (hypothesis): preprocessing, manifest parsing and the ops' argument checks
either succeed with the documented output or raise the documented edgefss error, never anything
else; the Sinkhorn stays finite over random costs and eps in [1e-3, 10]."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgefss.bundle import read_manifest
from edgefss.config import PreprocessCfg
from edgefss.errors import BundleError, InputError
from edgefss.ops import cosine_correlation, has_native, sinkhorn_log
from edgefss.transforms import load_mask, preprocess

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CFG = PreprocessCfg(imgsz=32)
# normalised values are bounded by the extreme pixels 0 and 255
LO = min((0 - m) / s for m, s in zip(CFG.mean, CFG.std))
HI = max((1 - m) / s for m, s in zip(CFG.mean, CFG.std))

sides = st.integers(2, 40)


@st.composite
def valid_images(draw):
    h, w = draw(sides), draw(sides)
    ch = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (h, w) if ch is None else (h, w, ch)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64]))
    if dtype in (np.float32, np.float64):
        el = st.floats(0.0, 1.0, width=32 if dtype == np.float32 else 64)
    else:
        el = st.integers(0, np.iinfo(dtype).max)
    return draw(hnp.arrays(dtype, shape, elements=el))


@FAST
@given(valid_images())
def test_preprocess_valid_images(img):
    x = preprocess(img, CFG)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= LO - 1e-4 and x.max() <= HI + 1e-4


@FAST
@given(hnp.arrays(st.sampled_from([np.uint8, np.int32, np.int64, np.float16, np.float32, np.bool_, np.complex64]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)))
def test_preprocess_any_array_succeeds_or_raises_input_error(arr):
    try:
        x = preprocess(arr, CFG)
    except InputError as exc:
        assert str(exc).startswith("image:")
    else:
        assert x.shape == (1, 3, 32, 32) and np.isfinite(x).all()


@FAST
@given(hnp.arrays(st.sampled_from([np.uint8, np.int32, np.float32, np.bool_]),
                  hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=10)))
def test_load_mask_any_array_succeeds_or_raises_input_error(arr):
    try:
        m = load_mask(arr)
    except InputError as exc:
        assert str(exc).startswith("mask:")
    else:
        assert m.dtype == np.uint8 and set(np.unique(m).tolist()) <= {0, 1} and m.ndim == 2


# ----------------------------------------------------------------------------- manifests
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
KEYS = ["format", "format_version", "model", "backend", "precision", "preprocess", "graphs", "files"]


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("man")
    (d / "encoder.onnx").write_bytes(b"x" * 10)
    return d


def _base():
    return {"format": "edgefss-bundle", "format_version": 1, "model": "cst", "backend": "onnxruntime",
            "precision": "fp32", "preprocess": {"imgsz": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "graphs": {},
            "files": {"encoder.onnx": {"sha256": "0" * 64, "bytes": 10}}}


@FAST
@given(st.sampled_from(KEYS + ["extra"]), json_values, st.booleans())
def test_read_manifest_mutations_raise_bundle_error_only(manifest_dir, key, value, drop):
    man = _base()
    if drop and key in man:
        del man[key]
    else:
        man[key] = value
    (manifest_dir / "manifest.json").write_text(json.dumps(man))
    try:
        got = read_manifest(manifest_dir, verify=True)
    except BundleError as exc:
        assert str(exc).startswith("bundle:")
    else:
        assert isinstance(got, dict)


@pytest.mark.parametrize("files", [None, [], "x", {"encoder.onnx": 3}, {"encoder.onnx": None}])
def test_read_manifest_rejects_malformed_files_field(manifest_dir, files):
    man = dict(_base(), files=files)
    (manifest_dir / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="files"):
        read_manifest(manifest_dir)


def test_read_manifest_rejects_paths_outside_the_bundle(manifest_dir):
    from edgefss.bundle import sha256_file

    out = manifest_dir.parent / "outside.bin"
    out.write_bytes(b"x" * 10)
    man = dict(_base(), files={"../outside.bin": {"sha256": sha256_file(out), "bytes": 10}})
    (manifest_dir / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError):
        read_manifest(manifest_dir)


@FAST
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_read_manifest_garbage_bytes(manifest_dir, data):
    (manifest_dir / "manifest.json").write_bytes(data)
    with pytest.raises(BundleError):
        read_manifest(manifest_dir)


# ----------------------------------------------------------------------------- ops
IMPLS = ["reference"] + (["native"] if has_native() else [])


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(data=st.data())
def test_sinkhorn_is_finite_over_random_costs(impl, data):
    B, n, m = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    scale = data.draw(st.sampled_from([1.0, 10.0, 100.0]))
    cost = data.draw(hnp.arrays(np.float32, (B, n, m), elements=st.floats(-scale, scale, width=32)))
    eps = data.draw(st.floats(1e-3, 10.0))
    n_iter = data.draw(st.integers(1, 30))
    plan = sinkhorn_log(cost, eps=eps, n_iter=n_iter, impl=impl)
    assert plan.shape == cost.shape and np.isfinite(plan).all() and (plan >= 0).all()
    # after the last f-update every row sums to its marginal 1/n, up to float32 rounding of the
    # exponents (C - f - g)/eps, whose absolute error grows like |C|/eps * 2^-24 (native works in float32)
    rtol = 1e-3 + 4 * float(np.abs(cost).max()) / eps * 2.0**-24
    np.testing.assert_allclose(plan.sum(-1), 1.0 / n, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
       dtype=st.sampled_from([np.float32, np.float64, np.int32]),
       eps=st.one_of(st.floats(allow_nan=True), st.integers(-2, 2), st.none(), st.text(max_size=2)),
       n_iter=st.one_of(st.integers(-2, 5), st.floats(0, 3), st.none()),
       poison=st.booleans())
def test_sinkhorn_argument_checks(impl, shape, dtype, eps, n_iter, poison):
    cost = np.ones(shape, dtype)
    if poison and cost.size and cost.dtype.kind == "f":
        cost.flat[0] = np.nan
    try:
        plan = sinkhorn_log(cost, eps=eps, n_iter=n_iter, impl=impl)
    except InputError as exc:
        assert str(exc).startswith("sinkhorn:")
    else:
        assert plan.shape == cost.shape and np.isfinite(plan).all()


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(q=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
       s=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
       heads=st.integers(-1, 5), masked=st.booleans())
def test_correlation_argument_checks(impl, q, s, heads, masked):
    query = np.ones(q, np.float32)
    support = np.ones(s, np.float32)
    mask = np.ones(s[:-2] + s[-1:], np.float32) if masked and len(s) >= 2 else None
    try:
        out = cosine_correlation(query, support, heads=heads, support_mask=mask, impl=impl)
    except InputError as exc:
        assert str(exc).startswith("cosine_correlation:")
    else:
        assert out.shape == q[:-2] + (heads, q[-1], s[-1]) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- Segmenter.load
LOAD_KEYS = ["model", "backend", "precision", "preprocess", "graphs", "pseudo_mask", "format_version"]


@pytest.fixture(scope="module")
def bundle_copy(cst_bundle, tmp_path_factory):
    import shutil

    d = tmp_path_factory.mktemp("load") / "b"
    shutil.copytree(cst_bundle, d)
    return d, json.loads((d / "manifest.json").read_text())


@settings(max_examples=80, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(LOAD_KEYS), st.one_of(json_values, st.sampled_from(["cst", "tlg", "int8", "openvino"])),
       st.sampled_from([None, "encoder", "head"]))
def test_segmenter_load_on_mangled_manifests(bundle_copy, key, value, graph):
    """Any manifest field replaced by junk: load either works or raises an edgefss error."""
    from edgefss.errors import EdgeFSSError
    from edgefss.runtime import Segmenter

    d, good = bundle_copy
    man = json.loads(json.dumps(good))
    if graph is not None and key == "graphs":
        man["graphs"][graph] = value  # one graph entry instead of the whole table
    elif key == "preprocess" and graph is not None:
        man["preprocess"]["imgsz"] = value
    else:
        man[key] = value
    (d / "manifest.json").write_text(json.dumps(man))
    try:
        Segmenter.load(d)
    except EdgeFSSError as exc:
        assert str(exc).startswith(("bundle:", "backend:")), exc
