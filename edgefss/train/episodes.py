"""Training episodes from (image, mask, class) records.

Each episode: one query and K supports of a class. For CST (FS-CS), with probability 1/2 the
support class differs from the query's, so the classification head sees absent classes too
(spec §3.4: p[query_class] = 1/2). Images go through `edgefss.transforms` (the one
preprocessing), masks are nearest-resized to the input size.
"""

from __future__ import annotations

from collections import defaultdict
import numpy as np
import torch
from torch.utils.data import Dataset

from edgefss.config import PreprocessCfg
from edgefss.errors import InputError
from edgefss.train.records import Record  # noqa: F401  (re-exported)
from edgefss.transforms import load_image, load_mask, normalize, resize_image, resize_mask


class EpisodeDataset(Dataset):
    """Seeded episodes over records.

    Item dict (tensors):
        query (3,S,S) float32; query_mask (S,S) int64 {0,1} (zeros when the class is absent or
        no mask is known; `has_mask` says which); support (K,3,S,S); support_mask (K,S,S) float32;
        present () float32 1/0; cls_idx () int64; has_mask () bool; with `pseudo` also
        query_pseudo (1,S,S) and support_pseudo (K,1,S,S) float32 in [0,1] (the support class's map).

    pseudo: None, or fn(image path, class name) -> (h, w) float32 map in [0, 1] (e.g. the CLIP
    Grad-CAM files of `edgefss pseudo-masks`, edgefss.cam.files.CamDir.load), resized to S x S
    bilinearly (align_corners=True) over the whole image.
    """

    def __init__(self, records, length: int, shots: int = 1, imgsz: int = 400, p_absent: float = 0.0,
                 seed: int = 0, cfg: PreprocessCfg | None = None, pseudo=None):
        self.by_cls = defaultdict(list)
        for r in records:
            self.by_cls[r.cls].append(r)
        self.classes = sorted(c for c, v in self.by_cls.items() if len(v) >= shots + 1)
        if not self.classes:
            raise InputError(f"training data: no class has at least {shots + 1} images (need query + {shots} supports)")
        self.length, self.shots, self.p_absent, self.seed = length, shots, p_absent, seed
        self.cfg = cfg or PreprocessCfg(imgsz=imgsz)
        self._cache: dict = {}
        self.epoch = 0
        self.pseudo = pseudo

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of episodes for `epoch`: episode i depends on (seed, i) in epoch 0 (the draw
        of earlier versions, which had one set of episodes for all epochs) and on (seed, epoch, i) after."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def _load(self, rec: Record):
        key = rec.image
        if key not in self._cache:
            S = self.cfg.imgsz
            img = normalize(resize_image(load_image(rec.image, "training image"), S), self.cfg)[0]
            if rec.mask is not None:
                m = resize_mask(load_mask(rec.mask, "training mask"), (S, S)).astype(np.float32)
            else:
                m = None
            self._cache[key] = (img, m)
        return self._cache[key]

    def __getitem__(self, idx):
        rng = np.random.default_rng((self.seed, idx) if self.epoch == 0 else (self.seed, self.epoch, idx))
        qcls = self.classes[rng.integers(len(self.classes))]
        pool = self.by_cls[qcls]
        pick = rng.choice(len(pool), self.shots + 1, replace=False)
        query = pool[pick[0]]
        present = True
        if self.p_absent > 0 and len(self.classes) > 1 and rng.random() < self.p_absent:
            others = [c for c in self.classes if c != qcls]
            scls = others[rng.integers(len(others))]
            spool = self.by_cls[scls]
            sup = [spool[i] for i in rng.choice(len(spool), self.shots, replace=len(spool) < self.shots)]
            present = False
        else:
            scls = qcls
            sup = [pool[i] for i in pick[1:]]
        qi, qm = self._load(query)
        S = self.cfg.imgsz
        has_mask = qm is not None
        qm = np.zeros((S, S), np.float32) if (qm is None or not present) else qm
        simgs, smasks = zip(*[self._load(r) for r in sup])
        smasks = [m if m is not None else np.ones((S, S), np.float32) for m in smasks]
        extra = {}
        if self.pseudo is not None:
            from edgefss.transforms import resize_prob

            def grid(rec):
                return torch.from_numpy(resize_prob(self.pseudo(rec.image, scls), (S, S))[None])

            extra = {"query_pseudo": grid(query), "support_pseudo": torch.stack([grid(r) for r in sup])}
        return {
            **extra,
            "query": torch.from_numpy(qi),
            "query_mask": torch.from_numpy(qm).long(),
            "support": torch.from_numpy(np.stack(simgs)),
            "support_mask": torch.from_numpy(np.stack(smasks)),
            "present": torch.tensor(float(present)),
            "cls_idx": torch.tensor(self.classes.index(scls)),
            "cls_name": scls,
            "has_mask": torch.tensor(has_mask),
        }
