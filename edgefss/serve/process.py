"""Run `edgefss serve` in a subprocess on a free loopback port (tests, bench/serve_load.py, scripts).

with ServerProcess(["--bundle", "B"], Path("server.log")) as srv:
    srv.client().health()
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m edgefss serve ARGS --port P` with its log in `log`; stop() terminates it."""

    def __init__(self, args, log: Path, token: str | None = None, timeout: float = 90.0):
        from edgefss.serve.client import Client

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        env = {k: v for k, v in os.environ.items() if k != "EDGEFSS_SERVE_TOKEN"}
        if token:
            env["EDGEFSS_SERVE_TOKEN"] = token
        # the edgefss this process imported, also when it runs from a source tree
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgefss",
                "serve",
                *map(str, args),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        c = Client(self.url)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgefss serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                self.health = c.health()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"edgefss serve did not answer /health in {timeout} s:\n{self.log_text()}"
                    )
                time.sleep(0.2)
        c.close()

    def client(self, token: str | None = "default"):
        from edgefss.serve.client import Client

        return Client(self.url, token=self.token if token == "default" else token)

    def log_text(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
