"""The `Backend` protocol and `open_backend`: which engine may run which bundle.

Rules (checked before any vendor package is imported):
- a graph file's suffix decides which engines can read it: .onnx -> onnxruntime, openvino;
  .xml -> openvino; .plan/.engine -> tensorrt;
- an FP16/INT8 bundle runs only on the backend it was built for: its quantisation (QDQ placement,
  symmetric scales, calibration) targets that engine, and running it elsewhere silently changes
  accuracy. FP32 ONNX bundles run on onnxruntime and openvino alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgefss.bundle import check_graph_io
from edgefss import formats
from edgefss.config import BACKENDS
from edgefss.errors import BundleError, InputError
from edgefss.runtime.backends import backend_class
from edgefss.threads import cap_threads


_PRECISION_FLAG = {"fp32": "", "fp16": " --fp16", "int8": " --int8"}


class Backend(Protocol):
    """What the runtime needs from an inference engine."""

    name: str

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run graph `graph` ("encoder", "head", ...) on `feeds` (input name -> array).

        Returns:
            output name -> np.ndarray (owned by the caller). Must be safe to call from several
            threads at once.
        """


def graph_files(bundle_dir: Path, manifest: dict, graphs=("encoder", "head")) -> dict[str, Path]:
    """graph name -> path of its file inside the bundle, for the graphs the runtime needs."""
    files = {}
    for g in graphs:
        info = manifest["graphs"].get(g)
        if not isinstance(info, dict) or "file" not in info:
            raise BundleError(
                f"bundle: '{bundle_dir}' manifest has no graph '{g}' (graphs: {sorted(manifest['graphs'])})"
            )
        files[g] = Path(bundle_dir) / info["file"]
    return files


def check_backend(name: str, manifest: dict, files: dict[str, Path], bundle_dir) -> None:
    """Raise InputError/BundleError when backend `name` cannot (or must not) run this bundle."""
    if name not in BACKENDS:
        raise InputError(f"backend: {name!r} is not a backend; expected one of {list(BACKENDS)}")
    built_for, precision = manifest.get("backend"), manifest.get("precision")
    if precision in ("fp16", "int8") and name != built_for:
        raise BundleError(
            f"bundle: '{bundle_dir}' is a {precision.upper()} bundle built for {built_for}; it cannot run on "
            f"{name} (its precision/quantisation targets {built_for}). Use backend='{built_for}' "
            f"or re-export with `edgefss export --backend {name}{_PRECISION_FLAG[precision]}`"
        )
    readable = formats.READABLE[name]
    for g, p in files.items():
        if p.suffix.lower() not in readable:
            raise BundleError(
                f"bundle: '{bundle_dir}' graph '{g}' is '{p.name}', which {name} cannot read "
                f"(it reads {', '.join(readable)}); this bundle was built for {built_for}: "
                f"use backend='{built_for}'"
            )


def open_backend(bundle_dir, manifest: dict, backend: str | None = None, threads: int | None = None,
                 device=None, graphs=("encoder", "head")) -> Backend:
    """Validate the backend choice against the manifest and open it.

    Args:
        backend: None = the manifest's backend.
        threads: CPU threads for the engine (None = its default).
        device: engine-specific device ("cpu"/"cuda" for onnxruntime, "CPU"/"GPU"/"AUTO" for openvino,
            a CUDA index for tensorrt); None = the engine's default.

    Raises:
        InputError: unknown backend name. BundleError: the bundle cannot run on it.
        BackendUnavailableError: the engine's Python package is missing (with the pip line).
    """
    name = backend or manifest.get("backend")
    files = graph_files(Path(bundle_dir), manifest, graphs)
    check_backend(name, manifest, files, bundle_dir)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads: expected a positive int or None, got {threads!r}")
    threads = cap_threads(threads)  # more threads than cores only adds contention (issue 14)
    precision = manifest.get("precision", "fp32")
    # the bundle's own engine settings when it runs on the engine it was built for (recorded at
    # export, what the gate measured); the format table's otherwise and for bundles predating them
    config = manifest.get("engine_config") if name == manifest.get("backend") else None
    be = open_graphs(name, precision, files, config, threads=threads, device=device)
    check_graph_io(bundle_dir, {**manifest, "graphs": {g: manifest["graphs"][g] for g in files}}, be)
    return be


def open_graphs(name: str, precision: str, files: dict, config: dict | None = None, threads: int | None = None,
                device=None) -> Backend:
    """Open graph files on backend `name` with the settings its format prescribes.

    The one constructor of engines: the runtime (through open_backend), the export verification
    and the accuracy gate all call it, so they run the graphs with the same session options.

    Args:
        name: backend; precision: 'fp32' | 'fp16' | 'int8' (selects the format-table row).
        files: graph name -> file path. config: engine settings (None = the format table's).
        threads, device: as in open_backend.
    """
    fmt = formats.get(name, precision)
    cls = backend_class(name)
    if name == "onnxruntime":
        return cls(files, threads=threads, device=device, devices=fmt.devices)
    if name == "openvino":
        cfg = fmt.engine_config if config is None else config
        return cls(files, threads=threads, device=device, config=cfg, devices=fmt.devices)
    return cls(files, threads=threads, device=device)
