"""bench/latency.py: timing statistics, outputs, the harness on a fake predictor, and the
`--quick` smoke on the real models in a subprocess (no thresholds)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import _harness as H  # noqa: E402
import latency  # noqa: E402


def test_stats_ms_median_and_p90():
    s = H.stats_ms([0.001 * v for v in range(1, 11)])  # 1..10 ms
    assert s["median"] == pytest.approx(5.5) and s["p90"] == pytest.approx(9.1) and s["n"] == 10
    with pytest.raises(ValueError):
        H.stats_ms([])


def test_time_calls_counts_only_timed_calls():
    calls = []
    s = H.time_calls(lambda: calls.append(1), warmup=2, repeat=3)
    assert len(calls) == 5 and s["n"] == 3


def test_machine_facts_and_matmul_peak():
    info = H.cpu_info()
    assert info["cpu"] and set(info["isa"]) == {"AVX2", "AVX-512", "VNNI", "AMX", "NEON"}
    assert 0.01 < H.matmul_peak_gflops(n=128, repeat=2) < 1e5
    assert H.peak_rss_mb() > 10


def _row(backend, prec, ep, base=False):
    st = {"median": ep, "p90": ep * 1.1, "min": ep, "n": 3}
    return {"model": "tlg", "backend": backend, "precision": prec, "size": 128, "status": "ok", "baseline": base,
            "support_1shot_ms": st, "support_5shot_ms": st, "query_ms": st, "episode_ms": st, "fps": 1e3 / ep,
            "speedup_vs_torch": 100.0 / ep, "agreement": 1.0 if base else 0.99}


def test_table_csv_json_png(tmp_path):
    rows = [_row("torch", "fp32", 100.0, True), _row("onnxruntime", "int8", 25.0),
            {"model": "cst", "backend": "openvino", "precision": "fp16", "size": 128, "status": "export failed: X"}]
    table = H.format_table(rows)
    lines = table.splitlines()
    assert lines[0].split(" | ")[0].strip() == "Model" and len(lines) == 5
    assert "4.00" in lines[3] and "export failed" in lines[4]
    H.write_csv(tmp_path / "r.csv", rows)
    got = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert got[1]["episode_ms_median"] == "25.0" and got[2]["status"] == "export failed: X"
    H.write_json(tmp_path / "r.json", {"rows": rows})
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["backend"] == "onnxruntime"
    png = H.write_chart(tmp_path / "r.png", rows, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_agreement_of_saved_masks(tmp_path):
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :2] = 1
    np.savez(tmp_path / "a.npz", a)
    np.savez(tmp_path / "b.npz", b)
    assert latency.agreement(tmp_path / "a.npz", tmp_path / "b.npz") == pytest.approx(18 / 20)


def test_plan_puts_baselines_first_and_skips_unsupported():
    args = latency.parse_args(["--models", "tlg,cst", "--backends", "torch,onnxruntime,openvino",
                               "--precisions", "fp32,fp16,int8", "--sizes", "224"])
    plan = latency.build_plan(args)
    assert [p[:3] for p in plan[:2]] == [("tlg", "torch", "fp32"), ("cst", "torch", "fp32")]
    assert ("tlg", "onnxruntime", "fp16", 224, False) not in plan  # no FP16 on the ORT CPU provider
    assert plan.index(("cst", "onnxruntime", "fp32", 224, False)) < plan.index(("tlg", "onnxruntime", "int8", 224, False))


def test_worker_measures_fake_predictor(tmp_path):
    cfg = dict(model="tlg", backend="fake", precision="fp32", size=64, threads=1, warmup=1, repeat=3,
               shots=[1, 5], queries=2, masks_out=str(tmp_path / "m.npz"))
    res = latency.worker(cfg)
    assert res["status"] == "ok"
    assert res["support_5shot_ms"]["median"] > 0 and res["query_ms"]["n"] == 3
    assert res["fps"] == pytest.approx(1e3 / res["query_ms"]["median"])
    assert len(np.load(tmp_path / "m.npz").files) == 2


def test_driver_end_to_end_on_fake_backend(tmp_path):
    out = tmp_path / "lat"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "latency.py"), "--backends", "fake", "--models", "tlg",
                        "--precisions", "fp32,int8", "--sizes", "64", "--shots", "1", "--repeat", "2",
                        "--out", str(out)], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "machine:" in r.stdout and "head correlation/Sinkhorn path per row" in r.stdout and "×torch" in r.stdout
    res = json.loads((out / "latency.json").read_text())
    assert [row["status"] for row in res["rows"]] == ["ok", "ok"]
    assert res["rows"][1]["agreement"] < 1.0  # the fake int8 path differs a little on purpose
    assert (out / "latency.csv").is_file() and (out / "latency.png").is_file()


@pytest.mark.slow
def test_quick_smoke_runs_the_real_models(tmp_path):
    out = tmp_path / "q"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "latency.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=480, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "latency.json").read_text())["rows"]
    base = rows[0]
    assert base["backend"] == "torch" and base["status"] == "ok", base
    assert base["query_ms"]["median"] > 0 and base["params_m"] > 1 and base["backbone_gmacs"] > 0
