"""`edgefss serve`: HTTP API + web page over one or more bundles (extra `[serve]`).

    edgefss serve --bundle runs/main_job/tlg_int8                       # http://127.0.0.1:8000
    EDGEFSS_SERVE_TOKEN=... edgefss serve --bundle B --host 0.0.0.0     # a token is required off loopback
    edgefss serve --bundle B --workers 2 --support-dir /srv/supports    # processes share support sets

Safe by default: loopback only, no CORS, bounded uploads/pixels/concurrency (429 when full), and
clients never name server paths (video sources are configured here with --source NAME=SPEC).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgefss.cli._args import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle",
        action="append",
        required=True,
        metavar="[NAME=]DIR",
        help="bundle directory, repeatable; the first is the default; NAME defaults to the folder's",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs a token")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="file holding the bearer token (or set EDGEFSS_SERVE_TOKEN); required off loopback",
    )
    p.add_argument(
        "--support-dir",
        default="runs/serve/supports",
        help="folder of support-set files; share it between workers/replicas",
    )
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the bundles)")
    add_engine_arguments(p, default_help="each bundle's own")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest uploaded image or mask, MiB")
    p.add_argument(
        "--max-video-mb", type=float, default=200.0, help="largest uploaded video (POST /v1/stream), MiB"
    )
    p.add_argument("--max-megapixels", type=float, default=16.0, help="largest image, in decoded megapixels")
    p.add_argument("--max-images", type=int, default=32, help="most images in one support set")
    p.add_argument("--max-inflight", type=int, default=2, help="predictions running at once per process")
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting for a slot; beyond it: 429")
    p.add_argument("--max-streams", type=int, default=2, help="MJPEG streams at once per process")
    p.add_argument("--max-stream-frames", type=int, default=10_000, help="most frames one stream sends")
    p.add_argument("--max-supports", type=int, default=10_000, help="most support-set files in --support-dir")
    p.add_argument(
        "--cache-supports", type=int, default=16, help="encoded support sets kept per bundle and process"
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a camera index or video/folder that GET /v1/stream?source=NAME may read",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser requests from this origin (CORS is off without it)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level",
    )


def _pairs(values, flag: str, default_name) -> dict:
    from edgefss.errors import InputError

    out = {}
    for v in values:
        name, sep, spec = v.partition("=")
        if not sep:
            name, spec = default_name(v), v
        if not name or not spec:
            raise InputError(f"{flag}: {v!r}; expected NAME=VALUE")
        if name in out:
            raise InputError(f"{flag}: the name {name!r} is given twice; use NAME=... to tell them apart")
        out[name] = spec
    return out


def config_from_args(args):
    from edgefss.errors import InputError
    from edgefss.serve.config import ENV_TOKEN, ServeConfig

    token = os.environ.get(ENV_TOKEN) or None
    if args.token_file:
        path = Path(args.token_file)
        if not path.is_file():
            raise InputError(f"--token-file: '{path}' not found")
        token = path.read_text().strip() or None
        if token is None:
            raise InputError(f"--token-file: '{path}' is empty")
    if args.workers < 1:
        raise InputError(f"--workers: {args.workers}; expected >= 1")
    mb = 1024 * 1024
    return ServeConfig(
        bundles={
            k: str(Path(v).resolve())
            for k, v in _pairs(args.bundle, "--bundle", lambda v: Path(v).resolve().name).items()
        },
        host=args.host,
        port=args.port,
        support_dir=str(Path(args.support_dir).resolve()),
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        max_upload_bytes=int(args.max_upload_mb * mb),
        max_video_bytes=int(args.max_video_mb * mb),
        max_pixels=int(args.max_megapixels * 1e6),
        max_images=args.max_images,
        max_inflight=args.max_inflight,
        max_queue=args.max_queue,
        max_streams=args.max_streams,
        max_stream_frames=args.max_stream_frames,
        cache_supports=args.cache_supports,
        max_supports=args.max_supports,
        cors_origins=list(args.cors_origin),
        sources={
            k: v if v.isdigit() else str(Path(v).resolve())
            for k, v in _pairs(args.source, "--source", lambda v: None).items()
        },
        token=token,
    ).check()


def run(args) -> int:
    from edgefss.serve import require_serve

    cfg = config_from_args(args)
    require_serve()
    import uvicorn

    from edgefss.serve.config import ENV_CONFIG, ENV_TOKEN

    os.environ[ENV_CONFIG] = cfg.to_env()  # worker processes rebuild the config from here
    if cfg.token:
        os.environ[ENV_TOKEN] = cfg.token
    where = f"http://{'[' + cfg.host + ']' if ':' in cfg.host else cfg.host}:{cfg.port}"
    print(
        f"edgefss serve: {', '.join(f'{k}={v}' for k, v in cfg.bundles.items())} on {where} "
        f"(page {where}/, API {where}/docs), support sets in {cfg.support_dir}, "
        f"{'bearer token required' if cfg.token else 'no token (loopback)'}",
        flush=True,
    )
    uvicorn.run(
        "edgefss.serve.app:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=args.workers,
        log_level=args.log_level,
        server_header=False,
    )
    return 0
