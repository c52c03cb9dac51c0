"""The one harness of the tests and the benchmarks: brokers, workers, `serve` and any other
party as real subprocesses on loopback, each logging to its own file, waited for (with
timeouts) and always reaped; and the load clients both drive them with. A broker binds a
port it picks (``:*``) and says which in its log (`bound_endpoint`): a port chosen here and
handed over could be taken by another process in between."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import zmq

from zmq_ik.apps.serve import free_endpoint
from zmq_ik.broker import LISTENING
from zmq_ik.client import IKClient
from zmq_ik.client._failover import is_probe
from zmq_ik.errors import IKError, ProtocolError
from zmq_ik.protocol import Command, Reply, parse_message

ROOT = Path(__file__).resolve().parent.parent
JAX_CACHE = ROOT / ".jax_cache"
"""The JAX persistent compilation cache of the tests and the benchmarks (compiled once)."""

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


def wait_for_broker(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ping until the broker at ``endpoint`` answers (or its process exits)."""
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
    endpoint: str,
    n: int,
    robot: str | None = None,
    timeout: float = 60.0,
    alive: Callable[[], None] | None = None,
) -> dict:
    """Poll the broker until ``n`` workers (serving ``robot``) are registered: its last ping.
    ``alive`` is called between polls (to fail as soon as a process it waits for died)."""
    with IKClient(endpoint, timeout=0.5, retries=0, context=zmq.Context.instance()) as client:
        return poll_workers(client.ping, n, robot, timeout, alive, where=f" at {endpoint}")


def poll_workers(
    ping: Callable[[], dict],
    n: int,
    robot: str | None = None,
    timeout: float = 60.0,
    alive: Callable[[], None] | None = None,
    where: str = "",
) -> dict:
    """`wait_for_workers` with a ``ping`` of the caller's (e.g. a CURVE client's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            info = ping()
        except IKError:
            time.sleep(0.1)
            continue
        if len([w for w in info["workers"] if robot is None or robot in w["robots"]]) >= n:
            return info
        time.sleep(0.1)
    raise TimeoutError(f"{n} worker(s) not registered{where} within {timeout}s")


def tree_env(tree: Path = ROOT) -> dict[str, str]:
    """The environment of a process that runs source tree ``tree``'s ``zmq_ik`` (this one, or
    another for an A/B of two trees, e.g. ``git archive SHA | tar -x -C /tmp/base``): its
    directory first on ``PYTHONPATH``, then this tree's (for ``benchmarks``); JAX on the CPU
    unless ``JAX_PLATFORMS`` says otherwise."""
    path = [str(tree), str(ROOT), os.environ.get("PYTHONPATH")]
    return {
        **os.environ,
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(filter(None, path))),
    }


class Proc(subprocess.Popen):
    """A started process: its log file, and for a broker the endpoint it bound."""

    log_path: Path
    endpoint: str = ""


class Procs:
    """Starts processes and reaps whatever is left on `close` (or on leaving the context).

    ``log_dir``: where the logs go (default: a temporary directory, removed on a clean exit).
    ``quiet``: `zmq-ik` processes other than brokers run with ``-q``. ``kill``: `close`
    SIGKILLs at once (tests), else SIGTERM, children first, then SIGKILL after 5 s."""

    def __init__(
        self, log_dir: Path | None = None, *, quiet: bool = True, kill: bool = False
    ) -> None:
        self.procs: list[Proc] = []
        self._own_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="zmq-ik-")) if log_dir is None else log_dir
        self.quiet, self._kill = quiet, kill
        self.env = tree_env()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc_type is None and self._own_dir:  # logs are kept only when something went wrong
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        """Start ``argv`` (``env``: default `env`; ``cwd``: default this tree's root)."""
        log = self.log_dir / f"{len(self.procs):02d}-{name}.log"
        with open(log, "wb") as out:
            proc = Proc(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env or self.env, cwd=cwd or ROOT
            )
        proc.log_path = log
        self.procs.append(proc)
        return proc

    def module(self, name: str, module: str, *args: str) -> Proc:
        """``python -m module args...``"""
        return self.spawn(name, [sys.executable, "-m", module, *args])

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        """``zmq-ik args...`` (``-q`` first when `quiet`); ``env`` is added to `env`."""
        quiet = ["-q"] if self.quiet and args[0] != "broker" else []
        argv = [sys.executable, "-m", "zmq_ik.cli", *quiet, *args]
        return self.spawn(args[0], argv, {**self.env, **(env or {})}, cwd)

    def broker(self, *extra: str, endpoint: str = ANY_PORT, wait: bool = True) -> Proc:
        """Start a broker on ``endpoint`` (default: a loopback port it picks; pass a restarted
        broker its predecessor's ``.endpoint``). ``.endpoint`` is where it listens; with
        ``wait``, it is returned once it answers a ping (so a caller's own deadlines do not
        include the broker's start-up). Never ``-q``: its INFO log says where it listens."""
        proc = self.start("broker", "--bind", endpoint, *extra)
        wildcard = endpoint.endswith(":*")
        proc.endpoint = bound_endpoint(proc, proc.log_path) if wildcard else endpoint
        if wait:
            wait_for_broker(proc.endpoint, proc)
        return proc

    def serve(self, endpoint: str, *extra: str, env: dict[str, str] | None = None) -> Proc:
        """`zmq-ik serve` bound to ``endpoint`` (a free endpoint: serve takes no wildcard)."""
        return self.start("serve", "--bind", endpoint, *extra, env=env)

    def echo_worker(self, endpoint: str, *extra: str) -> Proc:
        return self.start("worker", "--echo", "--connect", endpoint, *extra)

    def ik_worker(
        self,
        *connect: str,
        buckets: str | None = None,
        cache: Path = JAX_CACHE,
        extra: tuple[str, ...] = (),
    ) -> Proc:
        """An IK worker connected to each endpoint in ``connect``, on the shared JAX cache;
        ``extra``: more worker options (``--robot``, ``--ee-links``...)."""
        eps = [a for ep in connect for a in ("--connect", ep)]
        sizes = ["--buckets", buckets] if buckets else []
        return self.start("worker", *eps, "--cache-dir", str(cache), *sizes, *extra)

    def timed_worker(
        self, endpoint: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> tuple[Proc, float]:
        """Start ``zmq-ik worker --connect endpoint args...`` (``env``: its whole environment;
        ``cwd``: a tree's root, to run that tree) as the only worker of that broker: the
        process and its seconds to READY (registered), the benchmarks' one start-up timer."""
        argv = [sys.executable, "-m", "zmq_ik.cli", "worker", "--connect", endpoint, *args]
        t0 = time.monotonic()
        worker = self.spawn("worker", argv, env, cwd)
        self.wait_workers(endpoint, 1, timeout=900)
        return worker, time.monotonic() - t0

    def cluster(self, brokers: int, workers: int = 2, buckets: str | None = None) -> list[str]:
        """``brokers`` brokers and ``workers`` workers connected to all of them (echo workers,
        or IK workers with ``buckets``), once each broker has them all: the endpoints."""
        endpoints = [self.broker().endpoint for _ in range(brokers)]
        for _ in range(workers):
            if buckets is None:
                self.start("worker", "--echo", *[a for ep in endpoints for a in ("--connect", ep)])
            else:
                self.ik_worker(*endpoints, buckets=buckets)
        for ep in endpoints:
            self.wait_workers(ep, workers)
        return endpoints

    def log(self, proc: Proc) -> str:
        return proc.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise (with its log's tail) if a process started here has exited."""
        for p in self.procs:
            if p.poll() is not None:
                log = self.log(p)[-2000:]
                raise RuntimeError(f"{' '.join(map(str, p.args))} exited {p.returncode}:\n{log}")

    def wait_workers(
        self, endpoint: str, n: int, robot: str | None = None, timeout: float = 600.0
    ) -> dict:
        """`wait_for_workers`, failing as soon as a process started here has exited."""
        try:
            return wait_for_workers(endpoint, n, robot, timeout, alive=self.check_alive)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; logs in {self.log_dir}") from None

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

    def kill(self, proc: Proc, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send ``sig``, wait for the exit and forget ``proc`` (`check_alive` would take its
        death for a failure)."""
        proc.send_signal(sig)
        proc.wait(timeout)
        self.procs.remove(proc)

    def close(self) -> None:
        if self._kill:
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
            for p in self.procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    pass
            return
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


# --------------------------------------------------------------------------- load clients

T = TypeVar("T", bound="ClientThreads")


class CountingClient(IKClient):
    """An IKClient that counts every FINAL/ERROR reaching its socket, per request id, so a
    duplicate answer shows even though IKClient itself would drop it (its own liveness
    probes, client/_failover.py, are not counted: each has its own id)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: Counter[bytes] = Counter()

    def _count(self, frames: list[Any]) -> None:
        try:
            msg = parse_message(frames)
        except ProtocolError:
            return
        if (
            isinstance(msg, Reply)
            and msg.command is not Command.PARTIAL
            and not is_probe(msg.request_id)
        ):
            self.answers[msg.request_id] += 1

    def _on_frames(self, frames: list[Any], now: float, connection: int = 0) -> None:
        self._count(frames)
        super()._on_frames(frames, now, connection)

    def duplicates(self) -> dict[bytes, int]:
        """The request ids answered more than once, and how often."""
        return {rid: n for rid, n in self.answers.items() if n > 1}

    def drain(self, seconds: float = 0.3) -> None:
        """Read whatever else arrives for ``seconds`` (a duplicate would be here)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                self._count(self.socket.recv_multipart())


class ClientThreads:
    """``clients`` threads, each running ``self._run(c)`` until ``self._stop`` is set: entering
    starts them, leaving stops them, joins each (``join`` seconds) and fails if one hung."""

    def __init__(self, clients: int, join: float = 60.0) -> None:
        self._join = join
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,)) for c in range(clients)]

    def _run(self, c: int) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self._join)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"


@dataclass
class Tally:
    """What the load threads saw."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    """(sent, answered) of every answered request, monotonic seconds."""
    errors: list[str] = field(default_factory=list)
    wrong: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latencies_ms(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [(b - a) * 1000 for a, b in self.spans if start <= a and b <= end]


class EchoLoad(ClientThreads):
    """``clients`` threads, each an `IKClient` given ``endpoints``, sending back-to-back echo
    requests; each answer must carry the thread's own (client, sequence) and array (else it
    counts as ``wrong``). ``spread``: client c lists the brokers from the c-th on (its home),
    so every broker carries load; else every client lists them in the same order."""

    def __init__(
        self,
        endpoints: list[str],
        clients: int = 4,
        *,
        spread: bool = True,
        timeout: float = 3.0,
        retries: int = 2,
        join: float = 60.0,
    ) -> None:
        self.endpoints = endpoints
        self.spread = spread
        self.timeout = timeout
        self.retries = retries
        self.tally = Tally()
        super().__init__(clients, join)

    def _run(self, c: int) -> None:
        ctx = zmq.Context()
        tally = self.tally
        try:
            eps = self.endpoints
            if self.spread:
                eps = eps[c % len(eps) :] + eps[: c % len(eps)]
            where = eps[0] if len(eps) == 1 else eps
            with IKClient(where, timeout=self.timeout, retries=self.retries, context=ctx) as cl:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    x = np.full(16, c * 1_000_000 + i, np.float64)
                    t0 = time.monotonic()
                    try:
                        got = cl.request("echo", "echo", {"c": c, "i": i}, {"x": x})
                    except IKError as e:
                        with tally.lock:
                            tally.errors.append(f"client {c} request {i}: {e!r}")
                        continue
                    t1 = time.monotonic()
                    good = (got.header.get("c"), got.header.get("i")) == (c, i) and np.array_equal(
                        got.arrays.get("x"), x
                    )
                    with tally.lock:
                        tally.spans.append((t0, t1))
                        tally.wrong += not good
        finally:
            ctx.destroy(linger=0)
