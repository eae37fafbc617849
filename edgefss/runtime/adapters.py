"""What every model adapter provides (runtime/cst.py, runtime/tlg.py) and the shared helpers.

An adapter knows which encoder outputs feed which head inputs; the Segmenter does the rest
(encoding, caching, batching, N-way K-shot combination). Support entries are dicts keyed by head
input names holding one support image's arrays WITHOUT the batch axis; the Segmenter stacks them
into the head's support batch B (class-major: all shots of class 0, then class 1, ...).
"""

from __future__ import annotations

import numpy as np

from edgefss.config import CST_PSEUDO_THRESHOLD
from edgefss.errors import BundleError


class Adapter:
    """Base class: the graph glue of one model family.

    Attributes:
        model: manifest "model" value handled.
        S: network input size; grid: the size of the head's pseudo-/support-mask inputs: S/8
            here (CST), S for TLG (its head takes them at the input resolution, runtime/tlg.py).
        supports_refine: whether predict(refine_steps > 0) is possible.
        refine_mode: how a refinement step feeds the prediction back: "query" (the previous query
            fg probability becomes a head input, `head_extras(refine=...)`; TLG) or "mutual"
            (IMR-style: reverse episodes refine the support masks, runtime/refine.py; CST).
        ops_path: how the head runs, set by the Segmenter: "graph" (the bundle's head graph) or,
            for adapters with a split head, "native" / "reference" (see runtime/hotpath.py).
    """

    model = ""
    supports_refine = False
    refine_mode = "query"
    ops_path = "graph"

    def __init__(self, manifest: dict, bundle_dir):
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        self.S = int(manifest["preprocess"]["imgsz"])
        self.grid = self.S // 8
        # CST's threshold (spec §3.3); TLG bundles may leave it null (their prior is soft)
        thr = (manifest.get("pseudo_mask") or {}).get("threshold")
        self.pseudo_threshold = CST_PSEUDO_THRESHOLD if thr is None else float(thr)

    def require_io(self, graph: str, kind: str, names) -> None:
        """BundleError unless the manifest's graph `graph` lists every name in `names` as `kind`."""
        have = set((self.manifest["graphs"].get(graph) or {}).get(kind, {}))
        missing = [n for n in names if n not in have]
        if missing:
            raise BundleError(
                f"bundle: '{self.bundle_dir}' {self.model} {graph} graph lacks {kind} {missing} "
                f"(has {sorted(have)}); it was not written by a compatible `edgefss export`"
            )

    def has_split_head(self) -> bool:
        """True when the bundle has a `learner` graph (the head without its correlation)."""
        return False

    # --- per-model glue -------------------------------------------------------------------
    def check_classes(self, class_names: list[str]) -> None:
        """Raise InputError for class names the bundle cannot segment (default: all accepted)."""

    def network_mask(self, mask: np.ndarray) -> np.ndarray:
        """A caller's (H, W) mask -> (S, S) float32 {0, 1} at the network size, the way the model's
        official loaders resize the masks it consumes. Default: nearest, as HSNet/CST resize their
        ground-truth support masks; TLG overrides it (its masks are pseudo-masks, runtime/tlg.py)."""
        from edgefss.transforms import resize_mask

        return resize_mask(np.asarray(mask), (self.S, self.S)).astype(np.float32)

    def support_entry(self, enc: dict, mask: np.ndarray | None, class_name: str) -> dict:
        """Encoder outputs of one support image -> head inputs of that image without the batch axis.

        Args:
            mask: None (the model's pseudo-mask), or the caller's mask as (S, S) float32 {0, 1},
                brought to the network size by `network_mask`; the adapter brings it to whatever
                resolution its head takes, as the official model does.
        """
        raise NotImplementedError

    def query_entry(self, enc: dict) -> dict:
        """Encoder outputs of the query -> head inputs with batch 1."""
        raise NotImplementedError

    def head_extras(self, batch: int, refine: np.ndarray | None = None) -> dict:
        """Head inputs that are neither query nor support features (batch `batch`).

        Args:
            refine: None, or (batch, grid, grid) float32 predicted query fg probability from the
                previous step (only when supports_refine).
        """
        return {}

    def run_head(self, backend, feeds: dict, timings: dict | None = None) -> dict:
        """One head call on `feeds` (head input name -> array) -> head outputs (name -> array).

        Args:
            timings: optional dict; an adapter that does work outside the graphs adds its
                milliseconds there (CST: "corr").
        """
        return backend.run("head", feeds)

    def split_outputs(self, out: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """Head outputs -> (query seg logits (B, 2, S/4, S/4) float32, cls logits (B, 2) or None)."""
        raise NotImplementedError


def stack_entries(entries: list[dict]) -> dict:
    """List of B per-image dicts (arrays without batch axis) -> dict of (B, ...) float32 arrays."""
    return {k: np.ascontiguousarray(np.stack([e[k] for e in entries]).astype(np.float32)) for k in entries[0]}
