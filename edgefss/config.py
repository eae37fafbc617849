"""Torch-free configuration shared by models, exporters, quantization and the runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CST pseudo-mask (models-spec §3.3): ((mean-over-heads key/CLS-query cosine, bilinearly upsampled
# to the input size) + 1) / 2 > this. The one definition: model, training, manifest and runtime use it.
CST_PSEUDO_THRESHOLD = 0.4


@dataclass(frozen=True)
class PreprocessCfg:
    """How an RGB uint8 image becomes a network input.

    Both TLG and CST resize (no crop, no aspect keep) to a square `imgsz` and normalise with
    ImageNet mean/std, as their official data loaders do.
    """

    imgsz: int = 400
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {"imgsz": self.imgsz, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessCfg":
        return cls(imgsz=int(d["imgsz"]), mean=tuple(d["mean"]), std=tuple(d["std"]))


MODEL_NAMES = ("tlg", "cst", "imr_hsnet")
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class SinkhornCfg:
    """Fixed-iteration log-domain Sinkhorn used by TLG's HT module (spec §1.3)."""

    eps: float = 0.5
    n_iter: int = 11
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
