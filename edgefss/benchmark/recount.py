"""Recompute an earlier benchmark run's encoder rooflines with the current MAC counter, without
timing anything again.

    python -m edgefss.benchmark.recount runs/latency400/latency.json [runs/latency400_int8/latency.json ...]

For each row of each latency.json: the encoder MACs of the row's own bundle (BUNDLES/<model>_<size>_
<backend>_<precision>, next to the JSON; OpenVINO IR through flops.ov_model_macs), torch rows the
FP32 ONNX Runtime bundle of the same model and size; then the engine's roofline lines (INT8 rows:
the mixed roofline) against that run's own measured peaks and encode_ms. Prints one line per row;
changes no file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefss.benchmark import engine as E
from edgefss.benchmark.flops import bundle_graph_macs


def encoder_macs(bundle: Path) -> dict | None:
    """macs_summary of a bundle's encoder (ONNX or OpenVINO IR); None when the bundle is missing."""
    if not (bundle / "manifest.json").is_file():
        return None
    return bundle_graph_macs(bundle, "encoder")


def recount(latency_json) -> list[str]:
    """Roofline lines of every measured row of one latency.json, with recounted MACs."""
    p = Path(latency_json)
    res = json.loads(p.read_text())
    bundles = p.parent / "bundles"
    rows = [dict(r) for r in res["rows"] if r.get("status") == "ok" and r.get("encode_ms")]
    out = []
    for r in rows:
        be = "onnxruntime" if r["backend"] == "torch" else r["backend"]
        prec = "fp32" if r["backend"] == "torch" else r["precision"]
        s = encoder_macs(bundles / f"{r['model']}_{r['size']}_{be}_{prec}")
        if s is None:
            out.append(f"recount: {r['model']} {r['backend']} {r['precision']} {r['size']}: no bundle to count")
            continue
        old = r.get("backbone_gmacs")
        r["backbone_gmacs"] = (s["fp32_macs"] + s["int8_macs"]) / 1e9
        r["backbone_gflops_s"] = 2 * r["backbone_gmacs"] / (r["encode_ms"] / 1e3)
        if r["precision"] == "int8":
            r["encoder_int8_gmacs"], r["encoder_fp32_gmacs"] = s["int8_macs"] / 1e9, s["fp32_macs"] / 1e9
        out.append(f"recount: {r['model']} {r['backend']} {r['precision']} {r['size']}: encoder "
                   f"{r['backbone_gmacs']:.2f} GMACs (the run recorded {old:.2f})" if old else "")
    out += E.roofline_lines(rows, res["machine"]["peaks"])
    return [ln for ln in out if ln]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    for f in argv:
        print(f"# {f}")
        for ln in recount(f):
            print(ln)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
