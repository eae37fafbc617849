"""Benchmark outputs: plain-text table, CSV, JSON (atomic writes) and an optional PNG chart."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

COLUMNS = ["Model", "Backend", "Precision", "Size", "Support ms", "Query p50", "Query p90", "Episode p50",
           "Spread %", "FPS", "Stream FPS", "×query", "×torch", "Agreement", "Export s", "Export MB",
           "Runs agree"]
COLUMN_NOTES = (
    "Support ms = set_support p50 (1-shot / K-shot); Query = predict with the support cached (p50 / p90 ms); "
    "Episode = set_support(1 shot) + the predict after it (p50 ms); Spread % = (p90 - p10) / p50 of the query; "
    "FPS = 1000 / Query p50; Stream FPS = frames/s of Segmenter.predict_stream (schedule 'auto': on a CPU, "
    "CPUs // (threads // 2) frames in flight, each a full predict on engines with half the threads; on a GPU the "
    "encoder of frame t+1 beside the head of frame t), ×query = Stream FPS / FPS; ×torch = torch-eager-FP32 query p50 / this query p50 (same interleaved rounds); "
    "Agreement = share of query pixels with the baseline's label; Export s / MB = export wall time and peak RSS "
    "of the export process (cached: from the run that made the bundle); Runs agree = the first and second half "
    "of the rounds agree within 10 % on query and episode p50, and no query is slower than its episode.")


def _fmt(v, nd=1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _p50(st) -> float | None:
    return None if not st else st.get("p50", st.get("median"))


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Rows (dicts from the engine) -> table cells in COLUMNS order."""
    out = []
    for r in rows:
        exp = [_fmt(r.get("export_s"), 0) + (" (cached)" if r.get("export_cached") else ""),
               _fmt(r.get("export_peak_rss_mb"), 0)] if r.get("backend") not in ("torch", "fake") else ["", ""]
        if r.get("status") != "ok":
            out.append([r["model"], r["backend"], r["precision"], str(r["size"]), r.get("status", "?")]
                       + [""] * 9 + exp + [""])
            continue
        k = next((key for key in r if key.startswith("support_") and key.endswith("shot_ms")
                  and key != "support_1shot_ms"), None)
        q = r["query_ms"]
        out.append([
            r["model"], r["backend"], r["precision"], str(r["size"]),
            f"{_fmt(_p50(r['support_1shot_ms']))} / {_fmt(_p50(r.get(k))) if k else '-'}",
            _fmt(_p50(q)), _fmt(q.get("p90")), _fmt(_p50(r["episode_ms"])), _fmt(q.get("spread_pct"), 0),
            _fmt(r.get("fps"), 2), _fmt(r.get("stream_fps"), 2), _fmt(r.get("stream_vs_query"), 2),
            _fmt(r.get("speedup_vs_torch"), 2), _fmt(r.get("agreement"), 4), *exp,
            {True: "yes", False: "NO"}.get(r.get("trusted"), "-"),
        ])
    return out


def format_table(rows: list[dict]) -> str:
    """Plain-text table (see COLUMN_NOTES)."""
    cells = [COLUMNS] + table_rows(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def atomic_write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def write_csv(path: Path, rows: list[dict]) -> Path:
    """One line per configuration with the flattened statistics (nested dicts as a_b columns)."""
    flat = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    if isinstance(vv, dict):
                        for k3, v3 in vv.items():
                            d[f"{k}_{kk}_{k3}"] = v3
                    else:
                        d[f"{k}_{kk}"] = vv
            elif not isinstance(v, (list, tuple)):
                d[k] = v
        flat.append(d)
    keys = list(dict.fromkeys(k for d in flat for k in d))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(flat)
    return atomic_write(path, buf.getvalue().encode())


def write_chart(path: Path, rows: list[dict], title: str) -> tuple[Path | None, str]:
    """Bar chart of query and episode p50 per configuration (PNG).

    Returns:
        (path, "") or (None, why): no row measured, or matplotlib missing (the table and
        JSON do not need it).
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None, "no row measured"
    try:
        import matplotlib
    except ImportError:
        return None, "matplotlib not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']} {r['backend']} {r['precision']} {r['size']}" for r in ok]
    q = [_p50(r["query_ms"]) for r in ok]
    e = [_p50(r["episode_ms"]) for r in ok]
    y = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ok) + 1.5))
    ax.barh(y + 0.2, e, 0.4, label="episode (support 1-shot + query)")
    ax.barh(y - 0.2, q, 0.4, label="query (cached support)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("p50 latency, ms (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue()), ""
