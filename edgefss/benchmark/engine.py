"""The benchmark: torch eager and exported bundles, timed in interleaved rounds until stable.

For every (model, size) group: each bundle is exported (or reused) in its own process, which
reports export time and peak RSS; one worker process per configuration loads its predictor and
warms it up; then rounds go round-robin over the workers (start rotated each round, so load
changes on a shared machine hit every configuration alike) until every configuration's medians
are stable (dropping the last 2 rounds moves them by <= --stable-tol, and the first and second
half of the rounds agree within 10 %) or --max-rounds / the time budget is reached. Each row reports p50/p90/spread, and two checks:
- the first and second half of the rounds are two consecutive runs: their medians must agree
  within 10 % (`--compare PREV.json` also checks an earlier invocation);
- a query never reads slower than its episode (each episode contains a query by construction).
Each timed query also records the process's own CPU time and the share of the CPUs other processes
and the hypervisor (steal) took meanwhile (benchmark/contention.py), so a disagreement says whether
the engine varied or the machine did.
Ratios (×torch) are of medians of the same interleaved rounds.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgefss.benchmark import machine as M
from edgefss.benchmark import report as R
from edgefss.benchmark.contention import explain
from edgefss.benchmark.stats import AGREE_TOL, halves_agree, is_stable, rel_diff, summarize

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "fake")
PRECISIONS = ("fp32", "fp16", "int8")
MODELS = ("tlg", "tlg_vgg16", "cst")
# Used when edgefss.formats (the format table) is not there: what each backend can run.
SUPPORTED = {"torch": {"fp32"}, "onnxruntime": {"fp32", "int8"}, "openvino": {"fp32", "fp16", "int8"},
             "tensorrt": {"fp32", "fp16", "int8"}, "fake": {"fp32", "int8"}}
MODES = {
    # models, sizes, backends (None = all installed), precisions, shots, rounds, budget_s
    "quick": dict(models="tlg", sizes="128", backends="torch,onnxruntime", precisions="fp32", shots="1",
                  warmup=1, min_rounds=3, max_rounds=4, queries=1, budget=240),
    "default": dict(models="tlg,cst", sizes="400", backends=None, precisions="fp32,int8", shots="1,5",
                    warmup=1, min_rounds=6, max_rounds=20, queries=2, budget=3600),
    "full": dict(models="tlg,cst", sizes="224,400", backends=None, precisions="fp32,fp16,int8", shots="1,5",
                 warmup=2, min_rounds=10, max_rounds=40, queries=4, budget=4 * 3600),
}
KSHOT_ROUNDS = 3  # the K-shot support is timed in the first rounds only (it costs K encodes)
# One load/round/finish call; the budget only stops new rounds, it never cuts a call short
# (a heavily loaded machine made 400 px rounds take minutes).
CALL_TIMEOUT_S = 1800.0


def add_arguments(p) -> None:
    """Options shared by `edgefss benchmark` and bench/latency.py."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI smoke: TLG at 128 px, torch + onnxruntime FP32")
    g.add_argument("--full", action="store_true", help="everything installed, 224 and 400 px, more rounds")
    p.add_argument("--models", help=f"comma list of {', '.join(MODELS)} (default tlg,cst)")
    p.add_argument("--backends", help=f"comma list of {', '.join(BACKENDS[:4])} (default: all installed)")
    p.add_argument("--precisions", help="comma list of fp32, fp16, int8 (default fp32,int8; unsupported "
                                        "combinations are skipped)")
    p.add_argument("--sizes", help="comma list of square input sizes (default 400, the models' own size; "
                                   "e.g. --sizes 224)")
    p.add_argument("--shots", help="support set sizes to time set_support with (default 1,5)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: all logical CPUs)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds per configuration")
    p.add_argument("--min-rounds", type=int, default=None)
    p.add_argument("--max-rounds", type=int, default=None)
    p.add_argument("--stable-tol", type=float, default=0.02,
                   help="stop when dropping the last 2 rounds moves every median by at most this (default 0.02)")
    p.add_argument("--queries", type=int, default=None, help="query images used for agreement")
    p.add_argument("--stream-frames", type=int, default=4,
                   help="frames per round through Segmenter.predict_stream, on a second Segmenter with the "
                        "threads split between its two stages (bundle rows; 0 = no stream column)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="time budget; groups not started in time are 'skipped', rounds stop at their share")
    p.add_argument("--ops", default="auto", choices=("auto", "graph", "native", "reference"),
                   help="runtime correlation path (Segmenter.load ops=)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=FILE",
                   help="weights per model (default: random init)")
    p.add_argument("--compare", default=None, help="an earlier latency.json: check the rows agree within 10 %%")
    p.add_argument("--out", default="runs/latency", help="output folder (JSON, CSV, PNG, cached bundles)")


def _list(s, allowed, flag: str) -> list[str]:
    items = [x.strip() for x in str(s).split(",") if x.strip()]
    bad = [x for x in items if allowed is not None and x not in allowed]
    if bad or not items:
        raise SystemExit(f"{flag}: {bad or s!r} not in {allowed}")
    return items


def installed_backends() -> list[str]:
    import importlib.util

    return ["torch"] + [b for b in ("onnxruntime", "openvino", "tensorrt") if importlib.util.find_spec(b)]


def finish_args(a):
    """Fill defaults from the mode; returns `a` (argparse namespace)."""
    mode = "quick" if a.quick else ("full" if a.full else "default")
    d = MODES[mode]
    a.mode = mode
    a.models = _list(a.models or d["models"], MODELS, "--models")
    a.sizes = [int(s) for s in _list(a.sizes or d["sizes"], None, "--sizes")]
    bad = [s for s in a.sizes if s <= 0]
    if bad:
        raise SystemExit(f"--sizes: {bad} are not positive sizes")
    a.backends = _list(a.backends, BACKENDS, "--backends") if a.backends else \
        (_list(d["backends"], BACKENDS, "--backends") if d["backends"] else installed_backends())
    a.precisions = _list(a.precisions or d["precisions"], PRECISIONS, "--precisions")
    a.shots = sorted({int(s) for s in _list(a.shots or d["shots"], None, "--shots")})
    a.threads = a.threads or os.cpu_count() or 1
    for k in ("warmup", "min_rounds", "max_rounds", "queries"):
        if getattr(a, k) is None:
            setattr(a, k, d[k])
    a.max_rounds = max(a.max_rounds, a.min_rounds)
    a.budget_s = d["budget"] if a.budget_s is None else a.budget_s
    a.checkpoints = dict(c.split("=", 1) for c in a.checkpoint)
    return a


def supported(backend: str, precision: str) -> bool:
    """Whether a (backend, precision) row can run here: edgefss.formats.available_rows() (the
    format table, installed engines only) when that module exists, else SUPPORTED."""
    if backend in ("torch", "fake"):
        return precision in SUPPORTED[backend]
    try:
        from edgefss.formats import available_rows
    except ImportError:
        return precision in SUPPORTED[backend]
    return (backend, precision) in available_rows()


def build_plan(args) -> list[tuple]:
    """[(model, backend, precision, size, is_baseline)], grouped by (size, model), the baseline
    first in each group; FP32 bundles before INT8 before FP16."""
    base_be = "fake" if "fake" in args.backends else "torch"
    rank = {"fp32": 0, "int8": 1, "fp16": 2}
    order = {b: i for i, b in enumerate(BACKENDS)}
    plan = []
    for s in args.sizes:
        for m in args.models:
            plan.append((m, base_be, "fp32", s, True))
            rest = [(m, be, p, s, False) for be in args.backends for p in args.precisions
                    if be != "torch" and not (be == base_be and p == "fp32") and supported(be, p)]
            plan += sorted(rest, key=lambda r: (rank[r[2]], order[r[1]]))
    return plan


# ------------------------------------------------------------------------------------ processes
def _env(threads: int) -> dict:
    repo = str(M.REPO)
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Worker:
    """A `python -m edgefss.benchmark.worker` process serving one configuration."""

    def __init__(self, env: dict, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgefss.benchmark.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, bufsize=1)

    def ask(self, req: dict, timeout_s: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return {"status": f"error: worker exited ({self._tail()})"}
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.close()
            return {"status": f"timeout after {timeout_s:.0f}s"}
        line = self.proc.stdout.readline()
        if not line:
            return {"status": f"error: worker exited ({self._tail()})"}
        return json.loads(line)

    def _tail(self) -> str:
        self._log.flush()
        try:
            lines = [ln for ln in self.log_path.read_text().splitlines() if ln.strip()]
        except OSError:
            lines = []
        return (lines or ["no output"])[-1][:200]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def run_export(cfg: dict, env: dict, timeout_s: float) -> dict:
    """Export in a fresh process: {'status', 'export_s', 'export_peak_rss_mb'}."""
    try:
        p = subprocess.run([sys.executable, "-m", "edgefss.benchmark.worker", "--export", json.dumps(cfg)],
                           capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"export timeout after {timeout_s:.0f}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"status": f"export failed: {tail}"}
    res = json.loads(lines[-1])
    if res.get("status") != "ok":
        res["status"] = "export failed: " + res["status"].removeprefix("error: ")
    return res


def bundle_for(row: dict, out: Path, env: dict, timeout_s: float, ckpt) -> dict:
    """Export (or reuse) the row's bundle; returns the fields to add to the row."""
    name = f"{row['model']}_{row['size']}_{row['backend']}_{row['precision']}" + ("" if ckpt is None else "_ckpt")
    path = out / "bundles" / name
    side = out / "bundles" / f"{name}.export.json"
    code = M.source_sha256()
    stale = None
    if (path / "manifest.json").is_file():
        prev = json.loads(side.read_text()) if side.is_file() else {}
        if prev.get("source_sha256") == code:
            return {"bundle": str(path), "bundle_mb": dir_mb(path), "export_cached": True,
                    "export_s": prev.get("export_s"), "export_peak_rss_mb": prev.get("export_peak_rss_mb")}
        # exported by other code (or by a benchmark that did not record it): its timings would not
        # be this code's, so it is exported again
        stale = prev.get("source_sha256", "unrecorded")[:12]
    res = run_export(dict(model=row["model"], backend=row["backend"], precision=row["precision"], size=row["size"],
                          path=str(path), checkpoint=ckpt), env, timeout_s)
    if res.get("status") != "ok":
        return {"status": res["status"]}
    R.write_json(side, {**{k: res[k] for k in ("export_s", "export_peak_rss_mb")}, "source_sha256": code})
    return {"bundle": str(path), "bundle_mb": dir_mb(path), "export_cached": False, "replaced_stale_bundle": stale,
            "export_s": res["export_s"], "export_peak_rss_mb": res["export_peak_rss_mb"]}


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2 ** 20


def agreement(a_path: Path, b_path: Path) -> float | None:
    """Share of query pixels with the same label in two runs' masks."""
    try:
        a, b = np.load(a_path), np.load(b_path)
        pairs = [(a[k], b[k]) for k in a.files if k in b.files]
        if not pairs or any(x.shape != y.shape for x, y in pairs):
            return None
        return float(np.mean([np.mean(x == y) for x, y in pairs]))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------ measuring
def measure_group(rows: list[dict], cfgs: list[dict], args, env: dict, out: Path, deadline: float, log) -> None:
    """Load every row's worker, then interleave rounds until stable; fills the rows in place."""
    live = []
    for row, cfg in zip(rows, cfgs):
        w = Worker(env, out / "logs" / f"{row['model']}_{row['size']}_{row['backend']}_{row['precision']}.log")
        res = w.ask({"op": "load", "cfg": cfg}, CALL_TIMEOUT_S)
        row.update(res)
        if res.get("status") == "ok":
            live.append((row, cfg, w, {k: [] for k in ("support_1shot", "query_first", "episode", "query",
                                                       "encode", "support_kshot", "stream_frame",
                                                       "query_own_cpu", "query_foreign_pct")}))
        else:
            w.close()
    rounds = 0
    while live:
        for i in range(len(live)):
            row, cfg, w, smp = live[(rounds + i) % len(live)]
            if row.get("status") != "ok":
                continue
            res = w.ask({"op": "round", "shots5": rounds < KSHOT_ROUNDS}, CALL_TIMEOUT_S)
            if "status" in res:  # an error or a timeout
                row["status"] = res["status"]
                continue
            for k, v in res.items():
                if v is not None:
                    smp[k].append(v)
            time.sleep(0.02)  # let the last engine's spinning threads go idle before the next one
        rounds += 1
        ok = [x for x in live if x[0].get("status") == "ok"]
        # stable medians, and the two halves of the rounds (two consecutive runs) agreeing
        stable = all(is_stable(s[k], args.stable_tol) and halves_agree(s[k], AGREE_TOL)[0]
                     for _, _, _, s in ok for k in ("query", "episode"))
        if not ok or rounds >= args.max_rounds or (rounds >= args.min_rounds and stable) \
                or time.perf_counter() > deadline:
            break
    for row, cfg, w, smp in live:
        if row.get("status") == "ok":
            fin = w.ask({"op": "finish", "masks_out": cfg["masks_out"]}, CALL_TIMEOUT_S)
            row["peak_rss_mb"] = fin.get("peak_rss_mb")
            if fin.get("stream_peak_rss_mb") is not None:
                row["stream_peak_rss_mb"] = fin["stream_peak_rss_mb"]
            if fin.get("peak_gpu_mib") is not None:
                row["peak_gpu_mib"] = fin["peak_gpu_mib"]
            if fin.get("status") != "ok":
                row["status"] = fin.get("status")
            else:
                summarize_row(row, smp, rounds, args)
        w.close()


def summarize_row(row: dict, smp: dict, rounds: int, args) -> None:
    row["rounds"] = rounds
    row["support_1shot_ms"] = summarize(smp["support_1shot"])
    if smp["support_kshot"]:
        row[f"support_{max(args.shots)}shot_ms"] = summarize(smp["support_kshot"])
    row["query_ms"] = summarize(smp["query"])
    row["query_first_ms"] = summarize(smp["query_first"])
    row["episode_ms"] = summarize(smp["episode"])
    row["encode_ms"] = float(np.median(smp["encode"])) if smp["encode"] else None
    row["fps"] = 1e3 / row["query_ms"]["p50"]
    if smp.get("stream_frame"):
        # frames/s of predict_stream next to the single-query rate, both from the same rounds
        row["stream_frame_ms"] = summarize(smp["stream_frame"])
        row["stream_fps"] = 1e3 / row["stream_frame_ms"]["p50"]
        row["stream_vs_query"] = row["stream_fps"] / row["fps"]
    row["stable"] = is_stable(smp["query"], args.stable_tol) and is_stable(smp["episode"], args.stable_tol)
    checks = {}
    for k in ("query", "episode"):
        agree, d, meds = halves_agree(smp[k], AGREE_TOL)
        checks[k] = {"agree": agree, "diff_pct": 100 * d, "run_p50": meds}
    if smp.get("query_own_cpu"):
        # what each half of the rounds got of the machine: explains a disagreement (contention.explain)
        h = len(smp["query_own_cpu"]) // 2 or 1
        own, fr = smp["query_own_cpu"], smp.get("query_foreign_pct") or []
        row["query_own_cpu_ms"] = summarize(own)
        checks["query"]["own_cpu_p50"] = [float(np.median(own[:h])), float(np.median(own[h:] or own))]
        if len(fr) == len(own):
            row["foreign_cpu_pct"] = float(np.median(fr))
            checks["query"]["foreign_pct"] = [float(np.median(fr[:h])), float(np.median(fr[h:] or fr))]
    row["runs"] = checks
    row["query_le_episode"] = row["query_ms"]["p50"] <= row["episode_ms"]["p50"]
    row["trusted"] = bool(row["query_le_episode"] and all(c["agree"] for c in checks.values()))


def ratios(rows: list[dict]) -> None:
    """×torch of query and episode medians against the baseline of the same (model, size)."""
    base = {(r["model"], r["size"]): r for r in rows if r.get("baseline") and r.get("status") == "ok"}
    for r in rows:
        b = base.get((r["model"], r["size"]))
        if r.get("status") != "ok" or b is None:
            continue
        r["speedup_vs_torch"] = b["query_ms"]["p50"] / r["query_ms"]["p50"]
        r["episode_speedup_vs_torch"] = b["episode_ms"]["p50"] / r["episode_ms"]["p50"]
        for k in ("params_m", "head_params_m", "backbone_gmacs"):
            r.setdefault(k, b.get(k))
        if r.get("backbone_gmacs") and r.get("encode_ms"):
            r["backbone_gflops_s"] = 2 * r["backbone_gmacs"] / (r["encode_ms"] / 1e3)


def compare_runs(rows: list[dict], prev_path: str) -> list[str]:
    """Lines stating whether the rows agree within 10 % with an earlier latency.json."""
    try:
        prev = {(r["model"], r["backend"], r["precision"], r["size"]): r
                for r in json.loads(Path(prev_path).read_text())["rows"] if r.get("status") == "ok"}
    except (OSError, ValueError, KeyError) as exc:
        return [f"compare: could not read {prev_path}: {exc}"]
    lines, bad = [], 0
    for r in rows:
        p = prev.get((r["model"], r["backend"], r["precision"], r["size"]))
        if r.get("status") != "ok" or p is None:
            continue
        for k in ("query_ms", "episode_ms"):
            a, b = p[k].get("p50", p[k].get("median")), r[k]["p50"]
            d = rel_diff(a, b)
            if d > AGREE_TOL:
                bad += 1
                lines.append(f"compare: WARNING {r['model']} {r['backend']} {r['precision']} {r['size']} {k[:-3]} "
                             f"p50 {a:.1f} -> {b:.1f} ms ({100 * d:.0f} % > {100 * AGREE_TOL:.0f} %)")
    lines.append(f"compare with {prev_path}: " + ("all matched rows agree within 10 %" if not bad
                                                  else f"{bad} medians differ by more than 10 %"))
    return lines


def consistency_lines(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = []
    for r in ok:
        name = f"{r['model']} {r['backend']} {r['precision']} {r['size']}"
        for k, c in r["runs"].items():
            if not c["agree"]:
                why = ""
                if "own_cpu_p50" in c:
                    why = "; " + explain(c["run_p50"], c["own_cpu_p50"], c.get("foreign_pct", [None, None]))
                lines.append(f"consistency: WARNING {name}: the two halves of the run disagree on {k} p50 "
                             f"({c['run_p50'][0]:.1f} vs {c['run_p50'][1]:.1f} ms, {c['diff_pct']:.0f} % > 10 %)"
                             + why)
        if not r["query_le_episode"]:
            lines.append(f"consistency: WARNING {name}: query p50 {r['query_ms']['p50']:.1f} ms > episode p50 "
                         f"{r['episode_ms']['p50']:.1f} ms")
        if not r.get("stable"):
            lines.append(f"consistency: note {name}: medians not yet stable after {r['rounds']} rounds "
                         f"(--max-rounds or the time budget stopped it)")
    fr = [r["foreign_cpu_pct"] for r in ok if r.get("foreign_cpu_pct") is not None]
    if fr:
        lines.append(f"contention: other processes and steal took {float(np.median(fr)):.0f} % (row medians up "
                     f"to {max(fr):.0f} %) of the CPUs while queries were timed")
    if ok and not any("WARNING" in ln for ln in lines):
        lines.append(f"consistency: all {len(ok)} rows: first and second half of the rounds agree within 10 %, "
                     "no query slower than its episode")
    return lines


def encoder_split(bundle) -> dict:
    """The INT8 encoder's MACs that run as integer kernels and those that stay float, from the
    bundle's own encoder graph (edgefss.benchmark.flops: QDQ / FakeQuantize-fed Conv and MatMul are
    int8, attention is float). {} when the graph cannot be read here."""
    from edgefss.benchmark.flops import bundle_graph_macs

    try:
        s = bundle_graph_macs(bundle, "encoder")
    except Exception as exc:  # the row still runs; its roofline falls back to the whole encoder
        return {"encoder_split_error": f"{type(exc).__name__}: {str(exc)[:150]}"}
    if s is None:
        return {}
    out = {"encoder_int8_gmacs": s["int8_macs"] / 1e9, "encoder_fp32_gmacs": s["fp32_macs"] / 1e9}
    if s["unknown"]:
        out["encoder_split_unknown_nodes"] = len(s["unknown"])
    return out


def mixed_roofline(r: dict, peaks: dict) -> tuple[float, str] | None:
    """(roofline %, text) of an INT8 row whose encoder MACs are split into int8 and float parts:
    ideal_ms = 2*int8_macs/int8_peak + 2*fp32_macs/fp32_peak, % = 100 * ideal_ms / encode_ms."""
    from edgefss.benchmark.flops import mixed_ideal_ms

    i8, f32 = r.get("encoder_int8_gmacs"), r.get("encoder_fp32_gmacs")
    p8, p32 = M.reference_peak(peaks, "int8"), M.reference_peak(peaks, "fp32")
    if i8 is None or f32 is None or not r.get("encode_ms") or p32 is None or (i8 and p8 is None):
        return None
    ideal = mixed_ideal_ms(f32 * 1e9, i8 * 1e9, p32[1], p8[1] if p8 else None)
    pct = 100 * ideal / r["encode_ms"]
    txt = (f"mixed: {2 * i8:.2f} G int8 ops + {2 * f32:.2f} G fp32 ops; at "
           + (f"{p8[1]:.1f} ({p8[0]}) / " if p8 else "") + f"{p32[1]:.1f} G ops/s ({p32[0]}, {peaks.get('threads')} "
           f"threads) the encoder needs >= {ideal:.1f} ms, it took {r['encode_ms']:.1f} ms = {pct:.0f} %")
    return pct, txt


def roofline_lines(rows: list[dict], peaks: dict) -> list[str]:
    out = []
    for r in rows:
        if r.get("status") != "ok" or not r.get("backbone_gflops_s"):
            continue
        mixed = mixed_roofline(r, peaks) if r["precision"] == "int8" else None
        if mixed is not None:
            r["roofline_pct"] = mixed[0]
            out.append(f"roofline: {r['model']} {r['backend']} {r['precision']} {r['size']}px encoder "
                       f"{2 * r['backbone_gmacs']:.2f} G ops in {r['encode_ms']:.1f} ms; {mixed[1]}")
            continue
        ref = M.reference_peak(peaks, r["precision"])
        txt = (f"{ref[1]:.1f} G ops/s ({ref[0]}, {peaks.get('threads')} threads) = "
               f"{100 * r['backbone_gflops_s'] / ref[1]:.0f} %") if ref else "no measured peak"
        r["roofline_pct"] = 100 * r["backbone_gflops_s"] / ref[1] if ref else None
        out.append(f"roofline: {r['model']} {r['backend']} {r['precision']} {r['size']}px encoder "
                   f"{2 * r['backbone_gmacs']:.2f} G ops in {r['encode_ms']:.1f} ms = {r['backbone_gflops_s']:.1f} "
                   f"G ops/s; peak {txt}")
    return out


def header(m: dict, args) -> str:
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "none"
    pk = m.get("peaks", {})
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in (pk.get("peaks") or {}).items()) or pk.get("error", "?")
    lines = [
        f"machine: {m['cpu']} ({m['arch']}, {m['logical_cpus']} logical CPUs; ISA: {isa})",
        f"threads: {m['threads']}   GPU: {m['gpu'] or 'none'}   load average at start: {m['load_start']}",
        f"peaks (bench/peaks/isa_peaks, {pk.get('threads', '?')} threads, G ops/s): {peaks}",
        f"mode: {args.mode}; warm-up {args.warmup} rounds, {args.min_rounds}..{args.max_rounds} interleaved rounds "
        f"until medians move <= {100 * args.stable_tol:.0f} %; weights: "
        + (", ".join(f"{k}={v}" for k, v in args.checkpoints.items()) or "random init (latency only)"),
    ]
    if m.get("source_sha256"):
        lines.append(f"code: edgefss sources sha256 {m['source_sha256'][:12]} (cached bundles are reused only "
                     "when exported by the same code)")
    if m.get("device"):
        lines.append(f"device: {m['device']}")
    return "\n".join(lines)


def run(args, log=print) -> int:
    """Run the benchmark; 0 when at least one row measured, 1 when every row failed."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = _env(args.threads)
    m = M.cpu_info()
    m.update(threads=args.threads, gpu=M.gpu_info(), load_start=M.load_average(), python=sys.version.split()[0],
             device=M.device_info())
    m["peaks"] = M.isa_peaks(args.threads, M.peaks_binary(out / "peaks_build", log))
    m["source_sha256"] = M.source_sha256()  # the code every figure of this run came from
    log(header(m, args))
    plan = build_plan(args)
    rows = [{"model": mo, "backend": be, "precision": p, "size": s, "threads": args.threads, "baseline": b}
            for mo, be, p, s, b in plan]
    groups = list(dict.fromkeys((r["size"], r["model"]) for r in rows))
    for gi, key in enumerate(groups):
        grows = [r for r in rows if (r["size"], r["model"]) == key]
        left = args.budget_s - (time.perf_counter() - t0)
        if left <= 0:
            for r in grows:
                r["status"] = f"skipped (time budget {args.budget_s:.0f}s)"
            continue
        log(f"[{gi + 1}/{len(groups)}] {key[1]} {key[0]} px: {len(grows)} configurations")
        cfgs, live = [], []
        for r in grows:
            ckpt = args.checkpoints.get(r["model"])
            masks_out = out / "masks" / f"{r['model']}_{r['size']}_{r['backend']}_{r['precision']}.npz"
            masks_out.parent.mkdir(parents=True, exist_ok=True)
            cfg = dict(model=r["model"], backend=r["backend"], precision=r["precision"], size=r["size"],
                       threads=args.threads, warmup=args.warmup, shots=args.shots, queries=args.queries,
                       checkpoint=ckpt, ops=args.ops, masks_out=str(masks_out),
                       stream_frames=getattr(args, "stream_frames", 0))
            if r["backend"] not in ("torch", "fake"):
                r.update(bundle_for(r, out, env, max(600.0, left), ckpt))
                if "bundle" not in r:
                    continue
                cfg["bundle"] = r.pop("bundle")
                if r["precision"] == "int8":
                    r.update(encoder_split(cfg["bundle"]))
            cfgs.append(cfg)
            live.append(r)
        # the group's share of what is left, so a budget cut leaves every group some rounds
        share = (args.budget_s - (time.perf_counter() - t0)) / (len(groups) - gi)
        measure_group(live, cfgs, args, env, out, time.perf_counter() + max(60.0, share), log)
        base = next((r for r in live if r["baseline"] and r.get("status") == "ok"), None)
        for r, cfg in zip(live, cfgs):
            if r.get("status") == "ok" and base is not None:
                bm = next(c for rr, c in zip(live, cfgs) if rr is base)["masks_out"]
                r["agreement"] = 1.0 if r is base else agreement(Path(cfg["masks_out"]), Path(bm))
        ratios(grows)
        log(R.format_table(grows))  # each group as it finishes: a long run shows its progress
        R.write_json(out / "latency.partial.json", {"machine": m, "rows": rows})
    ratios(rows)
    m["load_end"] = M.load_average()
    # a peak is the best the cores can do: measured again at the end, the better try is kept
    # (a run that starts while other processes load the machine would understate it)
    end = M.isa_peaks(args.threads, M.peaks_binary(out / "peaks_build", log))
    if end.get("peaks") and m["peaks"].get("peaks"):
        m["peaks_tries"] = [dict(m["peaks"]["peaks"]), end["peaks"]]
        m["peaks"]["peaks"] = {k: max(v, end["peaks"].get(k, 0.0)) for k, v in m["peaks"]["peaks"].items()}
        log("peaks, best of start and end (G ops/s): " + ", ".join(f"{k} {v:.0f}" for k, v in m["peaks"]["peaks"].items()))
    table = R.format_table(rows)
    log(table)
    log("head correlation/Sinkhorn path per row: " + "; ".join(
        f"{r['model']} {r['backend']} {r['precision']} {r['size']}: {r['ops_path']}" for r in rows if r.get("ops_path")))
    notes = consistency_lines(rows) + roofline_lines(rows, m["peaks"])
    if args.compare:
        notes += compare_runs(rows, args.compare)
    notes.append(f"load average at start {m['load_start']}, at end {m['load_end']} "
                 f"({m['logical_cpus']} logical CPUs): figures under load > 0.5 per CPU are not idle figures")
    for ln in notes:
        log(ln)
    res = {"machine": m, "mode": args.mode, "settings": {k: getattr(args, k) for k in
           ("models", "backends", "precisions", "sizes", "shots", "threads", "warmup", "min_rounds", "max_rounds",
            "stable_tol", "queries", "budget_s", "ops", "stream_frames")},
           "rows": rows, "notes": notes, "seconds": time.perf_counter() - t0, "columns": R.COLUMN_NOTES}
    R.write_json(out / "latency.json", res)
    R.write_csv(out / "latency.csv", rows)
    chart, why = R.write_chart(out / "latency.png", rows, f"{m['cpu']} | {args.threads} threads | {args.mode}")
    log(f"wrote {out / 'latency.json'}, {out / 'latency.csv'}" + (f", {chart}" if chart else f" (no chart: {why})")
        + f" in {res['seconds']:.0f}s")
    if not any(r.get("status") == "ok" for r in rows):
        log("every configuration failed or was skipped")
        return 1
    return 0
