"""`edgefss doctor`: the installed pieces, CPU ISA / GPU / Jetson detection, and the pip lines."""

from __future__ import annotations

import importlib.util
import json

import numpy as np

from edgefss.doctor import collect, format_report, parse_cpuinfo

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni
"""

ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42
processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
"""


def test_parse_cpuinfo_x86_and_arm():
    x = parse_cpuinfo(X86)
    assert x["model"].startswith("Intel(R) Xeon(R) Gold 6338") and x["cores"] == 2
    assert x["isa"]["AVX2"] and x["isa"]["AVX-512"] and x["isa"]["AVX512-VNNI"] and not x["isa"]["NEON"]
    a = parse_cpuinfo(ORIN)
    assert a["cores"] == 2 and a["isa"]["NEON"] and a["isa"]["dotprod"] and a["isa"]["FP16 arith"]
    assert not a["isa"]["AVX2"] and not a["isa"]["SVE"]


def test_collect_reads_a_jetson_tree(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    (tmp_path / "proc/cpuinfo").write_text(ORIN)
    g = tmp_path / "proc/driver/nvidia/gpus/0000:00:00.0"
    g.mkdir(parents=True)
    (g / "information").write_text("Model: \t\t Orin (nvgpu)\nIRQ: 0\n")
    info = collect(root=tmp_path)
    assert info["jetson"].startswith("NVIDIA Jetson Orin NX")
    assert info["cpu"]["isa"]["dotprod"] and info["gpu"][0]["name"] == "Orin (nvgpu)"
    rep = format_report(info)
    assert "jetson: NVIDIA Jetson Orin NX" in rep and "dotprod" in rep and "Orin (nvgpu)" in rep


def test_report_matches_this_machine_and_names_pip_lines(monkeypatch):
    from edgefss.ops import has_native

    info = collect()
    assert info["packages"]["numpy"]["version"] == np.__version__
    for name, e in info["packages"].items():
        assert e["installed"] == (importlib.util.find_spec(name) is not None), name
    assert info["native"]["cpu"] == has_native()
    if info["packages"]["onnxruntime"]["installed"]:
        import onnxruntime

        assert info["packages"]["onnxruntime"]["providers"] == onnxruntime.get_available_providers()

    # pretend openvino and tensorrt are missing: each gets what it enables and its pip line
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in ("openvino", "tensorrt") else real(n, *a))
    info = collect()
    rep = format_report(info)
    assert "pip install 'edgefss[openvino]'" in rep and "pip install tensorrt" in rep
    assert "the openvino backend" in rep and info["backends"]["openvino"].startswith("missing: pip install")


def test_cli_json_is_valid_and_complete(capsys):
    from edgefss.cli import main

    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"python", "packages", "native", "cpu", "gpu", "jetson", "backends"} <= set(info)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out and "cpu:" in out


def test_doctor_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgefss.cli import main\n"
            "assert main(['doctor']) == 0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                       env={**__import__('os').environ, "PYTHONPATH": str(repo)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[x] torch" in r.stdout or "[ ] torch" in r.stdout  # reported from metadata, never imported


class _BrokenExtension:
    """sys.meta_path finder: importing edgefss._C fails as a stale/mis-linked build does."""

    MESSAGE = "libgomp.so.1: cannot open shared object file: No such file or directory"

    def find_spec(self, name, path=None, target=None):
        if name == "edgefss._C":
            raise ImportError(self.MESSAGE)
        return None


def test_native_import_error_reaches_doctor_and_the_native_error(monkeypatch, capsys):
    import sys

    import pytest

    import edgefss
    from edgefss.cli import main
    from edgefss.errors import BackendUnavailableError
    from edgefss.ops import _native

    monkeypatch.delitem(sys.modules, "edgefss._C", raising=False)
    monkeypatch.delattr(edgefss, "_C", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenExtension(), *sys.meta_path])
    monkeypatch.setattr(_native, "_TRIED", False)
    monkeypatch.setattr(_native, "_MOD", None)
    monkeypatch.setattr(_native, "_ERROR", None)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[ ] edgefss._C" in out and _BrokenExtension.MESSAGE in out
    assert main(["doctor", "--json"]) == 0
    assert _BrokenExtension.MESSAGE in json.loads(capsys.readouterr().out)["native"]["import_error"]
    with pytest.raises(BackendUnavailableError, match="cannot open shared object file.*--force-reinstall"):
        _native.native_module(required=True)


def test_doctor_reports_device_versions_and_which_cached_engines_fit(tmp_path, monkeypatch):
    """Issue 16: the report names JetPack/CUDA/TensorRT and says, per cached engine, whether it fits
    this device (same TensorRT version and compute capability) or will be rebuilt on load."""
    from edgefss import devinfo, doctor
    from edgefss.trt_cache import EngineCache, EngineKey

    cache = EngineCache(tmp_path / "trt")
    here = EngineKey("a" * 64, "10.3.0", "8.7", "fp16", "image:1x3x400x400")
    other = EngineKey("b" * 64, "8.6.2", "8.7", "int8", "image:1x3x400x400")
    p_here, p_other = cache.store(here, b"plan-1"), cache.store(other, b"plan-2")
    monkeypatch.setenv("EDGEFSS_TRT_CACHE", str(cache.root))
    monkeypatch.setattr(devinfo, "versions", lambda: {"l4t": "36.4.0", "jetpack": "6.1", "cuda": "12.6",
                                                       "tensorrt": "10.3.0"})
    monkeypatch.setattr(devinfo, "cuda_device_info", lambda device=0: {"compute_capability": "8.7"})
    monkeypatch.setattr(devinfo, "is_jetson", lambda: False)
    info = doctor.collect("/")
    assert info["device"]["jetpack"] == "6.1" and info["device"]["tensorrt"] == "10.3.0"
    fits = {e["plan"]: e["fits"] for e in info["trt_engines"]}
    assert fits == {str(p_here): True, str(p_other): False}
    text = doctor.format_report(info)
    assert "jetpack 6.1" in text and "cuda 12.6" in text and "cached TensorRT engines: 2" in text
    assert f"{p_here.name}: fp16, TensorRT 10.3.0, sm 8.7 (fits)" in text
    assert f"{p_other.name}: int8, TensorRT 8.6.2, sm 8.7 (built for another TensorRT/GPU" in text
