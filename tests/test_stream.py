"""Segmenter.predict_stream and its schedules: frames in flight, the two-stage pipeline,
sequential (edgefss/runtime/stream.py)."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

from edgefss.errors import InputError
from edgefss.runtime import Segmenter
from edgefss.runtime import stream as S
from test_runtime import build_tiny_bundle

WORKERS = ("edgefss-stream-encoder", S.FRAME_WORKER)  # the pipeline's and the frames schedule's threads


def _workers() -> list:
    return [t for t in threading.enumerate() if t.name.startswith(WORKERS)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {m: build_tiny_bundle(root / m, m) for m in ("cst", "tlg")}


@pytest.fixture(scope="module")
def frames():
    r = np.random.default_rng(3)
    out = []
    for i in range(7):
        img = (r.random((40 + 3 * i, 52 - 2 * i, 3)) * 120).astype(np.uint8)
        img[5 + i: 25 + i, 10:30] += 120
        out.append(img)
    return out


@pytest.fixture
def overlap_allowed(monkeypatch):
    """Two usable CPUs, so a Segmenter loaded with threads=1 overlaps its stages (as on a 2-core box)."""
    monkeypatch.setattr(S, "usable_cpus", lambda: 2)


@pytest.mark.parametrize("schedule", ["auto", "frames", "pipeline", "sequential"])
@pytest.mark.parametrize("model", ["cst", "tlg"])
def test_stream_bit_identical_to_sequential_predict(model, schedule, bundles, frames, overlap_allowed):
    seg = Segmenter.load(bundles[model], threads=1)
    seg.set_support(frames[:2], ["dog", "cat"], [np.ones(frames[0].shape[:2], np.uint8), None])
    ref = [seg.predict(f) for f in frames]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the thread budget: no "one after the other" warning
        got = list(seg.predict_stream(iter(frames), schedule=schedule))
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
        assert a.classes == b.classes
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.fg_prob[0], b.fg_prob[0])
    assert not _workers()


def test_pipeline_overlaps_first_stage_of_next_item():
    """second(t) waits until first(t+1) has started: only an overlapped pipeline can finish."""
    started = [threading.Event() for _ in range(4)]

    def first(i):
        started[i].set()
        return i

    def second(i):
        if i + 1 < len(started):
            assert started[i + 1].wait(5), f"first({i + 1}) did not start while second({i}) ran"
        return i * 10

    assert list(S.pipelined(range(4), first, second)) == [0, 10, 20, 30]


def test_pipeline_keeps_order_and_bounds_lookahead():
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.01, 20)
    pulled, ahead = [], []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    def first(i):
        time.sleep(delays[i])
        return i

    def second(i):
        ahead.append(len(pulled) - 1 - i)  # how far the reader ran past the item being finished
        time.sleep(delays[19 - i])
        return i

    assert list(S.pipelined(items(), first, second, depth=1)) == list(range(20))
    assert max(ahead) <= 2  # one result queued + one being encoded


def _counting(pulled: list):
    """A generator function yielding 0, 1, 2, ... forever, appending each value to `pulled` first."""
    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1
    return endless


def test_early_break_stops_worker_and_reading():
    pulled = []
    endless = _counting(pulled)

    t = time.perf_counter()
    it = S.pipelined(endless(), lambda x: x, lambda x: x)
    for y in it:
        if y == 2:
            break
    it.close()
    assert time.perf_counter() - t < 5
    assert not _workers()
    n = len(pulled)
    time.sleep(0.2)
    assert len(pulled) == n <= 6  # nothing read after the consumer left


def test_early_break_on_segmenter_stream(bundles, frames, overlap_allowed):
    seg = Segmenter.load(bundles["cst"], threads=1)
    seg.set_support(frames[:1], ["dog"])
    gen = seg.predict_stream(iter(frames * 10))
    for i, _ in enumerate(gen):
        if i == 1:
            break
    gen.close()
    assert not _workers()


def test_frame_error_surfaces_in_place(bundles, frames, overlap_allowed, tmp_path):
    seg = Segmenter.load(bundles["tlg"], threads=1)
    seg.set_support(frames[:1], ["dog"])
    bad = tmp_path / "missing.png"
    got = []
    with pytest.raises(InputError, match="missing.png"):
        for p in seg.predict_stream([frames[0], frames[1], bad, frames[2]]):
            got.append(p)
    assert len(got) == 2  # the frames before the bad one were delivered first
    assert not _workers()


def test_second_stage_and_iterator_errors_propagate():
    def second(x):
        if x == 3:
            raise RuntimeError("head failed on 3")
        return x

    with pytest.raises(RuntimeError, match="head failed on 3"):
        list(S.pipelined(range(10), lambda x: x, second))
    assert not _workers()

    def broken():
        yield 1
        raise OSError("camera unplugged")

    out = []
    with pytest.raises(OSError, match="camera unplugged"):
        for y in S.pipelined(broken(), lambda x: x, lambda x: x):
            out.append(y)
    assert out == [1]


def test_thread_budget_decides_overlap(bundles, frames, monkeypatch):
    # the rule itself: test_auto_rule; here, what a Segmenter at the engine's default threads does
    monkeypatch.setattr(S, "usable_cpus", lambda: 2)
    assert S.stream_threads() == 1
    seg = Segmenter.load(bundles["cst"])  # the engine's default threads: both stages would take every core
    seg.set_support(frames[:1], ["dog"])
    ref = [seg.predict(f) for f in frames[:3]]
    with pytest.warns(UserWarning, match="one after the other.*threads=1"):
        gen = seg.predict_stream(frames[:3])
    got = []
    for p in gen:
        assert not _workers()  # sequential: no encoder thread
        got.append(p)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a.mask, b.mask)


def test_demo_pairs_each_overlapped_result_with_its_frame(bundles, shared_data, tmp_path, overlap_allowed):
    """`edgefss demo`'s loop runs on predict_stream: with room for two stages the frames overlap,
    and every written overlay is the one the frame-by-frame loop writes (HUD rows aside)."""
    import cv2

    from edgefss.app import DemoConfig, run_demo

    d = shared_data / "davis2016_val_subset" / "dog"
    imgs, masks = sorted((d / "images").iterdir()), sorted((d / "masks").iterdir())
    outs = {}
    for threads in (None, 1):  # None: the engine's default threads, so no overlap
        seg = Segmenter.load(bundles["cst"], threads=threads)
        cfg = DemoConfig(bundle=str(bundles["cst"]), support=(str(imgs[0]),), classes=("dog",),
                         masks=(str(masks[0]),), source=str(d / "images"), output=str(tmp_path / f"o{threads}"),
                         max_frames=4)
        stats = run_demo(cfg, segmenter=seg)
        assert stats.frames == 4 and len(stats.latency_ms) == 4 and stats.fps > 0
        assert not _workers()
        outs[threads] = {p.name: cv2.imread(str(p)) for p in sorted((tmp_path / f"o{threads}").iterdir())}
    assert list(outs[None]) == list(outs[1]) == [f"{p.stem}.png" for p in imgs[:4]]
    for name, a in outs[None].items():
        b = outs[1][name]
        rows = a.shape[0] * 3 // 4  # the FPS/latency HUD is drawn in the bottom rows
        np.testing.assert_array_equal(a[:rows], b[:rows])


# ----------------------------------------------------------------------------- frames in flight
def test_auto_rule(monkeypatch):
    monkeypatch.setattr(S, "usable_cpus", lambda: 2)
    assert S.choose_schedule(1)[:2] == ("frames", 2)
    assert S.choose_schedule(2)[0] == "sequential" and S.choose_schedule(None)[0] == "sequential"
    assert "threads=1" in S.choose_schedule(None)[2]
    assert S.choose_schedule(2, device="cuda")[0] == "pipeline"
    assert S.choose_schedule(1, device="GPU")[0] == "pipeline"
    monkeypatch.setattr(S, "usable_cpus", lambda: 8)
    assert S.choose_schedule(2)[:2] == ("frames", 4)
    assert S.choose_schedule(3)[:2] == ("frames", 2)
    assert S.choose_schedule(5)[0] == "sequential"
    monkeypatch.setattr(S, "usable_cpus", lambda: 1)
    assert S.choose_schedule(1)[0] == "sequential"


def test_bad_schedule_name(bundles, frames):
    seg = Segmenter.load(bundles["cst"], threads=1)
    seg.set_support(frames[:1], ["dog"])
    with pytest.raises(InputError, match=r"schedule: 'fast'.*'auto', 'frames', 'pipeline', 'sequential'"):
        seg.predict_stream(frames, schedule="fast")
    assert not _workers()


def test_frames_keep_order_run_in_parallel_and_bound_reading():
    """Frames finish out of order (random durations); results come in input order, two run at
    once, and the reader never runs more than `workers` frames ahead of the consumer."""
    rng = np.random.default_rng(1)
    delays = rng.uniform(0, 0.02, 24)
    pulled, ahead, readers = [], [], set()
    lock, running, peak = threading.Lock(), [0], [0]

    def items():
        for i in range(24):
            readers.add(threading.get_ident())
            pulled.append(i)
            yield i

    def fn(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(delays[i])
        with lock:
            running[0] -= 1
        return i * 10

    out = []
    for y in S.frame_parallel(items(), fn, workers=2):
        ahead.append(len(pulled) - 1 - y // 10)
        out.append(y)
    assert out == [10 * i for i in range(24)]
    assert peak[0] == 2  # two frames really were in flight at once
    assert max(ahead) <= 1  # frame t+2 is read only after frame t was yielded
    assert readers == {threading.get_ident()}  # the input was read by the caller's thread only
    assert not _workers()


def test_frames_errors_surface_at_their_frame():
    def fn(x):
        if x == 3:
            raise RuntimeError("engine failed on 3")
        time.sleep(0.01 * (x % 2))  # frame 4 would finish before 3
        return x

    out = []
    with pytest.raises(RuntimeError, match="engine failed on 3"):
        for y in S.frame_parallel(range(10), fn, workers=2):
            out.append(y)
    assert out == [0, 1, 2]
    assert not _workers()

    def broken():
        yield from range(3)
        raise OSError("camera unplugged")

    out = []
    with pytest.raises(OSError, match="camera unplugged"):
        for y in S.frame_parallel(broken(), lambda x: x, workers=2):
            out.append(y)
    assert out == [0, 1, 2]
    assert not _workers()


def test_frames_early_break_stops_workers_and_reading():
    pulled = []
    endless = _counting(pulled)

    it = S.frame_parallel(endless(), lambda x: (time.sleep(0.01), x)[1], workers=2)
    for y in it:
        if y == 2:
            break
    it.close()
    assert not _workers()
    n = len(pulled)
    time.sleep(0.1)
    assert len(pulled) == n <= 4  # frames 0-2 and at most one more in flight; nothing read after


def test_frames_schedule_on_openvino_runs_on_stream_compile(tmp_path, frames, overlap_allowed):
    """OpenVINO: the frame workers use a NUM_STREAMS=2 compile (its single-stream latency compile
    would serialize them), the caller's thread keeps the latency compile, masks are identical."""
    pytest.importorskip("openvino")
    seg = Segmenter.load(build_tiny_bundle(tmp_path / "ov", "tlg", backend="openvino"), backend="openvino",
                         threads=1)
    seg.set_support(frames[:1], ["dog"])
    ref = [seg.predict(f) for f in frames]
    got = list(seg.predict_stream(frames))  # auto: 2 frames in flight
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.probs, b.probs)
    be = seg.backend
    assert list(be._streams) == [2]
    assert int(be._streams[2]["head"].get_property("NUM_STREAMS")) == 2
    assert int(be.compiled["head"].get_property("NUM_STREAMS")) == 1
    assert int(be._streams[2]["head"].get_property("INFERENCE_NUM_THREADS")) == 2
    assert getattr(be._local, "compiled", None) is None  # this thread was never bound to the streams
    assert not _workers()


def test_openvino_requests_outlive_the_stream_threads(tmp_path, frames):
    """A request's first infer allocates its intermediates (~1 s for the 400 px TLG head), so the
    frame workers of a later stream must reuse the requests of an earlier one rather than make
    their own: after two streams the pool holds the same request objects, one per frame in flight."""
    pytest.importorskip("openvino")
    seg = Segmenter.load(build_tiny_bundle(tmp_path / "ov", "tlg", backend="openvino"), backend="openvino",
                         threads=1)
    seg.set_support(frames[:1], ["dog"])
    be = seg.backend
    list(seg.predict_stream(frames, schedule="frames"))
    key = (id(be._streams[2]), "head")
    first = {id(r) for r in be._idle[key]}
    assert 1 <= len(first) <= 2  # never more requests than frames in flight
    list(seg.predict_stream(frames, schedule="frames"))
    assert {id(r) for r in be._idle[key]} == first
    seg.predict(frames[0])  # the caller's thread: the latency compile's own pool, not the streams'
    assert len(be._idle[(id(be.compiled), "head")]) == 1 and {id(r) for r in be._idle[key]} == first
    assert not _workers()
