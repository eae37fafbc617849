"""Per-sample contention accounting (edgefss/benchmark/contention.py): a slow benchmark sample is
attributed to the engine (its own CPU time moved) or to the machine (other processes / steal); and
a cached bundle is reused only when the same code exported it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefss.benchmark import engine as E
from edgefss.benchmark.contention import Window, explain, share_pct

linux = pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc/stat (Linux)")


def test_own_cpu_counts_this_process_and_not_sleep():
    w = Window()
    t = time.process_time()
    while time.process_time() - t < 0.3:  # busy for 0.3 s of CPU, however loaded the machine is
        pass
    time.sleep(0.3)  # idle: wall only
    d = w.close()
    assert d["wall_ms"] >= 600
    assert 300 <= d["own_cpu_ms"] <= 450, d


@linux
def test_another_process_busy_during_the_window_shows_as_other_cpu():
    w = Window()
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.8: pass"],
                   check=True)
    d = w.close()
    # the child spun 0.8 s of CPU while this process waited (interpreter start-up comes on top)
    assert d["other_cpu_ms"] >= 600 and d["own_cpu_ms"] < 200, d
    assert share_pct(d, cpus=1) >= 50


def test_explain_names_contention_or_the_engine():
    outside = explain([100, 140], [190, 192], [2.0, 30.0])
    assert "contention from outside" in outside and "2 % vs 30 %" in outside
    inside = explain([100, 140], [190, 260], [2.0, 3.0])
    assert "not contention from outside" in inside and "190 vs 260 ms" in inside
    assert explain([100, 140], [190, 192], [None, None]) == "own CPU time 190 vs 192 ms"


def test_consistency_warning_carries_the_explanation():
    r = {"model": "tlg", "backend": "onnxruntime", "precision": "int8", "size": 400, "status": "ok", "rounds": 8,
         "stable": True, "query_le_episode": True, "query_ms": {"p50": 120.0}, "episode_ms": {"p50": 200.0},
         "runs": {"query": {"agree": False, "diff_pct": 37.0, "run_p50": [100.0, 137.0],
                            "own_cpu_p50": [199.0, 201.0], "foreign_pct": [1.0, 40.0]},
                  "episode": {"agree": True, "diff_pct": 1.0, "run_p50": [200.0, 202.0]}}}
    text = "\n".join(E.consistency_lines([r]))
    assert "disagree on query" in text and "contention from outside the engine" in text
    assert "contention:" not in text  # no per-sample shares recorded for this row
    text = "\n".join(E.consistency_lines([{**r, "foreign_cpu_pct": 12.4}]))
    assert "took 12 % (row medians up to 12 %) of the CPUs" in text


def test_summarize_row_splits_own_cpu_and_foreign_share_by_half():
    smp = {"support_1shot": [5.0] * 6, "query_first": [10.0] * 6, "episode": [15.0] * 6,
           "query": [10.0, 10.0, 10.0, 14.0, 14.0, 14.0], "encode": [], "support_kshot": [],
           "query_own_cpu": [20.0] * 6, "query_foreign_pct": [0.0, 0.0, 0.0, 40.0, 40.0, 40.0]}
    row = {}
    args = E.finish_args(E_parser().parse_args(["--shots", "1"]))
    E.summarize_row(row, smp, 6, args)
    q = row["runs"]["query"]
    assert not q["agree"] and q["own_cpu_p50"] == [20.0, 20.0] and q["foreign_pct"] == [0.0, 40.0]
    assert row["query_own_cpu_ms"]["p50"] == 20.0 and row["foreign_cpu_pct"] == 20.0


def E_parser():
    import argparse

    p = argparse.ArgumentParser()
    E.add_arguments(p)
    return p


def test_cached_bundle_is_reused_only_when_the_same_code_exported_it(tmp_path, monkeypatch):
    from edgefss.benchmark import machine as M

    calls = []

    def fake_export(cfg, env, timeout_s):
        calls.append(cfg["path"])
        Path(cfg["path"]).mkdir(parents=True, exist_ok=True)
        (Path(cfg["path"]) / "manifest.json").write_text("{}")
        return {"status": "ok", "export_s": 1.0, "export_peak_rss_mb": 10.0}

    monkeypatch.setattr(E, "run_export", fake_export)
    row = {"model": "tlg", "size": 64, "backend": "onnxruntime", "precision": "fp32"}
    first = E.bundle_for(row, tmp_path, {}, 60, None)
    again = E.bundle_for(row, tmp_path, {}, 60, None)
    assert len(calls) == 1 and not first["export_cached"] and again["export_cached"]
    monkeypatch.setattr(M, "source_sha256", lambda: "f" * 64)  # the code changed since
    changed = E.bundle_for(row, tmp_path, {}, 60, None)
    assert len(calls) == 2 and not changed["export_cached"] and changed["replaced_stale_bundle"]


def test_source_hash_follows_the_package_sources(tmp_path):
    from edgefss.benchmark import machine as M

    pkg = tmp_path / "edgefss"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "tlg.py").write_text("x = 1\n")
    (pkg / "notes.txt").write_text("not code")
    a = M.source_sha256(pkg)
    (pkg / "notes.txt").write_text("changed, still not code")
    assert M.source_sha256(pkg) == a
    (pkg / "models" / "tlg.py").write_text("x = 2\n")
    assert M.source_sha256(pkg) != a
    assert len(M.source_sha256()) == 64


def test_variance_probe_finds_the_slow_stretches():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("variance_probe", Path(__file__).resolve().parents[1] / "bench" / "variance_probe.py")
    vp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vp)
    q = np.array([100, 101, 99, 140, 139, 100, 100, 135, 100, 150], float)
    assert vp._slow_stretches(q, 0.10) == [[3, 4], [7, 7], [9, 9]]
    assert vp._slow_stretches(np.full(5, 100.0), 0.10) == []
