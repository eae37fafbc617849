"""ONNX -> OpenVINO IR (FP32 / FP16-compressed weights)."""

from __future__ import annotations

from pathlib import Path

from edgefss.errors import require


def onnx_to_ir(onnx_path, xml_path, fp16: bool) -> list[Path]:
    """Convert and save IR; returns [xml, bin]. FP16 compresses weights (compute precision is the device's)."""
    ov = require("openvino", "the openvino backend")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=fp16)
    xml = Path(xml_path)
    return [xml, xml.with_suffix(".bin")]
