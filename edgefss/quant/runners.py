"""Minimal graph runners for verification, calibration and the gate (torch-free).

Each runner is `fn(feeds: {name: float32 array}) -> {output name: float32 array}`.
"""

from __future__ import annotations

from edgefss.errors import require


def ort_runner(path, threads: int | None = None):
    """ONNX Runtime CPU session over an .onnx file (full graph optimizations)."""
    ort = require("onnxruntime", "running ONNX graphs")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: dict) -> dict:
        return dict(zip(names, sess.run(names, feeds)))

    run.input_names = [i.name for i in sess.get_inputs()]
    return run


def ov_runner(path, device: str = "CPU"):
    """OpenVINO compiled model over .xml/.onnx, forced to f32 inference precision.

    CPUs with AMX default to bf16 (deployment-notes §4); parity must measure the IR, not that.
    """
    ov = require("openvino", "running OpenVINO graphs")
    core = ov.Core()
    model = core.read_model(str(path))
    compiled = core.compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    outs = [(o.get_any_name(), o) for o in compiled.outputs]

    def run(feeds: dict) -> dict:
        res = compiled(feeds)
        return {name: res[o] for name, o in outs}

    run.input_names = [i.get_any_name() for i in compiled.inputs]
    return run
