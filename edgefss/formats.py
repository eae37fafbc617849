"""The format table: which (backend, precision) bundles exist, where they run, what they hold.

One row per exportable format, in the spirit of ultralytics' exporter table. It is the single
source for the export CLI's choices (`edgefss.cli.export`), option validation
(`edgefss.exporters.options.validate`), the bundle file suffix, the engine settings the runtime
applies (`edgefss.runtime.session.open_graphs`, recorded in the manifest so the gate and the
device run the same thing), the benchmark rows (`available_rows`) and the README backend table
(`readme_table`; tests/test_formats.py fails when README.md disagrees).

Torch-free and vendor-free: importing it imports no engine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from edgefss.config import BACKENDS, PRECISIONS  # noqa: F401  (re-exported: the table's keys)

# Options every format accepts (the ExportOptions field names).
# (--int8/--fp16 select the row; an INT8 row listing "fp16" keeps FP16 as the fallback precision.)
COMMON_OPTIONS = frozenset({"model", "checkpoint", "backbone_weights", "backend", "imgsz", "out", "target",
                            "verify_episodes", "clip_checkpoint", "clip_bpe", "text_encoder", "pseudo", "cam_classes",
                            "cam_checkpoint", "imr_backbone", "imr_stages"})
# The accuracy gate (FP16 and INT8): held-out episodes from --calib, its threshold, and what to do
# with a failed (--force) or uninformative (--strict) result.
GATE_OPTIONS = frozenset({"calib", "gate_episodes", "agreement", "force", "strict", "shots"})
# INT8 only: calibration size and the per-layer sensitivity list on a failed gate.
INT8_OPTIONS = GATE_OPTIONS | {"calib_episodes", "sensitivity"}
TRT_OPTIONS = frozenset({"workspace"})  # engine build memory cap (edgefss.trt_cache)

# OpenVINO's INFERENCE_PRECISION_HINT: without it the CPU plugin runs bf16 on AVX512-BF16/AMX CPUs
# and the GPU plugin f16, whatever the bundle's precision. The hint is written into the manifest
# ("engine_config") and applied by the runtime backend, so the gate measures what ships.
_OV_F32 = {"INFERENCE_PRECISION_HINT": "f32"}
_OV_F16 = {"INFERENCE_PRECISION_HINT": "f16"}


@dataclass(frozen=True)
class Format:
    """One exportable format.

    Attributes:
        backend, precision: the key ('onnxruntime'|'openvino'|'tensorrt', 'fp32'|'fp16'|'int8').
        devices: runtime devices, preferred first (the runtime's default is the first one present).
        suffix: graph file suffix in the bundle; files: how the README describes them.
        options: ExportOptions fields allowed (any other field must keep its default).
        engine_config: engine settings the runtime applies (OpenVINO compile config).
        gated: FP32 is verified against PyTorch; FP16/INT8 go through the accuracy gate.
        method: what produces the reduced precision (README).
        note: README note.
    """

    backend: str
    precision: str
    devices: tuple
    suffix: str
    files: str
    options: frozenset = COMMON_OPTIONS
    engine_config: dict = field(default_factory=dict)
    method: str = ""
    note: str = ""

    @property
    def gated(self) -> bool:
        return self.precision != "fp32"

    @property
    def flags(self) -> str:
        """The export flags selecting this format (README)."""
        out = [] if self.backend == "onnxruntime" else [f"--backend {self.backend}"]
        out += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}[self.precision]
        return " ".join(out)


_ORT = "`.onnx`"
_IR = "`.xml` + `.bin`"
_PLAN = "`.plan` (tied to the GPU and TensorRT version)"
_TRT_NOTE = "Jetson Orin (sm_87), x86 GPUs; TensorRT 10 API; not tested here (no GPU)"
_OV_NOTE = "`pip install 'edgefss[openvino]'`"
FORMATS = (
    Format("onnxruntime", "fp32", ("cuda", "cpu"), ".onnx", _ORT, note="default"),
    Format("onnxruntime", "int8", ("cpu",), ".onnx", _ORT, COMMON_OPTIONS | INT8_OPTIONS | {"target_isa"},
           method="static QDQ (quantize_static), per-channel symmetric weights"),
    Format("openvino", "fp32", ("CPU", "GPU"), ".xml", _IR, engine_config=_OV_F32, note=_OV_NOTE),
    Format("openvino", "fp16", ("GPU", "CPU"), ".xml", _IR, COMMON_OPTIONS | GATE_OPTIONS, _OV_F16,
           method="FP16 weights, f16 compute", note="a CPU runs the f16 hint as bf16/f16 where it has them, else f32"),
    Format("openvino", "int8", ("CPU",), ".xml", _IR, COMMON_OPTIONS | INT8_OPTIONS, _OV_F32,
           method="NNCF (`ModelType.TRANSFORMER` for CST)"),
    Format("tensorrt", "fp32", ("cuda",), ".plan", _PLAN, COMMON_OPTIONS | TRT_OPTIONS, note=_TRT_NOTE),
    Format("tensorrt", "fp16", ("cuda",), ".plan", _PLAN, COMMON_OPTIONS | GATE_OPTIONS | TRT_OPTIONS,
           method="BuilderFlag.FP16", note=_TRT_NOTE),
    Format("tensorrt", "int8", ("cuda",), ".plan", _PLAN, COMMON_OPTIONS | INT8_OPTIONS | TRT_OPTIONS | {"fp16"},
           method="explicit QDQ, FP16 fallback", note=_TRT_NOTE),
)

# Graph file suffixes each engine can read (a FP32 .onnx bundle also runs on OpenVINO).
READABLE = {"onnxruntime": (".onnx",), "openvino": (".onnx", ".xml"), "tensorrt": (".plan", ".engine")}
# The Python package each backend needs at export time (import name).
PACKAGES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt",)}
INT8_PACKAGES = {"openvino": ("nncf",)}


def get(backend: str, precision: str) -> Format:
    """The row for (backend, precision). Raises InputError naming the supported precisions."""
    from edgefss.errors import InputError

    for f in FORMATS:
        if (f.backend, f.precision) == (backend, precision):
            return f
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r}; expected one of {list(BACKENDS)}")
    have = [f.precision for f in FORMATS if f.backend == backend]
    flags = {"fp16": "--fp16", "int8": "--int8", "fp32": "(no precision flag)"}
    raise InputError(
        f"--{precision} is not supported with --backend {backend}: it exports "
        f"{', '.join(p.upper() for p in have)}; formats with {precision.upper()}: "
        + ", ".join(f"--backend {f.backend} {flags[precision]}" for f in FORMATS if f.precision == precision)
    )


def precisions(backend: str) -> tuple:
    return tuple(f.precision for f in FORMATS if f.backend == backend)


def installed(backend: str, precision: str = "fp32") -> bool:
    """True when the packages to export and run (backend, precision) are importable here."""
    mods = PACKAGES[backend] + (INT8_PACKAGES.get(backend, ()) if precision == "int8" else ())
    return all(importlib.util.find_spec(m) is not None for m in mods)


def available_rows() -> list[tuple[str, str]]:
    """(backend, precision) rows that can be exported and run on this machine, table order.

    TensorRT rows need the tensorrt package (and a GPU to run); OpenVINO INT8 needs nncf.
    """
    return [(f.backend, f.precision) for f in FORMATS if installed(f.backend, f.precision)]


def readme_table() -> str:
    """The README's backend table, rendered from FORMATS (markdown, no trailing newline)."""
    lines = ["| backend | precision | devices (preferred first) | bundle files | export flags | "
             "engine settings | method | notes |", "|---|---|---|---|---|---|---|---|"]
    for f in FORMATS:
        cfg = ", ".join(f"`{k}={v}`" for k, v in f.engine_config.items()) or "–"
        lines.append(f"| `{f.backend}` | {f.precision.upper()} | {', '.join(f.devices)} | {f.files} | "
                     f"{'`' + f.flags + '`' if f.flags else '(default)'} | {cfg} | {f.method or '–'} | {f.note or '–'} |")
    return "\n".join(lines)
