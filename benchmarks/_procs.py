"""Benchmark processes: every party (broker, workers, raw echo servers, proxies, HTTP servers)
runs as its own subprocess on a loopback port, with its log in a temp directory, and is
always reaped (SIGTERM, then SIGKILL) when the `Procs` context exits.

A broker binds a port it picks itself (ZeroMQ's ``:*`` wildcard) and the endpoint it got is
read back from its log (`bound_endpoint`): a port chosen here and handed over could be taken
by another process in between. The test suite's fixtures start brokers the same way."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from zmq_ik.broker import LISTENING
from zmq_ik.serve import free_endpoint

ROOT = Path(__file__).resolve().parent.parent
JAX_CACHE = ROOT / ".jax_cache"
"""The JAX persistent compilation cache shared with the test suite (compiled once)."""


ANY_PORT = "tcp://127.0.0.1:*"
"""Bind a loopback port the OS picks (ZeroMQ's wildcard port)."""
_LISTENING = re.compile(re.escape(LISTENING).replace("%s", r"(\S+)\n").encode())


def bound_endpoint(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> str:
    """The endpoint the broker ``proc`` bound, from its `LISTENING` log line (INFO: the broker
    must not run with ``-q``); raises if it exits or says nothing within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = _LISTENING.search(log_path.read_bytes())
        if found:
            return found.group(1).decode()
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited {proc.returncode}" if proc.poll() is not None else f"after {timeout}s"
            log = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"broker did not say where it listens ({why}):\n{log}")
        time.sleep(0.02)


def free_port() -> int:
    """A loopback port free now, for a party that cannot bind a port of its own choosing and
    say which (an HTTP server); brokers bind `ANY_PORT`."""
    return int(free_endpoint().rpartition(":")[2])


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

    def broker(self, *extra: str, endpoint: str = ANY_PORT) -> subprocess.Popen[bytes]:
        """A broker bound to ``endpoint`` (default: a port it picks); its ``.endpoint`` is the
        one it bound. Started without ``-q``: its INFO log says where it listens."""
        proc = self.module("broker", "zmq_ik.cli", "broker", "--bind", endpoint, *extra)
        proc.endpoint = (  # type: ignore[attr-defined]
            bound_endpoint(proc, proc.log_path)  # type: ignore[attr-defined]
            if endpoint.endswith(":*")
            else endpoint
        )
        return proc

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
