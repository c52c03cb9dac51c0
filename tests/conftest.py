"""Shared fixtures: free loopback ports, real broker/worker processes that are always reaped."""

from __future__ import annotations

import heapq
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

ROOT = Path(__file__).resolve().parent.parent
JAX_CACHE = ROOT / ".jax_cache"
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Processes:
    """Starts `zmq-ik` subprocesses and kills whatever is left at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp_path = tmp_path

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"proc{len(self.procs)}.log", "wb")
        full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "zmq_ik.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
        log.close()
        proc.log_path = self.tmp_path / f"proc{len(self.procs)}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def broker(self, endpoint: str, *extra: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start a broker; with ``wait``, return once it answers a ping (so a test's own
        deadlines do not include the broker's start-up)."""
        proc = self.start("broker", "--bind", endpoint, *extra)
        if wait:
            wait_for_broker(endpoint, proc)
        return proc

    def echo_worker(self, endpoint: str, *extra: str) -> subprocess.Popen[bytes]:
        return self.start("worker", "--echo", "--connect", endpoint, *extra)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def endpoint() -> str:
    return free_endpoint()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def wait_for_broker(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ping until the broker at ``endpoint`` answers (or its process exits)."""
    from zmq_ik.client import IKClient
    from zmq_ik.errors import IKError

    deadline = time.monotonic() + timeout
    with IKClient(endpoint, timeout=0.3, retries=0, context=zmq.Context.instance()) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                return
            except IKError:
                continue
    if proc.poll() is not None:
        raise RuntimeError(f"broker at {endpoint} exited with {proc.returncode} before answering")
    raise TimeoutError(f"broker at {endpoint} did not answer within {timeout}s")


def wait_for_workers(
    endpoint: str, n: int, robot: str | None = None, timeout: float = 60.0
) -> dict:
    """Poll the broker until ``n`` workers (serving ``robot``) are registered."""
    from zmq_ik.client import IKClient
    from zmq_ik.errors import IKError

    deadline = time.monotonic() + timeout
    with IKClient(endpoint, timeout=0.5, retries=0, context=zmq.Context.instance()) as client:
        while time.monotonic() < deadline:
            try:
                info = client.ping()
            except IKError:
                time.sleep(0.1)
                continue
            workers = [w for w in info["workers"] if robot is None or robot in w["robots"]]
            if len(workers) >= n:
                return info
            time.sleep(0.1)
    raise TimeoutError(f"{n} worker(s) not registered at {endpoint} within {timeout}s")


IK_TEST_BUCKETS = "16,64"
"""Small shape buckets for IK workers in tests: quick to compile, still exercising padding."""


@pytest.fixture(scope="session")
def ik_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker + one real IK worker (tatbot, small buckets, shared JAX cache) per session."""
    pytest.importorskip("jax")
    procs = Processes(tmp_path_factory.mktemp("ikworker"))
    endpoint = free_endpoint()
    procs.broker(endpoint)
    procs.start(
        "worker", "--connect", endpoint, "--buckets", IK_TEST_BUCKETS, "--cache-dir", str(JAX_CACHE)
    )
    try:
        wait_for_workers(endpoint, 1, robot="tatbot", timeout=300)
        yield endpoint
    finally:
        procs.close()


def stroke_like(n, seed=0):
    """Needle points in a 4 x 4 cm patch around the lasercross, +-2 mm depth, tatbot's
    fixed needle orientations and ee offsets."""
    rng = np.random.default_rng(seed)
    design = np.array([0.25045, 0.0, 0.102])
    offsets = np.array(
        [
            [-0.0032011130459314863, -0.006146244846220735, 0.0],
            [0.0003607626669337727, 0.011764407112841976, 0.00529831437515331],
        ]
    )
    xy = rng.uniform(-0.02, 0.02, (n, 2, 2))
    depth = rng.uniform(-0.002, 0.002, (n, 2, 1))
    pos = design + np.concatenate([xy, depth], -1) + offsets
    wxyz = np.broadcast_to(np.array([[0.7071, 0, 0, -0.7071], [0.7071, 0, 0, 0.7071]]), (n, 2, 4))
    return wxyz, pos


class FakeBroker(threading.Thread):
    """A ROUTER in a thread standing in for the broker, to script what a client gets.

    Each REQUEST received (parsed, in ``requests``) goes to ``script(n, request)`` (n counts
    from 1), which returns the answers to send back: ``(delay_s, frames)`` pairs, frames
    without the identity; ``[]`` is silence. The clients' liveness probes (`alive`) are
    answered at once and not passed on. Answers are sent once their delay has passed,
    so a script can answer out of order.
    """

    def __init__(self, ctx: zmq.Context, script: Any) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.script = script
        self.requests: list[Any] = []
        self.stop = threading.Event()
        self._later: list[tuple[float, int, bytes, list[Any]]] = []

    def run(self) -> None:
        from zmq_ik.protocol import (
            ALIVE,
            BROKER_SERVICE,
            Command,
            Request,
            encode_payload,
            parse_message,
            reply_frames,
        )

        alive = encode_payload({"workers": 1})
        seq = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, identity, frames = heapq.heappop(self._later)
                    self.sock.send_multipart([identity, *frames])
                wait = 20 if not self._later else max(0, int((self._later[0][0] - now) * 1000))
                if not self.sock.poll(min(wait, 20)):
                    continue
                identity, *frames = self.sock.recv_multipart()
                msg = parse_message(frames)
                if isinstance(msg, Request) and (msg.service, msg.operation) == (
                    BROKER_SERVICE,
                    ALIVE,
                ):  # a client's liveness probe: answered at once, as a broker does
                    answer = reply_frames(Command.FINAL, msg.request_id, alive)
                    self.sock.send_multipart([identity, *answer])
                    continue
                self.requests.append(msg)
                for delay, answer in self.script(len(self.requests), msg) or []:
                    seq += 1
                    out = [bytes(memoryview(f)) for f in answer]
                    heapq.heappush(self._later, (time.monotonic() + delay, seq, identity, out))
        finally:
            self.sock.close(0)

    def __enter__(self) -> FakeBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
