"""Compiles seen as they happen: a process-wide count, and for a request that waits for one
(on demand, after READY) a count, a time and a notice to its client (`OnDemand`)."""

from __future__ import annotations

import logging
import threading

from zmq_ik.worker._service import ServiceCall

logger = logging.getLogger(__name__)

_compiles = 0
"""XLA compilations (or loads from the persistent cache) in this process since
`listen_for_compiles`, on every thread (one counter: compiles are a process-wide event, and
a listener per service would never be unregistered)."""
_COMPILED = "/jax/core/compile/backend_compile_duration"
"""JAX's event after each compile, or load from the persistent cache (its duration)."""
_COMPILING = "/jax/compilation_cache/compile_requests_use_cache"
"""JAX's event before each compile (only while the persistent cache is on: without one, a
client is not told before, only the log after)."""


class OnDemand:
    """What one request compiled on the thread serving it (`IKService.handle`): counted and
    timed for the log and ``compiles_since_ready``; the client is told at the first compile
    (a PARTIAL ``{"compiling": message}``), so that a timeout is not silent."""

    def __init__(self, call: ServiceCall) -> None:
        self.call = call
        self.what = call.operation
        """The request's setting, for the log and the notice (`IKService._explain`)."""
        self.hint = ""
        """What would have compiled it before READY (a ``--warm`` or ``--ee-links``)."""
        self.compiles = 0
        self.seconds = 0.0
        self.told = False

    def starting(self) -> None:
        if self.told:
            return
        self.told = True
        message = (
            f"the worker is compiling a program for this request ({self.call.robot} "
            f"{self.what}), once: seconds to minutes on a CPU"
            + (f"; {self.hint}" if self.hint else "")
        )
        logger.info("robot %s: compiling on demand for %s", self.call.robot, self.what)
        try:
            self.call.progress({"compiling": message}, None)
        except Exception:  # telling is best effort: the compile and the answer go on
            logger.debug("compile notice not sent", exc_info=True)


serving = threading.local()
"""``.job``: the `OnDemand` of the request this thread serves (None: not serving, e.g. the
warm-up threads, whose compiles are expected)."""


def _count_compile(event: str, duration_secs: float, **kwargs: str | int) -> None:
    global _compiles
    if event == _COMPILED:
        _compiles += 1
        job: OnDemand | None = getattr(serving, "job", None)
        if job is not None:
            job.compiles += 1
            job.seconds += duration_secs


def _compile_starts(event: str, **kwargs: str | int) -> None:
    if event == _COMPILING:
        job: OnDemand | None = getattr(serving, "job", None)
        if job is not None:
            job.starting()


_listening = False


def listen_for_compiles() -> None:
    """Start counting compilations (once per process)."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_count_compile)
        jax.monitoring.register_event_listener(_compile_starts)
        _listening = True


def compiles_so_far() -> int:
    """XLA compilations in this process so far, on any thread (the warm-up's included)."""
    return _compiles
