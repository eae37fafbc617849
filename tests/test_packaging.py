"""A built wheel works outside the repository: recipes, verification data and the native extension ship.

One test: build the wheel from a copy of the sources (CPU extension only), install it into a
fresh venv outside the repo, then from an unrelated working directory and with the sample data
hidden (EDGEFSS_SHARED_DATA points nowhere):
  1. `edgefss export --list-targets` lists every recipe, with torch made unimportable;
  2. `edgefss export --target onnxruntime-cpu-fp32` writes a verified bundle (verification on the
     packaged synthetic set, edgefss/packaged.py);
  3. `edgefss predict` on that bundle, torch again unimportable (the runtime is torch-free).
The fresh venv gets its dependencies from this environment's site-packages through a .pth file
(no network; numpy, opencv, onnxruntime and, for the export only, torch/onnx), after the
wheel's own edgefss, so the installed edgefss is the wheel's, never the repo's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgefss import packaged

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_verification_set_is_the_generators_output(tmp_path):
    cv2 = pytest.importorskip("cv2")
    fresh = packaged.make_verification_set(tmp_path / "verify")
    shipped = packaged.verification_folder()
    assert (fresh / "index.csv").read_text() == (shipped / "index.csv").read_text()
    rows = (shipped / "index.csv").read_text().split()[1:]
    assert len(rows) == len(packaged.VERIFY_CLASSES) * packaged.VERIFY_IMAGES_PER_CLASS
    for row in rows:
        for rel in row.split(",")[:2]:
            a = cv2.imread(str(fresh / rel), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(shipped / rel), cv2.IMREAD_UNCHANGED)
            assert a is not None and b is not None and np.array_equal(a, b), rel
    assert {p.stem for p in packaged.recipe_dir().glob("*.json")} >= {"onnxruntime-cpu-fp32", "jetson-orin-trt-int8"}


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is needed to build the wheel's extension")
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    pytest.importorskip("torch")
    # 1. wheel from a copy of the tracked + new (not ignored) sources: nothing of the build lands in the repo
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path / "dist"
    env = {**os.environ, "EDGEFSS_NO_CUDA": "1", "EDGEFSS_REQUIRE_EXTENSION": "1"}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(dist), str(src)],
         env=env)
    (wheel,) = dist.glob("edgefss-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("edgefss/_C") for n in names), "the native extension is not in the wheel"
    assert "edgefss/recipes/onnxruntime-cpu-fp32.json" in names and "edgefss/data/verify/index.csv" in names
    assert sum(n.startswith("edgefss/data/verify/images/") for n in names) == 6

    # 2. a fresh venv outside the repo; dependencies reused from this environment, after the wheel's edgefss
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)])
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "zz_reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    blocker = tmp_path / "block"  # on PYTHONPATH: `import torch` fails, as on a torch-free device
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    work = tmp_path / "work"
    work.mkdir()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEFSS_SHARED_DATA")}
    base.update(EDGEFSS_SHARED_DATA=str(tmp_path / "no-sample-data"), OMP_NUM_THREADS="2")
    no_torch = {**base, "PYTHONPATH": str(blocker)}
    edgefss = str(venv / "bin" / "edgefss")

    where = _run([str(py), "-c", "import edgefss, edgefss.ops as o; print(edgefss.__file__, o.has_native())"],
                 cwd=work, env=no_torch)
    assert where.startswith(str(venv)) and "True" in where, where

    out = _run([edgefss, "export", "--list-targets"], cwd=work, env=no_torch)
    for name in ("onnxruntime-cpu-fp32", "onnxruntime-cpu-int8", "openvino-cpu-int8", "jetson-orin-trt-int8"):
        assert name + ":" in out, out

    # 3. export with --target (needs torch), verified on the packaged synthetic set
    bundle = tmp_path / "bundle"
    out = _run([edgefss, "export", "--target", "onnxruntime-cpu-fp32", "--model", "tlg", "--verify-episodes", "1",
                "--out", str(bundle)], cwd=work, env=base)
    assert "packaged synthetic set" in out, out
    assert (bundle / "manifest.json").is_file()

    # 4. predict through the torch-free runtime
    images = packaged.verification_folder() / "images"
    mask = tmp_path / "mask.png"
    _run([edgefss, "predict", "--bundle", str(bundle), "--support", f"{images / 'dog_0.png'}:dog",
          "--query", str(images / "dog_1.png"), "--out", str(mask)], cwd=work, env=no_torch)
    cv2 = pytest.importorskip("cv2")
    m = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    assert m is not None and m.shape[:2] == (packaged.VERIFY_SIZE, packaged.VERIFY_SIZE)


def _docker_unavailable() -> str | None:
    """Why the CPU image cannot be built here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "no Docker engine running (docker info: " + (info.stderr.strip().splitlines() or ["?"])[-1] + ")"
    base = subprocess.run(["docker", "image", "inspect", "python:3.11-slim"], capture_output=True, timeout=30)
    if base.returncode != 0:
        pull = subprocess.run(["docker", "pull", "python:3.11-slim"], capture_output=True, text=True, timeout=300)
        if pull.returncode != 0:
            return "the base image python:3.11-slim cannot be pulled: " + pull.stderr.strip()[-200:]
    return None


@pytest.mark.slow
def test_cpu_docker_image_runs_doctor_and_predict(tmp_path):
    why = _docker_unavailable()
    if why:
        pytest.skip(why)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_runtime import build_tiny_bundle

    tag = "edgefss-test:cpu"
    _run(["docker", "build", "-f", str(ROOT / "docker" / "Dockerfile.cpu"), "-t", tag, str(ROOT)])
    out = _run(["docker", "run", "--rm", tag, "doctor"])
    assert "edgefss._C" in out and "[x] openvino" in out, out
    bundle = build_tiny_bundle(tmp_path / "cst", "cst")
    images = packaged.verification_folder() / "images"
    shutil.copy(images / "dog_0.png", tmp_path / "s.png")
    shutil.copy(images / "dog_1.png", tmp_path / "q.png")
    tmp_path.chmod(0o777)
    _run(["docker", "run", "--rm", "-v", f"{tmp_path}:/w", tag, "predict", "--bundle", "/w/cst", "--support",
          "/w/s.png:dog", "--query", "/w/q.png", "--out", "/w/mask.png"])
    assert (tmp_path / "mask.png").is_file()
