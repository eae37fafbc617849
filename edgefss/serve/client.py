"""A small stdlib HTTP client for `edgefss serve` (used by bench/serve_load.py and the tests).

    c = Client("http://127.0.0.1:8000", token=None)
    sid = c.create_support([png_bytes], ["dog"])["id"]
    r = c.predict(query_bytes, sid, include="mask")   # dict; r["mask_png"] is base64

One keep-alive connection per Client; not thread-safe (one Client per thread).
"""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlencode, urlsplit


class HTTPError(Exception):
    """A non-2xx answer: `status`, `body` (parsed JSON when it is JSON)."""

    def __init__(self, status: int, body, headers=None):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers or {}


def multipart(fields) -> tuple[bytes, str]:
    """[(name, value)] -> (body, content type); value: str, or (filename, bytes, content_type) for a file."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields:
        out.append(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            fname, data, ctype = value
            out.append(
                f'Content-Disposition: form-data; name="{name}"; filename="{fname}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n".encode()
            )
            out.append(data)
        else:
            out.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.append(str(value).encode())
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0):
        u = urlsplit(base_url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.token = token
        self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        raw: bool = False,
    ):
        """-> parsed JSON (or bytes when raw / not JSON); raises HTTPError on a non-2xx status."""
        hdrs = dict(headers or {})
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        for attempt in range(2):  # the server may have closed an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        ctype = resp.getheader("Content-Type", "")
        parsed = json.loads(data) if "json" in ctype and data else data
        if resp.status >= 400:
            raise HTTPError(resp.status, parsed, dict(resp.getheaders()))
        return data if raw else parsed

    def post_form(self, path: str, fields, raw: bool = False):
        body, ctype = multipart(fields)
        return self.request("POST", path, body, {"Content-Type": ctype}, raw=raw)

    # ------------------------------------------------------------------ API
    def health(self) -> dict:
        return self.request("GET", "/health")

    def metrics(self) -> str:
        return self.request("GET", "/metrics", raw=True).decode()

    def create_support(self, images, classes, masks=None, bundle: str | None = None) -> dict:
        """images: list of encoded image bytes; masks: None or a list of PNG bytes / None."""
        fields = [
            ("images", (f"support_{i}.png", b, "application/octet-stream")) for i, b in enumerate(images)
        ]
        fields += [("classes", c) for c in classes]
        if masks is not None:
            fields += [("masks", (f"mask_{i}.png", m or b"", "image/png")) for i, m in enumerate(masks)]
        if bundle:
            fields.append(("bundle", bundle))
        return self.post_form("/v1/supports", fields)

    def list_supports(self) -> list:
        return self.request("GET", "/v1/supports")["supports"]

    def delete_support(self, sid: str) -> None:
        self.request("DELETE", f"/v1/supports/{sid}")

    def predict(
        self,
        image: bytes,
        support_id: str,
        bundle: str | None = None,
        include: str = "",
        refine_steps: int = 0,
        path: str = "/v1/predict",
    ):
        fields = [("image", ("query.png", image, "application/octet-stream")), ("support_id", support_id)]
        if bundle:
            fields.append(("bundle", bundle))
        if include:
            fields.append(("include", include))
        if refine_steps:
            fields.append(("refine_steps", str(refine_steps)))
        return self.post_form(path, fields, raw=path.endswith(".png"))

    def stream_url(self, **params) -> str:
        return f"/v1/stream?{urlencode(params)}"
