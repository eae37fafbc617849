"""The torch-free parts of edgefss import and run with torch blocked (design.md "Dependency direction").

Each check runs in a fresh interpreter with `sys.modules['torch'] = None`, so any `import torch`
(direct or through a dependency) raises ImportError there, whatever is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TORCH_FREE = [
    "edgefss",
    "edgefss.errors",
    "edgefss.config",
    "edgefss.transforms",
    "edgefss.bundle",
    "edgefss.ops",
    "edgefss.ops.reference",
    "edgefss.runtime",
    "edgefss.runtime.postprocess",
    "edgefss.runtime.visualize",
    "edgefss.runtime.cst",
    "edgefss.runtime.tlg",
    "edgefss.runtime.hotpath",
    "edgefss.runtime.refine",
    "edgefss.runtime.measure_ops",
    "edgefss.runtime.backends.ort",
    "edgefss.runtime.backends.openvino",
    "edgefss.runtime.backends.tensorrt",
    "edgefss.quant",
    "edgefss.quant.ort_int8",
    "edgefss.quant.nncf_int8",
    "edgefss.eval.metrics",
    "edgefss.eval.datasets",
    "edgefss.text.table",
    "edgefss.cli",
    "edgefss.cli.predict",
]

_PRELUDE = """
import sys
sys.modules['torch'] = None  # any `import torch` now raises ImportError
"""


def _run(code: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _PRELUDE + code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    # a missing module fails here too: by design every one of these must exist
    r = _run(
        "import importlib, json\n"
        f"importlib.import_module({module!r})\n"
        "torch_side = ('edgefss.models', 'edgefss.exporters', 'edgefss.train')\n"
        "sub = tuple(t + '.' for t in torch_side)\n"
        "bad = sorted(m for m in sys.modules if m in torch_side or m.startswith(sub))\n"
        "print(json.dumps(bad))\n"
    )
    assert r.returncode == 0, f"importing {module} with torch blocked failed:\n{r.stderr[-3000:]}"
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], f"{module} pulled in torch-side modules"


def test_full_predict_without_torch(tmp_path, davis_pair):
    """Build a tiny bundle, load it, set a support and predict, all with torch blocked."""
    s_img, s_mask, q_img, _, _ = davis_pair
    code = (
        "import json, numpy as np\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from test_runtime import build_tiny_bundle\n"
        "from edgefss.runtime import Segmenter\n"
        "out = {}\n"
        "for model in ('cst', 'tlg'):\n"
        f"    b = build_tiny_bundle({str(tmp_path)!r} + '/' + model, model)\n"
        "    seg = Segmenter.load(b, backend='onnxruntime')\n"
        f"    seg.set_support([{str(s_img)!r}, {str(q_img)!r}], ['dog', 'cat'],\n"
        f"                    masks=[{str(s_mask)!r}, None])\n"
        f"    p = seg.predict({str(q_img)!r})\n"
        "    out[model] = [list(p.mask.shape), p.classes, bool(np.isfinite(p.logits).all())]\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(json.dumps(out))\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    from edgefss.transforms import load_image

    hw = list(load_image(q_img).shape[:2])
    assert res == {"cst": [hw, ["dog", "cat"], True], "tlg": [hw, ["dog", "cat"], True]}
