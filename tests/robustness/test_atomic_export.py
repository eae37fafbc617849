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
        state = _state(out, prev_tag)
        if state == "nothing" and prev_tag:
            # BundleWriter.commit moves the old bundle aside before renaming the new one in (POSIX
            # cannot swap two directories); a kill between the two renames leaves the old one intact
            # under '.bundle.old-<pid>'. Rare (microseconds), tolerated, reported to the lead.
            olds = list(tmp_path.glob(".bundle.old-*"))
            assert olds and read_manifest(olds[0], verify=True), "previous bundle lost"
            state = "previous"
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
