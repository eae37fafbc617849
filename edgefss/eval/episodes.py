"""Seeded N-way K-shot evaluation episodes (torch-free).

Protocols (spec §6.2, §6.4):
- "fss" (HSNet line): the query always shows a support class; for N > 1 the other ways are
  other classes drawn uniformly.
- "fscs" (iFSL/CST): the N support classes are drawn without replacement with the query's
  class at probability 1/2 and the rest uniform, so the query may show none of them.
Episode i depends only on (seed, i): runs of different models/backends/precisions see the
same episodes, and any episode can be regenerated alone.

Query order: a class drawn uniformly among the classes that can be a query, then a query image
of it, then its supports, all from the episode's seeded generator ("class_uniform"), so a
short run covers the classes instead of the first folders of an index (20 episodes on the
shared DAVIS subset drew 2 of 12 classes when the index was walked in order). Only a named
benchmark whose protocol prescribes another order keeps it: PASCAL-5i cycles through the fold's
split list (HSNet `DatasetPASCAL`: episode i is line i mod len); COCO-20i is class-uniform in
HSNet too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefss.errors import InputError
from edgefss.eval.datasets import FewShotDataset, Item

PROTOCOLS = ("fss", "fscs")
ORDERS = ("auto", "class_uniform", "cycle")
# Layouts whose published protocol fixes the query order (their loaders set `query_order`).
PROTOCOL_ORDER = {"pascal": "cycle", "coco": "class_uniform"}
MAX_AUTO_EPISODES = 1000


@dataclass(frozen=True)
class Episode:
    """One episode: `supports[i]` are the K shots of class `classes[i]` (way i, label i+1)."""

    index: int
    query: Item
    classes: tuple[str, ...]
    supports: tuple[tuple[Item, ...], ...]


def auto_episodes(ds: FewShotDataset) -> int:
    """1000 (the benchmark count), fewer for tiny sets: 10 per query annotation."""
    return min(MAX_AUTO_EPISODES, 10 * len(ds.items))


class EpisodeSampler:
    """Builds episode i of a dataset for a given way/shot/seed/protocol.

    order: "auto" (the named protocol's order for PASCAL-5i / COCO-20i, class-uniform for every
    other layout), "class_uniform" or "cycle" (episode i takes query item i mod len).

    Raises:
        InputError: too few classes or images for `way` ways of `shot` shots.
    """

    def __init__(self, ds: FewShotDataset, way: int = 1, shot: int = 1, seed: int = 0, protocol: str = "fss",
                 order: str = "auto"):
        if protocol not in PROTOCOLS:
            raise InputError(f"--protocol: '{protocol}' is not one of {PROTOCOLS}")
        if order not in ORDERS:
            raise InputError(f"episode order '{order}' is not one of {ORDERS}")
        if way < 1 or shot < 1:
            raise InputError(f"--way/--shot must be >= 1, got way={way} shot={shot}")
        self.ds, self.way, self.shot, self.seed, self.protocol = ds, way, shot, seed, protocol
        # A query needs `shot` other images of its class; a support-only class needs `shot`.
        self.query_classes = [c for c in ds.classes if len({i.image for i in ds.by_class[c]}) >= shot + 1]
        self.support_classes = [c for c in ds.classes if len({i.image for i in ds.by_class[c]}) >= shot]
        if not self.query_classes:
            raise InputError(f"dataset '{ds.root}': no class has {shot + 1} images (1 query + {shot} shots)")
        if len(self.support_classes) < way:
            raise InputError(f"dataset '{ds.root}': {way}-way needs {way} classes with >= {shot} images, "
                             f"found {len(self.support_classes)}")
        keep = set(self.query_classes)
        self.queries = [it for it in ds.items if it.cls in keep]
        if order == "auto":
            order = ds.query_order if ds.name in PROTOCOL_ORDER else "class_uniform"
        self.order = order

    def never_queried(self) -> list[str]:
        """Evaluated classes that can never be a query (fewer than shot + 1 images)."""
        ok = set(self.query_classes)
        return [c for c in self.ds.classes if c not in ok]

    def __getitem__(self, idx: int) -> Episode:
        rng = np.random.default_rng([self.seed, idx])
        if self.order == "class_uniform":
            cls = self.query_classes[rng.integers(len(self.query_classes))]
            pool = self.ds.by_class[cls]
            query = pool[rng.integers(len(pool))]
        else:
            query = self.queries[idx % len(self.queries)]
        classes = self._way_classes(query, rng)
        supports = tuple(self._shots(query, c, rng) for c in classes)
        return Episode(idx, query, tuple(classes), supports)

    def _way_classes(self, query: Item, rng) -> list[str]:
        # A support class needs `shot` images other than the query image.
        others = [c for c in self.support_classes if c != query.cls
                  and sum(it.image != query.image for it in self.ds.by_class[c]) >= self.shot]
        if len(others) < self.way - 1:
            raise InputError(f"query '{query.image}': only {len(others) + 1} classes have {self.shot} support "
                             f"images besides it; {self.way}-way needs {self.way}")
        if self.protocol == "fss":
            picked = [query.cls] + [others[i] for i in rng.choice(len(others), self.way - 1, replace=False)]
            return [picked[i] for i in rng.permutation(self.way)]
        cands = [query.cls] + others
        if len(cands) == 1:
            return cands
        p = np.full(len(cands), 0.5 / len(others))
        p[0] = 0.5
        return [cands[i] for i in rng.choice(len(cands), self.way, replace=False, p=p)]

    def _shots(self, query: Item, cls: str, rng) -> tuple[Item, ...]:
        pool = [it for it in self.ds.by_class[cls] if it.image != query.image]
        # Prefer another group (DAVIS: another video) so the support is not the query's own object.
        other_group = [it for it in pool if not query.group or it.group != query.group]
        if len(other_group) >= self.shot:
            pool = other_group
        if len(pool) < self.shot:
            raise InputError(f"class '{cls}': {len(pool)} support images besides the query, need {self.shot}")
        return tuple(pool[i] for i in rng.choice(len(pool), self.shot, replace=False))
