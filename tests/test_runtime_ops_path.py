"""Segmenter.load(ops=...): the CST correlation in edgefss.ops + the learner graph vs the head graph.

The bundle (tests/tiny_cst_corr.py) computes the correlation inside its `head` graph with plain
ONNX ops, an implementation independent of `edgefss.ops.cosine_correlation`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefss.errors import BackendUnavailableError, InputError
from tiny_cst_corr import build_corr_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corr_bundle(tmp_path_factory):
    return build_corr_bundle(tmp_path_factory.mktemp("corr") / "cst")


@pytest.fixture(scope="module")
def davis(shared_data):
    """Four DAVIS frames of two sequences (paths) and the first frame's mask."""
    d = shared_data / "davis2016_val_subset"
    sw = sorted((d / "blackswan" / "images").iterdir())
    cm = sorted((d / "camel" / "images").iterdir())
    mask = sorted((d / "camel" / "masks").iterdir())[0]
    return {"swan": sw, "camel": cm, "camel_mask0": mask}


class CountingBackend:
    """Backend proxy that counts runs per graph."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, {}
        self.device = getattr(inner, "device", "cpu")

    def run(self, graph, feeds):
        self.calls[graph] = self.calls.get(graph, 0) + 1
        return self.inner.run(graph, feeds)


def _episode(seg, davis):
    # 2 ways, 3 shots in all, one caller-given mask: exercises ordering and masking on every path
    imgs = [davis["swan"][0], davis["camel"][0], davis["swan"][2]]
    seg.set_support(imgs, ["swan", "camel", "swan"], masks=[None, davis["camel_mask0"], None])
    return seg.predict(davis["swan"][5])


def test_native_and_reference_paths_match_the_head_graph(corr_bundle, davis):
    from edgefss.ops import has_native
    from edgefss.runtime import Segmenter

    if not has_native():
        pytest.skip("edgefss._C not built")
    preds, calls = {}, {}
    for ops in ("graph", "native", "reference"):
        seg = Segmenter.load(corr_bundle, ops=ops)
        assert seg.ops_path == ops
        seg.backend = cnt = CountingBackend(seg.backend)
        preds[ops] = _episode(seg, davis)
        calls[ops] = cnt.calls
        assert preds[ops].ops_path == ops
    g, n, r = preds["graph"], preds["native"], preds["reference"]
    # the graph path never touches the learner, the split paths never the head graph
    assert calls["graph"] == {"encoder": 4, "head": 1}
    assert calls["native"] == calls["reference"] == {"encoder": 4, "learner": 1}
    assert "corr" not in g.timings and n.timings["corr"] > 0 and r.timings["corr"] > 0
    assert np.abs(g.logits).max() > 1.0  # the comparison below is not between near-zero maps
    np.testing.assert_allclose(n.logits, g.logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(r.logits, n.logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(n.probs, g.probs, atol=1e-5)
    clear = np.abs(np.asarray(g.fg_prob).max(axis=0) - 0.5) > 1e-3
    assert np.array_equal(n.mask[clear], g.mask[clear])


def test_native_path_keeps_head_batch_chunking(corr_bundle, davis):
    from edgefss.runtime import Segmenter

    seg = Segmenter.load(corr_bundle, ops="reference")  # same code path as native, no extension needed
    imgs = davis["swan"][:3] + davis["camel"][:2]
    names = ["swan"] * 3 + ["camel"] * 2
    seg.set_support(imgs, names)
    whole = seg.predict(davis["camel"][6])
    seg.max_batch = 2
    seg.set_support(imgs, names)
    seg.backend = cnt = CountingBackend(seg.backend)
    chunked = seg.predict(davis["camel"][6])
    assert cnt.calls["learner"] == 3  # 5 supports in chunks of <= 2
    np.testing.assert_allclose(chunked.logits, whole.logits, rtol=1e-6, atol=1e-6)


def test_runtime_correlation_is_the_models():
    """runtime.cst.correlation == edgefss.models.cst.CST.correlation (channel order head*12+layer, eps)."""
    torch = pytest.importorskip("torch")
    from edgefss.models import cst as model_cst
    from edgefss.models.dino_vit import HEADS
    from edgefss.runtime import cst as rt_cst

    assert rt_cst.CORR_HEADS == HEADS and rt_cst.CORR_EPS == model_cst.CORR_EPS
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 12, 384, 20)).astype(np.float32)
    s = rng.standard_normal((3, 12, 384, 7)).astype(np.float32)
    s[1, :, :, 2] = 0.0  # a zero token: the eps convention decides its value
    with torch.no_grad():
        # correlation() uses no module state: call it without building the ViT
        ref = model_cst.CST.correlation(None, torch.from_numpy(q), torch.from_numpy(s)).numpy()
    for impl in ("reference",) + (("native",) if rt_cst_has_native() else ()):
        got = rt_cst.correlation(q, s, impl)
        assert got.shape == (3, 72, 20, 7) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)


def rt_cst_has_native() -> bool:
    from edgefss.ops import has_native

    return has_native()


def test_ops_choice_errors_and_auto(corr_bundle, tmp_path, monkeypatch):
    from edgefss.runtime import Segmenter, hotpath
    from test_runtime import build_tiny_bundle

    for bad in ("fast", "", None, "NATIVE"):
        with pytest.raises(InputError, match="ops"):
            Segmenter.load(corr_bundle, ops=bad)
    plain = build_tiny_bundle(tmp_path / "plain", "cst")  # no learner graph
    tlg = build_tiny_bundle(tmp_path / "tlg", "tlg")
    for b in (plain, tlg):
        for ops in ("native", "reference"):
            with pytest.raises(InputError, match="learner"):
                Segmenter.load(b, ops=ops)
        assert Segmenter.load(b, ops="auto").ops_path == "graph"
    # the table holds the faster path of the recorded measurement, for every row
    for key, f in hotpath.AUTO_FIGURES.items():
        assert hotpath.AUTO[key] == ("native" if f["native_head_ms"] < f["graph_head_ms"] else "graph"), key
    assert hotpath.AUTO_FIGURES[("onnxruntime", "cpu")]["graph_head_ms"] < \
        hotpath.AUTO_FIGURES[("onnxruntime", "cpu")]["native_head_ms"]  # measured: the head graph wins
    assert Segmenter.load(corr_bundle).ops_path == "graph"  # "auto" is the default
    # auto follows the table: where it says native, native runs when the extension is there
    monkeypatch.setitem(hotpath.AUTO, ("onnxruntime", "cpu"), "native")
    assert Segmenter.load(corr_bundle, backend="onnxruntime", device="cpu").ops_path == \
        ("native" if rt_cst_has_native() else "graph")
    monkeypatch.setenv("EDGEFSS_FORCE_REFERENCE", "1")
    assert Segmenter.load(corr_bundle, backend="onnxruntime", device="cpu").ops_path == \
        ("reference" if rt_cst_has_native() else "graph")
    monkeypatch.delenv("EDGEFSS_FORCE_REFERENCE")
    # a quantised bundle's gated graph is `head`: auto never swaps in the FP32 learner
    man = json.loads((corr_bundle / "manifest.json").read_text())
    seg = Segmenter.load(corr_bundle, ops="graph")
    assert hotpath.resolve_ops("auto", seg.adapter, {**man, "precision": "int8"}, seg.backend, corr_bundle) == "graph"


def _run_blocked(code: str, block=("torch",)) -> subprocess.CompletedProcess:
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_torch_blocked_and_missing_extension(corr_bundle, davis):
    """Torch blocked: every path runs. Extension blocked too: auto -> graph, native -> the
    reinstall hint of edgefss.ops, reference still works."""
    q, s = str(davis["swan"][5]), str(davis["swan"][0])
    code = (
        "import json, numpy as np\n"
        "from edgefss.runtime import Segmenter\n"
        "from edgefss.errors import BackendUnavailableError\n"
        "out = {}\n"
        "for ops in ('auto', 'graph', 'reference', 'native'):\n"
        "    try:\n"
        f"        seg = Segmenter.load({str(corr_bundle)!r}, ops=ops)\n"
        "    except BackendUnavailableError as e:\n"
        "        out[ops] = 'unavailable: ' + str(e); continue\n"
        f"    seg.set_support([{s!r}], ['swan'])\n"
        f"    out[ops] = [seg.ops_path, seg.predict({q!r}).logits.tolist()]\n"
        "print(json.dumps(out))\n"
    )
    for block in (("torch",), ("torch", "edgefss._C")):
        r = _run_blocked(code, block)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        graph = np.array(out["graph"][1])
        np.testing.assert_allclose(np.array(out["reference"][1]), graph, atol=1e-4)
        if "edgefss._C" in block:
            assert out["auto"][0] == "graph"
            assert "pip install --force-reinstall --no-deps ." in out["native"]
        elif rt_cst_has_native():
            assert out["native"][0] == "native"
            np.testing.assert_allclose(np.array(out["native"][1]), graph, atol=1e-4)
    # in this process the error is the ops module's own
    if not rt_cst_has_native():
        from edgefss.runtime import Segmenter

        with pytest.raises(BackendUnavailableError, match="reinstall"):
            Segmenter.load(corr_bundle, ops="native")
