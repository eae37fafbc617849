"""The FastAPI app of `edgefss serve`: routes over bundles, the support store and the limits.

    create_app(ServeConfig(...))   # an app object (tests, embedding)
    app_from_env()                 # uvicorn factory for `--workers N` (config in EDGEFSS_SERVE_CONFIG)

Routes (OpenAPI at /docs): GET / (the page), /health, /metrics, /v1/bundles, /v1/sources;
POST/GET /v1/supports, GET/DELETE /v1/supports/{id}; POST /v1/predict (JSON, optionally with the
mask/overlay PNGs in base64), /v1/predict/mask.png, /v1/predict/overlay.png; GET /v1/stream
(a server-side source by name) and POST /v1/stream (an uploaded video), both MJPEG.
"""

import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import List, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from edgefss._version import __version__
from edgefss.errors import InputError, StateError
from edgefss.serve import render
from edgefss.serve.config import ServeConfig
from edgefss.serve.engines import BundleEngine
from edgefss.serve.guard import Guard
from edgefss.serve.limits import Admission, ComputePool
from edgefss.serve.metrics import Metrics
from edgefss.serve.store import SupportStore
from edgefss.serve.uploads import HTTPFieldError, decode_image, decode_mask

STATIC = Path(__file__).resolve().parent / "static"
MAX_CLASS_NAME = 64
FORM_SLACK = 64 * 1024  # multipart headers and small fields around the files


def _err(status: int, field, message: str, headers=None) -> HTTPFieldError:
    return HTTPFieldError(status, field, message, headers)


class Server:
    """State of one server process: engines (bundles), the store, limits and metrics."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.store = SupportStore(cfg.support_dir, cfg.max_supports)
        self.engines: dict = {}
        self.compute = ComputePool(cfg.max_inflight)
        self.pools = {
            "compute": Admission(cfg.max_inflight + cfg.max_queue),
            "stream": Admission(cfg.max_streams),
        }
        self.metrics = Metrics(
            queue_depth=lambda: self.compute.waiting,
            inflight=lambda: self.compute.running,
            admitted=lambda: self.pools["compute"].admitted,
            cached_supports=lambda: sum(e.cached() for e in self.engines.values()),
            encodes=lambda: sum(e.encodes for e in self.engines.values()),
        )

    def open(self) -> None:
        for name, path in self.cfg.bundles.items():
            self.engines[name] = BundleEngine(
                name, path, self.cfg.backend, self.cfg.threads, self.cfg.device, self.cfg.cache_supports
            )

    def body_limit(self, path: str) -> int:
        if path.startswith("/v1/stream"):
            return self.cfg.max_video_bytes + FORM_SLACK
        if path == "/v1/supports":
            return 2 * self.cfg.max_images * self.cfg.max_upload_bytes + FORM_SLACK
        return self.cfg.max_upload_bytes + FORM_SLACK

    def engine(self, name: Optional[str]) -> BundleEngine:
        if not name:
            return next(iter(self.engines.values()))
        if name not in self.engines:
            raise _err(
                404, "bundle", f"bundle: unknown name {name!r}; this server has {sorted(self.engines)}"
            )
        return self.engines[name]

    def segmenter(self, engine: BundleEngine, sid: str):
        if not self.store.exists(sid):
            engine.forget(sid)  # deleted by some process: stop serving it here too
            raise _err(404, "support_id", f"support_id: no support set {sid!r} (see GET /v1/supports)")
        try:
            return engine.segmenter(sid, lambda: self.store.get(sid))
        except KeyError:
            raise _err(404, "support_id", f"support_id: no support set {sid!r}") from None
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise _err(
                    422, getattr(exc, "field", None) or "support_id", f"support_id {sid}: {exc}"
                ) from None
            raise _err(500, "support_id", str(exc)) from None


def _includes(include: str) -> set:
    items = {s.strip() for s in include.split(",") if s.strip()}
    bad = items - {"mask", "overlay"}
    if bad:
        raise _err(
            422, "include", f"include: unknown {sorted(bad)}; expected a comma list of 'mask', 'overlay'"
        )
    return items


def create_app(cfg: ServeConfig, open_bundles: bool = True) -> FastAPI:
    """The app for `cfg` (checked). Bundles are opened at startup (lifespan), once per process."""
    cfg.check()
    srv = Server(cfg)

    @asynccontextmanager
    async def lifespan(app):
        if open_bundles and not srv.engines:
            srv.open()
        yield
        srv.compute.shutdown()

    app = FastAPI(
        title="edgefss serve",
        version=__version__,
        lifespan=lifespan,
        description="Few-shot segmentation over edgefss bundles: upload support images with class "
        "names, get a support-set id, segment query images with it.",
    )
    app.state.server = srv

    @app.exception_handler(HTTPFieldError)
    async def field_error(request: Request, exc: HTTPFieldError):
        return JSONResponse({"detail": exc.message, "field": exc.field}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "header", "form")]
        field = loc[0] + "".join(f"[{x}]" for x in loc[1:]) if loc else None
        kind = "missing" if first.get("type") == "missing" else first.get("msg", "invalid")
        return JSONResponse(
            {
                "detail": f"{field}: {kind}" + ("" if kind == "missing" else f" ({first.get('type')})"),
                "field": field,
                "errors": [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errs],
            },
            422,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # the traceback goes to the server log; the client gets JSON like every other error
        import logging

        logging.getLogger("edgefss.serve").exception("internal error on %s", request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log", "field": None}, 500
        )

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc), "field": getattr(exc, "field", None)}, 422)

    # ------------------------------------------------------------------------------ page, health
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", summary="liveness: bundles loaded, this process's id")
    async def health():
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "bundles": list(srv.engines),
            "auth": bool(cfg.token),
        }

    @app.get("/metrics", summary="Prometheus metrics of this process", include_in_schema=True)
    async def metrics():
        body, ctype = srv.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/bundles", summary="the bundles this server runs (the first is the default)")
    async def bundles():
        return {"bundles": [e.info() for e in srv.engines.values()]}

    @app.get("/v1/sources", summary="names of the server-side cameras/videos /v1/stream can read")
    async def sources():
        return {"sources": sorted(cfg.sources)}

    # ------------------------------------------------------------------------------ supports
    @app.post("/v1/supports", status_code=201, summary="store a support set; returns its content-hash id")
    async def create_support(
        images: List[UploadFile] = File(..., description="support images (JPEG/PNG/...), one per shot"),
        classes: List[str] = Form(..., description="class name of each image, in the same order"),
        masks: Optional[List[UploadFile]] = File(
            None, description="optional masks, one per image (an empty part = pseudo-mask for that image)"
        ),
        bundle: Optional[str] = Form(
            None, description="bundle that checks/encodes it now (default: the first)"
        ),
    ):
        if len(images) > cfg.max_images:
            raise _err(
                413,
                "images",
                f"images: {len(images)} files; expected at most {cfg.max_images} (--max-images)",
            )
        if len(classes) != len(images):
            raise _err(
                422,
                "classes",
                f"classes: {len(classes)} names for {len(images)} images; expected one per image",
            )
        for i, c in enumerate(classes):
            if not c.strip() or len(c) > MAX_CLASS_NAME or not c.isprintable():
                raise _err(
                    422,
                    f"classes[{i}]",
                    f"classes[{i}]: {c[:80]!r}; expected 1-{MAX_CLASS_NAME} printable characters",
                )
        if masks and len(masks) != len(images):
            raise _err(
                422,
                "masks",
                f"masks: {len(masks)} files for {len(images)} images; expected one per image "
                "(send an empty part for an image without a mask)",
            )
        engine = srv.engine(bundle)
        img_bytes = [await f.read() for f in images]
        mask_bytes = [await f.read() for f in masks] if masks else [b""] * len(images)

        def check():
            for i, b in enumerate(img_bytes):
                rgb = decode_image(b, f"images[{i}]", cfg.max_upload_bytes, cfg.max_pixels)
                if mask_bytes[i]:
                    m = decode_mask(mask_bytes[i], f"masks[{i}]", cfg.max_upload_bytes, cfg.max_pixels)
                    if m.shape != rgb.shape[:2]:
                        raise _err(
                            422,
                            f"masks[{i}]",
                            f"masks[{i}]: {m.shape[1]}x{m.shape[0]} pixels; expected the "
                            f"size of images[{i}], {rgb.shape[1]}x{rgb.shape[0]}",
                        )
                    if not m.any():
                        raise _err(
                            422,
                            f"masks[{i}]",
                            f"masks[{i}]: no foreground pixel; send an empty part to use the "
                            "pseudo-mask instead",
                        )
            support = srv.store.content(classes, img_bytes, [m or None for m in mask_bytes])
            engine.segmenter(support.id, lambda: support)  # encode now: refusals come back to this request
            try:
                return srv.store.put(support)
            except OverflowError as exc:
                engine.forget(support.id)
                raise _err(507, None, str(exc)) from None

        support, created = await srv.compute.run(check)
        return JSONResponse(
            {**support.summary(), "created": created, "bundle": engine.name}, 201 if created else 200
        )

    @app.get("/v1/supports", summary="list the stored support sets")
    async def list_supports():
        return {"supports": srv.store.summaries()}

    @app.get("/v1/supports/{support_id}", summary="one support set's classes and shots")
    async def get_support(support_id: str):
        try:
            return srv.store.get(support_id).summary()
        except KeyError:
            raise _err(404, "support_id", f"support_id: no support set {support_id!r}") from None

    @app.delete("/v1/supports/{support_id}", status_code=204, summary="delete a support set (all processes)")
    async def delete_support(support_id: str):
        if not srv.store.delete(support_id):
            raise _err(404, "support_id", f"support_id: no support set {support_id!r}")
        for e in srv.engines.values():
            e.forget(support_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------------------ predict
    async def _predict(
        image: UploadFile, support_id: str, bundle, refine_steps: int, alpha: float, want: set
    ):
        if not 0.0 <= alpha <= 1.0:
            raise _err(422, "alpha", f"alpha: {alpha}; expected a value in [0, 1]")
        engine = srv.engine(bundle)
        data = await image.read()
        t_req = time.perf_counter()

        def work():
            t0 = time.perf_counter()
            rgb = decode_image(data, "image", cfg.max_upload_bytes, cfg.max_pixels)
            seg = srv.segmenter(engine, support_id)
            t1 = time.perf_counter()
            try:
                pred = seg.predict(rgb, refine_steps=refine_steps)
            except InputError as exc:
                raise _err(422, "refine_steps" if "refine_steps" in str(exc) else "image", str(exc)) from None
            except StateError as exc:
                raise _err(500, None, str(exc)) from None
            t2 = time.perf_counter()
            srv.metrics.predict.labels(engine.name).observe(t2 - t1)
            out = render.prediction_json(pred, rgb.shape[1], rgb.shape[0])
            images = {}
            if "mask" in want:
                images["mask"] = render.png_bytes(pred.mask)
            if "overlay" in want:
                images["overlay"] = render.png_bytes(render.overlay_image(rgb, pred, alpha))
            t3 = time.perf_counter()
            out["timings"].update({"decode": round((t1 - t0) * 1e3, 3), "render": round((t3 - t2) * 1e3, 3)})
            return out, images

        out, images = await srv.compute.run(work)
        out["timings"]["server"] = round((time.perf_counter() - t_req) * 1e3, 3)
        out.update({"support_id": support_id, "bundle": engine.name})
        return out, images

    P_IMAGE = File(..., description="query image (JPEG/PNG/...)")
    P_SID = Form(..., description="id from POST /v1/supports")
    P_BUNDLE = Form(None, description="bundle name (default: the first)")
    P_REFINE = Form(0, ge=0, le=5, description="refinement steps (0 = one pass)")
    P_ALPHA = Form(0.5, description="overlay opacity in [0, 1]")

    @app.post("/v1/predict", summary="segment a query image with a stored support set")
    async def predict(
        image: UploadFile = P_IMAGE,
        support_id: str = P_SID,
        bundle: Optional[str] = P_BUNDLE,
        include: str = Form("", description="comma list: 'mask', 'overlay' (PNG, base64 in the JSON)"),
        refine_steps: int = P_REFINE,
        alpha: float = P_ALPHA,
    ):
        want = _includes(include)
        out, images = await _predict(image, support_id, bundle, refine_steps, alpha, want)
        for k, v in images.items():
            out[f"{k}_png"] = render.b64(v)
        return out

    @app.post(
        "/v1/predict/mask.png",
        summary="segment a query; answer the label mask as a PNG",
        response_class=Response,
    )
    async def predict_mask(
        image: UploadFile = P_IMAGE,
        support_id: str = P_SID,
        bundle: Optional[str] = P_BUNDLE,
        refine_steps: int = P_REFINE,
    ):
        out, images = await _predict(image, support_id, bundle, refine_steps, 0.5, {"mask"})
        return Response(
            images["mask"], media_type="image/png", headers={"X-Edgefss-Classes": _ascii(out["classes"])}
        )

    @app.post(
        "/v1/predict/overlay.png",
        summary="segment a query; answer the overlay as a PNG",
        response_class=Response,
    )
    async def predict_overlay(
        image: UploadFile = P_IMAGE,
        support_id: str = P_SID,
        bundle: Optional[str] = P_BUNDLE,
        refine_steps: int = P_REFINE,
        alpha: float = P_ALPHA,
    ):
        out, images = await _predict(image, support_id, bundle, refine_steps, alpha, {"overlay"})
        return Response(
            images["overlay"], media_type="image/png", headers={"X-Edgefss-Classes": _ascii(out["classes"])}
        )

    # ------------------------------------------------------------------------------ streams
    from edgefss.serve.streams import add_stream_routes

    add_stream_routes(app, srv)
    return _wrap(app, cfg)


def _ascii(classes) -> str:
    import json

    return json.dumps(classes, ensure_ascii=True)


def app_from_env() -> FastAPI:
    """uvicorn factory (`--workers N`): config from EDGEFSS_SERVE_CONFIG, token from EDGEFSS_SERVE_TOKEN."""
    return create_app(ServeConfig.from_env())


def _wrap(app: FastAPI, cfg: ServeConfig):
    """Add the Guard (token, body size, 429, metrics) and, when configured, CORS around the app."""
    srv = app.state.server
    app.add_middleware(
        Guard, token=cfg.token, body_limit=srv.body_limit, pools=srv.pools, metrics=srv.metrics
    )
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
