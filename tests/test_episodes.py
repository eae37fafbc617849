"""Evaluation episodes: seeded, class-uniform query draws on folder layouts (the index order only
where a named protocol prescribes it), the full unsampled-class warning, the worst-panel label."""

from collections import Counter

import numpy as np
import pytest

from edgefss.errors import InputError
from edgefss.eval.datasets import FewShotDataset, Item, load_dataset
from edgefss.eval.episodes import EpisodeSampler
from edgefss.eval.runner import evaluate, unsampled_note


def test_davis_20_episodes_cover_most_classes_not_the_first_two(shared_data):
    # The index lists 10+ frames per video in order: walking it drew 2 of 12 classes in 20 episodes.
    ds = load_dataset(shared_data / "davis2016_val_subset")
    s = EpisodeSampler(ds, way=1, shot=1, seed=0)
    assert s.order == "class_uniform"
    drawn = {s[i].query.cls for i in range(20)}
    # 20 uniform draws over 12 classes miss ~2.2 on average; 8 or more seen is > 99 % likely
    assert len(drawn) >= 8, drawn
    assert len({s[i].query.cls for i in range(200)}) == len(ds.classes)


def test_class_uniform_draws_are_uniform_over_classes_not_items():
    # class "big" has 40 images, "small" 3: uniform over items would draw "big" 93 % of the time
    items = [Item(f"big{i}.jpg", f"big{i}.png", "big") for i in range(40)]
    items += [Item(f"small{i}.jpg", f"small{i}.png", "small") for i in range(3)]
    ds = FewShotDataset("folder", "/x", ["big", "small"], items)
    s = EpisodeSampler(ds, way=1, shot=1, seed=5)
    counts = Counter(s[i].query.cls for i in range(2000))
    assert abs(counts["small"] / 2000 - 0.5) < 0.05, counts
    # supports uniform over the class's other images: every small image appears as a support
    assert {s[i].supports[0][0].image for i in range(400) if s[i].query.cls == "small"} == \
        {f"small{i}.jpg" for i in range(3)}


def test_order_is_seeded_and_protocol_order_kept_for_pascal():
    items = [Item(f"a{i}.jpg", f"a{i}.png", "a") for i in range(5)] + \
            [Item(f"b{i}.jpg", f"b{i}.png", "b") for i in range(5)]
    folder = FewShotDataset("folder", "/x", ["a", "b"], items)
    a, b = EpisodeSampler(folder, seed=1), EpisodeSampler(folder, seed=1)
    assert [a[i] for i in range(30)] == [b[i] for i in range(30)]
    assert [a[i].query for i in range(30)] != [EpisodeSampler(folder, seed=2)[i].query for i in range(30)]
    # PASCAL-5i (HSNet): episode i is split line i mod len, whatever the seed
    pascal = FewShotDataset("pascal", "/x", ["a", "b"], items)
    p = EpisodeSampler(pascal, seed=3)
    assert p.order == "cycle" and [p[i].query for i in range(12)] == [items[i % 10] for i in range(12)]
    assert EpisodeSampler(folder, order="cycle")[7].query == items[7]
    with pytest.raises(InputError, match="order"):
        EpisodeSampler(folder, order="sorted")


class _Blank:
    def set_support(self, images, class_names, masks=None):
        self.names = list(dict.fromkeys(class_names))

    def predict(self, query, refine_steps=0):
        from types import SimpleNamespace

        return SimpleNamespace(mask=np.zeros(query.shape[:2], np.uint8), probs=np.zeros(len(self.names)),
                               classes=self.names)


def test_unsampled_warning_lists_every_class_and_panel_says_percent(shared_data, tmp_path, monkeypatch):
    import edgefss.eval.overlay as ov

    titles = []
    monkeypatch.setattr(ov, "panel", lambda tiles, t, height=240: titles.extend(t) or np.zeros((4, 4, 3), np.uint8))
    ds = load_dataset(shared_data / "davis2016_val_subset")
    s = EpisodeSampler(ds, way=1, shot=1, seed=0)
    res = evaluate(_Blank(), ds, s, 2, progress=False, out_dir=tmp_path, n_worst=1)
    assert "pred IoU 0.0 %" in titles  # a blank mask scores 0: the fraction is shown as a percentage
    # a blank prediction leaves the union = GT area > 0 for the sampled classes only
    missing = [c for c in ds.classes if c not in {r["classes"][0] for r in res["per_episode"]}]
    assert res["unsampled_classes"] == missing and len(missing) >= 10
    note = unsampled_note(res)
    assert f"{len(missing)} of {len(ds.classes)} classes never sampled" in note
    assert all(c in note for c in missing)
    assert unsampled_note({**res, "unsampled_classes": []}) is None
