"""Photos are read the way people see them (issue 14, class 2): every EXIF orientation 1..8 of a
real JPEG (written by PIL) is applied by the one reader, for images, masks, label maps, demo
frames, and through Segmenter.predict; PIL's ImageOps.exif_transpose is the reference."""

from __future__ import annotations

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageOps  # noqa: E402

from edgefss.imageio import EXIF_ORIENTATION, load_image, load_mask, read_label_map  # noqa: E402

H, W = 48, 80  # stored (camera) size: not square, so a missed 90 degree turn changes the shape


def _pattern() -> np.ndarray:
    """(H, W, 3) uint8 with a distinct colour per quadrant plus a gradient: any flip or turn moves it."""
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (230, 20, 20)
    img[: H // 2, W // 2:] = (20, 230, 20)
    img[H // 2:, : W // 2] = (20, 20, 230)
    img[H // 2:, W // 2:] = (230, 230, 20)
    img[:, :, 1] = np.clip(img[:, :, 1].astype(int) + np.arange(W)[None, :] // 4, 0, 255)
    return img


def _save(path, arr, orientation, fmt="JPEG"):
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    kw = {"quality": 95} if fmt == "JPEG" else {}
    im.save(path, fmt, exif=exif.tobytes(), **kw)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    p = _save(tmp_path / f"o{orientation}.jpg", _pattern(), orientation)
    with Image.open(p) as im:
        assert im.getexif()[EXIF_ORIENTATION] == orientation  # the file really carries the tag
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = load_image(p)
    assert got.shape == ref.shape
    if orientation >= 5:
        assert got.shape[:2] == (W, H)  # turned: the displayed photo is portrait
    # two JPEG decoders (OpenCV's, PIL's) agree to a few levels; a wrong turn differs by ~200
    assert np.abs(got.astype(int) - ref.astype(int)).mean() < 3.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_mask_and_label_map_follow_their_own_orientation(tmp_path, orientation):
    m = np.zeros((H, W), np.uint8)
    m[2:10, 3:30] = 255  # top-left bar as stored
    p = _save(tmp_path / "m.png", m, orientation, fmt="PNG")
    with Image.open(p) as im:
        ref = np.asarray(ImageOps.exif_transpose(im)) > 0
    assert np.array_equal(load_mask(p).astype(bool), ref)
    assert np.array_equal(read_label_map(p) > 0, ref)


def test_support_mask_drawn_on_the_displayed_photo_is_accepted(tmp_path, seg):
    """A phone photo stored landscape with orientation 6 and a mask drawn on the portrait view:
    set_support accepts it and the query's mask comes back at the displayed size."""
    photo = _save(tmp_path / "phone.jpg", _pattern(), 6)
    mask = np.zeros((W, H), np.uint8)  # displayed size (portrait)
    mask[10:40, 5:30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    seg.set_support([str(photo)], ["thing"], masks=[str(tmp_path / "mask.png")])
    pred = seg.predict(str(photo))
    assert pred.mask.shape == (W, H)


def test_demo_folder_frames_are_upright(tmp_path):
    from edgefss.app.stream import open_source

    for i, o in enumerate((1, 6, 8)):
        _save(tmp_path / f"{i:04d}.jpg", _pattern(), o)
    with open_source(str(tmp_path)) as src:
        shapes = [f.shape[:2] for _, f in src]
    assert shapes == [(H, W), (W, H), (W, H)]


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_server_uploads_are_upright(tmp_path, orientation):
    from edgefss.serve.uploads import decode_image, decode_mask

    p = _save(tmp_path / "u.jpg", _pattern(), orientation)
    with Image.open(p) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = decode_image(p.read_bytes(), "support", 1 << 24, 1 << 24)
    assert got.shape == ref.shape and np.abs(got.astype(int) - ref.astype(int)).mean() < 3.0
    m = np.zeros((H, W), np.uint8)
    m[2:10, 3:30] = 255
    mp = _save(tmp_path / "m.png", m, orientation, fmt="PNG")
    with Image.open(mp) as im:
        mref = np.asarray(ImageOps.exif_transpose(im)) > 0
    assert np.array_equal(decode_mask(mp.read_bytes(), "mask", 1 << 24, 1 << 24).astype(bool), mref)
