"""Episodic meta-training of the TLG / CST heads (frozen backbones), single process or DDP.

`edgefss.train.records` is torch-free; the loop (`TrainCfg`, `train`) needs torch and is
imported lazily.
"""


def __getattr__(name):
    if name in ("TrainCfg", "train"):
        from edgefss.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
