"""Peak memory and time of one export, with the resident set size around each phase.

    PYTHONPATH=. python bench/export_memory.py --model cst --int8 [--backend onnxruntime] [--imgsz 400] --out DIR

Runs `edgefss.exporters.export` in this process (defaults otherwise: 24 calibration episodes,
8 gate episodes) and prints one line per phase boundary and export log line:
`[elapsed s, RSS now, peak RSS since the previous line]`, sampled every 0.1 s by a thread (psutil),
then the process's peak RSS (getrusage ru_maxrss, what `/usr/bin/time -v` reports) and the wall
time. The phases are the exporter's own functions (load_graphs, verify_graphs, calibration_feeds,
quantize_onnx or quantize_ov, _stage_backend, _gate), wrapped for the run. Random weights unless --checkpoint;
the gate is then usually "uninformative" and the bundle is written (add --force for a failed gate).
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after PYTHONPATH: a checkout given there is the one measured


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cst", choices=("tlg", "cst"))
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    p.add_argument("--int8", action="store_true")
    p.add_argument("--imgsz", type=int, default=400)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--force", action="store_true", help="write the bundle even if the gate fails")
    p.add_argument("--out", required=True, help="bundle directory (must not exist)")
    a = p.parse_args(argv)

    import psutil

    import edgefss.exporters.core as core
    import edgefss.quant.nncf_int8 as nncf_int8
    import edgefss.quant.ort_int8 as ort_int8
    from edgefss.exporters import export

    proc, t0, peak = psutil.Process(), time.perf_counter(), [0]

    def sample():
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()

    def log(*msg):
        rss = proc.memory_info().rss
        print(f"[{time.perf_counter() - t0:7.1f} s, RSS {rss / 2**20:6.0f} MiB, peak since last "
              f"{max(peak[0], rss) / 2**20:6.0f} MiB]", *msg, flush=True)
        peak[0] = rss

    def wrap(mod, name):
        f = getattr(mod, name, None)
        if f is None:
            return

        @functools.wraps(f)
        def g(*args, **kw):
            log(f">> {name}")
            try:
                return f(*args, **kw)
            finally:
                log(f"<< {name}")

        setattr(mod, name, g)

    for n in ("load_graphs", "verify_graphs", "calibration_feeds", "_stage_backend", "_gate"):
        wrap(core, n)
    wrap(ort_int8, "quantize_onnx")  # core imports it when it quantizes: the wrapped one
    wrap(nncf_int8, "quantize_ov")  # the OpenVINO INT8 path, once per graph
    log("start")
    export(a.model, checkpoint=a.checkpoint, backend=a.backend, int8=a.int8 or None, imgsz=a.imgsz, out=a.out,
           force=a.force or None, log=log)
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"export {a.model} {a.backend} {'int8' if a.int8 else 'fp32'} {a.imgsz}px: wall {wall:.0f} s, "
          f"peak RSS {peak_mib:.0f} MiB ({peak_mib / 1024:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
