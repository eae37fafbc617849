"""PyTorch TLG/CST models behind the runtime's `Segmenter` API (a torch backend; no bundle written).

    seg = torch_segmenter("cst", checkpoint=None, imgsz=400)    # an edgefss.runtime.Segmenter
    seg.set_support([img], ["dog"], masks=[mask]); pred = seg.predict(query, refine_steps=1)

The encoder/head run as the exporter's graph wrappers (exporters/tlg_graphs.py, cst_graphs.py) in
eager PyTorch through `TorchBackend.run(graph, feeds)`, the same call the onnxruntime/OpenVINO/
TensorRT backends answer. Everything else — support caching, shot grouping, mask gridding,
refinement, presence, post-processing — is the runtime's own code (runtime/segmenter.py and the
model adapters), so eval, bench and training score a PyTorch model exactly as a bundle is run and
PyTorch-vs-bundle differences come from the graphs alone.

Lives outside edgefss.runtime: the runtime never imports torch (tests/test_import_boundaries.py).
"""

from __future__ import annotations

from edgefss.config import CST_PSEUDO_THRESHOLD, PreprocessCfg
from edgefss.errors import InputError, require
from edgefss.runtime.segmenter import Segmenter

BACKEND_NAME = "torch"


class TorchBackend:
    """The runtime `Backend` protocol over eager PyTorch graph wrappers (CPU, no grad).

    Args:
        graphs: graph name -> `edgefss.exporters.graphs.GraphDef` (module + I/O names).
    """

    name = BACKEND_NAME
    device = "cpu"

    def __init__(self, graphs: dict):
        from edgefss.exporters.verify import torch_runner  # the exporter's reference runner

        self.graphs = graphs
        self._runners = {name: torch_runner(g) for name, g in graphs.items()}

    def run(self, graph: str, feeds: dict) -> dict:
        """feeds: input name -> float32 array (extra names ignored). Returns output name -> float32 array."""
        if graph not in self._runners:
            raise InputError(f"graph: {graph!r} is not one of this model's graphs {sorted(self._runners)}")
        return self._runners[graph](feeds)


def graph_defs(model) -> dict:
    """The exporter's graph wrappers around an already built TLG or CST model.

    Returns:
        {"encoder": GraphDef, "head": GraphDef} with the bundle's I/O names and dynamic axes
        (design.md "Graph I/O names"), ready for `exporters.onnx_export.export_graph` too.
    """
    from edgefss.exporters.graphs import GraphDef
    from edgefss.models.tlg import TLG

    if isinstance(model, TLG):
        from edgefss.exporters.tlg_graphs import TLGEncoderGraph, TLGHeadGraph, tlg_io

        io = tlg_io(model)
        wrappers = {"encoder": TLGEncoderGraph(model), "head": TLGHeadGraph(model)}
        return {n: GraphDef(w.eval(), list(io[n]["inputs"]), list(io[n]["outputs"]),
                            dict(io[n]["dynamic_axes"]))
                for n, w in wrappers.items()}
    from edgefss.exporters.cst_graphs import CST_IO, CSTEncoderGraph, CSTHeadGraph

    wrappers = {"encoder": CSTEncoderGraph(model), "head": CSTHeadGraph(model)}
    return {n: GraphDef(w.eval(), list(CST_IO[n][0]), list(CST_IO[n][1]), dict(CST_IO[n][2]))
            for n, w in wrappers.items()}


def torch_manifest(kind: str, graphs: dict, imgsz: int, checkpoint=None, clip_checkpoint=None) -> dict:
    """The bundle-manifest fields the runtime reads (model, preprocess, graphs' I/O, pseudo_mask)."""
    pseudo = {"threshold": CST_PSEUDO_THRESHOLD if kind == "cst" else None}
    io = {n: {"inputs": {i: {} for i in g.inputs}, "outputs": {o: {} for o in g.outputs}}
          for n, g in graphs.items()}
    return {"model": kind, "backend": BACKEND_NAME, "precision": "fp32",
            "preprocess": PreprocessCfg(imgsz=imgsz).to_dict(), "graphs": io, "pseudo_mask": pseudo,
            "weights": {"checkpoint": None if checkpoint is None else str(checkpoint),
                        "random_init": checkpoint is None},
            "text_table": {"clip_checkpoint": None if clip_checkpoint is None else str(clip_checkpoint)}}


class _GrowingTextTable:
    """`TextTable.index/lookup` for any class name: rows are embedded on first use (eval datasets
    name classes no bundle table lists). One `build_text_table` call per batch of new names."""

    def __init__(self, clip_checkpoint=None):
        self.clip_checkpoint = clip_checkpoint
        self.rows: dict = {}

    def add(self, names) -> None:
        import warnings

        from edgefss.text.table import build_text_table

        missing = [n for n in dict.fromkeys(names) if n not in self.rows]
        if not missing:
            return
        with warnings.catch_warnings():
            # build_text_table warns on every call without CLIP weights; the callers say it once
            warnings.simplefilter("ignore")
            table = build_text_table(missing, clip_checkpoint=self.clip_checkpoint)
        for n in missing:
            self.rows[n] = table.lookup(n)

    def index(self, name) -> int:
        self.add([name])
        return list(self.rows).index(name)

    def lookup(self, name):
        self.add([name])
        return self.rows[name]


def _adapter(manifest: dict, clip_checkpoint):
    if manifest["model"] == "cst":
        from edgefss.runtime.cst import CSTAdapter

        return CSTAdapter(manifest, None)
    from edgefss.runtime.tlg import TLGAdapter

    class TorchTLGAdapter(TLGAdapter):
        """TLGAdapter whose text rows are embedded on demand instead of read from a bundle."""

        def check_classes(self, class_names):
            self.text.add(class_names)  # one text-table build for all new names

    return TorchTLGAdapter(manifest, None, text=_GrowingTextTable(clip_checkpoint))


class TorchSegmenter(Segmenter):
    """A `Segmenter` over a PyTorch model; `model` is the torch module, `name` the registry name."""

    model = None
    name = ""


def torch_segmenter(model: str = "cst", checkpoint=None, imgsz: int = 400, clip_checkpoint=None,
                    threads: int | None = None, built=None) -> TorchSegmenter:
    """A Segmenter running a PyTorch TLG/CST model (CPU, eval mode, no grad).

    Args:
        model: "cst", "tlg" or "tlg_vgg16" (edgefss.models.build_model names).
        checkpoint: weights file or None (random init; build_model warns).
        imgsz: network input size S.
        clip_checkpoint: CLIP ViT-B/32 weights for TLG's text rows; None = seeded random stand-ins.
        threads: torch intra-op threads (None = torch's default).
        built: an already built model of that kind (e.g. the one being trained); used as is, in
            eval mode.

    Raises:
        InputError: unknown model name.
    """
    torch = require("torch", "running a PyTorch model")
    from edgefss.models import build_model

    if threads:
        torch.set_num_threads(int(threads))
    kind = "tlg" if model.startswith("tlg") else "cst"
    net = built if built is not None else build_model(model, checkpoint=checkpoint, imgsz=imgsz)
    net = net.eval()
    graphs = graph_defs(net)
    manifest = torch_manifest(kind, graphs, imgsz, checkpoint, clip_checkpoint)
    seg = TorchSegmenter(TorchBackend(graphs), _adapter(manifest, clip_checkpoint), manifest, None)
    seg.model, seg.name = net, model
    return seg
