"""Support packs, incremental support edits, shot quality, CST indistinguishable classes, and the
`support` / `classes` / `predict --support-pack` CLI, over the tiny hand-built bundles of
tests/test_runtime.py (S = 32; no torch)."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
from test_runtime import CLASSES, CountingBackend, S, build_tiny_bundle

from edgefss.errors import InputError, StateError
from edgefss.runtime import Segmenter
from edgefss.runtime import support_pack as sp
from edgefss.transforms import resize_image, resize_mask


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    return {"cst": build_tiny_bundle(d / "cst", "cst"), "tlg": build_tiny_bundle(d / "tlg", "tlg"),
            "cst_other": build_tiny_bundle(d / "cst2", "cst", seed=1)}


@pytest.fixture(scope="module")
def imgs():
    r = np.random.default_rng(7)
    return [(r.random((40 + 3 * i, 52 - 2 * i, 3)) * 255).astype(np.uint8) for i in range(7)]


def _masks(img, k):
    m = np.zeros(img.shape[:2], np.uint8)
    h, w = m.shape
    m[(k % 2) * h // 2:(k % 2) * h // 2 + h // 2, (k // 2) * w // 2:(k // 2) * w // 2 + w // 2] = 1
    return m


def _same(p, q):
    """Bit-identical predictions."""
    assert p.classes == q.classes
    for a in ("mask", "probs", "logits", "fg_prob"):
        assert np.array_equal(getattr(p, a), getattr(q, a)), a
    if p.support_masks is not None or q.support_masks is not None:
        assert np.array_equal(p.support_masks, q.support_masks)


NAMES = ["dog", "cat", "Dog", "car", "cat "]


@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_round_trip_is_bit_identical_and_runs_no_encoder(model, bundles, imgs, tmp_path):
    seg = Segmenter.load(bundles[model])
    seg.max_batch = 2  # several head chunks
    masks = [None, _masks(imgs[1], 1), None, None, None] if model == "cst" else None
    seg.set_support(imgs[:5], NAMES, masks=masks)
    pack = seg.save_support(tmp_path / "p.efs")
    other = Segmenter.load(bundles[model])
    other.max_batch = 2
    other.backend = CountingBackend(other.backend)
    other.load_support(pack)
    assert other.backend.calls == {}  # loading costs no encoder run
    # the cached chunks are aligned C-contiguous float32 views of the pack's one buffer (no copy)
    for c in other._support.chunks:
        assert all(v.dtype == np.float32 and v.flags.c_contiguous and v.flags.aligned and v.base is not None
                   for v in c.values())
    assert other.classes == seg.classes == ["dog", "cat", "car"]
    for steps in (0, 1):
        _same(seg.predict(imgs[5], refine_steps=steps), other.predict(imgs[5], refine_steps=steps))
    # another max_batch re-chunks the same entries: still the same prediction
    third = Segmenter.load(bundles[model])
    third.load_support(pack)
    _same(seg.predict(imgs[6]), third.predict(imgs[6]))


def test_tampered_truncated_foreign_packs_are_refused(bundles, imgs, tmp_path):
    seg = Segmenter.load(bundles["cst"])
    seg.set_support(imgs[:3], ["dog", "cat", "dog"])
    pack = seg.save_support(tmp_path / "p.efs")
    good = pack.read_bytes()

    def parts(data: bytes):
        """(header dict, the arrays' bytes, digest) of a format-2 pack (module doc of support_pack)."""
        hl = int.from_bytes(data[8:16], "little")
        return json.loads(data[16:16 + hl]), data[16 + hl + (-(16 + hl) % sp.ALIGN):-32], data[-32:]

    def join(header, blob, digest=None):
        """A pack from parts; digest None = a valid SHA-256 over the new bytes (a hand-made pack)."""
        hb = json.dumps(header, sort_keys=True).encode()
        body = sp.MAGIC + len(hb).to_bytes(8, "little") + hb + bytes(-(16 + len(hb)) % sp.ALIGN) + blob
        return body + (hashlib.sha256(body).digest() if digest is None else digest)

    header, blob, digest = parts(good)
    assert join(header, blob) == good  # the helpers rebuild the writer's bytes
    edited = tmp_path / "edited.efs"
    # one feature value changed, the old digest kept
    i = header["arrays"]["entry__support_feats"]["offset"] + 4 * 7
    edited.write_bytes(join(header, blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:], digest))
    with pytest.raises(InputError, match=r"edited\.efs.*SHA-256"):
        seg.load_support(edited)
    # the header's class names edited, the old digest kept
    h = dict(header, classes=["cat", "dog"])
    edited.write_bytes(join(h, blob, digest))
    with pytest.raises(InputError, match=r"edited\.efs.*SHA-256"):
        seg.load_support(edited)
    # a hand-made pack (valid digest) whose array runs past the end, or whose classes do not rebuild
    h = json.loads(json.dumps(header))
    h["arrays"]["entry__support_feats"]["offset"] = len(good)
    edited.write_bytes(join(h, blob))
    with pytest.raises(InputError, match=r"edited\.efs.*inconsistent array table"):
        seg.load_support(edited)
    edited.write_bytes(join(dict(header, classes=["cat", "dog"]), blob))
    with pytest.raises(InputError, match=r"edited\.efs.*does not rebuild"):
        seg.load_support(edited)
    # a format-1 pack (an .npz) and a file of another kind
    with open(edited, "wb") as f:
        np.savez(f, header=np.zeros(3, np.uint8))
    with pytest.raises(InputError, match=r"edited\.efs.*format 1"):
        seg.load_support(edited)
    edited.write_bytes(b"hello")
    with pytest.raises(InputError, match=r"edited\.efs.*not an edgefss support pack"):
        seg.load_support(edited)
    # a flipped byte in the middle of the file and a truncated file
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    (tmp_path / "flip.efs").write_bytes(bytes(flipped))
    with pytest.raises(InputError, match=r"flip\.efs.*SHA-256.*corrupt"):
        seg.load_support(tmp_path / "flip.efs")
    (tmp_path / "cut.efs").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"cut\.efs.*truncated"):
        seg.load_support(tmp_path / "cut.efs")
    with pytest.raises(InputError, match="no such file"):
        seg.load_support(tmp_path / "none.efs")
    # a pack of another bundle (same model and shapes, other weights)
    foreign = Segmenter.load(bundles["cst_other"])
    with pytest.raises(InputError, match=r"p\.efs.*another bundle") as e:
        foreign.load_support(pack)
    assert "\n" not in str(e.value)
    assert foreign.classes == []  # nothing half-loaded
    seg.load_support(pack)  # the untouched pack still loads
    assert seg.classes == ["dog", "cat"]
    with pytest.raises(StateError):
        Segmenter.load(bundles["cst"]).save_support(tmp_path / "x.efs")


@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_edits_equal_a_fresh_set_support(model, bundles, imgs):
    masks = [None, _masks(imgs[1], 2), None, None, None] if model == "cst" else [None] * 5

    def fresh(idx, names, ms):
        s = Segmenter.load(bundles[model])
        s.max_batch = 2
        s.set_support([imgs[i] for i in idx], names, masks=ms)
        return s

    seg = fresh(range(5), NAMES, masks)
    seg.backend = CountingBackend(seg.backend)
    seg.add_support([imgs[5], imgs[6]], ["person", "CAT"])
    assert seg.backend.calls == {"encoder": 2}  # only the new images are encoded
    ref = fresh(range(7), NAMES + ["person", "CAT"], masks + [None, None])
    assert seg.classes == ref.classes == ["dog", "cat", "car", "person"]
    _same(seg.predict(imgs[0], refine_steps=1), ref.predict(imgs[0], refine_steps=1))

    seg.remove_shot(0)  # "dog" is now first spelt "Dog", and "cat" comes first
    names = NAMES[1:] + ["person", "CAT"]
    ref = fresh(range(1, 7), names, masks[1:] + [None, None])
    assert seg.classes == ref.classes == ["cat", "Dog", "car", "person"]
    _same(seg.predict(imgs[3]), ref.predict(imgs[3]))

    seg.remove_class("CAT ")  # every spelling of the class
    keep = [i for i in range(1, 7) if names[i - 1].strip().lower() != "cat"]  # images 2, 3, 5
    ref = fresh(keep, [names[i - 1] for i in keep], [(masks + [None, None])[i] for i in keep])
    assert seg.classes == ref.classes == ["Dog", "car", "person"]
    _same(seg.predict(imgs[4], refine_steps=1), ref.predict(imgs[4], refine_steps=1))

    with pytest.raises(InputError, match="remove_class.*'zebra'"):
        seg.remove_class("zebra")
    with pytest.raises(InputError, match="remove_shot"):
        seg.remove_shot(3)
    for c in ["Dog", "car"]:
        seg.remove_class(c)
    with pytest.raises(InputError, match="no support image left"):  # the last class stays
        seg.remove_class("person")
    assert seg.classes == ["person"]
    empty = Segmenter.load(bundles[model])
    empty.add_support([imgs[0]], ["dog"])  # without a support set: set_support
    _same(empty.predict(imgs[1]), fresh([0], ["dog"], [None]).predict(imgs[1]))
    if model == "tlg":  # a name outside the text table is refused before anything changes
        with pytest.raises(InputError):
            seg.add_support([imgs[0]], ["zebra"])
        assert seg.classes == ["person"]


def test_shot_quality_flags_the_wrong_shot(bundles, imgs):
    """The tiny CST head copies its support mask's position into the query prediction, so a shot
    whose mask sits elsewhere (a wrong image/mask) predicts the other shot badly and vice versa."""
    seg = Segmenter.load(bundles["cst"])
    a, b = imgs[1], imgs[2]
    ma, mb_good, mb_wrong = _masks(a, 0), _masks(b, 0), _masks(b, 3)
    seg.set_support([a, b], ["dog", "dog"], masks=[ma, mb_good])
    good = seg.shot_quality()
    seg.set_support([a, b], ["dog", "dog"], masks=[ma, mb_wrong])
    bad = seg.shot_quality()
    assert [r["reference"] for r in good] == ["given", "given"]
    assert min(r["score"] for r in good) > max(r["score"] for r in bad)
    # independent route through the public API: shot 0 predicted as a query from shot 1 alone
    ref = Segmenter.load(bundles["cst"])
    ref.set_support([b], ["dog"], masks=[mb_wrong])
    pred = ref.predict(resize_image(a, S))  # an S x S query: the prediction is at the network size
    m = resize_mask(ma, (S, S)) > 0
    inter, union = np.count_nonzero(m & (pred.mask > 0)), np.count_nonzero(m | (pred.mask > 0))
    assert bad[0]["score"] == pytest.approx(inter / union, abs=1e-6)
    # K = 1 classes have no leave-one-out score
    seg.set_support([a, b, imgs[3]], ["dog", "dog", "cat"])
    rows = seg.shot_quality()
    assert rows[2]["score"] is None and rows[0]["reference"] == "pseudo-mask"
    tlg = Segmenter.load(bundles["tlg"])
    tlg.set_support([a, b], ["dog", "dog"])
    assert all(0.0 <= r["score"] <= 1.0 and r["reference"] == "self" for r in tlg.shot_quality())


def test_cst_warns_for_indistinguishable_classes(bundles, imgs):
    seg = Segmenter.load(bundles["cst"])
    with pytest.warns(UserWarning, match="'dog' and 'cat' have indistinguishable"):
        seg.set_support([imgs[0], imgs[0].copy()], ["dog", "cat"])
    with pytest.warns(UserWarning, match="indistinguishable"):  # K shots each, same images
        seg.set_support([imgs[0], imgs[1], imgs[1], imgs[0]], ["dog", "dog", "cat", "cat"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.set_support([imgs[0], imgs[1]], ["dog", "cat"])  # different images
        # the same image with different given masks: different supports
        seg.set_support([imgs[0], imgs[0]], ["dog", "cat"], masks=[_masks(imgs[0], 0), _masks(imgs[0], 3)])
        # one shared shot, one not: distinguishable
        seg.set_support([imgs[0], imgs[0], imgs[2]], ["dog", "cat", "cat"])
    # the pseudo-mask ignores the name: same image, two names, same prediction per class
    seg.set_support([imgs[0], imgs[1]], ["dog", "xyzzy 42"])
    p1 = seg.predict(imgs[3])
    seg.set_support([imgs[0], imgs[1]], ["dog", "cat"])
    assert np.array_equal(p1.logits, seg.predict(imgs[3]).logits)


def test_known_classes(bundles):
    assert Segmenter.load(bundles["tlg"]).known_classes() == CLASSES
    assert Segmenter.load(bundles["cst"]).known_classes() is None


def test_cli_support_create_show_predict_and_classes(bundles, davis_pair, tmp_path, capsys):
    from edgefss.cli import main

    s_img, s_mask, q_img, _, cls = davis_pair
    pack = tmp_path / "pets.efs"
    b = str(bundles["cst"])
    assert main(["support", "create", "--bundle", b, "--support", f"{s_img}:{cls}", f"{q_img}:{cls}",
                 "--support-mask", f"{s_img}:{s_mask}", "--out", str(pack), "--quality"]) == 0
    out = capsys.readouterr().out
    assert str(pack) in out and "dog (2 shots)" in out and "leave-one-out IoU" in out
    assert main(["support", "show", str(pack), "--bundle", b]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "1 with a given mask" in out and "matches bundle" in out
    assert main(["support", "show", str(pack), "--bundle", str(bundles["cst_other"])]) == 1
    assert "another bundle" in capsys.readouterr().err
    # predict from the pack == predict from the images
    a, c = tmp_path / "a.png", tmp_path / "c.png"
    assert main(["predict", "--bundle", b, "--support", f"{s_img}:{cls}", f"{q_img}:{cls}",
                 "--support-mask", f"{s_img}:{s_mask}", "--query", str(q_img), "--out", str(a)]) == 0
    assert main(["predict", "--bundle", b, "--support-pack", str(pack), "--query", str(q_img),
                 "--out", str(c)]) == 0
    capsys.readouterr()
    assert a.read_bytes() == c.read_bytes()
    assert (tmp_path / "a_overlay.png").read_bytes() == (tmp_path / "c_overlay.png").read_bytes()
    # refusals: both support flags, an existing non-pack --out, an --out that is an input
    assert main(["predict", "--bundle", b, "--support-pack", str(pack), "--support", f"{s_img}:{cls}",
                 "--query", str(q_img), "--out", str(c)]) == 1
    assert "exactly one" in capsys.readouterr().err
    before = a.read_bytes()
    assert main(["support", "create", "--bundle", b, "--support", f"{s_img}:{cls}", "--out", str(a)]) == 1
    assert "not a support pack" in capsys.readouterr().err and a.read_bytes() == before
    assert main(["support", "create", "--bundle", b, "--support", f"{s_img}:{cls}", "--out", str(s_img)]) == 1
    assert "overwrite the input" in capsys.readouterr().err
    assert main(["support", "create", "--bundle", b, "--support", f"{s_img}:{cls}", "--out", str(pack)]) == 0
    capsys.readouterr()  # replacing a pack is allowed
    # classes
    assert main(["classes", str(bundles["tlg"])]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c}\n" in out for c in CLASSES)
    assert main(["classes", b]) == 0
    assert "any name" in capsys.readouterr().out
