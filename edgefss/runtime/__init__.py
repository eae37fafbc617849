"""Torch-free deployment runtime: run an exported bundle on onnxruntime, OpenVINO or TensorRT.

    from edgefss.runtime import Segmenter
    seg = Segmenter.load("bundle/")
    seg.set_support(["dog1.jpg"], ["dog"])
    pred = seg.predict("query.jpg")   # pred.mask (H, W) uint8

Vendor packages are imported only when a backend is opened.
"""

from edgefss.runtime.postprocess import FG_THRESHOLD, PRESENCE_MIN_AREA
from edgefss.runtime.segmenter import Prediction, Segmenter
from edgefss.runtime.session import Backend, open_backend

__all__ = ["Segmenter", "Prediction", "Backend", "open_backend", "FG_THRESHOLD", "PRESENCE_MIN_AREA"]
