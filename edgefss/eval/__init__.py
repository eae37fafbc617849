"""Few-shot evaluation: datasets, seeded episodes, HSNet-exact metrics, the episode loop.

    from edgefss.eval import load_dataset, EpisodeSampler, evaluate
    ds = load_dataset("data/davis2016_val_subset")
    res = evaluate(predictor, ds, EpisodeSampler(ds, way=1, shot=1, seed=0), episodes=100)

`predictor` is an `edgefss.runtime.Segmenter`: a bundle (torch-free) or a PyTorch model through the
torch backend (`edgefss.models.torch_segmenter.torch_segmenter`). Importing this package never
imports torch.
"""

from edgefss.eval.datasets import FewShotDataset, Item, load_dataset
from edgefss.eval.episodes import Episode, EpisodeSampler, auto_episodes
from edgefss.eval.metrics import ExactRatioMeter, SegMeter, area_inter_union
from edgefss.eval.runner import compare, evaluate

__all__ = ["FewShotDataset", "Item", "load_dataset", "Episode", "EpisodeSampler", "auto_episodes",
           "ExactRatioMeter", "SegMeter", "area_inter_union", "compare", "evaluate"]
