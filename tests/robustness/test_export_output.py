"""`edgefss export` never destroys what it did not create (issue 14, class 1), checked with real
processes: refusals of a user's folder, the current folder and a file; SIGINT/SIGTERM mid-export
leave the previous bundle (or nothing) and no staging folder, next to the output or under the
temp dir; a SIGKILLed export's work folder is removed by the next export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefss.bundle import WORK_PREFIX, export_workdir, read_manifest, sha256_file
from _procs import sigint_default  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "tlg", "--imgsz", "64", "--verify-episodes", "1"]


def _env(tmpdir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TMPDIR=str(tmpdir))
    return env


def _export(args, cwd, tmpdir, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgefss", "export", *TINY, *args], cwd=cwd, env=_env(tmpdir),
                          capture_output=True, text=True, timeout=timeout)


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def _refused(r, path_text: str):
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and ": warning: " not in ln and not ln.startswith(" ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert path_text in lines[0] and "nothing was written" in lines[0], lines[0]


def test_export_refuses_a_users_folder(tmp_path):
    work, tmpdir = tmp_path / "w", tmp_path / "t"
    (work / "photos").mkdir(parents=True)
    tmpdir.mkdir()
    (work / "photos" / "holiday.jpg").write_bytes(b"precious")
    (work / "photos" / "sub").mkdir()
    (work / "photos" / "sub" / "notes.txt").write_text("also precious")
    before = _snapshot(work)
    r = _export(["--out", "photos"], work, tmpdir)
    _refused(r, "photos")
    assert _snapshot(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["photos"]  # no hidden staging folder either


def test_export_refuses_the_current_folder_and_a_file(tmp_path):
    work, tmpdir = tmp_path / "w", tmp_path / "t"
    work.mkdir()
    tmpdir.mkdir()
    (work / "keep.txt").write_text("mine")
    (work / "model.onnx").write_bytes(b"someone else's file")
    before = _snapshot(work)
    for out in (".", str(work), "model.onnx"):
        r = _export(["--out", out], work, tmpdir)
        _refused(r, out)
        assert _snapshot(work) == before
        assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "model.onnx"]


def test_export_refuses_a_bundle_holding_foreign_files(tlg_bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tlg_bundle, b)
    (b / "README.txt").write_text("my notes")
    before = _snapshot(b)
    r = _export(["--out", "b"], tmp_path, tmp_path)
    _refused(r, "README.txt")
    assert _snapshot(b) == before


def _start(args, cwd, tmpdir):
    return subprocess.Popen([sys.executable, "-m", "edgefss", "export", *TINY, *args], cwd=cwd, env=_env(tmpdir),
                            preexec_fn=sigint_default,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _signal_after(p, marker: str, sig, timeout=600):
    """Send `sig` once a line containing `marker` was printed (the export is mid-way)."""
    out, t0, sent = [], time.monotonic(), False
    for line in p.stdout:
        out.append(line)
        if marker in line:
            p.send_signal(sig)
            sent = True
            break
        assert time.monotonic() - t0 < timeout, "".join(out)
    rest, _ = p.communicate(timeout=120)
    assert sent, f"the export ended before '{marker}':\n" + ("".join(out) + rest)[-3000:]
    return p.returncode, "".join(out) + rest


@pytest.mark.slow  # runs real exports (tens of seconds each); CI runs slow tests
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_export_keeps_previous_bundle_and_no_staging(tmp_path, sig):
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    previous = sig == signal.SIGTERM  # SIGTERM replaces an existing bundle; SIGINT writes a new one
    if previous:
        r = _export(["--out", "bundle"], tmp_path, tmpdir)
        assert r.returncode == 0, r.stderr[-3000:]
        before = _snapshot(tmp_path / "bundle")
    p = _start(["--out", "bundle"], tmp_path, tmpdir)
    rc, log = _signal_after(p, "exported encoder.onnx", sig)
    assert rc != 0, log  # it was stopped, not finished
    assert "bundle written" not in log
    if previous:
        assert _snapshot(tmp_path / "bundle") == before
        read_manifest(tmp_path / "bundle", verify=True)
    else:
        assert not (tmp_path / "bundle").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["t"] + (["bundle"] if previous else []))
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith(WORK_PREFIX)] == [], log


@pytest.mark.slow  # runs real exports (tens of seconds each); CI runs slow tests
def test_next_export_removes_a_killed_exports_work_folder(tmp_path, monkeypatch):
    import tempfile

    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    p = _start(["--out", "bundle"], tmp_path, tmpdir)
    rc, log = _signal_after(p, "exported encoder.onnx", signal.SIGKILL)
    assert rc == -signal.SIGKILL, log[-3000:]
    left = [d for d in tmpdir.iterdir() if d.name.startswith(f"{WORK_PREFIX}{p.pid}-")]
    assert left and sum(f.stat().st_size for f in left[0].rglob("*") if f.is_file()) > 0, log
    (tmpdir / "unrelated-folder").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    with export_workdir() as mine:  # what the next export does first
        assert mine.parent == tmpdir and mine.is_dir()
        assert not left[0].exists()
    assert not mine.exists()
    assert (tmpdir / "unrelated-folder").is_dir()


def _mount_tmpfs(d: Path, size: str):
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'not permitted'}); CI runs as root")


@pytest.mark.slow  # runs real exports (tens of seconds each); CI runs slow tests
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_export_to_a_full_or_read_only_disk_is_one_line(tmp_path, fault):
    d, tmpdir = tmp_path / "disk", tmp_path / "t"
    tmpdir.mkdir()
    _mount_tmpfs(d, "1m")
    try:
        if fault == "full":
            with open(d / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
        else:
            r = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True)
            if r.returncode != 0:
                pytest.skip(f"cannot remount read-only: {r.stderr.decode().strip()}")
        before = sorted(p.name for p in d.iterdir())
        r = _export(["--out", str(d / "bundle")], tmp_path, tmpdir)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgefss export: error")]
        assert len(lines) == 1 and str(d) in lines[0], r.stderr[-3000:]
        assert ("no space left" if fault == "full" else "read-only") in lines[0].lower(), lines[0]
        assert sorted(p.name for p in d.iterdir()) == before  # no staging folder, no partial bundle
        assert [p.name for p in tmpdir.iterdir() if p.name.startswith(WORK_PREFIX)] == []
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
