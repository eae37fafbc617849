"""Evaluation: dataset adapters on the real shared files, seeded episodes, the loop, the CLI."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgefss.errors import InputError
from edgefss.eval.datasets import load_dataset, read_png
from edgefss.eval.episodes import EpisodeSampler, auto_episodes
from edgefss.eval.runner import compare, episode_gt, evaluate


@pytest.mark.parametrize("folder,kind,n_items,classes", [
    ("davis2016_val_subset", "davis", 200, 12),
    ("coco_tiny16", "coco_tiny", 88, None),
    ("fss1000_example_eiffel", "folder", 5, 1),
    ("perseg_examples", "perseg", 9, 3),
])
def test_shared_adapters_load_real_files(shared_data, folder, kind, n_items, classes):
    ds = load_dataset(shared_data / folder)
    assert ds.name == kind and len(ds) == n_items
    if classes:
        assert len(ds.classes) == classes
    it = ds.items[len(ds) // 2]
    img = ds.load_image(it)
    m = ds.load_support_mask(it)
    assert img.ndim == 3 and img.dtype == np.uint8 and m.shape == img.shape[:2]
    assert set(np.unique(m).tolist()) <= {0, 1} and m.any(), f"{it.mask}: empty foreground"


def test_perseg_palette_masks_keep_their_indices(shared_data):
    # P-mode PNGs must give indices {0,1}, not palette colours.
    arr = read_png(shared_data / "perseg_examples/Annotations/cat/00.png")
    assert set(np.unique(arr).tolist()) == {0, 1}


def test_coco_tiny_absent_class_gives_empty_gt(shared_data):
    ds = load_dataset(shared_data / "coco_tiny16", "coco_tiny")
    q = ds.by_class["person"][0]
    absent = next(c for c in ds.classes if c not in ds.by_image[q.image])
    fg, ign = ds.load_gt(q, absent)
    assert not fg.any() and ign is None and fg.shape == ds.load_support_mask(q).shape


def test_episodes_are_seeded_and_query_not_in_support(shared_data):
    ds = load_dataset(shared_data / "davis2016_val_subset")
    a = EpisodeSampler(ds, way=1, shot=2, seed=3)
    b = EpisodeSampler(ds, way=1, shot=2, seed=3)
    c = EpisodeSampler(ds, way=1, shot=2, seed=4)
    eps = [a[i] for i in range(60)]
    assert eps == [b[i] for i in range(60)]
    assert a[17] == eps[17]  # an episode does not depend on the ones before it
    assert any(e != c[e.index] for e in eps)
    for e in eps:
        assert e.classes == (e.query.cls,)
        imgs = [s.image for s in e.supports[0]]
        assert e.query.image not in imgs and len(set(imgs)) == 2
        if e.query.cls in ("car", "person", "dog"):  # several videos: never the query's own video
            assert all(s.group != e.query.group for s in e.supports[0])


def test_fscs_episodes_include_query_class_about_half(shared_data):
    ds = load_dataset(shared_data / "coco_tiny16")
    s = EpisodeSampler(ds, way=2, shot=1, seed=0, protocol="fscs")
    eps = [s[i] for i in range(200)]
    share = np.mean([e.query.cls in e.classes for e in eps])
    # way 2: query class drawn first or second -> P = 0.5 + 0.5 * (0.5 / (n - 1) normalised) > 0.5
    assert 0.5 < share < 0.9
    assert all(len(set(e.classes)) == 2 for e in eps)


def test_too_few_images_is_a_clear_error(shared_data):
    ds = load_dataset(shared_data / "perseg_examples")
    with pytest.raises(InputError, match="images"):
        EpisodeSampler(ds, way=1, shot=3)
    with pytest.raises(InputError, match="dataset"):
        load_dataset(shared_data / "perseg_examples", kind="nope")


def _fake_pascal(tmp_path: Path, shared_data: Path):
    """A VOC tree holding 4 images of the real fold-0 split list, with 255 boundaries."""
    cv2 = pytest.importorskip("cv2")
    lines = (shared_data / "splits/pascal/val/fold0.txt").read_text().split()
    by_cls = {}
    for ln in lines:
        by_cls.setdefault(ln.split("__")[1], []).append(ln.split("__")[0])
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClassAug").mkdir()
    for cc, names in by_cls.items():
        for n in names:
            lab = np.zeros((20, 30), np.uint8)
            lab[5:15, 5:15] = int(cc)
            lab[4, 4:16] = 255
            cv2.imwrite(str(voc / "SegmentationClassAug" / f"{n}.png"), lab)
            cv2.imwrite(str(voc / "JPEGImages" / f"{n}.jpg"), np.full((20, 30, 3), 128, np.uint8))
    return tmp_path


@dataclass
class _Pred:
    mask: np.ndarray
    probs: np.ndarray
    classes: list


class OraclePredictor:
    """Returns the GT (read through the dataset) so the loop must score 100."""

    def __init__(self, ds, sampler):
        self.ds, self.sampler, self.i = ds, sampler, 0

    def set_support(self, images, class_names, masks=None):
        self.names = list(dict.fromkeys(class_names))

    def predict(self, query, refine_steps=0):
        ep = self.sampler[self.i]
        self.i += 1
        gt, _, present = episode_gt(self.ds, ep)
        # Answer in reversed class order: the loop must re-index labels by name.
        order = list(reversed(ep.classes))
        lut = np.array([0] + [order.index(c) + 1 for c in ep.classes], np.uint8)
        return _Pred(lut[gt], np.array([float(present[ep.classes.index(c)]) for c in order]), order)


class BlankPredictor:
    def set_support(self, images, class_names, masks=None):
        self.names = list(dict.fromkeys(class_names))

    def predict(self, query, refine_steps=0):
        return _Pred(np.zeros(query.shape[:2], np.uint8), np.zeros(len(self.names)), self.names)


def test_pascal_layout_with_real_split_and_boundary_ignore(tmp_path, shared_data):
    root = _fake_pascal(tmp_path, shared_data)
    ds = load_dataset(root, "auto", fold=0, splits=str(shared_data / "splits"))
    assert ds.name == "pascal" and ds.classes == ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    s = EpisodeSampler(ds, way=1, shot=1, seed=0)
    fg, ign = ds.load_gt(s[0].query, s[0].query.cls)
    assert fg.sum() == 100 and ign.sum() == 12
    res = evaluate(OraclePredictor(ds, s), ds, s, episodes=10, progress=False)
    assert res["miou"] == pytest.approx(100 * 5 / 5 * np.mean([u > 0 for u in res["class_iou"].values()]))


def test_loop_scores_oracle_100_and_blank_0_and_writes_report(tmp_path, shared_data):
    ds = load_dataset(shared_data / "coco_tiny16")
    s = EpisodeSampler(ds, way=2, shot=1, seed=1, protocol="fscs")
    n = 12
    good = evaluate(OraclePredictor(ds, s), ds, s, n, out_dir=tmp_path / "good", n_worst=2, progress=False)
    sampled = [c for c in ds.classes if c not in good["unsampled_classes"]]
    assert all(good["class_iou"][c] == pytest.approx(100.0) for c in sampled)
    assert good["er"] == pytest.approx(100.0) and good["fbiou"] == pytest.approx(100.0)
    bad = evaluate(BlankPredictor(), ds, s, n, out_dir=tmp_path / "bad", n_worst=2, progress=False)
    assert bad["miou"] == 0.0
    n_absent_all = sum(not any(r["present_gt"]) for r in bad["per_episode"])
    assert bad["er"] == pytest.approx(100 * n_absent_all / n)
    saved = json.loads((tmp_path / "bad" / "eval.json").read_text())
    assert len(saved["per_episode"]) == n and len(saved["worst"]) == 2
    assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in saved["worst"])
    cmp = compare(good, bad)
    assert cmp["episodes"] == n and cmp["miou_delta"] < 0


def test_auto_episode_count_is_small_for_tiny_sets(shared_data):
    assert auto_episodes(load_dataset(shared_data / "fss1000_example_eiffel")) == 50
    assert auto_episodes(load_dataset(shared_data / "davis2016_val_subset")) == 1000


def _net_input(img, S):
    import torch

    from edgefss.config import PreprocessCfg
    from edgefss.transforms import normalize, resize_image

    return torch.from_numpy(normalize(resize_image(img, S), PreprocessCfg(imgsz=S)))


def test_torch_cst_predictor_matches_model_reference(davis_pair):
    """The PyTorch predictor (runtime Segmenter over the torch backend) vs
    models.cst.predict_nway_kshot (torch reference)."""
    torch = pytest.importorskip("torch")
    import warnings

    from edgefss.eval.predictors import load_predictor
    from edgefss.models.cst import predict_nway_kshot
    from edgefss.transforms import load_image, load_mask

    S = 96
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, meta = load_predictor("cst", imgsz=S)
    assert meta["backend"] == "torch" and meta["random_init"] is True
    s_img, s_mask, q_img, _, cls = davis_pair
    sup, q = load_image(s_img), load_image(q_img)[::4, ::4].copy()  # small query: cheap full-size maps
    x = lambda im: _net_input(im, S)  # noqa: E731
    for masks in (None, [load_mask(s_mask)]):
        p.set_support([sup], [cls], masks)
        got = p.predict(q)
        g = torch.from_numpy(got.support_masks)  # the masks the runtime fed the head (gridded / pseudo)
        ref_masks = g.reshape(1, 1, *g.shape[-2:])
        ref = predict_nway_kshot(p.model, x(q), x(sup)[None], ref_masks, out_size=q.shape[:2])
        assert got.classes == [cls]
        np.testing.assert_allclose(got.probs, ref["probs"].numpy(), atol=1e-5)
        # Head logits at S/4 must match exactly; the full-size maps only up to the resize
        # convention (runtime: OpenCV half-pixel bilinear; reference: align_corners=True).
        with torch.no_grad():
            qf, sf = p.model.encode(x(q)), p.model.encode(x(sup))
            if masks is None:  # the model's own pseudo-mask rule (float ties at the threshold aside)
                own = p.model.support_pseudo_mask(sf).numpy()
                assert own.shape == got.support_masks.shape and (own != got.support_masks).mean() < 0.01
            head = p.model.head(qf["query_feats"], sf["support_feats"], ref_masks[0])
        np.testing.assert_allclose(got.logits, head["seg_logits"].numpy(), atol=1e-5)
        np.testing.assert_allclose(got.fg_prob, ref["fg_prob"].numpy(), atol=2e-2)


def test_torch_cst_predictor_refines_pseudo_masks_and_keeps_given_ones(davis_pair):
    """CST refinement (IMR-style, runtime/refine.py) runs for the PyTorch model too: the last pass
    uses the refined support masks, and a mask the caller gave stays as given."""
    torch = pytest.importorskip("torch")
    import warnings

    from edgefss.models.torch_segmenter import torch_segmenter
    from edgefss.transforms import load_image, load_mask

    S = 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = torch_segmenter("cst", imgsz=S)
    s_img, s_mask, q_img, _, _ = davis_pair
    q = load_image(q_img)[::8, ::8].copy()
    p.set_support([s_img, q_img], ["dog", "cat"], masks=[load_mask(s_mask), None])
    base, ref = p.predict(q), p.predict(q, refine_steps=1)
    np.testing.assert_array_equal(ref.support_masks[0], base.support_masks[0])  # given: kept
    with torch.no_grad():
        qf = p.model.encode(_net_input(q, S))
        sf = p.model.encode(torch.cat([_net_input(load_image(s_img), S), _net_input(load_image(q_img), S)]))
        head = p.model.head(qf["query_feats"], sf["support_feats"], torch.from_numpy(ref.support_masks))
    np.testing.assert_allclose(ref.logits, head["seg_logits"].numpy(), atol=1e-5)


def test_cli_eval_torch_tlg_writes_report(tmp_path, shared_data, capsys):
    pytest.importorskip("torch")
    from edgefss.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "--model", "tlg", "--imgsz", "64", "--data", str(shared_data / "perseg_examples"),
               "--way", "2", "--episodes", "2", "--sup", "mask", "--refine-steps", "1", "--worst", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "FB-IoU" in text and "ER" in text and "random" in text
    rep = json.loads((out / "eval.json").read_text())
    assert rep["protocol"] == "fscs" and rep["way"] == 2 and len(rep["per_episode"]) == 2
    assert 0.0 <= rep["miou"] <= 100.0 and rep["predictor"] == "torch"
    # the same episodes as a sampler built independently
    from edgefss.eval.datasets import load_dataset

    s = EpisodeSampler(load_dataset(shared_data / "perseg_examples"), way=2, shot=1, seed=0, protocol="fscs")
    assert [r["query"] for r in rep["per_episode"]] == [s[i].query.image for i in range(2)]
    assert main(["eval", "--data", str(shared_data / "perseg_examples"), "--out", str(out)]) == 1  # no model


def test_coco20i_uses_interleaved_split_and_hsnet_mask_paths(tmp_path, shared_data):
    (tmp_path / "COCO2014" / "annotations").mkdir(parents=True)
    ds = load_dataset(tmp_path, "auto", fold=1, splits=str(shared_data / "splits"))
    assert ds.name == "coco" and ds.query_order == "class_uniform"
    assert ds.classes[:4] == ["bicycle", "bus", "traffic light", "bench"] and len(ds.classes) == 20
    it = ds.by_class["bus"][0]
    assert it.label == 6 and it.image.endswith(".jpg")
    assert Path(it.mask) == tmp_path / "COCO2014" / "annotations" / "val2014" / (Path(it.image).stem + ".png")
    assert set(ds.by_class) == set(ds.classes)  # val fold files list only the fold's test classes


class EchoPseudoPredictor:
    """Predicts exactly the external query pseudo-masks it is given (one per class, set_support order)."""

    def set_support(self, images, class_names, masks=None):
        self.names = list(dict.fromkeys(class_names))

    def predict(self, query, refine_steps=0, query_pseudo=None):
        assert query_pseudo is not None and len(query_pseudo) == len(self.names)
        labels = np.zeros(query.shape[:2], np.uint8)
        for i, m in enumerate(query_pseudo):
            labels[np.asarray(m) > 0] = i + 1
        return _Pred(labels, np.array([float(np.asarray(m).any()) for m in query_pseudo]), self.names)


def test_gt_query_pseudo_masks_reach_the_predictor_in_its_class_order(shared_data):
    ds = load_dataset(shared_data / "coco_tiny16")
    s = EpisodeSampler(ds, way=2, shot=1, seed=3, protocol="fscs")
    res = evaluate(EchoPseudoPredictor(), ds, s, 12, progress=False, query_pseudo="gt")
    sampled = [c for c in ds.classes if c not in res["unsampled_classes"]]
    assert res["query_pseudo"] == "gt" and res["er"] == pytest.approx(100.0)
    assert all(res["class_iou"][c] == pytest.approx(100.0) for c in sampled)
    with pytest.raises(InputError):
        evaluate(EchoPseudoPredictor(), ds, s, 1, progress=False, query_pseudo="clip")


def test_torch_tlg_external_query_pseudo_replaces_the_prior(davis_pair, monkeypatch):
    torch = pytest.importorskip("torch")
    from edgefss.models.torch_segmenter import torch_segmenter
    from edgefss.transforms import load_image

    support, query = davis_pair[0], davis_pair[2]
    hw = load_image(query).shape[:2]
    p = torch_segmenter("tlg", imgsz=64)
    p.set_support([support], ["dog"])
    ones = p.predict(query, query_pseudo=[np.ones(hw, np.uint8)])
    zeros = p.predict(query, query_pseudo=[np.zeros(hw, np.uint8)])
    assert not np.allclose(ones.logits, zeros.logits)
    # with the on-device query prior forced to all ones, the prior path must give exactly what the
    # external all-ones mask gives: the external mask takes the prior's place, nothing else changes
    real_prior = p.model.prior
    monkeypatch.setattr(p.model, "prior", lambda qf, sf: (torch.ones_like(real_prior(qf, sf)[0]),
                                                          real_prior(qf, sf)[1]))
    prior_ones = p.predict(query)
    np.testing.assert_allclose(prior_ones.logits, ones.logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(prior_ones.logits, zeros.logits)
    with pytest.raises(InputError):
        p.predict(query, query_pseudo=[np.ones(hw, np.uint8)] * 2)  # one class in the support set


def test_cli_eval_refuses_gt_query_pseudo_for_cst(tmp_path, shared_data, capsys):
    # CST has no query pseudo-mask input: one clear error, before any episode runs
    pytest.importorskip("torch")
    from edgefss.cli import main

    rc = main(["eval", "--model", "cst", "--imgsz", "64", "--query-pseudo", "gt", "--episodes", "1",
               "--data", str(shared_data / "fss1000_example_eiffel"), "--out", str(tmp_path / "ev"),
               "--no-progress"])
    assert rc == 1
    assert "--query-pseudo gt: cst has no query pseudo-mask input" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("folder", ["davis2016_val_subset", "coco_tiny16"])
def test_index_csv_is_read_alike_by_eval_calibration_and_training(shared_data, folder):
    from edgefss.quant.episodes import _scan
    from edgefss.train.records import find_records

    root = shared_data / folder
    ev = {(it.image, it.mask, it.cls) for it in load_dataset(root).items}
    cal = {(str(s.image), str(s.mask), s.cls) for s in _scan(root)}
    tr = {(r.image, r.mask, r.cls) for r in find_records(root)}
    assert ev == cal == tr and len(ev) > 50
    assert all("_" not in c for _, _, c in ev)  # one spelling: 'dining table', not 'dining_table'


def test_index_csv_row_without_class_is_one_clear_error(tmp_path):
    from edgefss.index_csv import read_index

    (tmp_path / "index.csv").write_text("image,mask,class\na.jpg,a.png,dog\nb.jpg,b.png,\n")
    with pytest.raises(InputError, match=r"index.csv: line 3 lacks an image or a class"):
        read_index(tmp_path)
