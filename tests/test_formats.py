"""The format table (edgefss.formats) drives the CLI, option validation, backend selection and the
README backend table: each consumer is checked against it here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgefss import formats
from edgefss.errors import InputError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_backend_table() -> str:
    text = README.read_text()
    m = re.search(r"^\| backend \| precision \|.*?(?=\n\n)", text, re.S | re.M)
    assert m, "README.md has no backend table starting '| backend | precision |'"
    return m.group(0)


def test_readme_backend_table_is_the_format_table():
    assert _readme_backend_table() == formats.readme_table(), (
        "README.md's backend table disagrees with edgefss/formats.py; paste formats.readme_table() into it")


def test_readme_table_rows_follow_the_table():
    rows = [ln for ln in _readme_backend_table().splitlines()[2:]]
    got = {(re.search(r"`(\w+)`", r).group(1), r.split("|")[2].strip().lower()) for r in rows}
    assert got == {(f.backend, f.precision) for f in formats.FORMATS}
    # the discrepancy this table replaced: onnxruntime has no FP16 row, so the README cannot claim one
    assert ("onnxruntime", "fp16") not in got


def test_every_format_is_accepted_and_nothing_else():
    from edgefss.exporters.options import resolve

    for b in formats.BACKENDS:
        for p in formats.PRECISIONS:
            kw = {"backend": b, "int8": p == "int8", "fp16": p == "fp16"}
            if (b, p) in {(f.backend, f.precision) for f in formats.FORMATS}:
                o = resolve(**kw)
                assert (o.backend, o.precision) == (b, p)
                assert o.default_out().endswith(f"_{b}_{p}")
            else:
                with pytest.raises(InputError, match=f"--{p} is not supported with --backend {b}"):
                    resolve(**kw)


@pytest.mark.parametrize("f", formats.FORMATS, ids=lambda f: f"{f.backend}-{f.precision}")
def test_options_outside_a_format_are_refused(f):
    from dataclasses import fields

    from edgefss.exporters.options import ExportOptions, resolve

    base = {"backend": f.backend, "int8": f.precision == "int8", "fp16": f.precision == "fp16"}
    probe = {"calib_episodes": 3, "gate_episodes": 3, "agreement": 0.9, "force": True, "strict": True,
             "shots": 2, "sensitivity": False, "target_isa": "avx2"}
    for name, value in probe.items():
        assert name in {x.name for x in fields(ExportOptions)}
        if name in f.options:
            resolve(**base, **{name: value})
        else:
            with pytest.raises(InputError, match="has no meaning for"):
                resolve(**base, **{name: value})
    # only gated formats take the accuracy-gate options
    assert ("force" in f.options) == ("gate_episodes" in f.options) == f.gated


def test_cli_choices_come_from_the_table():
    import argparse

    from edgefss.cli.export import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    backend = next(a for a in p._actions if a.dest == "backend")
    assert tuple(backend.choices) == formats.BACKENDS
    fp16 = next(a for a in p._actions if a.dest == "fp16")
    assert all(f.backend in fp16.help for f in formats.FORMATS if f.precision == "fp16")
    assert "onnxruntime" not in fp16.help
    assert {a.dest for a in p._actions} >= {"strict", "force"}


def test_no_message_advises_a_flag_that_does_not_exist():
    import argparse

    from edgefss.cli.export import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {s for a in p._actions for s in a.option_strings}
    root = Path(formats.__file__).resolve().parent
    for path in list(root.rglob("*.py")):
        for flag in re.findall(r"edgefss export[^`\"']*", path.read_text()):
            for used in re.findall(r"--[a-z][a-z0-9-]+", flag):
                assert used in flags, f"{path.name}: '{flag}' advises {used}, which `edgefss export` lacks"


def test_available_rows_are_table_rows_with_their_packages():
    import importlib.util

    rows = formats.available_rows()
    assert rows and all(formats.get(b, p) for b, p in rows)
    assert ("onnxruntime", "fp32") in rows  # a base dependency
    for b, p in rows:
        assert importlib.util.find_spec(b) is not None
    has_trt = importlib.util.find_spec("tensorrt") is not None
    assert any(b == "tensorrt" for b, _ in rows) == has_trt


def test_runtime_opens_each_format_with_its_engine_settings(tmp_path):
    """The backend a bundle opens with gets its format's devices and engine settings."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgefss.runtime.session import open_graphs

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "g.onnx"))
    be = open_graphs("onnxruntime", "int8", {"g": tmp_path / "g.onnx"})
    assert be.device == "cpu"  # the INT8 row lists only the CPU
    with pytest.raises(InputError, match="runs on \\['cpu'\\]"):
        open_graphs("onnxruntime", "int8", {"g": tmp_path / "g.onnx"}, device="cuda")
    if importlib_find("openvino"):
        for prec, hint in (("fp32", "f32"), ("int8", "f32")):
            ov = open_graphs("openvino", prec, {"g": tmp_path / "g.onnx"})
            assert ov.config == formats.get("openvino", prec).engine_config == {"INFERENCE_PRECISION_HINT": hint}
            assert "float32" in str(ov.compiled["g"].get_property("INFERENCE_PRECISION_HINT"))


def importlib_find(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None
