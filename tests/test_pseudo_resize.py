"""How caller masks reach the network size: TLG's pseudo-masks the released way (bilinear, >= 0.5),
CST's ground-truth support masks by nearest (HSNet loaders)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefss.transforms import pseudo_mask_to_network, resize_mask

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("hw", [(50, 50), (480, 854), (37, 91), (600, 300), (400, 400)])
def test_pseudo_mask_to_network_is_the_released_bilinear_then_threshold(hw):
    import torch.nn.functional as F

    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    # blobs, not salt-and-pepper: a real pseudo-mask, and few values at the 0.5 tie
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    m = np.zeros(hw, np.float32)
    for _ in range(4):
        cy, cx, r = rng.random() * hw[0], rng.random() * hw[1], rng.random() * min(hw) / 2
        m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    S = 400
    soft = F.interpolate(torch.from_numpy(m)[None, None], (S, S), mode="bilinear")[0, 0].numpy()
    want = (soft >= 0.5).astype(np.float32)
    got = pseudo_mask_to_network(m, S)
    assert got.shape == (S, S) and got.dtype == np.float32
    differ = got != want
    # float32 rounding may only flip a value that sits on the threshold
    assert np.all(np.abs(soft[differ] - 0.5) < 1e-5), int(differ.sum())
    if hw != (S, S):
        # and it is not the nearest resize the ground-truth masks get
        assert (got != resize_mask(m, (S, S))).any()


def test_pseudo_mask_to_network_refuses_a_non_2d_mask():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        pseudo_mask_to_network(np.zeros((1, 8, 8)), 16)


def test_adapters_resize_masks_as_their_official_loaders():
    from edgefss.runtime.adapters import Adapter
    from edgefss.runtime.tlg import TLGAdapter

    m = np.zeros((37, 91), np.uint8)
    m[5:30, 10:70] = 1
    base = Adapter({"preprocess": {"imgsz": 64}}, None)
    np.testing.assert_array_equal(base.network_mask(m), resize_mask(m, (64, 64)).astype(np.float32))
    tlg = TLGAdapter.__new__(TLGAdapter)  # only S matters to network_mask
    tlg.S = 64
    np.testing.assert_array_equal(tlg.network_mask(m), pseudo_mask_to_network(m, 64))
