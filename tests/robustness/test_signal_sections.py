"""A signal never splits a side effect from the record of it (edgefss/signals.py).

Each test raises the signal at the worst moment, deterministically: inside the write itself, after
the file is on disk and before the code that counts or commits it has run. Before the critical
sections existed, the demo's "kept the N frames" line could say one frame fewer than the video held
(seen in CI: 55 frames, "kept the 54"), and a bundle commit interrupted between its renames removed
the new bundle and left the old one aside.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from edgefss import bundle as bundle_mod
from edgefss.app import sink as sink_mod
from edgefss.bundle import BundleWriter
from edgefss.fsio import write_bytes_atomic
from edgefss.signals import _Terminated, deferred_signals, unwind_on_signals


def _frame(i: int) -> np.ndarray:
    return np.full((16, 24, 3), 10 * i, np.uint8)


def test_deferred_signal_arrives_after_the_whole_block():
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        signal.raise_signal(signal.SIGINT)
        done.append("effect")
        done.append("record")
    assert done == ["effect", "record"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_deferred_sigterm_unwinds_with_its_exit_code_after_the_block():
    done = []
    with pytest.raises(_Terminated) as exc, unwind_on_signals(), deferred_signals():
        signal.raise_signal(signal.SIGTERM)
        done.append("effect")
    assert done == ["effect"] and exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_nested_sections_deliver_once_at_the_outer_end():
    seen = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        with deferred_signals():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        seen.append("after inner")
    assert seen == ["after inner"]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this OS")
def test_an_ignored_signal_stays_ignored():
    prev = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with deferred_signals():
            signal.raise_signal(signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, prev)


def _count_video(path: Path) -> int:
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_video_sink_counts_the_frame_a_signal_interrupted(tmp_path, sig):
    pytest.importorskip("cv2")
    out = tmp_path / "v.avi"
    s = sink_mod.VideoSink(out, 5.0, log=lambda *_: None)
    with unwind_on_signals():
        s.write("0", _frame(0))
        real = s.writer

        class SignalAfterWrite:  # the frame reaches the file, then the user stops the demo
            def write(self, bgr):
                real.write(bgr)
                signal.raise_signal(sig)

            def release(self):
                real.release()

        s.writer = SignalAfterWrite()
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            s.write("1", _frame(1))
    note = s.close(ok=False)
    assert s.frames == 2 and "kept the 2 frames" in note
    assert _count_video(out) == 2  # the line and the file agree
    assert [p.name for p in tmp_path.iterdir()] == ["v.avi"]


def test_png_sink_counts_the_frame_a_signal_interrupted(tmp_path, monkeypatch):
    real = sink_mod.write_png_atomic

    def write_then_signal(*a, **k):
        p = real(*a, **k)
        signal.raise_signal(signal.SIGINT)
        return p

    s = sink_mod.PngSink(tmp_path / "frames")
    monkeypatch.setattr(sink_mod, "write_png_atomic", write_then_signal)
    with pytest.raises(KeyboardInterrupt):
        s.write("a", _frame(1))
    assert s.frames == 1 and sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["a.png"]
    assert "wrote 1 frames" in s.close(ok=False)


def test_atomic_write_interrupted_after_the_rename_leaves_the_file_and_no_temp(tmp_path, monkeypatch):
    real = os.replace

    def replace_then_signal(a, b):
        real(a, b)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(tmp_path / "x.json", b"{}")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    assert (tmp_path / "x.json").read_bytes() == b"{}"


def _write_bundle(out: Path, payload: bytes) -> None:
    with BundleWriter(out) as w:
        w.path("a.bin").write_bytes(payload)
        w.commit({"model": "test"})


def test_bundle_commit_interrupted_between_its_renames_keeps_the_new_bundle(tmp_path, monkeypatch):
    out = tmp_path / "b"
    _write_bundle(out, b"old")
    # the fallback commit (no atomic exchange): out -> .b.old-PID, then staging -> out; SIGTERM
    # lands right after the first rename, the moment out_dir is absent
    monkeypatch.setattr(bundle_mod, "_exchange", lambda a, b: False)
    real = Path.replace

    def replace(self, target):
        r = real(self, target)
        if Path(target).name.startswith(".b.old-"):
            signal.raise_signal(signal.SIGTERM)
        return r

    monkeypatch.setattr(Path, "replace", replace)
    with unwind_on_signals(), pytest.raises(_Terminated):
        _write_bundle(out, b"new")
    monkeypatch.undo()
    assert (out / "a.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # old bundle removed, no staging left
