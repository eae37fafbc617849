"""Segmenter: few-shot segmentation with an exported bundle, no torch.

Usage:
    seg = Segmenter.load("bundle/", backend=None, threads=None, ops="auto")
    seg.set_support([img_a, img_b], ["dog", "cat"])        # encoder runs once per support image
    pred = seg.predict(query)                              # encoder on the query + one head batch
    pred.mask  # (H, W) uint8 at the query's original size: 0 background, i = pred.classes[i-1]
    seg.ops_path  # "graph" | "native" | "reference": how the head's correlation runs (hotpath.py)

Thread safety: `predict` may run from several threads at once. The support set is an immutable
snapshot that `set_support` / `reset_support` replace atomically; `predict` reads it once, so a
concurrent `set_support` never mixes two support sets in one prediction. Backends are thread-safe
(onnxruntime sessions natively, openvino per-thread infer requests, tensorrt a lock).
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefss.bundle import read_manifest
from edgefss.config import PreprocessCfg
from edgefss.errors import BundleError, InputError, StateError, require
from edgefss.runtime import hotpath
from edgefss.runtime import lowmem
from edgefss.runtime import postprocess as post
from edgefss.runtime.adapters import Adapter, stack_entries  # noqa: F401 (re-export)
from edgefss.runtime.refine import refine_support_masks
from edgefss.runtime.session import Backend, open_backend
from edgefss.text.prompts import canonical_name as class_key
from edgefss.text.prompts import check_printable
from edgefss.transforms import load_image, load_mask, normalize, resize_image

# Largest support batch per head call: bounds memory (the CST correlation is ~100 MB per support
# image at S=400) and stays inside typical TensorRT optimisation profiles. A bundle may override it
# with manifest["graphs"]["head"]["max_batch"].
HEAD_MAX_BATCH = 8


@dataclass
class Prediction:
    """Result of Segmenter.predict.

    Attributes:
        mask: (H, W) uint8 at the query's original size; 0 background, i = classes[i-1].
        probs: (N,) float32 class presence. CST: mean over shots of softmax(cls_logits)[fg].
            TLG: fraction of query pixels with p_fg > 0.5 (no classification head).
        present: (N,) bool, CST probs > 0.5, TLG probs > postprocess.PRESENCE_MIN_AREA.
        logits: (N, 2, S/4, S/4) float32 raw head logits (bg, fg), averaged over each class's shots
            (for K = 1 exactly the head's output).
        fg_prob: lowmem.FgProb, the (N, H, W) float32 per-class foreground probability at the
            original size, computed on demand (`np.asarray(pred.fg_prob)`, `pred.fg_prob[c]`,
            `.full()`; `.low()` gives the head-resolution maps), so a large query costs no
            N x H x W float map unless the caller asks for it.
        classes: the N class names, in order of first appearance in set_support.
        timings: milliseconds: encode, head, post, total; with ops_path "native"/"reference" also
            corr (the correlation part of head).
        ops_path: "graph", "native" or "reference": how the head's correlation ran.
        support_masks: CST: (N*K, S, S) float32 {0,1} support masks of the last query pass at the
            network input size (the official CST support-mask resolution),
            row i for set_support's images[i] (refine_steps > 0 may have refined them). TLG: None
            (its query prediction uses no support mask).
    """

    mask: np.ndarray
    probs: np.ndarray
    present: np.ndarray
    logits: np.ndarray
    fg_prob: "lowmem.FgProb"
    classes: list
    timings: dict = field(default_factory=dict)
    ops_path: str = "graph"
    support_masks: np.ndarray | None = None


@dataclass(frozen=True)
class _Support:
    """Immutable cached support set (head-batch entries are class-major)."""

    classes: tuple          # N class names
    groups: tuple           # groups[c] = indices of class c's shots in the head batch
    chunks: tuple           # stacked head inputs, one dict per head call (<= max batch each)
    order: tuple = ()       # order[j] = set_support index of head-batch entry j
    given: tuple = ()       # given[j]: the caller gave entry j's mask (refinement keeps it)
    names: tuple = ()       # names[j]: entry j's class as the caller spelt it (support_pack edits)
    images: tuple = ()      # mutual refinement: resized (S, S, 3) uint8 of entry j, to re-encode
    # mutual refinement: j -> (1, 12, 384, T) float16 query_feats of support j, filled on first use
    query_feats: dict = field(default_factory=dict, compare=False)

    def support_masks(self) -> np.ndarray | None:
        """(B, S/8, S/8) float32 head-batch support masks, or None when the head takes none."""
        if "support_mask" not in self.chunks[0]:
            return None
        return np.concatenate([c["support_mask"] for c in self.chunks])


def _adapter_for(manifest: dict, bundle_dir) -> Adapter:
    model = manifest.get("model")
    if model == "cst":
        from edgefss.runtime.cst import CSTAdapter

        return CSTAdapter(manifest, bundle_dir)
    if model == "tlg":
        from edgefss.runtime.tlg import TLGAdapter

        return TLGAdapter(manifest, bundle_dir)
    if model == "imr_hsnet":
        from edgefss.runtime.imr import IMRAdapter

        return IMRAdapter(manifest, bundle_dir)
    raise BundleError(f"bundle: '{bundle_dir}' has model {model!r}; this runtime runs 'cst', 'tlg' and 'imr_hsnet'")


class _ClosedBackend:
    """Stands in for the backend after Segmenter.close(): any use is one clear error."""

    name = "closed"

    def run(self, graph, feeds):
        raise StateError("Segmenter: closed (close() or its `with` block ended); load the bundle again")

    def close(self) -> None:
        pass


class Segmenter:
    """Few-shot segmenter over a bundle; see the module docstring. Build with Segmenter.load."""

    def __init__(self, backend: Backend, adapter: Adapter, manifest: dict, bundle_dir: Path,
                 ops_path: str = "graph"):
        self.backend = backend
        self.adapter = adapter
        adapter.ops_path = ops_path
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        self.cfg = PreprocessCfg.from_dict(manifest["preprocess"])
        self.max_batch = int((manifest["graphs"]["head"]).get("max_batch", HEAD_MAX_BATCH))
        self._support: _Support | None = None
        self._lock = threading.Lock()  # serialises writers of _support; readers take a snapshot
        self.threads = None  # engine intra-op threads as loaded (None: the engine's default)
        self.cam = None  # runtime/cam.py CamPseudo: query pseudo-masks of a bundle exported with --pseudo cam

    @classmethod
    def load(cls, bundle_dir, backend: str | None = None, threads: int | None = None, device=None,
             verify: bool = True, ops: str = "auto") -> "Segmenter":
        """Open a bundle written by `edgefss export`.

        Args:
            bundle_dir: the bundle directory.
            backend: "onnxruntime", "openvino" or "tensorrt"; None = the manifest's backend.
            threads: CPU threads for the engine (None = its default).
            device: engine device, see session.open_backend.
            verify: check every file's SHA-256 against the manifest (a tampered bundle -> BundleError).
            ops: how the head's correlation runs (runtime/hotpath.py): "graph" (inside the head
                graph), "native" (compiled edgefss.ops kernel + the learner graph; CST bundles),
                "reference" (NumPy correlation + learner, to compare) or "auto" (the measured
                faster one for the backend). The choice is `seg.ops_path`.

        Raises:
            InputError: bad ops value, or "native"/"reference" for a bundle without a learner graph.
            BackendUnavailableError: ops="native" without the compiled extension edgefss._C.
        """
        hotpath.check_ops(ops)
        bundle_dir = Path(bundle_dir)
        manifest = read_manifest(bundle_dir, verify=verify)
        _warn_gate(manifest, bundle_dir)
        adapter = _adapter_for(manifest, bundle_dir)
        graphs = hotpath.requested_graphs(ops, adapter)
        be = open_backend(bundle_dir, manifest, backend=backend, threads=threads, device=device, graphs=graphs)
        _check_int8_target(manifest, be, bundle_dir)
        path = hotpath.resolve_ops(ops, adapter, manifest, be, bundle_dir)
        seg = cls(be, adapter, manifest, bundle_dir, ops_path=path)
        seg.threads = threads  # predict_stream's thread budget (runtime/stream.py)
        from edgefss.runtime.cam import CamPseudo, bundle_pseudo

        if bundle_pseudo(manifest) == "cam":
            seg.cam = CamPseudo(manifest, bundle_dir, threads=threads)
        return seg

    @property
    def ops_path(self) -> str:
        """How the head's correlation runs: "graph", "native" or "reference" (runtime/hotpath.py)."""
        return self.adapter.ops_path

    # ------------------------------------------------------------------------------ support
    @property
    def classes(self) -> list:
        s = self._support
        return [] if s is None else list(s.classes)

    def set_support(self, images, class_names, masks=None) -> None:
        """Encode and cache the support set (replaces any previous one).

        Args:
            images: list of file paths or (H, W, 3) uint8 RGB arrays (a single one is accepted too).
            class_names: list of str, class_names[i] is the class shown in images[i]; N distinct
                names = N ways, repeated names = K shots.
            masks: None, or a list with one entry per image: None (use the on-device pseudo-mask),
                a PNG path or an (H, W) array with values {0,1} or {0,255}, same size as its image.

        CST ignores the names: its pseudo-mask is class-agnostic and a name only labels its output
        (known_classes() is None); a UserWarning names two classes whose support sets CST cannot
        tell apart (support_pack.indistinguishable_classes). TLG looks each name up in its table.

        Raises:
            InputError: bad image/mask/class name (names the entry).
        """
        from edgefss.runtime import support_pack as sp

        snapshot = sp.build_support(self._support_records(images, class_names, masks), self.max_batch,
                                    self.adapter.refine_mode == "mutual", model=self.adapter.model)
        with self._lock:
            self._support = snapshot

    def _support_records(self, images, class_names, masks=None) -> list:
        """Check and encode support images -> support_pack.Record per image, in caller order."""
        from edgefss.runtime.support_pack import Record

        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        if isinstance(class_names, str):
            class_names = [class_names]
        images, class_names = list(images), list(class_names)
        if not images:
            raise InputError("images: expected at least one support image")
        if len(class_names) != len(images):
            raise InputError(
                f"class_names: got {len(class_names)} names for {len(images)} support images; "
                "expected one per image"
            )
        for i, c in enumerate(class_names):
            if not isinstance(c, str) or not c.strip():
                raise InputError(f"class_names[{i}]: expected a non-empty str, got {c!r}")
            check_printable(c, f"class_names[{i}]")
        if masks is None:
            masks = [None] * len(images)
        elif isinstance(masks, (str, Path, np.ndarray)):
            masks = [masks]
        masks = list(masks)
        if len(masks) != len(images):
            raise InputError(
                f"masks: got {len(masks)} masks for {len(images)} support images; "
                "expected one per image (None for none)"
            )
        self.adapter.check_classes(class_names)
        # one class per canonical name ('dog', 'Dog', 'dog ' are one class); shown as first spelt
        keys = [class_key(c) for c in class_names]
        shown = {}
        for k, c in zip(keys, class_names):
            shown.setdefault(k, " ".join(c.split()))
        classes = list(shown)
        if len(classes) > 255:
            raise InputError(f"class_names: {len(classes)} classes; at most 255 fit the uint8 label mask")

        entries, resized = {}, {}
        mutual = self.adapter.refine_mode == "mutual"
        for i, (img, name, m) in enumerate(zip(images, class_names, masks)):
            rgb = load_image(img, f"images[{i}]")
            full_mask = None
            if m is not None:
                mk = load_mask(m, f"masks[{i}]")
                if mk.shape != rgb.shape[:2]:
                    raise InputError(
                        f"masks[{i}]: shape {mk.shape} does not match images[{i}] of size {rgb.shape[:2]}; "
                        "expected a mask of the same height and width"
                    )
                if not mk.any():
                    raise InputError(
                        f"masks[{i}]: the mask is empty (no foreground pixel); "
                        "pass None to use the pseudo-mask"
                    )
                # at network size, resized as the model's official loaders resize it
                full_mask = self.adapter.network_mask(mk)
            small = resize_image(rgb, self.cfg.imgsz)
            if mutual:
                # refinement re-encodes supports for its reverse episodes: keep the network-size copy
                resized[i] = small
            enc = self._encode(small)  # resize_image is the identity on an S x S image
            entries[i] = self.adapter.support_entry(enc, full_mask, name)

        return [Record(class_names[i], entries[i], masks[i] is not None, resized.get(i))
                for i in range(len(images))]

    # support packs and edits: runtime/support_pack.py (each result equals a fresh set_support)
    def save_support(self, path) -> Path:
        """Write the cached support set as one checksummed support pack (.efs); returns its path."""
        from edgefss.runtime import support_pack as sp

        return sp.save(self._support, self.manifest, self.bundle_dir, path)

    def load_support(self, path) -> None:
        """Replace the support set with a pack's (no encoder run). InputError for a pack of another
        bundle, a tampered or truncated file, naming the file and the reason."""
        from edgefss.runtime import support_pack as sp

        snapshot = sp.load(path, self.manifest, self.bundle_dir, self.max_batch,
                           self.adapter.refine_mode == "mutual")
        with self._lock:
            self._support = snapshot

    def add_support(self, images, class_names, masks=None) -> None:
        """Append shots (new or existing classes), encoding only the new images; equals set_support
        of the old images + these, in that order (without a support set: set_support)."""
        if self._support is None:
            return self.set_support(images, class_names, masks)
        recs = self._support_records(images, class_names, masks)
        self._edit_support(lambda old, qf: (old + recs, qf))

    def remove_class(self, name: str) -> None:
        """Drop every shot of class `name` (any spelling of it); InputError if it is not in the set."""
        from edgefss.runtime import support_pack as sp

        def edit(old, qf):
            drop = {i for i, r in enumerate(old) if class_key(r.name) == class_key(str(name))}
            if not drop:
                raise InputError(f"remove_class: {name!r} is not a support class (classes: {self.classes})")
            return sp.without(old, qf, drop)

        self._edit_support(edit)

    def remove_shot(self, i: int) -> None:
        """Drop set_support's images[i] (caller order; later shots move down by one)."""
        from edgefss.runtime import support_pack as sp

        def edit(old, qf):
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(old):
                raise InputError(f"remove_shot: index {i!r}; expected an int in [0, {len(old)})")
            return sp.without(old, qf, {i})

        self._edit_support(edit)

    def _edit_support(self, edit) -> None:
        from edgefss.runtime import support_pack as sp

        base = self._support
        if base is None:
            raise StateError("support edit: no support set; call set_support(images, class_names) first")
        recs, qf = edit(*sp.records_of(base))
        snapshot = sp.build_support(recs, self.max_batch, self.adapter.refine_mode == "mutual",
                                    model=self.adapter.model, query_feats=qf)
        with self._lock:
            if self._support is not base:
                raise StateError("support edit: the support set was replaced meanwhile; edit again")
            self._support = snapshot

    def shot_quality(self) -> list:
        """Leave-one-out score per support shot (K >= 2), caller order; see support_pack.shot_quality."""
        from edgefss.runtime import support_pack as sp

        return sp.shot_quality(self, self._support)

    def known_classes(self) -> list | None:
        """Class names the bundle can segment: TLG its text table's names; None = any name (CST,
        whose pseudo-mask is class-agnostic: the name only labels the output)."""
        text = getattr(self.adapter, "text", None)
        return None if text is None else [str(c) for c in text.classes]

    def vocabulary(self):
        """text_encoder.Vocabulary: any_name (CST, or TLG with the CLIP text tower), the table's
        names, the tower's precision (runtime/text_encoder.py)."""
        from edgefss.runtime.text_encoder import describe

        return describe(self.manifest, getattr(self.adapter, "text", None), self.bundle_dir)

    def reset_support(self) -> None:
        """Drop the cached support set; predict raises StateError until set_support is called."""
        with self._lock:
            self._support = None

    def close(self) -> None:
        """Release the backend's engines and device memory now (idempotent); the Segmenter is unusable after."""
        with self._lock:
            self._support = None
            backend, self.backend = self.backend, _ClosedBackend()
        if hasattr(backend, "close"):
            backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # ------------------------------------------------------------------------------ predict
    def _encode(self, rgb: np.ndarray) -> dict:
        x = normalize(resize_image(rgb, self.cfg.imgsz), self.cfg)
        return self.backend.run("encoder", {"image": x})

    def _head(self, query: dict, support: _Support, refine=None, masks=None, timings=None):
        """Query entry x every support chunk -> (seg (B, 2, S/4, S/4), cls (B, 2) or None).

        Args:
            refine: refine_mode "query": (B, grid, grid) previous query fg probability.
            masks: refine_mode "mutual": (B, grid, grid) support masks replacing the cached ones.
        """
        seg, cls = [], []
        start = 0
        for chunk in support.chunks:
            b = next(iter(chunk.values())).shape[0]
            extra = self.adapter.head_extras(b, None if refine is None else refine[start:start + b])
            if masks is not None:
                extra["support_mask"] = masks[start:start + b]
            out = self.adapter.run_head(self.backend, {**query, **chunk, **extra}, timings)
            s, c = self.adapter.split_outputs(out)
            seg.append(s)
            cls.append(c)
            start += b
        seg = np.concatenate(seg).astype(np.float32)
        cls = None if cls[0] is None else np.concatenate(cls).astype(np.float32)
        return seg, cls

    def predict(self, query, refine_steps: int = 0, query_pseudo=None) -> Prediction:
        """Segment one query image with the cached support set.

        Args:
            query: file path or (H, W, 3) uint8 RGB array.
            refine_steps: IMR-style refinement steps after the first pass, both models (0 = one
                pass, bit-identical to no refinement). TLG: each step feeds the query fg
                probability back as the head's query pseudo-mask. CST: each step refines the
                support pseudo-masks with reverse episodes and predicts the query again
                (runtime/refine.py; masks given to set_support stay as given).
            query_pseudo: refine_mode "query" models (TLG) only: None (the on-device prior, or the
                bundle's CLIP Grad-CAM graph when exported with --pseudo cam, runtime/cam.py) or one
                external query pseudo-mask per support class, in `classes` order, each (H, W) at
                the query's size, {0,1} or soft [0,1] (the slot of the paper's offline CLIP
                Grad-CAM masks); the first pass uses them instead of the prior.

        Returns:
            Prediction (see its docstring).

        Raises:
            StateError: no support set (call set_support first).
            InputError: unreadable query, or refine_steps not an int >= 0.
        """
        return self._predict_finish(self._predict_start(query, refine_steps, query_pseudo))

    def predict_stream(self, frames, refine_steps: int = 0, schedule: str = "auto"):
        """Segment a sequence of frames (video, camera) faster than predict after predict
        (runtime/stream.py).

        Args:
            frames: iterable of file paths or (H, W, 3) uint8 RGB arrays (iterated by one thread).
            refine_steps: as in `predict`.
            schedule: "frames" (several frames in flight, each a full predict), "pipeline"
                (encoder of frame t+1 beside the head of frame t), "sequential", or "auto": on a
                CPU "frames" when the Segmenter was loaded with threads <= half the usable CPUs
                (threads=edgefss.runtime.stream.stream_threads()), else "sequential" with a
                warning; "pipeline" on a GPU device.

        Returns:
            iterator of Prediction, one per frame, in order, each equal to `predict(frame)`. An
            error for a frame is raised at its place; breaking out of the loop stops the workers.

        Raises:
            InputError: unknown schedule.
        """
        from edgefss.runtime.stream import predict_stream

        return predict_stream(self, frames, refine_steps, schedule=schedule)

    def _predict_start(self, query, refine_steps: int, query_pseudo) -> dict:
        """predict's first stage: checks, image read, query encoder. Returns its state for _predict_finish."""
        support = self._support  # one snapshot for the whole call
        if support is None:
            raise StateError("predict: no support set; call set_support(images, class_names) first")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
            raise InputError(
                f"refine_steps: expected an int >= 0 (IMR-style refinement steps, CST and TLG), "
                f"got {refine_steps!r}"
            )
        if refine_steps and not self.adapter.supports_refine:
            raise InputError(f"refine_steps: {self.adapter.model} bundles cannot refine; use 0")
        if query_pseudo is not None and self.adapter.refine_mode != "query":
            raise InputError(f"query_pseudo: {self.adapter.model} has no query pseudo-mask input (TLG only)")
        if query_pseudo is not None and len(query_pseudo) != len(support.classes):
            raise InputError(f"query_pseudo: {len(query_pseudo)} masks for {len(support.classes)} support "
                             "classes; expected one per class, in set_support's class order")
        t0 = time.perf_counter()
        rgb = load_image(query, "query")
        H, W = rgb.shape[:2]
        if query_pseudo is None and self.cam is not None:  # CLIP Grad-CAM from the class names (docs/cam.md)
            query_pseudo = self.cam.query_masks(rgb, support.classes, (H, W))
        first = None if query_pseudo is None else self._external_query_pseudo(query_pseudo, support, (H, W))
        q_enc = self._encode(rgb)
        q = self.adapter.query_entry(q_enc)
        t1 = time.perf_counter()
        return dict(support=support, refine_steps=refine_steps, H=H, W=W, first=first, q_enc=q_enc, q=q,
                    t0=t0, t1=t1)

    def _predict_finish(self, st: dict) -> Prediction:
        """predict's second stage: head (+ refinement steps) and postprocessing."""
        support, refine_steps, H, W, first, q_enc, q, t0, t1 = (
            st[k] for k in ("support", "refine_steps", "H", "W", "first", "q_enc", "q", "t0", "t1"))
        th = time.perf_counter()  # a stream's frame may wait between the stages: head time starts here
        extra_ms: dict = {}
        seg, cls = self._head(q, support, refine=first, timings=extra_ms)
        masks = support.support_masks()
        for _ in range(refine_steps):
            if self.adapter.refine_mode == "query":
                seg, cls = self._head(q, support, refine=self._refine_input(seg, support), timings=extra_ms)
            else:
                masks = self._mutual_masks(seg, q_enc, support, extra_ms)
                seg, cls = self._head(q, support, masks=masks, timings=extra_ms)
        t2 = time.perf_counter()
        # label mask and area presence in row bands: peak memory bounded for any query size and
        # class count; the full-resolution maps are computed only if the caller asks (lowmem.FgProb)
        mask, area = lowmem.label_mask_banded(seg, list(support.groups), (H, W))
        if cls is not None:
            probs = post.cls_probability(cls, list(support.groups))
            present = probs > post.FG_THRESHOLD
        else:
            probs = area
            present = probs > post.PRESENCE_MIN_AREA
        t3 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
        timings = {"encode": ms(t0, t1), "head": ms(th, t2), "post": ms(t2, t3), "total": ms(t0, t3)}
        timings.update({k: round(v, 3) for k, v in extra_ms.items()})
        if masks is not None:
            caller_order = np.empty_like(masks)
            caller_order[list(support.order)] = masks
            masks = caller_order
        return Prediction(
            mask=mask, probs=probs, present=present, logits=post.mean_logits(seg, list(support.groups)),
            fg_prob=lowmem.FgProb(seg, list(support.groups), (H, W)), classes=list(support.classes), timings=timings, ops_path=self.ops_path,
            support_masks=masks,
        )

    def _mutual_masks(self, seg, q_enc: dict, support: _Support, timings: dict) -> np.ndarray:
        """One mutual-refinement step (runtime/refine.py) -> (B, S, S) support masks."""
        def reverse_head(feeds):
            return self.adapter.split_outputs(self.adapter.run_head(self.backend, feeds, timings))[0]

        return refine_support_masks(
            seg, list(support.groups), support.support_masks(), support.given, self.adapter.S,
            q_enc["support_feats"], lambda j: self._support_query_feats(support, j), reverse_head,
        )

    def _support_query_feats(self, support: _Support, j: int) -> np.ndarray:
        """(1, 12, 384, T) float32 query tokens of head-batch support j, cached as float16."""
        qf = support.query_feats.get(j)
        if qf is None:
            # concurrent predicts may both encode j: same values, the last write wins
            qf = self._encode(support.images[j])["query_feats"].astype(np.float16)
            support.query_feats[j] = qf
        return qf.astype(np.float32)

    def _external_query_pseudo(self, masks, support: _Support, hw: tuple) -> np.ndarray:
        """One (H, W) query pseudo-mask per class -> (B, S, S) float32 head input (each shot gets its
        class's mask, brought to the network size as the official loaders do: adapter.network_mask)."""
        g = self.adapter.grid
        out = np.empty((sum(len(s) for s in support.groups), g, g), np.float32)
        for c, shots in enumerate(support.groups):
            m = np.asarray(masks[c], np.float32)
            if m.shape != hw:
                raise InputError(f"query_pseudo[{c}]: shape {m.shape}; expected the query's (H, W) {hw}")
            out[list(shots)] = self.adapter.network_mask(m)
        return out

    def _refine_input(self, seg: np.ndarray, support: _Support) -> np.ndarray:
        """Previous head logits (B, 2, h, w) -> (B, grid, grid) float32: each shot gets its class's
        shot-averaged fg probability at the size the head takes its query pseudo-mask (TLG: the
        network size S, adapter.grid), upsampled as every output is (postprocess.fg_probability)."""
        g = self.adapter.grid
        p = post.fg_probability(seg, list(support.groups), (g, g))
        out = np.empty((seg.shape[0], g, g), np.float32)
        for c, shots in enumerate(support.groups):
            out[list(shots)] = p[c]
        return out


def random_weights_note(manifest: dict) -> str | None:
    """'RANDOM WEIGHTS' line for results of a bundle exported without a checkpoint, else None."""
    if (manifest.get("weights") or {}).get("random_init"):
        return "RANDOM WEIGHTS (no checkpoint): masks are not meaningful"
    return None


def _check_int8_target(manifest: dict, be, bundle_dir) -> None:
    """ONNX Runtime INT8 on the CPU: refuse a format that computes wrongly on this CPU (BundleError),
    warn where it only runs slower than a bundle made for it (quant/ort_int8.check_bundle_target)."""
    from edgefss.quant.ort_int8 import check_bundle_target

    try:
        note = check_bundle_target(manifest, getattr(be, "name", ""), getattr(be, "device", "cpu"))
    except BundleError:
        if hasattr(be, "close"):
            be.close()
        raise
    if note:
        warnings.warn(f"bundle '{bundle_dir}': {note}", UserWarning, stacklevel=3)


def _warn_gate(manifest: dict, bundle_dir) -> None:
    """One warning when the bundle's weights are random or its accuracy gate did not pass
    (uninformative, or forced past a fail)."""
    if random_weights_note(manifest):
        warnings.warn(f"bundle '{bundle_dir}' was exported without a checkpoint: its weights are RANDOMLY "
                      "initialised, so its masks are not meaningful (README 'Weights')", UserWarning, stacklevel=3)
    gate = manifest.get("gate") or {}
    if gate.get("status") == "uninformative":
        warnings.warn(f"bundle '{bundle_dir}': its {str(gate.get('precision', '')).upper()} accuracy gate was "
                      "uninformative (every FP32 mask all background/foreground at export), so its accuracy "
                      "against FP32 is unjudged", UserWarning, stacklevel=3)
    elif gate.get("forced"):
        warnings.warn(f"bundle '{bundle_dir}' FAILED its {str(gate.get('precision', '')).upper()} accuracy gate "
                      f"and was written with --force ({'; '.join(gate.get('failures', []))})", UserWarning, stacklevel=3)
