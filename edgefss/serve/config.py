"""ServeConfig: everything `edgefss serve` needs, checked once, passable to worker processes as JSON.

uvicorn's `--workers N` starts fresh processes that import the app by name, so the config travels
in the environment variable EDGEFSS_SERVE_CONFIG (JSON) and each worker rebuilds it with from_env.
The token is never put there: workers read it from EDGEFSS_SERVE_TOKEN like the parent.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgefss.errors import InputError

ENV_CONFIG = "EDGEFSS_SERVE_CONFIG"
ENV_TOKEN = "EDGEFSS_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost may resolve anywhere


@dataclass
class ServeConfig:
    """Server settings; see `edgefss serve --help` for each one's flag.

    Attributes:
        bundles: {name: bundle directory}; the first is the default for requests naming none.
        sources: {name: camera index or video file/folder} that /v1/stream may read; clients pick
            a name, never a path.
    """

    bundles: dict
    host: str = "127.0.0.1"
    port: int = 8000
    support_dir: str = "runs/serve/supports"
    backend: str | None = None
    device: str | None = None
    threads: int | None = None
    max_upload_bytes: int = 10 * 1024 * 1024  # one uploaded image or mask
    max_video_bytes: int = 200 * 1024 * 1024  # one uploaded video (/v1/stream)
    max_pixels: int = 16_000_000  # one decoded image, from its header
    max_images: int = 32  # images in one support set
    max_inflight: int = 2  # predictions running at once (per process)
    max_queue: int = 8  # admitted requests waiting for a slot; more -> 429
    max_streams: int = 2  # MJPEG streams at once (per process)
    max_stream_frames: int = 10_000  # frames of one stream
    cache_supports: int = 16  # encoded support sets kept per process and bundle
    max_supports: int = 10_000  # support-set files in support_dir
    cors_origins: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    token: str | None = field(default=None, repr=False)

    def check(self) -> "ServeConfig":
        """Refuse unsafe or impossible settings, naming the flag."""
        if not self.bundles:
            raise InputError("--bundle: expected at least one bundle directory")
        for name, path in self.bundles.items():
            if not Path(path).is_dir():
                raise InputError(
                    f"--bundle: '{path}' ({name}) is not a directory; expected a bundle from `edgefss export`"
                )
        if not is_loopback(self.host) and not self.token:
            raise InputError(
                f"--host: {self.host} is not a loopback address, so a bearer token is required; "
                f"set {ENV_TOKEN} or pass --token-file FILE (or bind to 127.0.0.1)"
            )
        if self.token is not None and len(self.token) < 16:
            raise InputError(
                "--token: expected at least 16 characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        for flag, v in [
            ("--max-upload-mb", self.max_upload_bytes),
            ("--max-video-mb", self.max_video_bytes),
            ("--max-megapixels", self.max_pixels),
            ("--max-images", self.max_images),
            ("--max-inflight", self.max_inflight),
            ("--max-streams", self.max_streams),
            ("--cache-supports", self.cache_supports),
            ("--max-supports", self.max_supports),
            ("--max-stream-frames", self.max_stream_frames),
        ]:
            if v < 1:
                raise InputError(f"{flag}: expected a positive value, got {v}")
        if self.max_queue < 0:
            raise InputError(f"--max-queue: expected >= 0, got {self.max_queue}")
        for o in self.cors_origins:
            if o == "*" or not o.startswith(("http://", "https://")):
                raise InputError(
                    f"--cors-origin: {o!r}; expected an origin such as https://app.example.com (no '*')"
                )
        return self

    def to_env(self) -> str:
        d = asdict(self)
        d.pop("token")
        return json.dumps(d)

    @classmethod
    def from_env(cls) -> "ServeConfig":
        raw = os.environ.get(ENV_CONFIG)
        if not raw:
            raise InputError(f"{ENV_CONFIG}: not set; start the server with `edgefss serve`")
        return cls(**json.loads(raw), token=os.environ.get(ENV_TOKEN) or None).check()
