"""MJPEG endpoints: segment a video or camera frame by frame with a stored support set.

GET /v1/stream?source=NAME reads a source the server was started with (`--source NAME=SPEC`,
a camera index or a video/folder path on the server); clients choose a name, never a path.
POST /v1/stream takes an uploaded video file (written to a server-made temp file, deleted when
the stream ends). Both answer `multipart/x-mixed-replace; boundary=frame`: one JPEG overlay per
frame, with the frame's classes/scores in an `X-Edgefss-Result` part header (JSON).
"""

import json
import os
import tempfile
from typing import Optional

from fastapi import File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from edgefss.errors import InputError
from edgefss.serve import render
from edgefss.serve.uploads import HTTPFieldError

BOUNDARY = "frame"


def _frames(srv, engine, sid, source, max_frames: int, alpha: float, cleanup=None):
    """Yield MJPEG parts; `source` is an open edgefss.app.stream FrameSource (closed at the end)."""
    seg = srv.segmenter(engine, sid)

    def gen():
        try:
            n = 0
            for _, rgb in source:
                if n >= max_frames:
                    break
                pred = seg.predict(rgb)
                jpg = render.jpeg_bytes(render.overlay_image(rgb, pred, alpha))
                res = {
                    "frame": n,
                    "classes": pred.classes,
                    "scores": [round(float(p), 4) for p in pred.probs],
                    "present": [bool(x) for x in pred.present],
                    "ms": pred.timings.get("total"),
                }
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n"
                    f"X-Edgefss-Result: {json.dumps(res, ensure_ascii=True)}\r\n\r\n"
                ).encode()
                srv.metrics.frames.inc()
                yield head + jpg + b"\r\n"
                n += 1
            yield f"--{BOUNDARY}--\r\n".encode()
        finally:
            source.close()
            if cleanup is not None:
                cleanup()

    return gen()


def _open(spec, what: str):
    from edgefss.app.stream import open_source

    try:
        return open_source(spec)
    except InputError as exc:
        raise HTTPFieldError(422, what, f"{what}: {exc}") from None


def add_stream_routes(app, srv) -> None:
    cfg = srv.cfg
    media = f"multipart/x-mixed-replace; boundary={BOUNDARY}"

    def frames_limit(max_frames: Optional[int]) -> int:
        if max_frames is None:
            return cfg.max_stream_frames
        if max_frames < 1:
            raise HTTPFieldError(422, "max_frames", f"max_frames: {max_frames}; expected >= 1")
        return min(max_frames, cfg.max_stream_frames)

    @app.get("/v1/stream", summary="MJPEG of a server-side source (by name) segmented with a support set")
    def stream_source(
        source: str = Query(..., description="a name from GET /v1/sources"),
        support_id: str = Query(...),
        bundle: Optional[str] = Query(None),
        max_frames: Optional[int] = Query(None),
        alpha: float = Query(0.5),
    ):
        if source not in cfg.sources:
            raise HTTPFieldError(
                404,
                "source",
                f"source: unknown name {source[:80]!r}; the server has "
                f"{sorted(cfg.sources)} (paths are never read from requests)",
            )
        engine = srv.engine(bundle)
        limit = frames_limit(max_frames)
        seg_check = srv.segmenter(engine, support_id)  # noqa: F841 — 404 before opening the source
        src = _open(cfg.sources[source], "source")
        return StreamingResponse(_frames(srv, engine, support_id, src, limit, alpha), media_type=media)

    @app.post("/v1/stream", summary="MJPEG of an uploaded video segmented with a support set")
    def stream_upload(
        video: UploadFile = File(..., description="a video file (mp4, avi, ...)"),
        support_id: str = Form(...),
        bundle: Optional[str] = Form(None),
        max_frames: Optional[int] = Form(None),
        alpha: float = Form(0.5),
    ):
        engine = srv.engine(bundle)
        limit = frames_limit(max_frames)
        srv.segmenter(engine, support_id)
        suffix = os.path.splitext(video.filename or "")[1].lower()
        if not suffix.isascii() or not suffix[1:].isalnum() or len(suffix) > 6:
            suffix = ".mp4"
        fd, tmp = tempfile.mkstemp(prefix="edgefss-serve-", suffix=suffix)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := video.file.read(1 << 20):
                    size += len(chunk)
                    if size > cfg.max_video_bytes:
                        raise HTTPFieldError(
                            413,
                            "video",
                            f"video: more than {cfg.max_video_bytes} bytes (server flag --max-video-mb)",
                        )
                    f.write(chunk)
            if size == 0:
                raise HTTPFieldError(422, "video", "video: the upload is empty (0 bytes)")
            src = _open(tmp, "video")
        except BaseException:
            os.unlink(tmp)
            raise
        return StreamingResponse(
            _frames(
                srv,
                engine,
                support_id,
                src,
                limit,
                alpha,
                cleanup=lambda: os.path.exists(tmp) and os.unlink(tmp),
            ),
            media_type=media,
        )
