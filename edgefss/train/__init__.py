"""Episodic meta-training of the TLG / CST heads (frozen backbones), single process or DDP."""

from edgefss.train.loop import TrainCfg, train

__all__ = ["TrainCfg", "train"]
