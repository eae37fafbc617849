"""edgefss: weakly-supervised few-shot segmentation (TLG, CST) for edge devices.

Importing this package never imports torch: the deployment runtime (`edgefss.runtime`),
INT8 tooling (`edgefss.quant`) and NumPy ops (`edgefss.ops`) run without it. PyTorch model
builders live in `edgefss.models` and are imported only when asked for.
"""

from edgefss._version import __version__

__all__ = ["__version__", "Segmenter", "build_model", "export"]


def __getattr__(name: str):
    # Lazy so `import edgefss` stays torch-free and fast on devices.
    if name == "Segmenter":
        from edgefss.runtime import Segmenter

        return Segmenter
    if name == "build_model":
        from edgefss.models import build_model

        return build_model
    if name == "export":
        from edgefss.exporters import export

        return export
    raise AttributeError(f"module 'edgefss' has no attribute {name!r}")
