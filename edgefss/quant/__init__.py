"""INT8 post-training quantization of exported bundles (torch-free).

- `episodes`: calibration episodes (support + query pairs of one class) from image folders.
- `feeds`: turns encoder outputs + masks into head-graph inputs, one implementation shared by
  export verification, calibration and the accuracy gate.
- `reader`: the ONNX Runtime CalibrationDataReader.
- `ort_int8`: ONNX Runtime static QDQ (S8S8, per-channel symmetric weights).
- `nncf_int8`: OpenVINO NNCF.
- `gate`: INT8 vs FP32 agreement (mask IoU, output cosine) and the per-layer sensitivity list.
Never imports torch.
"""

from edgefss.quant.episodes import Episode, default_calib_folders, find_episodes
from edgefss.quant.gate import GateResult, agreement
from edgefss.quant.reader import FeedReader

__all__ = ["Episode", "default_calib_folders", "find_episodes", "GateResult", "agreement", "FeedReader"]
