"""Export options: validation (refuse, never silently change) and target recipes.

A recipe is `export/<name>.json` with any of the option keys below plus "description". Options
given explicitly must agree with the recipe; a disagreement is refused, not overridden.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edgefss import formats
from edgefss.config import MODEL_NAMES
from edgefss.errors import InputError
from edgefss.packaged import recipe_dir

RECIPE_DIR = recipe_dir()  # edgefss/recipes/, shipped in the wheel (edgefss/packaged.py)


@dataclass
class ExportOptions:
    """All `edgefss export` options (CLI flags map 1:1 onto these fields)."""

    model: str = "tlg"
    checkpoint: str | None = None
    backbone_weights: str | None = None  # torchvision ResNet-50 (TLG) / DINO (CST) .pth, after checkpoint
    backend: str = "onnxruntime"
    int8: bool = False
    calib: str | None = None
    fp16: bool = False
    imgsz: int = 400
    out: str | None = None
    target: str | None = None
    force: bool = False  # write a bundle that failed the accuracy gate (manifest gate.forced = true)
    strict: bool = False  # refuse a bundle whose accuracy gate is uninformative
    sensitivity: bool = True  # on a failed gate, list per-layer sensitivity (one gate run per layer group)
    clip_checkpoint: str | None = None
    calib_episodes: int = 24
    gate_episodes: int = 8
    verify_episodes: int = 2
    agreement: float = 0.95
    shots: int = 1
    target_isa: str | None = None  # onnxruntime INT8: the CPU the QDQ format is chosen for (None: this one)
    workspace: int | None = None  # TensorRT engine build memory cap in MiB (None: edgefss.trt_cache default, 1024)
    text_encoder: str | None = None  # TLG: also export the CLIP text tower, 'fp32' | 'int8' (exporters/text_graph.py)
    clip_bpe: str | None = None  # CLIP merges file bpe_simple_vocab_16e6.txt.gz (None: tokenizer.find_bpe_file)
    pseudo: str = "prior"  # TLG query pseudo-masks on the device: 'prior' (backbone) | 'cam' (CLIP Grad-CAM graph)
    cam_classes: str = "support+background"  # --pseudo cam softmax list: 'voc' | 'coco' | 'support+background'
    cam_checkpoint: str | None = None  # --pseudo cam: CLIP RN50 weights (RN50.pt / open_clip), image + text towers
    imr_backbone: str | None = None  # imr_hsnet: 'resnet50' | 'vgg16' (None: resnet50)
    imr_stages: int | None = None  # imr_hsnet: refinement stages unrolled in the head, 2 VOC / 3 COCO (None: 2)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else ("fp16" if self.fp16 else "fp32")

    def default_out(self) -> str:
        return f"{self.model}_{self.imgsz}_{self.backend}_{self.precision}"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name: str) -> dict:
    """Read export/<name>.json -> option dict (without 'description')."""
    p = RECIPE_DIR / f"{name}.json"
    if not p.is_file():
        raise InputError(f"--target {name!r}: no recipe {p}; available: {list_recipes()}")
    d = json.loads(p.read_text())
    known = {f.name for f in fields(ExportOptions)}
    bad = set(d) - known - {"description"}
    if bad:
        raise InputError(f"recipe {p} has unknown keys {sorted(bad)}; expected a subset of {sorted(known)}")
    d.pop("description", None)
    return d


def resolve(**given) -> ExportOptions:
    """Merge explicit options (None = not given) with the --target recipe and defaults, then validate.

    Raises:
        InputError: unknown option, a recipe conflict, or an unsupported combination.
    """
    known = {f.name for f in fields(ExportOptions)}
    unknown = set(given) - known
    if unknown:
        raise InputError(f"export: unknown options {sorted(unknown)}; expected {sorted(known)}")
    explicit = {k: v for k, v in given.items() if v is not None}
    merged = {}
    if explicit.get("target"):
        recipe = load_recipe(explicit["target"])
        for k, v in recipe.items():
            if k in explicit and explicit[k] != v and not (isinstance(v, bool) and explicit[k] is False):
                raise InputError(
                    f"--{k.replace('_', '-')} {explicit[k]!r} conflicts with --target {explicit['target']} "
                    f"({k}={v!r}); drop one of them"
                )
            merged[k] = v
    merged.update(explicit)
    opts = ExportOptions(**merged)
    validate(opts)
    return opts


_GATE_HINT = "the accuracy gate (--int8; --fp16 on " + ", ".join(
    sorted({f.backend for f in formats.FORMATS if f.precision == "fp16"})) + ")"
_NEEDS = {  # why an option is refused where it does not apply
    "calib": "--calib gives the images for INT8 calibration and " + _GATE_HINT,
    "gate_episodes": "--gate-episodes sizes " + _GATE_HINT, "agreement": "--agreement is the threshold of " + _GATE_HINT,
    "force": "--force only overrides a failed verdict of " + _GATE_HINT,
    "strict": "--strict only refuses an uninformative verdict of " + _GATE_HINT,
    "shots": "--shots sets the supports per episode of INT8 calibration and " + _GATE_HINT,
    "calib_episodes": "--calib-episodes is only used with --int8",
    "target_isa": "--target-isa picks the ONNX Runtime INT8 format (--backend onnxruntime --int8 only)", "sensitivity": "sensitivity is only used with --int8",
    "workspace": "--workspace caps TensorRT's engine build memory (--backend tensorrt only)",
}


def validate(o: ExportOptions) -> None:
    """Refuse option combinations the format table (edgefss.formats) does not list (clear message,
    nothing changed)."""
    if o.model not in MODEL_NAMES:
        raise InputError(f"--model {o.model!r}; expected one of {list(MODEL_NAMES)}")
    if o.backend not in formats.BACKENDS:
        raise InputError(f"--backend {o.backend!r}; expected one of {list(formats.BACKENDS)}")
    if not isinstance(o.imgsz, int) or o.imgsz < 64 or o.imgsz % 16:
        raise InputError(f"--imgsz {o.imgsz!r}; expected an int multiple of 16 and >= 64 (400 for official weights)")
    if o.fp16 and o.int8 and "fp16" not in formats.get(o.backend, "int8").options:
        raise InputError(
            f"--fp16 with --int8 is not supported on {o.backend}: choose one precision "
            "(only tensorrt builds INT8 engines with an FP16 fallback)"
        )
    fmt = formats.get(o.backend, o.precision)
    default = ExportOptions()
    selecting = {"fp32": set(), "fp16": {"fp16"}, "int8": {"int8"}}[o.precision]
    for f in fields(ExportOptions):
        if f.name not in fmt.options | selecting and getattr(o, f.name) != getattr(default, f.name):
            why = _NEEDS.get(f.name, f"--{f.name.replace('_', '-')} does not apply")
            raise InputError(f"{why}; it has no meaning for {o.backend} {o.precision.upper()}")
    if o.calib is not None and not Path(o.calib).is_dir():
        raise InputError(f"--calib '{o.calib}' is not a directory; expected a folder of calibration images")
    if o.backbone_weights is not None and not Path(o.backbone_weights).is_file():
        what = "is a folder" if Path(o.backbone_weights).is_dir() else "not found"
        raise InputError(f"--backbone-weights: '{o.backbone_weights}' {what}; expected a .pth file")
    if o.clip_checkpoint is not None and o.model != "tlg":
        raise InputError("--clip-checkpoint only applies to --model tlg (CST has no text branch)")
    if o.text_encoder is not None:  # exporters/text_graph.py
        if o.model != "tlg":
            raise InputError("--text-encoder only applies to --model tlg (CST's pseudo-mask is class-agnostic)")
        if o.text_encoder not in ("fp32", "int8"):
            raise InputError(f"--text-encoder {o.text_encoder!r}; expected 'fp32' or 'int8'")
        if o.clip_checkpoint is None:
            raise InputError("--text-encoder exports the CLIP text tower from --clip-checkpoint (ViT-B-32.pt); "
                             "pass it")
    if o.pseudo not in ("prior", "cam"):  # exporters/cam_graph.py
        raise InputError(f"--pseudo {o.pseudo!r}; expected 'prior' or 'cam'")
    if o.pseudo == "cam" and o.model != "tlg":
        raise InputError("--pseudo cam only applies to --model tlg (the model with a query pseudo-mask input)")
    if o.pseudo != "cam" and (o.cam_checkpoint is not None or o.cam_classes != "support+background"):
        raise InputError("--cam-checkpoint / --cam-classes only apply with --pseudo cam")
    if o.cam_classes not in ("voc", "coco", "support+background"):
        raise InputError(f"--cam-classes {o.cam_classes!r}; expected 'voc', 'coco' or 'support+background'")
    if o.cam_checkpoint is not None and not Path(o.cam_checkpoint).is_file():
        raise InputError(f"--cam-checkpoint '{o.cam_checkpoint}': file not found (CLIP RN50 weights, e.g. RN50.pt)")
    if o.clip_bpe is not None and ((o.clip_checkpoint is None and o.cam_checkpoint is None)
                                   or not Path(o.clip_bpe).is_file()):
        raise InputError(f"--clip-bpe '{o.clip_bpe}': expected the CLIP merges file (bpe_simple_vocab_16e6.txt.gz), "
                         "used with --clip-checkpoint or --cam-checkpoint")
    if (o.imr_backbone is not None or o.imr_stages is not None) and o.model != "imr_hsnet":
        raise InputError(f"--imr-backbone / --imr-stages only apply to --model imr_hsnet, not --model {o.model}")
    if o.imr_backbone not in (None, "resnet50", "vgg16"):
        raise InputError(f"--imr-backbone {o.imr_backbone!r}; expected 'resnet50' or 'vgg16'")
    if o.imr_stages is not None and (isinstance(o.imr_stages, bool) or not isinstance(o.imr_stages, int)
                                     or o.imr_stages < 1):
        raise InputError(f"--imr-stages {o.imr_stages!r}; expected an int >= 1 (2 for PASCAL, 3 for COCO checkpoints)")
    if o.target_isa is not None:
        from edgefss.quant.ort_int8 import ISA_FORMAT

        if o.target_isa not in ISA_FORMAT:
            raise InputError(f"--target-isa {o.target_isa!r}; expected one of {list(ISA_FORMAT)}")
    if not 0.0 < o.agreement <= 1.0:
        raise InputError(f"agreement threshold {o.agreement!r}; expected a number in (0, 1]")
    if o.workspace is not None and (not isinstance(o.workspace, int) or o.workspace < 64):
        raise InputError(f"--workspace {o.workspace!r}; expected an integer number of MiB >= 64")
    for k in ("calib_episodes", "gate_episodes", "verify_episodes", "shots"):
        if int(getattr(o, k)) < 1:
            raise InputError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(o, k)!r}")


def as_dict(o: ExportOptions) -> dict:
    return asdict(o)
