"""`zmq-ik serve`: a broker and N workers as supervised child processes.

Children are plain `zmq-ik broker` / `zmq-ik worker` processes (so each has its own JAX
runtime and can be pinned to its own GPU); each worker gets its `ServiceSettings` as JSON
(``worker --config``), not a rebuilt command line. A child that exits unexpectedly is
restarted with capped exponential backoff; `stop()` sends SIGTERM to all, waits, then SIGKILLs
stragglers, so no child outlives the supervisor. A supervisor that is itself killed outright
takes its children with it: each child learns its supervisor's pid (``PARENT_ENV``) and asks
the kernel for SIGKILL when it exits (`zmq_ik.base.process.die_with_parent`), so no orphaned broker
keeps the port and no orphaned worker serves a broker nobody supervises.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from zmq_ik.base.process import EXIT_CONFIG, PARENT_ENV
from zmq_ik.errors import ConfigError, IKTimeout
from zmq_ik.settings.apps import ServeSettings
from zmq_ik.settings.worker import ServiceSettings

logger = logging.getLogger(__name__)


@dataclass
class Child:
    """One supervised process."""

    name: str
    """Log name, e.g. ``broker`` or ``worker-1 (gpu 0)``."""
    args: list[str]
    """Arguments after ``zmq-ik``."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables."""
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: float = 0.5
    next_start: float = 0.0
    started: float = 0.0


class Supervisor:
    """Start, watch and stop a broker plus workers.

    Call `start` and `poll` from a thread that lives as long as the supervisor (the main
    thread, normally): on Linux a child is killed when the thread that started it exits.
    ``broker_args`` are extra `zmq-ik broker` options.
    """

    def __init__(
        self,
        settings: ServeSettings | None = None,
        *,
        broker_args: Sequence[str] = (),
        verbose: int = 0,
        max_backoff: float = 30.0,
    ) -> None:
        self.settings = settings = settings or ServeSettings()
        self.bind = settings.bind
        self.connect = settings.bind.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self.failed: str | None = None
        """Why supervision stopped early (a child's configuration error), else None."""
        flags = ["-q"] if verbose < 0 else ["-v"] * verbose
        curve, worker_curve = _curve_args(settings)
        broker = [*flags, "broker", "--bind", self.bind, *curve, *broker_args]
        self.children = [Child("broker", broker)]
        gpus = settings.gpus
        for i in range(settings.worker_count):
            gpu = gpus[i % len(gpus)] if gpus else None
            config = replace(settings.worker, gpu=gpu).to_json()
            args = [*flags, "worker", "--connect", self.connect, "--config", config, *worker_curve]
            args += [a for other in settings.connect for a in ("--connect", other)]
            name = f"worker-{i + 1}" + (f" (gpu {gpu})" if gpu is not None else "")
            self.children.append(Child(name, args))

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "zmq_ik.cli", *child.args],
            env={**os.environ, **child.env, PARENT_ENV: str(os.getpid())},
            # A session of its own: a signal to serve's process group (a shell's Ctrl-C or
            # `kill -TERM -PGID`, systemd stopping the unit) reaches the child only through
            # `shutdown`, once, never twice. The child still dies with us (PR_SET_PDEATHSIG).
            start_new_session=True,
        )
        child.started = time.monotonic()
        logger.info("started %s (pid %d)", child.name, child.proc.pid)

    def start(self) -> None:
        """Start every child (broker first); OSError, with nothing started, if the broker's
        endpoint cannot be bound (e.g. another process holds the port: its broker would
        fail on every restart, and our workers would join the other process's broker)."""
        check_bind(self.bind)
        for child in self.children:
            self._spawn(child)

    def poll(self) -> None:
        """Restart children that died, with capped exponential backoff."""
        if self._stop.is_set():
            return
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.next_start:
                    self._spawn(child)
                continue
            code = child.proc.poll()
            if code is None:
                if now - child.started > 60:
                    child.backoff = 0.5  # a child that ran a minute is healthy again
                continue
            if code in (2, EXIT_CONFIG) and child.restarts == 0:
                # A usage or configuration error on the first start would recur on every
                # restart; a broker that cannot bind its endpoint exits so too. (Later, after
                # a crash, it may be transient: back off as usual.)
                self.failed = f"{child.name} exited with status {code} (configuration error)"
                logger.error("%s; stopping everything (see its message above)", self.failed)
                child.proc = None
                self.stop()
                return
            child.restarts += 1
            child.proc = None
            child.next_start = now + child.backoff
            logger.warning(
                "%s exited with %s; restart #%d in %.1fs",
                child.name,
                code,
                child.restarts,
                child.backoff,
            )
            child.backoff = min(child.backoff * 2, self.max_backoff)

    def run(self) -> None:
        """Supervise until `stop()` (or SIGINT/SIGTERM when installed), then stop children."""
        try:
            while not self._stop.wait(0.2):
                self.poll()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            logger.info("received %s: stopping all children", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def shutdown(self, timeout: float = 10.0) -> None:
        """SIGTERM workers, then the broker; SIGKILL whatever is left after ``timeout``."""
        self._stop.set()
        order = (
            self.children[1:] + self.children[:1]
        )  # workers say DISCONNECT before the broker goes
        for child in order:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in order:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time: killing it", child.name)
                child.proc.kill()
                child.proc.wait()
        logger.info("all children stopped")

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _curve_args(settings: ServeSettings) -> tuple[list[str], list[str]]:
    """The broker's and the workers' CURVE options (none without CURVE). The workers get the
    broker's public key from ``NAME.key`` next to its secret file (`keygen` writes both)."""
    if not settings.curve_secret_key:
        return [], []
    broker = ["--curve-secret-key", settings.curve_secret_key]
    for flag, value in (
        ("--allow-keys", settings.allow_keys),
        ("--worker-keys", settings.worker_keys),
    ):
        broker += [flag, value] if value else []
    secret = settings.curve_secret_key
    public = secret.removesuffix("_secret") if secret.endswith("_secret") else secret
    public = public if os.path.exists(public) else secret  # (only its public key is read)
    assert settings.worker_secret_key is not None  # (`ServeSettings` checks)
    return broker, ["--curve-server-key", public, "--curve-secret-key", settings.worker_secret_key]


def check_bind(endpoint: str) -> None:
    """Raise OSError unless ``endpoint`` can be bound right now (bound, then released)."""
    import zmq

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            raise OSError(f"cannot bind {endpoint}: {e}") from e
        finally:
            sock.close(0)
    finally:
        ctx.term()  # returns once the listening socket is closed: the broker can bind it


def free_endpoint(host: str = "127.0.0.1") -> str:
    """A loopback TCP endpoint on a port that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


STARTUP_TIMEOUT = 900.0
"""How long `local_cluster` (`zmq-ik demo`) waits for its worker's READY by default, in
seconds: a cold compilation cache took 587 s on a busy 2-vCPU host (deploy/README.md)."""


@contextmanager
def local_cluster(
    worker: ServiceSettings | None = None, startup_timeout: float = STARTUP_TIMEOUT
) -> Iterator[str]:
    """A broker and one worker on a free loopback port (`zmq-ik demo`), stopped on exit;
    yields their endpoint once the worker is READY, or raises `IKTimeout` / `ConfigError`."""
    endpoint = free_endpoint()
    logger.info("starting a local broker and worker on %s (first start compiles)", endpoint)
    with Supervisor(ServeSettings(endpoint, 1, worker=worker or ServiceSettings())) as sup:
        if not wait_ready(endpoint, 1, startup_timeout, sup):
            if sup.failed:
                raise ConfigError(sup.failed)
            raise IKTimeout(  # (a reason: not the "is a broker running there?" hint)
                f"the local worker was not ready within {startup_timeout:g}s (-v shows its "
                f"log; a cold cache compiles for minutes on a busy CPU: --startup-timeout)",
                "the local worker did not say READY",
            )
        yield endpoint


def wait_ready(
    endpoint: str, workers: int, timeout: float, supervisor: Supervisor | None = None
) -> bool:
    """Wait until ``workers`` workers have said READY to the broker at ``endpoint``."""
    from zmq_ik.client import IKClient
    from zmq_ik.errors import IKError

    deadline = time.monotonic() + timeout
    with IKClient(endpoint, timeout=1.0, retries=0) as client:
        while time.monotonic() < deadline:
            if supervisor is not None:
                supervisor.poll()
                if supervisor.failed:
                    return False
            try:
                if len(client.ping()["workers"]) >= workers:
                    return True
            except IKError:
                pass
            time.sleep(0.2)
    return False
