"""The ASGI layer in front of every route: bearer token, body size, admission (429), metrics.

Everything here happens before a request body is read, so an over-long upload, a wrong token or
a full server costs the server nothing but the headers. Refusals are JSON
`{"detail": message, "field": name}` like every other error of the server.
"""

from __future__ import annotations

import hmac
import json
import time

# Readable without a token: the page and its files (they hold no data), liveness for load
# balancers, and the API schema.
PUBLIC = ("/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


def _compute_route(method: str, path: str) -> str | None:
    """Which admission pool a request needs: "compute", "stream" or None."""
    if path.startswith("/v1/stream"):
        return "stream"
    if method == "POST" and (path.startswith("/v1/predict") or path == "/v1/supports"):
        return "compute"
    return None


async def send_json(send, status: int, detail: str, field: str | None, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail, "field": field}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware; see the module docstring.

    Args:
        token: required bearer token, or None (loopback without a token).
        body_limit(path) -> int: the largest request body accepted on `path`, in bytes.
        pools: {"compute": Admission, "stream": Admission}.
        metrics: edgefss.serve.metrics.Metrics.
    """

    def __init__(self, app, token, body_limit, pools, metrics):
        self.app, self.token, self.body_limit, self.pools, self.metrics = (
            app,
            token,
            body_limit,
            pools,
            metrics,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = {"code": 500, "started": False}

        async def send_wrapped(msg):
            if msg["type"] == "http.response.start":
                if status["started"]:
                    return  # a refusal was already sent (body over the limit mid-stream)
                status["started"] = True
                status["code"] = msg["status"]
            elif status.get("cut"):
                return
            await send(msg)

        pool = None
        try:
            refusal = self._check(scope, method, path)
            if refusal is None and (kind := _compute_route(method, path)) is not None:
                pool = self.pools[kind]
                if not pool.try_enter():
                    self.metrics.rejected.labels(kind).inc()
                    pool = None
                    limit = "--max-inflight/--max-queue" if kind == "compute" else "--max-streams"
                    refusal = (
                        429,
                        f"server busy: all {kind} slots are taken (server flags {limit}); retry later",
                        None,
                        {"Retry-After": "1"},
                    )
            if refusal is not None:
                await send_json(send_wrapped, *refusal)
                return
            await self.app(
                scope, self._limited(receive, send_wrapped, self.body_limit(path), status), send_wrapped
            )
        finally:
            if pool is not None:
                pool.leave()
            route = scope.get("route")
            name = getattr(route, "path", None) or ("/static" if path.startswith("/static/") else "other")
            self.metrics.requests.labels(name, method, str(status["code"])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)

    def _check(self, scope, method, path):
        """(status, detail, field, headers) for a request refused from its headers, else None."""
        headers = dict(scope["headers"])
        if self.token and method != "OPTIONS" and path not in PUBLIC and not path.startswith(PUBLIC_PREFIXES):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given:
                return (
                    401,
                    "Authorization: missing bearer token; send 'Authorization: Bearer <token>'",
                    "Authorization",
                    {"WWW-Authenticate": "Bearer"},
                )
            if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return (
                    401,
                    "Authorization: wrong bearer token",
                    "Authorization",
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
        length = headers.get(b"content-length")
        limit = self.body_limit(path)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return (400, "Content-Length: not an integer", "Content-Length", None)
            if n > limit:
                return (413, f"body: {n} bytes; expected at most {limit} bytes for {path}", "body", None)
        return None

    @staticmethod
    def _limited(receive, send, limit, status):
        """receive() that answers 413 and reports a disconnect once more than `limit` bytes came
        (bodies sent without Content-Length)."""
        seen = 0

        async def wrapped():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    if not status["started"]:
                        await send_json(send, 413, f"body: more than {limit} bytes", "body")
                    status["cut"] = True
                    return {"type": "http.disconnect"}
            return msg

        return wrapped
