"""Load test of `edgefss serve`: N concurrent loopback clients for a bounded time.

    python bench/serve_load.py                                  # tiny S=32 test bundle (server overhead)
    python bench/serve_load.py --bundle runs/main_job/tlg_int8 --clients 4 --seconds 30 \
        --support dog.jpg:dog --query query.jpg

Starts `python -m edgefss serve` on 127.0.0.1 (a free port, a temporary support folder), creates
one support set, then runs N client threads (one keep-alive connection each) that POST
/v1/predict in a loop until the time is up. Prints requests/s, p50/p99 latency, errors (any
non-200 answer or failed connection; the run fails when there are any) and the server's RSS
(the process and its workers) after warm-up and at the end. --max-queue defaults to N, so the
clients never see 429 unless you lower it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _image_bytes(spec: str | None, seed: int, size=(240, 320)) -> bytes:
    import cv2

    if spec:
        return Path(spec).read_bytes()
    r = np.random.default_rng(seed)
    img = (r.random((*size, 3)) * 140).astype(np.uint8)
    img[size[0] // 4 : size[0] // 2, size[1] // 5 : size[1] // 2] += 100
    return cv2.imencode(".jpg", img)[1].tobytes()


def _rss_mb(pid: int) -> float:
    import psutil

    p = psutil.Process(pid)
    procs = [p] + p.children(recursive=True)
    return sum(q.memory_info().rss for q in procs if q.is_running()) / 2**20


def _in_process_ms(bundle: str, args, sup: bytes, query: bytes, threads) -> float:
    """Median Segmenter.predict time on the same query in this process (no HTTP): the baseline."""
    import cv2

    from edgefss.runtime import Segmenter

    def rgb(b):
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()

    seg = Segmenter.load(bundle, threads=threads)
    seg.set_support([rgb(sup)], [(args.support or "").partition(":")[2] or "dog"])
    q = rgb(query)
    seg.predict(q)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        seg.predict(q)
        times.append(time.perf_counter() - t)
    del seg
    return float(np.median(times) * 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--bundle", default=None, help="bundle directory (default: build the tiny S=32 test bundle)"
    )
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the timed run")
    ap.add_argument(
        "--support", default=None, metavar="IMG:CLASS", help="support image (default: synthetic 320x240)"
    )
    ap.add_argument(
        "--query", default=None, metavar="IMG", help="query image (default: synthetic 320x240 JPEG)"
    )
    ap.add_argument("--include", default="", help="ask for 'mask' and/or 'overlay' PNGs in each answer")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--threads", type=int, default=None, help="engine threads per worker")
    ap.add_argument("--max-inflight", type=int, default=2, help="server --max-inflight")
    ap.add_argument("--max-queue", type=int, default=None, help="server --max-queue (default: --clients)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        ap.error("--clients and --seconds must be positive")

    from edgefss.serve.client import HTTPError
    from edgefss.serve.process import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix="edgefss-serve-load-"))
    bundle = args.bundle
    if bundle is None:
        from test_runtime import build_tiny_bundle

        bundle = str(build_tiny_bundle(tmp / "tiny_cst", "cst"))
    baseline_ms = _in_process_ms(
        bundle,
        args,
        sup_bytes := _image_bytes((args.support or "").partition(":")[0] or None, 1),
        query := _image_bytes(args.query, 2),
        args.threads,
    )
    server_args = [
        "--bundle",
        bundle,
        "--support-dir",
        tmp / "supports",
        "--workers",
        args.workers,
        "--max-inflight",
        args.max_inflight,
        "--max-queue",
        args.clients if args.max_queue is None else args.max_queue,
    ]
    if args.threads:
        server_args += ["--threads", args.threads]
    srv = ServerProcess(server_args, tmp / "server.log", timeout=300)
    try:
        c = srv.client()
        cls = (args.support or "").partition(":")[2]
        sid = c.create_support([sup_bytes], [cls or "dog"])["id"]
        for _ in range(3):  # warm-up: first predictions allocate the engines' buffers
            c.predict(query, sid, include=args.include)
        rss_before = _rss_mb(srv.proc.pid)

        lat, errors, lock = [], {}, threading.Lock()
        start = threading.Barrier(args.clients + 1)

        def client_loop(deadline_box):
            cl = srv.client()
            start.wait()
            mine, bad = [], {}
            while time.perf_counter() < deadline_box[0]:
                t = time.perf_counter()
                try:
                    cl.predict(query, sid, include=args.include)
                    mine.append(time.perf_counter() - t)
                except HTTPError as e:
                    bad[str(e.status)] = bad.get(str(e.status), 0) + 1
                except OSError as e:
                    bad[type(e).__name__] = bad.get(type(e).__name__, 0) + 1
                    cl.close()
            cl.close()
            with lock:
                lat.extend(mine)
                for k, v in bad.items():
                    errors[k] = errors.get(k, 0) + v

        box = [0.0]
        threads = [threading.Thread(target=client_loop, args=(box,)) for _ in range(args.clients)]
        for t in threads:
            t.start()
        box[0] = time.perf_counter() + args.seconds
        t0 = time.perf_counter()
        start.wait()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss_after = _rss_mb(srv.proc.pid)
    finally:
        srv.stop()

    a = np.asarray(lat) * 1e3
    n_err = sum(errors.values())
    res = {
        "bundle": bundle,
        "clients": args.clients,
        "seconds": round(wall, 2),
        "workers": args.workers,
        "max_inflight": args.max_inflight,
        "requests": int(a.size),
        "requests_per_s": round(a.size / wall, 2),
        "p50_ms": round(float(np.percentile(a, 50)), 2) if a.size else None,
        "p99_ms": round(float(np.percentile(a, 99)), 2) if a.size else None,
        "errors": n_err,
        "errors_by_kind": errors,
        "server_rss_mb_before": round(rss_before, 1),
        "server_rss_mb_after": round(rss_after, 1),
        "in_process_predict_ms": round(baseline_ms, 2),
        "cpus": os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"edgefss serve load: {args.clients} clients x {wall:.1f} s on 127.0.0.1, bundle {bundle}, "
        f"{args.workers} worker(s), --max-inflight {args.max_inflight}; {os.cpu_count()} CPUs, "
        f"load average {res['loadavg_1min']}"
    )
    print(f"  requests   {res['requests']}  ({res['requests_per_s']} req/s)")
    print(f"  latency    p50 {res['p50_ms']} ms   p99 {res['p99_ms']} ms")
    print(
        "  baseline   Segmenter.predict in-process, same query, one at a time: "
        f"median {res['in_process_predict_ms']} ms"
    )
    print(f"  errors     {n_err}  {errors if errors else ''}")
    print(
        f"  server RSS {res['server_rss_mb_before']} MB after warm-up -> "
        f"{res['server_rss_mb_after']} MB at the end"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 1 if n_err or not a.size else 0


if __name__ == "__main__":
    sys.exit(main())
