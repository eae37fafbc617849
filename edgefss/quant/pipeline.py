"""Episode-level runs of a model's encoder + head graphs on an engine (torch-free).

Used to produce calibration feeds (from the FP32 graphs) and, for the accuracy gate, to run the
FP32 and the reduced-precision graphs on the same held-out episodes. The engines are
`edgefss.runtime` backends (anything with `run(graph, feeds) -> outputs`), opened through
`edgefss.runtime.session.open_graphs` with the settings the runtime uses.

Memory (a 400 px export must fit an 8 GB laptop): calibration samples are made when the
calibrator reads them (`LazyFeeds`), never all up front (a CST head sample holds a 46 MB
query_feats); the gate reduces each episode to its figures before the next one runs
(`gate.GateAccumulator`); `lean` makes an ONNX Runtime engine give its memory back after every run.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from edgefss.quant.episodes import Episode
from edgefss.quant.feeds import FeedBuilder


def load_episode(builder: FeedBuilder, ep: Episode) -> dict:
    """Preprocess an episode: dict(query (1,3,S,S), supports [..], s_masks [(S,S) | None], q_mask, cls)."""
    return {
        "query": builder.image(ep.query.image),
        "supports": [builder.image(s.image) for s in ep.support],
        "s_masks": [builder.network_mask(s.mask) for s in ep.support],
        "q_mask": builder.network_mask(ep.query.mask),
        "cls": ep.cls,
    }


def encode_episode(builder: FeedBuilder, engine, data: dict, use_given: bool):
    """Encoder on query and supports, and the head feeds built from its outputs.

    Returns:
        (encoder feeds list, encoder outputs of the query {name: array}, head feeds).
    """
    enc_feeds = [{"image": data["query"]}] + [{"image": s} for s in data["supports"]]
    enc_q = engine.run("encoder", enc_feeds[0])
    enc_s = [engine.run("encoder", f) for f in enc_feeds[1:]]
    hf = builder.head_feeds(enc_q, enc_s, data["s_masks"], data["cls"], data["q_mask"], use_given)
    return enc_feeds, enc_q, hf


def run_episode(builder: FeedBuilder, engine, data: dict, use_given: bool):
    """Encoder on query and supports, then the head, on `engine` (a Backend with graphs
    "encoder" and "head").

    Returns:
        (encoder feeds list, head feeds, outputs {"encoder.<name>" (query) and "head.<name>": array},
         query mask (B,h,w) bool).
    """
    enc_feeds, enc_q, hf = encode_episode(builder, engine, data, use_given)
    out = engine.run("head", hf)
    merged = {**{f"encoder.{k}": v for k, v in enc_q.items()}, **{f"head.{k}": v for k, v in out.items()}}
    return enc_feeds, hf, merged, builder.query_mask(out)


class LazyFeeds(Sequence):
    """A sequence of calibration samples made when read: item i is `make(i)`, nothing is kept.

    ONNX Runtime's calibrator reads each sample once per pass (CalibStridedMinMax), NNCF iterates
    once; a sample costs what it took to make it up front, and memory holds one at a time.

    Args:
        n: number of samples. make: i -> {input name: float32 array}.
    """

    def __init__(self, n: int, make):
        self.n, self.make = int(n), make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"calibration sample {i} of {self.n}")
        return self.make(i)


def calibration_feeds(builder: FeedBuilder, engine, episodes: list, label: str = "calibration episodes"):
    """Feeds for quantizing both graphs: every episode image for the encoder, and head inputs
    built from the FP32 encoder's outputs (so correlation inputs see real ranges).

    Even episodes feed the caller's masks (pseudo_given=1), odd ones the on-device prior, so
    both branches of the TLG blend are calibrated. Both are `LazyFeeds`: an encoder sample is
    one preprocessed image, a head sample runs `engine`'s encoder on its episode when read.

    Returns:
        (encoder feeds, head feeds): sequences of {input name: float32 array}, encoder samples
        in episode order (query, then supports), one head sample per episode.
    """
    per = [1 + len(ep.support) for ep in episodes]
    index = [(e, k) for e, n in enumerate(per) for k in range(n)]

    def enc(i):
        ep = episodes[index[i][0]]
        k = index[i][1]
        return {"image": builder.image(ep.query.image if k == 0 else ep.support[k - 1].image)}

    def head(i):
        data = load_episode(builder, episodes[i])
        return encode_episode(builder, engine, data, use_given=(i % 2 == 0))[2]

    return LazyFeeds(len(index), enc), LazyFeeds(len(episodes), head)


def compare_pipelines(builder: FeedBuilder, ref, test, episodes: list, threshold: float,
                      precision: str = "int8", label: str | None = None):
    """Run engines `ref` (FP32) and `test` (reduced precision) on episodes; return the GateResult.
    Each episode is reduced to its gate figures before the next runs (memory: one episode)."""
    from edgefss.quant.gate import GateAccumulator

    acc = GateAccumulator()
    for i, ep in enumerate(tqdm(episodes, desc=label or f"{precision.upper()} gate", unit="episode")):
        data = load_episode(builder, ep)
        _, _, o1, m1 = run_episode(builder, ref, data, use_given=(i % 2 == 0))
        _, _, o2, m2 = run_episode(builder, test, data, use_given=(i % 2 == 0))
        acc.add(o1, o2, m1, m2)
        del o1, o2
    return acc.result(threshold, precision=precision, device=getattr(test, "device", None))


class LeanOrt:
    """An ONNX Runtime engine (runtime/backends/ort.OrtBackend) that gives its memory back after
    every run, for an export's FP32 reference: it runs beside calibration and the gate, and ORT's
    CPU arena would keep the high-water mark of its largest run (the CST head and learner at B=2
    grew it by ~2.8 GB, docs/performance.md; arena shrinkage still keeps hundreds of MB).

    The CPU sessions are reopened from their files with the runtime's session options
    (backends/ort.session_options) and the arena off: same kernels, same outputs. Sessions
    opened from bytes, or on CUDA, keep their arena and shrink it after each run instead.
    Everything else is the wrapped engine's (`getattr` passes through).
    """

    def __init__(self, backend):
        import onnxruntime as ort

        from edgefss.runtime.backends.ort import session_options

        bound_heap()  # what the engine gives back must leave the process, not stay in the heap
        self._be = backend
        self._ro = None
        paths = {g: getattr(s, "_model_path", None) for g, s in backend.sessions.items()}
        if getattr(backend, "device", "cpu") == "cpu" and all(paths.values()):
            opts = session_options(ort)
            opts.enable_cpu_mem_arena = False
            backend.sessions = {g: ort.InferenceSession(p, sess_options=opts, providers=["CPUExecutionProvider"])
                                for g, p in paths.items()}
        else:
            self._ro = ort.RunOptions()
            devs = "cpu:0" + (";gpu:0" if getattr(backend, "device", "cpu") == "cuda" else "")
            self._ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", devs)

    def __getattr__(self, name):
        return getattr(self._be, name)

    def run(self, graph: str, feeds: dict) -> dict:
        if self._ro is None:
            return self._be.run(graph, feeds)
        names = self._be.outputs[graph]
        return dict(zip(names, self._be.sessions[graph].run(names, feeds, self._ro)))


def lean(backend):
    """`LeanOrt(backend)` for an ONNX Runtime engine, any other engine unchanged."""
    if getattr(backend, "name", None) == "onnxruntime" and hasattr(backend, "sessions"):
        return LeanOrt(backend)
    return backend


# Buffers of at least this many bytes get their own mapping, returned to the OS when freed.
MMAP_THRESHOLD = 2 * 2**20


def bound_heap() -> None:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD (process-wide, idempotent; a no-op without glibc).

    glibc raises the threshold each time a mapped block is freed, up to 32 MB, so after the first
    large tensor dies, tensors of up to 32 MB (a 400 px feature map is 2-46 MB) come from the heap
    and stay in RSS as fragments: an arena-free calibration grew by ~100 MB per sample that way.
    A fixed threshold keeps every large tensor in its own mapping, given back on free.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Collect garbage and give the C heap's free pages back to the OS (glibc `malloc_trim`),
    after fixing the mmap threshold (`bound_heap`): freed model weights and engine buffers
    otherwise stay in the process's RSS. Only gc where the C library has neither."""
    import ctypes
    import ctypes.util
    import gc

    bound_heap()
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
