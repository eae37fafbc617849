"""The embedded app behind `edgefss demo` and examples/camera_app.py (torch-free).

`stream.py` opens frame sources (camera index, video file, folder of images), `sink.py` writes or
shows annotated frames, `demo.py` runs the loop over a `edgefss.runtime.Segmenter`. Only the runtime,
NumPy and OpenCV are imported, so the app runs on a Jetson with onnxruntime or TensorRT.
"""

from edgefss.app.demo import DemoConfig, DemoStats, run_demo
from edgefss.app.stream import open_source

__all__ = ["DemoConfig", "DemoStats", "run_demo", "open_source"]
