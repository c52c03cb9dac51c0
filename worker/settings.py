"""The service a worker's `ServiceSettings` (`zmq_ik.settings.worker`) describe:
`build_service` chooses the device (the service imports JAX in its warm-up, once the worker
has connected to its brokers: they list it as warming while JAX loads); `check_gpu`;
`WarmupProgress`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zmq_ik.errors import ConfigError, InputError
from zmq_ik.settings.worker import ServiceSettings
from zmq_ik.worker._service import EchoService, Service, ServiceCall, ServiceReply, WarmupHook

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the service


def build_service(settings: ServiceSettings, progress_interval: float = 10.0) -> Service:
    """The service ``settings`` describe, its device chosen (JAX is imported after that).

    Raises `InputError` (field: the setting to blame) for settings that cannot work, and
    `ConfigError` when ``require_gpu`` and JAX sees no GPU."""
    if settings.echo:
        echo = EchoService(list(settings.robots) or None, warmup_s=settings.echo_warmup)
        return WarmupProgress(echo, progress_interval)
    if settings.require_gpu and settings.gpu is None:
        raise InputError("require_gpu needs a GPU index (--gpu N)", "require_gpu")
    from zmq_ik.settings.ik import check_buckets
    from zmq_ik.worker.ik_service import IKService, pin_device

    pin_device(settings.gpu)  # before JAX is imported
    check_gpu(settings.gpu, settings.require_gpu)  # imports JAX only for a GPU
    service = IKService(
        settings.robots or None,
        ee_links=settings.ee_links,
        rest=settings.rest,
        cache_dir=settings.cache_dir,
        buckets=check_buckets(settings.buckets) if settings.buckets else None,
        warm=settings.warm,
        max_extra_compiles=settings.max_extra_compiles,
    )
    return WarmupProgress(service, progress_interval)


def check_gpu(gpu: int | None, require: bool) -> None:
    """After `pin_device(gpu)`: say clearly when GPU ``gpu`` was asked for but JAX sees none
    (a CPU-only jaxlib, JAX_PLATFORMS=cpu, no such device): a warning, or with ``require``
    `ConfigError`. (Before, the worker silently ran on the CPU, 10-100× slower.)"""
    if gpu is None:
        return
    import os

    import jax

    backend = jax.default_backend()
    if backend != "cpu":
        return
    why = (
        "JAX_PLATFORMS=cpu"
        if "cpu" in os.environ.get("JAX_PLATFORMS", "").split(",")
        else ("no CUDA-enabled jaxlib, or no such device")
    )
    message = f"--gpu {gpu}: JAX sees no GPU ({why})"
    if require:
        raise ConfigError(f"{message}; refusing to run on the CPU (--require-gpu)")
    logger.warning(
        "%s: RUNNING ON THE CPU, much slower. Install jax[cuda12] (README), or pass "
        "--require-gpu to exit instead",
        message,
    )


class WarmupProgress:
    """A service whose warm-up shows it is alive: compiling can take minutes, so it logs each
    compiled bucket (``warming tatbot: bucket 3/8 compiled, 41 s elapsed``) and every
    ``interval`` seconds the time elapsed, and passes each step on to the ``progress`` hook
    its `warmup` was given (the worker's: it announces it to its brokers). Requests pass
    straight through."""

    def __init__(self, service: Service, interval: float = 10.0) -> None:
        self.service = service
        self.robots = service.robots
        self.interval = interval
        self.done = self.total = 0
        self._t0 = time.monotonic()

    def _logged(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        robots = ",".join(self.robots)
        logger.info("warming %s: bucket %d/%d compiled, %s", robots, done, total, self._elapsed())

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._t0:.0f} s elapsed"

    @contextmanager
    def _ticking(self) -> Iterator[None]:
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.interval):
                counts = f"bucket {self.done}/{self.total}, " if self.total else ""
                logger.info(
                    "warming %s: still compiling (%s%s)",
                    ",".join(self.robots),
                    counts,
                    self._elapsed(),
                )

        thread = threading.Thread(target=tick, name="zmq-ik-warmup-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def warmup(self, progress: WarmupHook | None = None) -> dict[str, Any]:
        """The service's warm-up; a robot that does not load is a `ConfigError` (it would
        fail the same way on every restart)."""
        self._t0 = time.monotonic()

        def step(done: int, total: int) -> None:
            self._logged(done, total)
            if progress is not None:
                progress(done, total)

        with self._ticking():
            try:
                return self.service.warmup(step)
            except InputError as e:
                raise ConfigError(e.message) from e

    def handle(self, call: ServiceCall) -> ServiceReply:
        return self.service.handle(call)
