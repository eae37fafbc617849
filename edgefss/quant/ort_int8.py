"""ONNX Runtime static INT8 (QDQ) with the edgefss exclusion policy (torch-free).

Policy (deployment-notes §3, §0 "ViT quantization recipe"):
- only Conv / MatMul / Gemm are quantized; every other node (LayerNorm, Softmax, GELU, residual
  Add, the Sinkhorn's ReduceMax/Exp/Log loop, resizes) is listed in `nodes_to_exclude`, which
  still calibrates all tensors (excluding by node, not by op type, avoids ORT's uncalibrated
  Softmax crash);
- MatMuls of two activations (TLG's and CST's cosine correlations, TLG's HT attention and plan
  products) are quantized like the weight MatMuls, as the deployment notes direct ("quantize
  Conv/MatMul/Gemm weights and inputs"; calibrate on episodes so the correlation inputs see real
  ranges). ONNX Runtime's `MatMulConstBOnly` option would not keep them float anyway: only its
  QOperator path reads it, its QDQ MatMul quantizer ignores it (onnxruntime 1.32
  quantization/operators/matmul.py, QDQMatMul). Measured on 2026-11-29 with them kept float
  instead: CST 400 px gate (random weights) 0.80 -> 0.82 mask IoU; TLG 400 px INT8 query 1.08x its
  FP32 query in that run vs 1.25x with them quantized in the next (`bench/latency.py --backends
  torch,onnxruntime --precisions fp32,int8`, one run each, INT8 halves disagreeing by > 10 % in
  both), the correlations being a fifth of TLG's head. The manifest counts them
  (`activation_matmuls_int8`); the gate judges the graph with them, and its sensitivity search can
  keep their groups float. The fused CST attention (com.microsoft.MultiHeadAttention) is not a
  MatMul node and stays float;
- in head graphs, the last quantizable layer before each output stays float;
- the format follows the target instruction set (`FORMATS`, `format_for`, measured with
  bench/int8_formats.py): without VNNI, x86 integer GEMMs use vpmaddubsw, whose int16
  intermediate saturates on U8S8 (measured token cosine 0.990 vs 0.999 S8S8), so AVX2-only
  targets get S8S8; with VNNI (vpdpbusd, u8 x s8 into int32, no saturation) U8S8 is exact
  enough and is the form ONNX Runtime's x86 kernels take natively;
- calibration is streamed (`calibrate`): MinMax ranges are computed per sample and merged
  (exact for min/max), samples are made as they are read (pipeline.LazyFeeds), and the calibration
  session runs without ONNX Runtime's memory arena, so it holds one run's live tensors, not the
  arena's high-water mark; the ranges go to a JSON cache that quantize_static then reads.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from edgefss.errors import InputError, require

QUANT_OPS = ("Conv", "MatMul", "Gemm")

# name -> (quant format, activation type, weight type, per-channel weights, symmetric activations)
FORMATS = {
    "qdq_s8s8_pc": ("QDQ", "QInt8", "QInt8", True, True),
    "qdq_u8s8_pc": ("QDQ", "QUInt8", "QInt8", True, False),
    "qop_u8s8_pc": ("QOperator", "QUInt8", "QInt8", True, False),
    "qdq_u8s8_pt": ("QDQ", "QUInt8", "QInt8", False, False),
}
# Target instruction sets, best first, and the format chosen for each (bench/int8_formats.py).
ISA_FORMAT = {"avx512_vnni": "qdq_u8s8_pc", "avx_vnni": "qdq_u8s8_pc", "avx2": "qdq_s8s8_pc",
              "neon_dot": "qdq_s8s8_pc", "generic": "qdq_s8s8_pc"}


def describe_format(fmt: str) -> str:
    """A FORMATS key in words, e.g. 'qdq_u8s8_pc' -> 'QDQ U8S8 (uint8 activations, asymmetric; int8
    weights, per-channel)': what the manifest says a bundle was quantized to."""
    qformat, act, _weight, per_channel, act_sym = FORMATS[fmt]
    a = "S8" if act == "QInt8" else "U8"
    return (f"{qformat} {a}S8 ({'int8' if a == 'S8' else 'uint8'} activations, "
            f"{'symmetric' if act_sym else 'asymmetric'}; int8 weights, "
            f"{'per-channel' if per_channel else 'per-tensor'})")


def target_isa(cpuinfo_text: str | None = None) -> str:
    """The integer dot-product instruction set of this CPU (or of a /proc/cpuinfo text):
    'avx512_vnni', 'avx_vnni', 'avx2', 'neon_dot' or 'generic'."""
    from pathlib import Path as _P

    from edgefss.doctor import parse_cpuinfo

    if cpuinfo_text is None:
        try:
            cpuinfo_text = _P("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo_text = ""
    isa = parse_cpuinfo(cpuinfo_text)["isa"]
    if isa.get("AVX512-VNNI"):
        return "avx512_vnni"
    if isa.get("AVX-VNNI"):
        return "avx_vnni"
    if isa.get("AVX2"):
        return "avx2"
    if isa.get("dotprod"):
        return "neon_dot"
    return "generic"


def format_for(isa: str) -> str:
    """The quantization format (a FORMATS key) for a target instruction set."""
    if isa not in ISA_FORMAT:
        raise InputError(f"INT8 target instruction set '{isa}' is not one of {sorted(ISA_FORMAT)}")
    return ISA_FORMAT[isa]


def check_target(quant: dict, isa: str) -> str | None:
    """Why an INT8 graph made for `quant['target_isa']` must not run on `isa`, or None.

    Only one mismatch matters for correctness: U8S8 weights run on an x86 CPU without VNNI,
    where vpmaddubsw saturates (wrong results, not just slower). Any other pair runs correctly,
    at most slower than a bundle exported for that CPU.
    """
    fmt = quant.get("format")
    if fmt in FORMATS and FORMATS[fmt][1] == "QUInt8" and isa == "avx2":
        return (f"this INT8 bundle uses {fmt} (exported for {quant.get('target_isa', '?')}); on an x86 CPU "
                "without VNNI its u8 x s8 products saturate. Re-export on/for this CPU "
                "(edgefss export --int8 --target-isa avx2)")
    return None


def check_bundle_target(manifest: dict, engine: str, device: str | None = "cpu", isa: str | None = None) -> str | None:
    """Load-time check of an ONNX Runtime INT8 bundle's format against the CPU it runs on.

    Matters only where ONNX Runtime runs the QDQ graphs on the CPU (not CUDA, TensorRT or
    OpenVINO, whose kernels pick their own form), and only for graphs whose manifest records a
    format (`quantize_onnx`'s record; older bundles are not judged).

    Raises:
        BundleError: a graph's results would be wrong here (`check_target`: U8S8 without VNNI).
    Returns:
        a warning line when the bundle runs correctly but was made for another instruction set
        (this CPU's exporter would choose another format, e.g. S8S8 on a VNNI CPU), else None.
    """
    from edgefss.errors import BundleError

    if engine != "onnxruntime" or str(device or "cpu").lower() != "cpu" or manifest.get("precision") != "int8":
        return None
    graphs = {n: g for n, g in ((manifest.get("quantization") or {}).get("graphs") or {}).items()
              if isinstance(g, dict) and g.get("format") in FORMATS}
    if not graphs:
        return None
    isa = isa or target_isa()
    for name, info in sorted(graphs.items()):
        why = check_target(info, isa)
        if why:
            raise BundleError(f"INT8 graph '{name}' cannot run correctly on this CPU ({isa}): {why}")
    best = ISA_FORMAT.get(isa)
    made = sorted({g["format"] for g in graphs.values()})
    if best is not None and made != [best]:
        targets = sorted({str(g.get("target_isa", "?")) for g in graphs.values()})
        return (f"this INT8 bundle was exported for {', '.join(targets)} ({', '.join(made)}); on this CPU ({isa}) "
                f"the exporter would choose {best}. It runs correctly, possibly slower than a bundle made for this "
                f"CPU: edgefss export --int8 --target-isa {isa} (or export on this machine)")
    return None


def last_layers(model) -> list[str]:
    """Names of the last Conv/MatMul/Gemm node on every path to a graph output.

    Args:
        model: onnx.ModelProto.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    init = {i.name for i in model.graph.initializer}
    found, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in QUANT_OPS:
            found.append(n.name)
            continue
        stack.extend(i for i in n.input if i and i not in init)
    return sorted(found)


def constant_tensors(model) -> set:
    """Names of the tensors that hold the same value on every run: initializers, Constant outputs,
    and outputs of nodes whose inputs all are such tensors (e.g. a Transpose or Reshape of a weight).
    Relies on ONNX's topological node order."""
    const = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant" or (ins and all(i in const for i in ins)):
            const.update(o for o in n.output if o)
    return const


def activation_matmuls(model) -> list[str]:
    """Names of the MatMul/Gemm nodes neither of whose two inputs is a constant (attention scores,
    cosine correlations)."""
    const = constant_tensors(model)
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and not (n.input[0] in const or n.input[1] in const)]


def quantizable_nodes(model) -> list[str]:
    """Names of the nodes the policy may quantize: every Conv/MatMul/Gemm."""
    return [n.name for n in model.graph.node if n.op_type in QUANT_OPS]


def exclusion_policy(model, keep_last: bool, extra: tuple = ()) -> list[str]:
    """Node names ORT must leave in float: all non-Conv/MatMul/Gemm, heads' last layers, `extra`."""
    excl = {n.name for n in model.graph.node if n.op_type not in QUANT_OPS}
    if keep_last:
        excl.update(last_layers(model))
    excl.update(extra)
    return sorted(excl)


def fold_constant_identities(model) -> int:
    """Replace every Identity of an initializer by a copy of that initializer (exact).

    torch.onnx deduplicates equal constants (e.g. the identical BN-folded biases of randomly
    initialised layers) and reads the copies through Identity nodes. ONNX Runtime fuses
    DQ -> Conv -> Q into an integer QLinearConv only when the bias is a constant, so a bias behind
    an Identity leaves the Conv in float between dequantize/quantize pairs (slower than FP32).

    Returns:
        number of Identity nodes removed.
    """
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    keep, n = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in init and node.output[0] not in outputs:
            t = numpy_helper.from_array(numpy_helper.to_array(init[node.input[0]]), node.output[0])
            model.graph.initializer.append(t)
            n += 1
        else:
            keep.append(node)
    if n:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return n


def _name_nodes(model) -> None:
    # nodes_to_exclude works by name; exporters may leave some nodes unnamed
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def calibrate(model_path, feeds, cache_path, label: str = "calibrating") -> Path:
    """MinMax ranges of the tensors ONNX Runtime's quantizer reads (inputs and outputs of every
    Conv/MatMul/Gemm), one sample at a time, written to `cache_path` (save_tensors_data JSON).

    The ranges equal what quantize_static's own calibrator computes with CalibStridedMinMax=1
    (tests/test_calib_stream.py); the difference is memory: the augmented session runs with the
    CPU arena off and ORT's other defaults (no graph optimisation), and `feeds` may be lazy.

    Args:
        model_path: the FP32 ONNX graph to calibrate (node names as the quantizer will see them).
        feeds: sequence of {input name: float32 array} (a list or pipeline.LazyFeeds).
        cache_path: where the ranges go (written atomically).
        label: tqdm label ('' = no bar).
    """
    ort = require("onnxruntime", "ONNX Runtime INT8 quantization")
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from tqdm import tqdm

    from edgefss.quant.pipeline import bound_heap
    from edgefss.quant.reader import FeedReader

    bound_heap()  # no arena: freed intermediates must leave the process, not stay in the heap
    reader = FeedReader(feeds)
    with tempfile.TemporaryDirectory(prefix="edgefss.calib.") as d:
        cal = create_calibrator(Path(model_path), list(QUANT_OPS), augmented_model_path=str(Path(d) / "augmented.onnx"),
                                calibrate_method=CalibrationMethod.MinMax)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ORT's calibrator
        so.enable_cpu_mem_arena = False  # every intermediate freed as it dies: no arena high-water mark
        so.log_severity_level = 3
        cal.infer_session = ort.InferenceSession(cal.augmented_model_path, sess_options=so,
                                                 providers=["CPUExecutionProvider"])
        for i in tqdm(range(len(feeds)), desc=label, unit="sample", leave=False, disable=not label):
            reader.set_range(i, i + 1)  # one sample per pass; compute_data merges min/max exactly
            cal.collect_data(reader)
        ranges = cal.compute_data()
        del cal
    save_tensors_data(ranges, Path(cache_path))
    return Path(cache_path)


def quantize_onnx(fp32_path, out_path, feeds: list, keep_last: bool, extra_exclude: tuple = (),
                  cache_path=None, label: str = "calibrating", fmt: str | None = None,
                  isa: str | None = None) -> dict:
    """Quantize one graph in the format of the target instruction set.

    Args:
        fp32_path: FP32 ONNX file; out_path: where the QDQ model goes.
        feeds: calibration feeds, a sequence of {input name: float32 array} (a list or
            pipeline.LazyFeeds; ignored when `cache_path` already holds the ranges of an earlier call).
        keep_last: keep each output's last quantizable layer float (head graphs).
        extra_exclude: more node names to keep float (sensitivity search, user overrides).
        cache_path: JSON calibration cache; re-quantizations with other exclusions reuse it
            (None: a temporary one).
        label: tqdm label.
        fmt: a FORMATS key; default `format_for(isa)`.
        isa: target instruction set (see `target_isa`); default this CPU's.

    Returns:
        dict(quantized_nodes, quantizable_nodes, excluded_last, extra_excluded, format, target_isa)
        (format and target_isa belong in the manifest's quantization record).
    """
    onnx = require("onnx", "INT8 quantization")
    q = require("onnxruntime.quantization", "ONNX Runtime INT8 quantization")
    isa = isa or target_isa()
    fmt = fmt or format_for(isa)
    if fmt not in FORMATS:
        raise InputError(f"INT8 format '{fmt}' is not one of {sorted(FORMATS)}")
    qformat, act, weight, per_channel, act_sym = FORMATS[fmt]
    model = onnx.load(str(fp32_path))
    folded = fold_constant_identities(model)
    _name_nodes(model)
    excl = exclusion_policy(model, keep_last, tuple(extra_exclude))
    named = Path(str(out_path) + ".named.onnx")
    named.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(named))
    tmp = None
    if cache_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgefss.calib.")
        cache_path = Path(tmp.name) / "ranges.json"
    # ORT logs every float bias and the skipped pre-processing on the root logger: hundreds of lines
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        if not Path(cache_path).is_file():
            calibrate(named, feeds, cache_path, label)
        q.quantize_static(
            str(named), str(out_path), None,
            quant_format=getattr(q.QuantFormat, qformat), op_types_to_quantize=list(QUANT_OPS),
            per_channel=per_channel, reduce_range=False,
            activation_type=getattr(q.QuantType, act), weight_type=getattr(q.QuantType, weight),
            nodes_to_exclude=excl, calibrate_method=q.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": act_sym, "WeightSymmetric": True},
            calibration_cache_path=str(cache_path),  # the ranges `calibrate` wrote: no second calibration
        )
    finally:
        root.setLevel(level)
        named.unlink(missing_ok=True)
        if tmp is not None:
            tmp.cleanup()
    quantizable = quantizable_nodes(model)
    qmodel = onnx.load(str(out_path), load_external_data=False)
    dq_consumers = _quantized_nodes(qmodel)
    return {
        "quantized_nodes": len([n for n in quantizable if n in dq_consumers]),
        # correlations / attention products in INT8 (module docstring): said, not hidden
        "activation_matmuls_int8": len([n for n in activation_matmuls(model) if n in dq_consumers]),
        "quantizable_nodes": len(quantizable),
        "excluded_last": last_layers(model) if keep_last else [],
        "extra_excluded": sorted(extra_exclude),
        "format": fmt,
        "target_isa": isa,
        "folded_identities": folded,
    }


def _quantized_nodes(qmodel) -> set:
    # QDQ: a node counts as quantized when its weight (input 1) is dequantized (activation QDQ
    # pairs are shared between consumers, so a float node can still read a QDQ'd input).
    # QOperator: the node was replaced by an integer op named "<name>_quant".
    dq_out = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    qdq = {n.name for n in qmodel.graph.node
           if n.op_type in QUANT_OPS and len(n.input) > 1 and n.input[1] in dq_out}
    qop = {n.name.removesuffix("_quant") for n in qmodel.graph.node
           if n.op_type in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm")}
    return qdq | qop
