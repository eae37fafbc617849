"""`edgefss serve`: an HTTP server (FastAPI + uvicorn) over one or more bundles.

    pip install 'edgefss[serve]'
    edgefss serve --bundle runs/main_job/tlg_int8            # http://127.0.0.1:8000 (page), /docs (API)

Modules: config (ServeConfig), app (routes), streams (MJPEG), store (support sets as content-hash
files), engines (bundles + encoded support sets per process), uploads (decoding with limits),
guard (token, body size, 429, metrics middleware), limits, metrics, render (JSON, PNG), client (a
stdlib HTTP client). Everything runs on the torch-free runtime (edgefss.runtime.Segmenter).
"""

SERVE_PIP = "pip install 'edgefss[serve]'"


def require_serve():
    """Import check for the [serve] extra; raises BackendUnavailableError with the pip line."""
    import importlib

    from edgefss.errors import BackendUnavailableError

    for mod in ("fastapi", "uvicorn", "multipart", "prometheus_client"):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"edgefss serve needs the Python package '{mod}', which is not installed: {SERVE_PIP}"
            ) from exc


def create_app(cfg):
    """The FastAPI app for a ServeConfig (see edgefss.serve.app.create_app)."""
    require_serve()
    from edgefss.serve.app import create_app as _create

    return _create(cfg)
