"""Benchmark processes: every party (broker, workers, raw echo servers, proxies, HTTP servers)
runs as its own subprocess on a free loopback port, with its log in a temp directory, and is
always reaped (SIGTERM, then SIGKILL) when the `Procs` context exits."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
JAX_CACHE = ROOT / ".jax_cache"
"""The JAX persistent compilation cache shared with the test suite (compiled once)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Procs:
    """Start subprocesses; on exit stop them all (children first, in reverse order)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="zmq-ik-bench-"))
        self.env = {
            **os.environ,
            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc_type is None:  # logs are kept only when something went wrong
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (``env``: default `env`; ``cwd``: default this tree's root)."""
        log = self.log_dir / f"{len(self.procs):02d}-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env or self.env, cwd=cwd or ROOT
            )
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def module(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        """``python -m module args...``"""
        return self.start(name, [sys.executable, "-m", module, *args])

    def zmq_ik(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``python -m zmq_ik.cli -q args...``"""
        return self.module(name, "zmq_ik.cli", "-q", *args)

    def broker(self, endpoint: str) -> subprocess.Popen[bytes]:
        return self.zmq_ik("broker", "broker", "--bind", endpoint)

    def echo_worker(self, endpoint: str) -> subprocess.Popen[bytes]:
        return self.zmq_ik("echo-worker", "worker", "--echo", "--connect", endpoint)

    def ik_worker(self, endpoint: str, buckets: str | None = None) -> subprocess.Popen[bytes]:
        extra = ["--buckets", buckets] if buckets else []
        return self.zmq_ik(
            "ik-worker", "worker", "--connect", endpoint, "--cache-dir", str(JAX_CACHE), *extra
        )

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                log = Path(p.log_path).read_text(errors="replace")[-2000:]  # type: ignore[attr-defined]
                raise RuntimeError(f"{' '.join(map(str, p.args))} exited {p.returncode}:\n{log}")

    def wait_workers(
        self, endpoint: str, n: int, robot: str | None = None, timeout: float = 600.0
    ) -> None:
        """Block until the broker at ``endpoint`` has ``n`` workers (serving ``robot``)."""
        from zmq_ik.client import IKClient
        from zmq_ik.errors import IKError

        deadline = time.monotonic() + timeout
        with IKClient(endpoint, timeout=1.0, retries=0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    workers = client.ping()["workers"]
                except IKError:
                    workers = []
                if len([w for w in workers if robot is None or robot in w["robots"]]) >= n:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"{n} worker(s) not ready at {endpoint}; logs in {self.log_dir}")

    def wait_http(self, port: int, timeout: float = 600.0) -> None:
        """Block until ``GET /health`` on ``port`` answers 200."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"HTTP server on port {port} not ready; logs in {self.log_dir}")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()
