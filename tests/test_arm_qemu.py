"""CPU kernels on aarch64 (Jetson's CPU, NEON) under qemu-aarch64, and every x86-64 variant natively.

csrc/parity/kernel_parity.cpp runs the kernels through their run-time dispatcher on cases written
here and returns their outputs; they are compared with the NumPy float64 references
(edgefss.ops.reference), including the hard cases (eps 1e-3 with costs 1e3, marginals spanning
1e-12..1, early stopping) and edge sizes (1x1, 0 channels, sizes that are not multiples of the
6x16 register tile or the 512-channel pass).

The aarch64 build uses Debian's crossbuild-essential-arm64 and qemu-user (`.ci/run` installs them);
without them that half skips with the reason. The x86-64 half builds the same driver natively and
runs it once per kernel variant this CPU can run (EDGEFSS_KERNEL_ISA), so the baseline SSE2 path
is checked on an AVX2 machine too.
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgefss.ops import reference

ROOT = Path(__file__).resolve().parents[1]
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
TOL = {np.float32: 1e-5, np.float64: 1e-10}
APT_HINT = "apt-get install -y qemu-user crossbuild-essential-arm64"


# ----------------------------------------------------------------------------- cases


def _marginal(rng, lead, n, lo=-0.3, hi=0.2):
    v = 10.0 ** rng.uniform(lo, hi, (*lead, n))
    return v / v.sum(-1, keepdims=True)


def _sinkhorn_cases():
    """(name, dtype, cost, a, b, eps, n_iter, stop_thr, checks) for the Sinkhorn."""
    rng = np.random.default_rng(0)
    cases = []
    for dt in (np.float32, np.float64):
        # 1x1, small, not multiples of the 8/16 vector widths, a batch, and one above the
        # kernel's threading threshold
        for shape in ((1, 1, 1), (1, 7, 5), (2, 50, 50), (1, 33, 80), (3, 17, 40), (1, 300, 230)):
            for eps in (0.05, 0.5):
                C = rng.random(shape)
                cases.append((f"sinkhorn{shape}-eps{eps}-{dt.__name__}", dt, C, _marginal(rng, shape[:1], shape[1]),
                              _marginal(rng, shape[:1], shape[2]), eps, 20, None))
        # eps 1e-3 with costs 1e3: cost/eps = 1e6, exponents must be formed in float64
        C = rng.random((2, 30, 40)) * 1e3
        for eps in (1e-3, 1e-2):
            cases.append((f"sinkhorn-hard-eps{eps}-cost1e3-{dt.__name__}", dt, C, _marginal(rng, (2,), 30),
                          _marginal(rng, (2,), 40), eps, 25, None))
        # marginals spanning 1e-12..1: scalings leave their range, half-steps fall back to the log domain
        C = rng.random((3, 20, 25))
        a, b = _marginal(rng, (3,), 20, -12, 0), _marginal(rng, (3,), 25, -12, 0)
        for eps in (0.01, 0.5):
            cases.append((f"sinkhorn-wide-marginals-eps{eps}-{dt.__name__}", dt, C, a, b, eps, 15, None))
        # early stopping: same iteration count and iterate as the reference
        C = rng.random((3, 40, 60))
        for thr in (1e-2, 1e-4):
            cases.append((f"sinkhorn-stop{thr}-{dt.__name__}", dt, C, np.full((3, 40), 1 / 40),
                          np.full((3, 60), 1 / 60), 0.1, 300, thr))
    return cases


def _correlation_cases():
    """(name, dtype, qs, ss, masks, heads, clamp_min, eps) for the correlation."""
    rng = np.random.default_rng(1)
    cases = []
    for dt in (np.float32, np.float64):
        for heads in (1, 6):
            for clamp_min in (None, 0.0):
                for masked in (False, True):
                    q, s = rng.standard_normal((6, 24, 53)), rng.standard_normal((6, 24, 19))
                    m = (rng.random((6, 19)) > 0.4).astype(float) if masked else None
                    cases.append((f"corr-h{heads}-clamp{clamp_min}-mask{masked}-{dt.__name__}", dt, [q], [s], [m],
                                  heads, clamp_min, 1e-5))
        # 1200 channels over 2 heads: a full 512-channel pass and a partial one; Nq 77 / Ns 150 end in
        # partial 6-row and 16-column tiles and span two packing jobs
        q, s = rng.standard_normal((2, 1200, 77)), rng.standard_normal((2, 1200, 150))
        m = (rng.random((2, 150)) > 0.3).astype(float)
        cases.append((f"corr-blocking-edges-{dt.__name__}", dt, [q], [s], [m], 2, 0.0, 1e-5))
        # a TLG-like list of layers of different shapes in one call
        shapes = [(64, 100), (300, 49), (520, 16)]
        cases.append((f"corr-layer-list-{dt.__name__}", dt, [rng.standard_normal((1, c, n)) for c, n in shapes],
                      [rng.standard_normal((1, c, n)) for c, n in shapes], [None] * 3, 1, 0.0, 1e-5))
        # edge sizes: 1x1x1, and 0 channels (cosine of empty vectors: 0, clamped)
        cases.append((f"corr-1x1-{dt.__name__}", dt, [rng.standard_normal((1, 1, 1))],
                      [rng.standard_normal((1, 1, 1))], [None], 1, None, 1e-5))
        for clamp_min in (None, 0.5):
            cases.append((f"corr-0-channels-clamp{clamp_min}-{dt.__name__}", dt, [np.zeros((2, 0, 5))],
                          [np.zeros((2, 0, 3))], [None], 1, clamp_min, 1e-5))
    return cases


def _write_cases(path: Path, sink, corr) -> None:
    with open(path, "wb") as f:
        for _, dt, C, a, b, eps, n_iter, thr in sink:
            f.write(struct.pack("=ii", 0, np.dtype(dt).itemsize))
            f.write(struct.pack("=qqqdid", *C.shape, eps, n_iter, -1.0 if thr is None else thr))
            for x in (C, a, b):
                f.write(np.ascontiguousarray(x, dtype=dt).tobytes())
        for _, dt, qs, ss, ms, heads, clamp_min, eps in corr:
            f.write(struct.pack("=ii", 1, np.dtype(dt).itemsize))
            f.write(struct.pack("=iiidd", len(qs), heads, clamp_min is not None, clamp_min or 0.0, eps))
            for q, s, m in zip(qs, ss, ms):
                f.write(struct.pack("=qqqqi", q.shape[0], q.shape[1], q.shape[2], s.shape[2], m is not None))
            for q, s, m in zip(qs, ss, ms):
                for x in (q, s) if m is None else (q, s, m):
                    f.write(np.ascontiguousarray(x, dtype=dt).tobytes())


def _check_outputs(path: Path, sink, corr) -> int:
    """Compares the driver's outputs with the float64 references; returns the number of cases."""
    buf = memoryview(path.read_bytes())
    pos = 0

    def take(dt, shape):
        nonlocal pos
        count = int(np.prod(shape))
        x = np.frombuffer(buf, dtype=dt, count=count, offset=pos).reshape(shape)
        pos += count * np.dtype(dt).itemsize
        return x

    for name, dt, C, a, b, eps, n_iter, thr in sink:
        (iters,) = struct.unpack_from("=i", buf, pos)
        pos += 4
        B, n, m = C.shape
        plan, f, g = take(dt, (B, n, m)), take(dt, (B, n)), take(dt, (B, m))
        # the reference in float64 on the inputs as the kernel saw them (rounded to dt)
        Cr, ar, br = (np.asarray(x, dtype=dt).astype(np.float64) for x in (C, a, b))
        want = reference.sinkhorn_log(Cr, ar, br, eps=eps, n_iter=n_iter, stop_thr=thr, return_duals=True)
        tol = TOL[dt]
        scale = float(np.abs(Cr).max()) / eps  # |f|, |g| grow with cost / eps
        assert np.isfinite(plan).all() and np.isfinite(f).all() and np.isfinite(g).all(), name
        if thr is not None:  # stopped early, on the reference's criterion (column-marginal L1 error)
            assert 1 < iters < n_iter, (name, iters)
            assert np.abs(plan.sum(-2) - br).sum(-1).max() < thr * 1.01 + 1e-6, name
        else:
            assert iters == n_iter, (name, iters)
        rtol = tol * (10 if scale > 1e4 else 1) * (10 if "wide" in name else 1)
        np.testing.assert_allclose(plan, want[0], rtol=max(rtol, 1e-4) if dt == np.float32 else rtol,
                                   atol=tol * float(want[0].max()), err_msg=name)
        np.testing.assert_allclose(f, want[1], rtol=max(rtol, tol * 10), atol=tol * eps * max(1.0, scale),
                                   err_msg=name)
        # the last update is the f-update: rows match a to rounding
        np.testing.assert_allclose(plan.sum(-1), ar, rtol=1e-4 if dt == np.float32 else 1e-9, err_msg=name)
    for name, dt, qs, ss, ms, heads, clamp_min, eps in corr:
        for q, s, m in zip(qs, ss, ms):
            got = take(dt, (q.shape[0], heads, q.shape[2], s.shape[2]))
            qr, sr = (np.asarray(x, dtype=dt).astype(np.float64) for x in (q, s))
            want = reference.cosine_correlation(qr, sr, heads, clamp_min, m, eps)
            np.testing.assert_allclose(got, want, rtol=TOL[dt], atol=TOL[dt], err_msg=name)
    assert pos == len(buf), "the driver wrote more than the cases' outputs"
    return len(sink) + len(corr)


# ----------------------------------------------------------------------------- builds


def _build(build_dir: Path, toolchain: Path | None = None) -> Path:
    cfg = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DEDGEFSS_KERNELS_ONLY=ON", "-DCMAKE_BUILD_TYPE=Release"]
    if toolchain is not None:
        cfg.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    for cmd in (cfg, ["cmake", "--build", str(build_dir), "--target", "kernel_parity", "-j", "2"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return build_dir / "kernel_parity"


def _run(cmd, cases: Path, out: Path, isa: str | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("EDGEFSS_KERNEL_ISA", None)
    if isa:
        env["EDGEFSS_KERNEL_ISA"] = isa
    res = subprocess.run([*cmd, str(cases), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    sink, corr = _sinkhorn_cases(), _correlation_cases()
    path = tmp_path_factory.mktemp("kernel_cases") / "cases.bin"
    _write_cases(path, sink, corr)
    return path, sink, corr


def _aarch64_missing() -> str | None:
    need = {"aarch64-linux-gnu-g++": "crossbuild-essential-arm64", "qemu-aarch64": "qemu-user",
            "cmake": "cmake"}
    missing = [pkg for tool, pkg in need.items() if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} ({APT_HINT}; .ci/run installs them)"
    return None


@pytest.mark.skipif(_aarch64_missing() is not None, reason=_aarch64_missing() or "")
def test_aarch64_neon_kernels_match_float64_reference_under_qemu(case_file, tmp_path):
    cases, sink, corr = case_file
    exe = _build(tmp_path / "build-aarch64", ROOT / "cmake" / "aarch64-linux-gnu.cmake")
    # the kernels really are NEON code: vector multiply-adds on 4-float registers
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:
        asm = subprocess.run([objdump, "-d", str(exe)], capture_output=True, text=True).stdout
        assert asm.count("fmla\tv") > 20, "no NEON multiply-adds in the aarch64 kernels"
    out = tmp_path / "out-aarch64.bin"
    stdout = _run(["qemu-aarch64", "-L", str(AARCH64_SYSROOT), str(exe)], cases, out)
    assert "kernel variant: neon" in stdout, stdout
    assert _check_outputs(out, sink, corr) == len(sink) + len(corr)
    # a forced variant this build lacks is one clear error, not a silent fallback
    res = subprocess.run(["qemu-aarch64", "-L", str(AARCH64_SYSROOT), str(exe), str(cases), str(out)],
                         capture_output=True, text=True, env={**os.environ, "EDGEFSS_KERNEL_ISA": "avx2"})
    assert res.returncode == 2 and "EDGEFSS_KERNEL_ISA" in res.stderr and "usable: neon" in res.stderr


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("cmake") is None,
                    reason="the x86-64 variants need an x86-64 machine with cmake")
def test_x86_64_every_variant_matches_float64_reference(case_file, tmp_path):
    cases, sink, corr = case_file
    exe = _build(tmp_path / "build-native")
    variants = ["sse2"]
    if _cpu_has_avx2_fma():
        variants.append("avx2")
    for isa in variants:
        out = tmp_path / f"out-{isa}.bin"
        assert f"kernel variant: {isa}" in _run([str(exe)], cases, out, isa)
        _check_outputs(out, sink, corr)
    # without the variable the best variant this CPU runs is picked
    assert f"kernel variant: {variants[-1]}" in _run([str(exe)], cases, tmp_path / "out-auto.bin")


def _cpu_has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split()
    except (OSError, IndexError):
        return False
    return "avx2" in flags and "fma" in flags
