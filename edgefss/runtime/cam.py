"""CLIP Grad-CAM pseudo-masks on the device, torch-free (bundles exported with `--pseudo cam`).

The bundle carries `cam.onnx` (exporters/cam_graph.py: the CLIP RN50 image tower and the Grad-CAM
gradient written as a forward computation) and `cam_text.npz` (RN50 text features of
'a photo of a {c}' for the bundle's classes, the scene vocabulary and the VOC/COCO names). For a
support set, `CamPseudo.query_masks(rgb, classes, hw)` builds the softmax class list of the
manifest's recipe (recipe.softmax_classes), runs the graph once per image for every class, and
post-processes as the official generator (docs/cam.md): one (H, W) float32 map per class, the
224 centre crop's 50x50 CAM stretched over the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefss.errors import BundleError, InputError

GRAPH_FILE = "cam.onnx"
TEXT_FILE = "cam_text.npz"
IMAGE, TEXT, TARGETS, OUTPUT = "cam_image", "cam_text", "cam_targets", "cam"
MANIFEST_KEY = "pseudo"


def bundle_pseudo(manifest: dict) -> str:
    """'cam' when the bundle makes its query pseudo-masks with the CAM graph, else 'prior'."""
    p = manifest.get(MANIFEST_KEY)
    return "cam" if isinstance(p, dict) and p.get("kind") == "cam" else "prior"


class CamPseudo:
    """The bundle's CAM generator: `query_masks(rgb (H,W,3) uint8, class_names, hw) -> [(H,W) float32]`."""

    def __init__(self, manifest: dict, bundle_dir, threads: int | None = None):
        from edgefss.runtime.session import open_graphs
        from edgefss.text.prompts import canonical_name

        self.entry = manifest.get(MANIFEST_KEY) or {}
        if self.entry.get("kind") != "cam":
            raise BundleError(
                f"bundle: '{bundle_dir}' has no CAM pseudo-mask graph (export with --pseudo cam)"
            )
        d = Path(bundle_dir)
        for f in (self.entry.get("file", GRAPH_FILE), self.entry.get("text", TEXT_FILE)):
            if not (d / f).is_file():
                raise BundleError(f"bundle: '{d}' lists the CAM generator but '{f}' is missing")
        with np.load(d / self.entry.get("text", TEXT_FILE), allow_pickle=False) as z:
            names, self.embeddings = z["names"], z["embeddings"].astype(np.float32)
        self.row = {}
        for i, n in enumerate(names.tolist()):
            self.row.setdefault(canonical_name(n), i)
        self.resolution = int(self.entry.get("resolution", 224))
        self.engine = open_graphs(
            "onnxruntime",
            "fp32",
            {"cam": d / self.entry.get("file", GRAPH_FILE)},
            threads=threads,
            device="cpu",
        )

    def softmax_list(self, class_names) -> tuple[list[str], np.ndarray]:
        """(softmax class names, (K, D) float32 text rows) for a support set's names, per the recipe."""
        from edgefss.cam.recipe import softmax_classes
        from edgefss.text.prompts import canonical_name

        names, _ = softmax_classes(class_names, self.entry.get("classes", "support+background"))
        missing = [n for n in names if canonical_name(n) not in self.row]
        if missing:
            raise InputError(
                f"CAM pseudo-masks: no CLIP RN50 text feature in this bundle for {missing[:5]}; "
                "the bundle ships its table's classes, the scene vocabulary and the VOC/COCO names "
                "(re-export with the class in --classes)"
            )
        return names, self.embeddings[[self.row[canonical_name(n)] for n in names]]

    def masks(self, rgb: np.ndarray, class_names) -> np.ndarray:
        """(M, 50, 50) float32 CAMs in [0, 1], one per class of `class_names`."""
        from edgefss.cam import recipe

        names, text = self.softmax_list(class_names)
        idx = np.array([recipe.target_index(class_names, names)], np.int64)
        x = recipe.preprocess(rgb, self.resolution)[None]
        raw = self.engine.run("cam", {IMAGE: x, TEXT: text, TARGETS: idx})[OUTPUT][0]
        return recipe.postprocess(raw, self.resolution)

    def query_masks(self, rgb: np.ndarray, class_names, hw) -> list[np.ndarray]:
        from edgefss.cam.recipe import to_image_size

        return [to_image_size(m, hw) for m in self.masks(rgb, class_names)]
