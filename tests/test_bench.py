"""The benchmark engine (edgefss/benchmark, bench/latency.py, `edgefss benchmark`): statistics and
trust rules, per-ISA peaks, outputs without matplotlib, the worker protocol, interleaved rounds
on a fake predictor, the exit status, and the `--quick` smoke on the real models (no thresholds)."""

import csv
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefss.benchmark import engine as E
from edgefss.benchmark import machine as M
from edgefss.benchmark import report as R
from edgefss.benchmark import worker as W
from edgefss.benchmark.stats import halves_agree, is_stable, summarize

REPO = Path(__file__).resolve().parents[1]


def test_summarize_percentiles_and_spread():
    s = summarize(list(range(1, 11)))  # 1..10 ms
    assert s["p50"] == pytest.approx(5.5) and s["median"] == s["p50"]
    assert s["p90"] == pytest.approx(9.1) and s["p10"] == pytest.approx(1.9) and s["n"] == 10
    assert s["spread_pct"] == pytest.approx(100 * (9.1 - 1.9) / 5.5)
    with pytest.raises(ValueError):
        summarize([])


def test_stability_and_halves_rules():
    assert not is_stable([10, 10, 10, 10], 0.02)  # too few rounds to judge
    assert is_stable([10, 11, 10, 10.1, 10, 10.2, 10], 0.02)
    assert not is_stable([10, 10, 10, 20, 20, 20, 20], 0.02)  # the median is still moving
    ok, d, meds = halves_agree([10, 10.5, 10, 10.8, 10.2, 10.4])
    assert ok and d < 0.1 and len(meds) == 2
    bad, d, meds = halves_agree([10, 10, 10, 13, 13, 13])  # load arrived halfway: 30 % apart
    assert not bad and d == pytest.approx(0.3) and meds == [10, 13]


def test_isa_peaks_driver_measures_what_the_cpu_has(tmp_path):
    if M.shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    exe = M.peaks_binary(tmp_path / "peaks", log=lambda *a: None) if not (REPO / "build/peaks/isa_peaks").is_file() \
        else REPO / "build/peaks/isa_peaks"
    assert exe is not None and exe.is_file()
    res = M.isa_peaks(1, exe)
    peaks, isa = res["peaks"], M.cpu_info()["isa"]
    assert ("int8_vnni_avx512" in peaks) == bool(isa.get("AVX512-VNNI"))
    assert ("fp32_fma_avx512" in peaks) == bool(isa.get("AVX-512"))
    if isa.get("AVX2"):
        assert peaks["fp32_fma_avx2"] > 1 and peaks["int8_avx2"] > 1
        name, v = M.reference_peak(res, "int8")
        assert v == max(peaks[k] for k in peaks if k.startswith("int8"))
        assert M.reference_peak(res, "fp32")[0].startswith("fp32")
    assert "error" in M.isa_peaks(1, None)


def _stat(v):
    return summarize([v, v, v * 1.1])


def _row(backend, prec, q, base=False, **kw):
    return {"model": "tlg", "backend": backend, "precision": prec, "size": 128, "status": "ok", "baseline": base,
            "support_1shot_ms": _stat(q / 2), "support_5shot_ms": _stat(q * 2), "query_ms": _stat(q),
            "episode_ms": _stat(q * 1.5), "fps": 1e3 / q, "speedup_vs_torch": 100.0 / q, "trusted": True,
            "agreement": 1.0 if base else 0.99, **kw}


def test_table_csv_json_and_chart_without_matplotlib(tmp_path, monkeypatch):
    rows = [_row("torch", "fp32", 100.0, True), _row("onnxruntime", "int8", 25.0, export_s=12.0,
                                                      export_peak_rss_mb=900.0, trusted=False),
            {"model": "cst", "backend": "openvino", "precision": "fp16", "size": 128, "status": "export failed: X"}]
    lines = R.format_table(rows).splitlines()
    assert lines[0].split(" | ")[0].strip() == "Model" and len(lines) == 5
    assert "4.00" in lines[3] and "900" in lines[3] and lines[3].rstrip().endswith("NO")
    assert "export failed" in lines[4]
    R.write_csv(tmp_path / "r.csv", rows)
    got = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert got[1]["query_ms_p50"] == "25.0" and got[2]["status"] == "export failed: X"
    R.write_json(tmp_path / "r.json", {"rows": rows})
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["backend"] == "onnxruntime"
    if importlib.util.find_spec("matplotlib"):
        png, _ = R.write_chart(tmp_path / "r.png", rows, "t")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    png, why = R.write_chart(tmp_path / "r2.png", rows, "t")
    assert png is None and "matplotlib" in why and not (tmp_path / "r2.png").exists()


def test_agreement_of_saved_masks(tmp_path):
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :2] = 1
    np.savez(tmp_path / "a.npz", a)
    np.savez(tmp_path / "b.npz", b)
    assert E.agreement(tmp_path / "a.npz", tmp_path / "b.npz") == pytest.approx(18 / 20)


def _args(argv):
    import argparse

    p = argparse.ArgumentParser()
    E.add_arguments(p)
    return E.finish_args(p.parse_args(argv))


def test_defaults_are_400px_and_plan_groups_baseline_first():
    a = _args([])
    assert a.sizes == [400] and a.models == ["tlg", "cst"]
    assert _args(["--sizes", "224"]).sizes == [224]
    with pytest.raises(SystemExit):
        _args(["--sizes", "0"])
    args = _args(["--models", "tlg,cst", "--backends", "torch,onnxruntime,openvino",
                  "--precisions", "fp32,fp16,int8", "--sizes", "224"])
    plan = E.build_plan(args)
    assert plan[0] == ("tlg", "torch", "fp32", 224, True)
    assert ("tlg", "onnxruntime", "fp16", 224, False) not in plan  # no FP16 on the ORT CPU provider
    cst = [p for p in plan if p[0] == "cst"]
    assert cst[0][1] == "torch" and plan.index(cst[0]) == len(plan) - len(cst)  # groups are contiguous
    assert plan.index(("tlg", "onnxruntime", "fp32", 224, False)) < plan.index(("tlg", "onnxruntime", "int8", 224, False))


def test_worker_round_episode_contains_its_query():
    r = W.Runner(dict(model="tlg", backend="fake", precision="fp32", size=64, threads=1, warmup=1, shots=[1, 3],
                      queries=2))
    for _ in range(3):
        s = r.round(shots5=True)
        assert s["episode"] >= s["query_first"] and s["episode"] >= s["support_1shot"]
        assert s["support_kshot"] > 0 and s["encode"] is not None


def test_worker_protocol_over_a_pipe(tmp_path):
    cfg = dict(model="tlg", backend="fake", precision="int8", size=64, threads=1, warmup=1, shots=[1],
               queries=2)
    reqs = [{"op": "load", "cfg": cfg}, {"op": "round"}, {"op": "finish", "masks_out": str(tmp_path / "m.npz")}]
    out = io.StringIO()
    W.serve(io.StringIO("".join(json.dumps(q) + "\n" for q in reqs)), out)
    load, rnd, fin = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert load["status"] == "ok" and load["ops_path"].startswith("fake")
    assert rnd["query"] > 0 and "status" not in rnd
    assert fin["status"] == "ok" and fin["peak_rss_mb"] > 10 and len(np.load(tmp_path / "m.npz").files) == 2
    out = io.StringIO()
    W.serve(io.StringIO(json.dumps({"op": "load", "cfg": {**cfg, "backend": "nope", "bundle": "/none"}}) + "\n"), out)
    assert json.loads(out.getvalue())["status"].startswith("error")


def test_consistency_lines_flag_query_slower_than_episode():
    r = _row("onnxruntime", "fp32", 100.0, rounds=6, stable=True, query_le_episode=False,
             runs={"query": {"agree": True, "diff_pct": 1.0, "run_p50": [100, 101]},
                   "episode": {"agree": False, "diff_pct": 30.0, "run_p50": [100, 130]}})
    text = "\n".join(E.consistency_lines([r]))
    assert "query p50" in text and "episode p50" in text and "disagree on episode" in text
    good = {**r, "query_le_episode": True, "runs": {k: {**v, "agree": True} for k, v in r["runs"].items()}}
    assert "agree within 10 %" in E.consistency_lines([good])[-1]


def test_compare_with_an_earlier_run(tmp_path):
    prev = tmp_path / "prev.json"
    R.write_json(prev, {"rows": [_row("torch", "fp32", 100.0, True), _row("onnxruntime", "fp32", 50.0)]})
    lines = E.compare_runs([_row("torch", "fp32", 105.0, True), _row("onnxruntime", "fp32", 80.0)], str(prev))
    assert any("WARNING tlg onnxruntime fp32" in ln for ln in lines)
    assert not any("torch" in ln and "WARNING" in ln for ln in lines)
    assert "differ by more than 10 %" in lines[-1]


def test_driver_end_to_end_on_fake_backend(tmp_path):
    out = tmp_path / "lat"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "latency.py"), "--backends", "fake", "--models", "tlg",
                        "--precisions", "fp32,int8", "--sizes", "64", "--shots", "1,2", "--min-rounds", "3",
                        "--max-rounds", "4", "--out", str(out)], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    for text in ("machine:", "peaks (bench/peaks/isa_peaks", "consistency:", "×torch", "load average at start"):
        assert text in r.stdout, text
    res = json.loads((out / "latency.json").read_text())
    rows = res["rows"]
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert rows[1]["agreement"] < 1.0  # the fake int8 path differs a little on purpose
    assert 3 <= rows[0]["rounds"] <= 4 and rows[0]["query_ms"]["n"] == rows[0]["rounds"]
    assert rows[0]["support_2shot_ms"]["n"] >= 1 and "runs" in rows[0]
    assert (out / "latency.csv").is_file()


def test_cli_exits_nonzero_when_every_row_failed(tmp_path):
    out = tmp_path / "fail"
    r = subprocess.run([sys.executable, "-m", "edgefss", "benchmark", "--backends", "torch", "--models", "tlg",
                        "--sizes", "64", "--checkpoint", f"tlg={tmp_path / 'missing.pt'}", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((out / "latency.json").read_text())["rows"]
    assert rows[0]["status"].startswith("error") and "every configuration failed" in r.stdout


@pytest.mark.slow
def test_quick_smoke_runs_the_real_models(tmp_path):
    out = tmp_path / "q"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "latency.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "latency.json").read_text())["rows"]
    base = rows[0]
    assert base["backend"] == "torch" and base["status"] == "ok", base
    assert base["query_ms"]["p50"] > 0 and base["params_m"] > 1 and base["backbone_gmacs"] > 0
    ort = rows[1]
    assert ort["status"] == "ok" and ort["export_s"] > 0 and ort["export_peak_rss_mb"] > 50, ort


def test_worker_stream_row_on_a_bundle(tmp_path):
    """A bundle row times predict_stream on a second Segmenter (threads split between the stages)
    next to the single query; the table shows its frames/s and its ratio to the query rate."""
    from test_runtime import build_tiny_bundle

    b = build_tiny_bundle(tmp_path / "cst", "cst")
    cfg = dict(model="cst", backend="onnxruntime", precision="fp32", size=32, threads=2, warmup=1, shots=[1],
               queries=2, bundle=str(b), stream_frames=3)
    reqs = [{"op": "load", "cfg": cfg}, {"op": "round"}, {"op": "round"}, {"op": "finish"}]
    out = io.StringIO()
    W.serve(io.StringIO("".join(json.dumps(q) + "\n" for q in reqs)), out)
    load, r1, r2, fin = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert load["status"] == "ok" and load["stream_threads"] == 1 and load["stream_frames"] == 3
    assert r1["stream_frame"] > 0 and r2["stream_frame"] > 0
    assert fin["status"] == "ok" and fin["stream_peak_rss_mb"] >= fin["peak_rss_mb"] > 10
    row = {"model": "cst", "backend": "onnxruntime", "precision": "fp32", "size": 32, "status": "ok"}
    smp = {k: [r1[k], r2[k]] for k in ("support_1shot", "query_first", "episode", "query", "stream_frame")}
    smp.update(encode=[], support_kshot=[])
    E.summarize_row(row, smp, 2, _args(["--shots", "1"]))
    assert row["stream_fps"] == pytest.approx(1e3 / row["stream_frame_ms"]["p50"])
    assert row["stream_vs_query"] == pytest.approx(row["stream_fps"] / row["fps"])
    header, _, line = R.format_table([row]).splitlines()
    cells = [c.strip() for c in line.split("|")]
    assert cells[R.COLUMNS.index("Stream FPS")] == f"{row['stream_fps']:.2f}"
    assert cells[R.COLUMNS.index("×query")] == f"{row['stream_vs_query']:.2f}"
