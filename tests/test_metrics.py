"""Metrics against hand-computed HSNet-style accumulations (spec §6.3, §6.4)."""

import numpy as np
import pytest

from edgefss.errors import InputError
from edgefss.eval.metrics import ExactRatioMeter, SegMeter, area_inter_union


def test_area_inter_union_by_hand():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    gt = np.array([[1, 0, 0], [1, 1, 0]])
    inter, union = area_inter_union(pred, gt, 2)
    # fg: pred {00,01,11}, gt {00,10,11} -> inter 2, union 4; bg: pred {02,10,12}, gt {01,02,12} -> 2, 4
    assert inter.tolist() == [2, 2]
    assert union.tolist() == [4, 4]


def test_boundary_pixels_are_ignored():
    pred = np.array([[1, 1, 0, 0]])
    gt = np.array([[1, 0, 0, 0]])
    ignore = np.array([[False, True, False, False]])  # the disputed pixel is a 255 boundary
    inter, union = area_inter_union(pred, gt, 2, ignore)
    assert inter.tolist() == [2, 1] and union.tolist() == [2, 1]
    # Without ignoring, that pixel is a false positive.
    inter, union = area_inter_union(pred, gt, 2)
    assert inter.tolist() == [2, 1] and union.tolist() == [3, 2]


def test_miou_sums_areas_per_class_before_dividing():
    m = SegMeter(["a", "b"])
    # class a, episode 1: fg inter 1 / union 4; episode 2: fg inter 3 / union 4.
    m.update(np.array([[1, 1, 1, 1]]), np.array([[1, 0, 0, 0]]), ["a"])
    m.update(np.array([[1, 1, 1, 0]]), np.array([[1, 1, 1, 1]]), ["a"])
    # class b: one perfect episode.
    m.update(np.array([[0, 1]]), np.array([[0, 1]]), ["b"])
    iou_a = (1 + 3) / (4 + 4)  # summed, NOT mean(1/4, 3/4) per episode
    assert m.class_iou()[0] == pytest.approx(iou_a)
    assert m.miou() == pytest.approx((iou_a + 1.0) / 2 * 100)
    # background: ep1 inter 0 / union 3, ep2 inter 0 / union 1, ep3 inter 1 / union 1.
    fg = (1 + 3 + 1) / (4 + 4 + 1)
    bg = (0 + 0 + 1) / (3 + 1 + 1)
    assert m.fbiou() == pytest.approx((fg + bg) / 2 * 100)


def test_unsampled_class_counts_zero_like_hsnet():
    m = SegMeter(["a", "b"])
    m.update(np.array([[1]]), np.array([[1]]), ["a"])
    assert m.unsampled() == ["b"]
    assert m.miou() == pytest.approx(50.0)


def test_nway_labels_credit_absolute_classes():
    m = SegMeter(["x", "y", "z"])
    pred = np.array([[1, 2, 2, 0]])
    gt = np.array([[1, 2, 0, 0]])
    ious = m.update(pred, gt, ["z", "x"])  # label 1 = z, label 2 = x
    assert ious.tolist() == [1.0, 0.5]
    assert m.class_iou().tolist() == [0.5, 0.0, 1.0]
    # background: pred {3}, gt {2,3} -> 1/2; foreground summed over classes 2/3
    assert m.fbiou() == pytest.approx((0.5 + 2 / 3) / 2 * 100)


def test_exact_ratio_needs_all_ways_right():
    er = ExactRatioMeter()
    assert er.update([True, False], [True, False]) is True
    assert er.update([True, True], [True, False]) is False
    assert er.update([False], [False]) is True
    assert er.ratio() == pytest.approx(200 / 3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="prediction"):
        area_inter_union(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(InputError, match="labels outside"):
        area_inter_union(np.full((2, 2), 3), np.zeros((2, 2)), 2)
    with pytest.raises(InputError, match="not one of the evaluated"):
        SegMeter(["a"]).update(np.zeros((1, 1), int), np.zeros((1, 1), int), ["q"])
