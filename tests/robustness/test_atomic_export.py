"""Killing an export mid-way (SIGKILL: no cleanup handler runs) leaves the output directory holding
either the previous complete bundle or nothing, never a partial bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgefss.bundle import read_manifest

REPO = Path(__file__).resolve().parents[2]

# Writes a bundle through BundleWriter, file by file, slowly, announcing each step on stdout.
SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from edgefss.bundle import BundleWriter
    out, tag = sys.argv[1], sys.argv[2]
    with BundleWriter(out) as w:
        for i in range(4):
            with open(w.path(f"part{i}.bin"), "wb") as f:
                for _ in range(8):
                    f.write(b"x" * 4096)
                    f.flush()
                    time.sleep(0.01)
            print(f"staged {i}", flush=True)
        print("committing", flush=True)
        w.commit({"model": "cst", "backend": "onnxruntime", "precision": "fp32",
                  "preprocess": {"imgsz": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "graphs": {}, "tag": tag})
    print("done", flush=True)
""")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_and_kill(cmd, wait_for: str, delay: float, timeout: float = 300):
    """Start cmd, wait until a stdout line contains `wait_for`, sleep `delay`, SIGKILL it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO)
    seen = []
    t0 = time.monotonic()
    try:
        for line in p.stdout:
            seen.append(line)
            if wait_for in line:
                time.sleep(delay)
                break
            if time.monotonic() - t0 > timeout:
                break
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, "".join(seen)


def _state(out: Path, previous_tag):
    """'nothing', 'previous', 'new' (a complete, verified bundle) or raise for anything partial."""
    if not out.exists():
        return "nothing"
    man = read_manifest(out, verify=True)  # BundleError here = a partial/corrupt bundle
    listed = set(man["files"]) | {"manifest.json"}
    assert {p.name for p in out.iterdir()} == listed, "files in the bundle that its manifest does not list"
    return "previous" if man.get("tag", man.get("created")) == previous_tag else "new"


@pytest.mark.parametrize("previous", [False, True])
def test_sigkill_mid_bundle_write_leaves_previous_or_nothing(tmp_path, previous):
    out = tmp_path / "bundle"
    prev_tag = None
    if previous:
        subprocess.run([sys.executable, "-c", SLOW_WRITER, str(out), "old"], check=True, env=_env(), cwd=REPO,
                       capture_output=True)
        prev_tag = "old"
        assert _state(out, prev_tag) == "previous"
    outcomes = set()
    # kill at every staging step and around the commit
    for wait_for, delay in [("staged 0", 0.0), ("staged 2", 0.05), ("committing", 0.0)]:
        rc, log = _run_and_kill([sys.executable, "-c", SLOW_WRITER, str(out), "new"], wait_for, delay)
        assert rc == -signal.SIGKILL or "done" in log, log
        state = _state(out, prev_tag)  # commit swaps old and new atomically: never "nothing" here
        outcomes.add(state)
        if state == "new":  # the commit won the race: start the next round from it
            prev_tag = "new"
        assert state in ({"previous", "new"} if prev_tag else {"nothing", "new"}), state
    assert outcomes <= {"nothing", "previous", "new"}


def test_sigkill_during_real_export_keeps_previous_bundle(tmp_path, cst_bundle):
    """`edgefss export` (CST at imgsz 64, random init) killed once its graphs are written and it is
    verifying them: the previous bundle at --out is untouched and no partial one appears."""
    pytest.importorskip("torch")
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(cst_bundle, out)
    before = json.loads((out / "manifest.json").read_text())
    cmd = [sys.executable, "-u", "-m", "edgefss", "export", "--model", "cst", "--imgsz", "64",
           "--verify-episodes", "1", "--out", str(out)]
    rc, log = _run_and_kill(cmd, "exported head.onnx", 0.5)
    assert rc == -signal.SIGKILL, f"export was not killed mid-way (rc {rc}):\n{log}"
    assert "exported head.onnx" in log, log
    assert read_manifest(out, verify=True) == before  # the previous bundle, untouched
    assert {p.name for p in out.iterdir()} == set(before["files"]) | {"manifest.json"}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_next_writer_cleans_up_after_a_killed_one(tmp_path):
    """A SIGKILLed writer leaves its staging dir (and, on the two-rename fallback, the previous
    bundle under '.name.old-PID' with nothing at the path): the next BundleWriter for that path
    deletes the staging dir and restores the previous bundle; a live writer's dirs are untouched."""
    from edgefss.bundle import BundleWriter, recover_stale

    out = tmp_path / "bundle"
    subprocess.run([sys.executable, "-c", SLOW_WRITER, str(out), "old"], check=True, env=_env(), cwd=REPO,
                   capture_output=True)
    dead = _dead_pid()
    (out).replace(tmp_path / f".bundle.old-{dead}")             # killed between the two renames
    (tmp_path / f".bundle.tmp-{dead}-1").mkdir()                # killed while staging
    (tmp_path / f".bundle.tmp-{dead}-1" / "encoder.onnx").write_bytes(b"partial")
    live = tmp_path / f".bundle.tmp-{os.getpid()}-2"           # a writer still running
    live.mkdir()
    fixed = recover_stale(out)
    assert len(fixed) == 2, fixed
    assert read_manifest(out, verify=True)["tag"] == "old"      # previous bundle back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "bundle"]
    with BundleWriter(out) as w:                                # and a normal write still works
        w.path("a.bin").write_bytes(b"1")
        w.commit({"model": "cst", "backend": "onnxruntime", "precision": "fp32",
                  "preprocess": {"imgsz": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, "graphs": {}, "tag": "new"})
    assert read_manifest(out)["tag"] == "new"
    assert not list(tmp_path.glob(".bundle.old-*"))
