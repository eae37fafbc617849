"""Shared fixtures: where the real data lives, seeded RNGs, optional-dependency skips."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEFSS_SHARED_DATA", REPO.parent / "shared" / "data"))


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real images + masks). Read-only: never write there."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set EDGEFSS_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def davis_pair(shared_data):
    """(support_image, support_mask, query_image, query_mask, class_name) paths from DAVIS 'dog'."""
    d = shared_data / "davis2016_val_subset" / "dog"
    imgs = sorted((d / "images").iterdir())
    masks = sorted((d / "masks").iterdir())
    return imgs[0], masks[0], imgs[5], masks[5], "dog"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    skip_ov = pytest.mark.skip(reason="openvino not installed: pip install 'edgefss[openvino]'")
    skip_trt = pytest.mark.skip(reason="TensorRT not installed (cannot be installed on this CPU machine)")
    for item in items:
        if "openvino" in item.keywords and not has_module("openvino"):
            item.add_marker(skip_ov)
        if "tensorrt" in item.keywords and not has_module("tensorrt"):
            item.add_marker(skip_trt)
