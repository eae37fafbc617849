"""Fixtures for the robustness suite: tiny S=32 bundles (built with onnx.helper by
tests/test_runtime.build_tiny_bundle, no torch) and a corpus of bad input files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_runtime import build_tiny_bundle  # noqa: E402  (shared builder, one implementation)


@pytest.fixture(scope="session")
def cst_bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("rb") / "cst", "cst")


@pytest.fixture(scope="session")
def tlg_bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("rb") / "tlg", "tlg")


@pytest.fixture(scope="session")
def small_rgb():
    """(48, 64, 3) uint8 RGB with structure (a bright square), seeded."""
    r = np.random.default_rng(3)
    img = (r.random((48, 64, 3)) * 100).astype(np.uint8)
    img[10:30, 20:44] += 140
    return img


@pytest.fixture
def seg(cst_bundle, small_rgb):
    from edgefss.runtime import Segmenter

    s = Segmenter.load(cst_bundle)
    m = np.zeros(small_rgb.shape[:2], np.uint8)
    m[10:30, 20:44] = 1
    s.set_support([small_rgb], ["thing"], masks=[m])
    return s
