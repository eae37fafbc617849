"""TensorRT engine lifecycle without TensorRT: cache keys and rebuilds, the builder's settings, the
backend's device/thread handling and release, Segmenter.close(). TensorRT and cuda-python are
replaced by small fakes that record what edgefss asks of them; the real-device test skips here.
"""

from __future__ import annotations

import json
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from edgefss import trt_cache
from edgefss.errors import InputError, StateError
from edgefss.trt_cache import EngineCache, EngineKey

NO_TRT = "TensorRT cannot be installed on this CPU machine"


def _key(**kw) -> EngineKey:
    base = dict(graph_sha256="ab" * 32, trt_version="10.3.0", compute_capability="8.7", precision="fp16",
                profile="support_image:1x3x64x64/1x3x64x64/8x3x64x64")
    base.update(kw)
    return EngineKey(**base)


# ----------------------------------------------------------------------------- cache


def test_each_key_field_changes_the_digest():
    k = _key()
    for field, other in (("graph_sha256", "cd" * 32), ("trt_version", "10.7.0"), ("compute_capability", "9.0"),
                         ("precision", "int8"), ("profile", "")):
        assert _key(**{field: other}).digest() != k.digest(), field
    assert _key().digest() == k.digest()


def test_cache_hit_does_not_build_and_miss_builds_once(tmp_path):
    cache, calls, lines = EngineCache(tmp_path), [], []

    def build():
        calls.append(1)
        return b"engine-1"

    plan, hit = cache.get_or_build(_key(), build, "head.onnx", lines.append)
    assert not hit and plan.read_bytes() == b"engine-1" and len(calls) == 1
    assert json.loads(plan.with_suffix(".json").read_text()) == _key().__dict__
    assert lines[0].startswith("building TensorRT engine for head.onnx (not cached yet)")
    assert lines[1].startswith("built TensorRT engine for head.onnx in ") and " s -> " in lines[1]
    plan2, hit2 = cache.get_or_build(_key(), build, "head.onnx", lines.append)
    assert hit2 and plan2 == plan and len(calls) == 1 and len(lines) == 2
    assert not list(tmp_path.glob("*.tmp-*"))  # temp files renamed into place


def test_a_new_tensorrt_version_rebuilds_and_says_what_changed(tmp_path):
    cache, lines = EngineCache(tmp_path), []
    cache.get_or_build(_key(), lambda: b"old", "head.onnx", lines.append)
    new = _key(trt_version="10.7.0", compute_capability="9.0")
    plan, hit = cache.get_or_build(new, lambda: b"new", "head.onnx", lines.append)
    assert not hit and plan.read_bytes() == b"new"
    assert "trt_version: 10.3.0 -> 10.7.0" in lines[2] and "compute_capability: 8.7 -> 9.0" in lines[2]
    # the old engine stays cached for the old key (a second JetPack image may still use it)
    assert cache.lookup(_key()).read_bytes() == b"old"
    # another graph or precision is not reported as "the same graph"
    assert cache.same_graph(_key(precision="int8")) == []


def test_profile_string_covers_only_dynamic_inputs():
    s = trt_cache.profile_string([("image", (1, 3, 64, 64)), ("support", (-1, 3, 64, 64))])
    assert s == f"support:1x3x64x64/1x3x64x64/{trt_cache.MAX_SUPPORT}x3x64x64"


def test_workspace_default_fits_an_orin_nano_and_env_override_is_checked(monkeypatch):
    monkeypatch.delenv("EDGEFSS_TRT_WORKSPACE_MIB", raising=False)
    assert trt_cache.default_workspace_mib() == 1024 <= 2048  # of 8 GB shared by CPU and GPU
    monkeypatch.setenv("EDGEFSS_TRT_WORKSPACE_MIB", "512")
    assert trt_cache.default_workspace_mib() == 512
    monkeypatch.setenv("EDGEFSS_TRT_WORKSPACE_MIB", "lots")
    with pytest.raises(ValueError, match="EDGEFSS_TRT_WORKSPACE_MIB must be an integer >= 64"):
        trt_cache.default_workspace_mib()


# ----------------------------------------------------------------------------- fake TensorRT


class _Flags:
    INT8, FP16, OBEY_PRECISION_CONSTRAINTS = "INT8", "FP16", "OBEY"


def _fake_trt(built: dict, deserialize=lambda blob: None):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.float32, trt.float16 = "f32", "f16"
    trt.BuilderFlag = _Flags
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WS")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")
    trt.nptype = lambda dt: np.float32

    class Logger:
        WARNING = 1

        def __init__(self, *a):
            pass

    class Tensor:
        def __init__(self, name, shape=(1,), dtype="f16"):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, name, out):
            self.name, self.precision, self.num_outputs, self._out, self.types = name, None, 1, Tensor(out), {}

        def get_output(self, k):
            return self._out

        def set_output_type(self, k, t):
            self.types[k] = t

    class Network:
        def __init__(self):
            self.layers = []
            self.num_inputs = 1

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return Tensor("support", (-1, 3, 8, 8))

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            import onnx

            for n in onnx.load(path).graph.node:
                self.network.layers.append(Layer(n.name, n.output[0]))
            return True

    class Config:
        def __init__(self):
            self.flags, self.pools, self.profiles = set(), {}, []

        def set_memory_pool_limit(self, pool, nbytes):
            self.pools[pool] = nbytes

        def set_flag(self, f):
            self.flags.add(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            built["network"] = Network()
            return built["network"]

        def create_builder_config(self):
            built["config"] = Config()
            return built["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            built["count"] = built.get("count", 0) + 1
            return b"PLAN"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return deserialize(blob)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    return trt


def _tiny_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("support", TensorProto.FLOAT, ["B", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])
    nodes = [helper.make_node("MatMul", ["support", "w"], ["mm"], name="/fc/MatMul"),
             helper.make_node("Softmax", ["mm"], ["sm"], name="/attn/Softmax", axis=-1),
             helper.make_node("Exp", ["sm"], ["y"], name="/sink/Exp")]
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w])), str(path))
    return path


def test_builder_caps_workspace_and_applies_the_fp16_policy(tmp_path, monkeypatch):
    built = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(built))
    monkeypatch.setattr(trt_cache, "device_compute_capability", lambda device=0: "8.7")
    onnx_path = _tiny_onnx(tmp_path / "head.onnx")
    from edgefss.exporters import tensorrt_engine

    lines = []
    info = tensorrt_engine.build_engine(onnx_path, tmp_path / "head.plan", int8=False, fp16=True, workspace_mib=768,
                                        cache_dir=tmp_path / "cache", log=lines.append)
    assert (tmp_path / "head.plan").read_bytes() == b"PLAN" and not info["cache_hit"]
    assert info["key"]["compute_capability"] == "8.7" and info["key"]["precision"] == "fp16"
    assert info["key"]["graph_sha256"] == trt_cache.file_sha256(onnx_path)
    cfg, net = built["config"], built["network"]
    assert cfg.pools == {"WS": 768 << 20}
    assert {"FP16", "OBEY"} <= cfg.flags and "INT8" not in cfg.flags
    pinned = {lay.name: lay.precision for lay in net.layers}
    assert pinned == {"/fc/MatMul": "f32", "/attn/Softmax": "f32", "/sink/Exp": "f32"}  # logits, softmax, exp
    assert any(line.startswith("precision policy: 3 ONNX nodes kept FP32") for line in lines)
    assert cfg.profiles[0].shapes["support"] == ([1, 3, 8, 8], [1, 3, 8, 8], [trt_cache.MAX_SUPPORT, 3, 8, 8])
    # same graph, same device: from the cache, no second build
    info2 = tensorrt_engine.build_engine(onnx_path, tmp_path / "again.plan", int8=False, fp16=True,
                                         cache_dir=tmp_path / "cache", log=lines.append)
    assert info2["cache_hit"] and built["count"] == 1
    # a device of another architecture rebuilds
    monkeypatch.setattr(trt_cache, "device_compute_capability", lambda device=0: "9.0")
    info3 = tensorrt_engine.build_engine(onnx_path, tmp_path / "h100.plan", int8=False, fp16=True,
                                         cache_dir=tmp_path / "cache", log=lines.append)
    assert not info3["cache_hit"] and built["count"] == 2
    assert any("compute_capability: 8.7 -> 9.0" in line for line in lines)


# ----------------------------------------------------------------------------- backend


class _FakeCudart:
    """Records cudaSetDevice per thread and every allocation/free."""

    def __init__(self):
        self.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
        self.live, self.streams, self.device_by_thread, self.next = set(), set(), {}, 100

    def cudaSetDevice(self, i):
        self.device_by_thread[threading.get_ident()] = i
        return (0,)

    def cudaMalloc(self, n):
        self.next += 1
        self.live.add(self.next)
        return 0, self.next

    def cudaFree(self, p):
        self.live.discard(p)
        return (0,)

    def cudaMemcpyAsync(self, *a):
        return (0,)

    def cudaStreamCreate(self):
        self.streams.add(7)
        return 0, 7

    def cudaStreamDestroy(self, s):
        self.streams.discard(s)
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)


class _FakeEngine:
    num_io_tensors = 2

    def __init__(self, cudart):
        self.cudart = cudart

    def get_tensor_name(self, i):
        return ["x", "y"][i]

    def get_tensor_mode(self, n):
        return "IN" if n == "x" else "OUT"

    def get_tensor_dtype(self, n):
        return "f32"

    def create_execution_context(self):
        cudart = self.cudart

        class Ctx:
            def set_input_shape(self, n, s):
                self.shape = s
                return True

            def set_tensor_address(self, n, p):
                pass

            def get_tensor_shape(self, n):
                return self.shape

            def execute_async_v3(self, stream):
                # the engine runs on the device selected in *this* thread
                Ctx.device = cudart.device_by_thread.get(threading.get_ident())
                return True

        return Ctx()


def _backend(monkeypatch, tmp_path, device, deserialize=None, with_onnx=False):
    from edgefss.runtime.backends import tensorrt as be

    cudart = _FakeCudart()
    built = {}
    engine = _FakeEngine(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(built, deserialize or (lambda blob: engine)))
    monkeypatch.setattr(be, "_cudart", lambda: cudart)
    (tmp_path / "head.plan").write_bytes(b"plan from another JetPack")
    if with_onnx:
        _tiny_onnx(tmp_path / "head.onnx")
    return be.TensorRTBackend({"head": tmp_path / "head.plan"}, device=device), cudart, engine


def test_backend_sets_the_device_in_every_running_thread_and_close_frees_everything(tmp_path, monkeypatch):
    b, cudart, _ = _backend(monkeypatch, tmp_path, device="cuda:1")
    out = {}

    def worker():
        out["y"] = b.run("head", {"x": np.ones((2, 4), np.float32)})

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert out["y"]["y"].shape == (2, 4)
    ctx_cls = type(b.engines["head"].context)
    assert ctx_cls.device == 1  # a fresh thread would be on device 0 without the per-run cudaSetDevice
    assert cudart.live and cudart.streams
    b.close()
    assert not cudart.live and not cudart.streams and b.engines["head"].engine is None
    b.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        b.run("head", {"x": np.ones((1, 4), np.float32)})


def test_a_plan_that_does_not_deserialise_is_rebuilt_from_the_onnx_beside_it(tmp_path, monkeypatch, capsys):
    engine_holder = {}

    def deserialize(blob):  # the stale plan fails, the rebuilt one loads
        return engine_holder["engine"] if blob == b"PLAN" else None

    monkeypatch.setattr(trt_cache, "device_compute_capability", lambda device=0: "8.7")
    monkeypatch.setenv("EDGEFSS_TRT_CACHE", str(tmp_path / "cache"))
    from edgefss.runtime.backends import tensorrt as be

    cudart = _FakeCudart()
    engine_holder["engine"] = _FakeEngine(cudart)
    monkeypatch.setattr(be, "_cudart", lambda: cudart)
    built = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(built, deserialize))
    (tmp_path / "head.plan").write_bytes(b"stale")
    with pytest.raises(InputError, match="no ONNX graph beside it"):
        be.TensorRTBackend({"head": tmp_path / "head.plan"})
    _tiny_onnx(tmp_path / "head.onnx")
    b = be.TensorRTBackend({"head": tmp_path / "head.plan"})
    printed = capsys.readouterr().out
    assert "does not load with this TensorRT/GPU; rebuilding from head.onnx" in printed
    assert "building TensorRT engine for head.onnx" in printed and "built TensorRT engine" in printed
    assert built["count"] == 1 and b.engines["head"].engine is engine_holder["engine"]
    b.close()


# ----------------------------------------------------------------------------- Segmenter


def test_segmenter_close_releases_the_backend_and_refuses_later_use(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_runtime import build_tiny_bundle

    from edgefss.runtime import Segmenter

    bundle = build_tiny_bundle(tmp_path / "cst", "cst")
    closed = []
    with Segmenter.load(bundle, backend="onnxruntime") as seg:
        inner = seg.backend
        inner.close = lambda: closed.append(True)
    assert closed == [True]
    with pytest.raises(StateError, match="closed"):
        seg.backend.run("encoder", {})
    seg.close()  # idempotent
    assert closed == [True]


def test_real_tensorrt_engine_builds_and_runs():
    pytest.importorskip("tensorrt", reason=NO_TRT)
    from edgefss.devinfo import cuda_device_info

    if cuda_device_info() is None:
        pytest.skip("TensorRT is installed but no CUDA device is visible")
    pytest.skip("run tests/test_export.py -k tensorrt on the device: it exports, builds and verifies engines")


def test_workspace_option_reaches_only_tensorrt_exports():
    import argparse

    from edgefss.cli import export as cli_export
    from edgefss.exporters.options import resolve

    assert resolve(backend="tensorrt", workspace=512).workspace == 512
    assert resolve(backend="tensorrt").workspace is None  # the builder then uses trt_cache's 1024 MiB
    with pytest.raises(InputError, match="--workspace caps TensorRT's engine build memory"):
        resolve(backend="openvino", workspace=512)
    with pytest.raises(InputError, match="--workspace 10; expected an integer number of MiB >= 64"):
        resolve(backend="tensorrt", workspace=10)
    p = argparse.ArgumentParser()
    cli_export.add_arguments(p)
    assert p.parse_args(["--backend", "tensorrt", "--workspace", "768"]).workspace == 768
