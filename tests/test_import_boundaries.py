"""The torch-free parts of edgefss import and run with torch blocked (design.md "Dependency direction").

Each check runs in a fresh interpreter with `sys.modules['torch'] = None`, so any `import torch`
(direct or through a dependency) raises ImportError there, whatever is installed.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What may need torch: whole packages, and single modules inside torch-free packages. Every other
# module of edgefss (found by walking the package, so a new module is covered without being listed)
# must import with torch blocked and without pulling in a torch-side module.
TORCH_SIDE_PACKAGES = ("edgefss.models", "edgefss.exporters", "edgefss.train", "edgefss.teacher")
TORCH_SIDE_MODULES = ("edgefss.ops.torch_ops", "edgefss.text.clip_text", "edgefss.cam.generator",
                      "edgefss.cam.gradient")

_PRELUDE = """
import sys
sys.modules['torch'] = None  # any `import torch` now raises ImportError
"""


def _run(code: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", _PRELUDE + code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _torch_side(name: str) -> bool:
    return name in TORCH_SIDE_MODULES or any(name == p or name.startswith(p + ".")
                                             for p in TORCH_SIDE_PACKAGES)


def torch_free_modules() -> list[str]:
    """Every module of the edgefss package except the torch side and `__main__` (which runs the CLI)."""
    import edgefss

    # the walk imports packages to list their children; the torch-side ones are not walked into
    names = ["edgefss"] + [m.name for m in pkgutil.walk_packages(edgefss.__path__, "edgefss.",
                                                                 onerror=lambda n: None)
                           if not m.name.endswith("__main__")]
    return sorted(n for n in names if not _torch_side(n))


def test_the_walk_finds_the_torch_free_modules():
    mods = torch_free_modules()
    for m in ("edgefss.runtime.segmenter", "edgefss.runtime.backends.tensorrt", "edgefss.quant.feeds",
              "edgefss.ops.reference", "edgefss.imageio", "edgefss.transforms", "edgefss.index_csv",
              "edgefss.eval.predictors", "edgefss.cli.predict", "edgefss.doctor"):
        assert m in mods, m
    assert not [m for m in mods if m.startswith(("edgefss.models", "edgefss.exporters", "edgefss.train"))]
    import importlib.util

    for m in TORCH_SIDE_MODULES:  # the exceptions name modules that exist
        assert importlib.util.find_spec(m) is not None, m


def test_torch_free_modules_import_without_torch():
    # one interpreter imports them in turn and records, per module, an import error or the
    # torch-side modules that appeared in sys.modules while it was imported
    r = _run(
        "import importlib, json\n"
        f"side_pkgs, side_mods = {TORCH_SIDE_PACKAGES!r}, {TORCH_SIDE_MODULES!r}\n"
        "def side(n):\n"
        "    return n in side_mods or any(n == p or n.startswith(p + '.') for p in side_pkgs)\n"
        "bad = {}\n"
        "for m in sys.argv[1:]:\n"
        "    before = {k for k in sys.modules if side(k)}\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad[m] = f'{type(e).__name__}: {e}'\n"
        "        continue\n"
        "    pulled = sorted(k for k in sys.modules if side(k) and k not in before)\n"
        "    if pulled:\n"
        "        bad[m] = 'pulled in torch-side ' + ', '.join(pulled)\n"
        "print(json.dumps(bad))\n",
        *torch_free_modules(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    bad = json.loads(r.stdout.strip().splitlines()[-1])
    assert bad == {}, "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_cli_verb_that_fails_to_import_is_an_error(monkeypatch):
    from edgefss import cli

    monkeypatch.setitem(cli.VERBS, "broken", ("edgefss.cli.no_such_verb", "a verb whose module is missing"))
    with pytest.raises(ModuleNotFoundError, match="edgefss.cli.no_such_verb"):
        cli.build_parser()


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
