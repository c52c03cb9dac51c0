"""What a worker computes: a `Service` maps (robot, operation, header, arrays) to a reply.

Services know nothing about sockets; the worker loop (`_worker.py`) feeds them decoded
requests one at a time and turns what they return or raise into FINAL / ERROR replies.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zmq_ik._version import __version__
from zmq_ik.errors import ErrorCode, IKError, IKTimeout

Progress = Callable[[Mapping[str, Any], Mapping[str, np.ndarray] | None], None]
"""Send a PARTIAL reply: header (e.g. ``{"progress": [done, total]}``) and optional arrays."""
WarmupHook = Callable[[int, int], None]
"""Told ``(done, total)`` steps (compiled buckets) as a service's warm-up advances: the
``progress`` argument of `Service.warmup`. The worker passes one that announces the progress
to its brokers (WARMING); `worker.settings.WarmupProgress` logs it on the way. It may raise
to stop the warm-up (the worker does, when it is stopped)."""


class ServiceError(IKError):
    """An error a service reports on purpose, with a protocol error code."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


ServiceReply = tuple[dict[str, Any], dict[str, np.ndarray]]
"""What a service returns: the FINAL reply's header and arrays."""


@dataclass(frozen=True)
class ServiceCall:
    """One decoded request as a service sees it (one argument, so that a new field reaches
    every service without touching each signature)."""

    robot: str
    """The robot (service) name the client asked for."""
    operation: str
    """What to compute, e.g. ``solve``."""
    header: Mapping[str, Any]
    """The request's msgpack header."""
    arrays: Mapping[str, np.ndarray]
    """The request's arrays, by name."""
    progress: Progress = lambda header, arrays: None
    """Sends a PARTIAL reply."""
    deadline: float | None = None
    """``time.monotonic()`` seconds when the client stops waiting: long work checks it
    between steps and raises `IKTimeout`, so that one huge request cannot hold the worker
    long after its answer stopped mattering."""


class Service(Protocol):
    """The interface the worker loop drives."""

    robots: list[str]
    """Robot (service) names served; sent in WARMING and READY."""

    def warmup(self, progress: WarmupHook | None = None) -> dict[str, Any]:
        """Load and compile everything before READY, telling ``progress`` each step done;
        returns facts for the READY header."""
        ...

    def handle(self, call: ServiceCall) -> ServiceReply:
        """Compute one request; raise `InputError`/`ServiceError` for bad requests and
        `IKTimeout` once ``call.deadline`` has passed."""
        ...


class EchoService:
    """A service with no IK, for tests and transport benchmarks.

    Operations: ``echo`` returns the header and arrays it got; ``sleep`` waits
    ``header["seconds"]`` (a stand-in for a long solve); ``fail`` raises (an `internal` error).
    ``warmup_s``: how long its warm-up takes, in `WARMUP_STEPS` steps reported like
    compiled buckets (a stand-in for a compiling IK worker).
    """

    WARMUP_STEPS = 4

    def __init__(self, robots: list[str] | None = None, warmup_s: float = 0.0) -> None:
        self.robots = list(robots or ["echo"])
        self.warmup_s = warmup_s

    def warmup(self, progress: WarmupHook | None = None) -> dict[str, Any]:
        if self.warmup_s > 0:
            steps = self.WARMUP_STEPS
            for done in range(1, steps + 1):
                time.sleep(self.warmup_s / steps)
                if progress is not None:
                    progress(done, steps)
        return {"device": "cpu", "operations": ["echo", "sleep", "fail"]}

    def handle(self, call: ServiceCall) -> ServiceReply:
        operation, header = call.operation, call.header
        if operation == "echo":
            return {**header, "pid": os.getpid()}, dict(call.arrays)
        if operation == "sleep":
            seconds = header.get("seconds", 0)
            if not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
                raise ServiceError(ErrorCode.BAD_REQUEST, "seconds must be in 0..3600", "seconds")
            steps = max(1, int(seconds / 0.05))
            for i in range(steps):
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise IKTimeout(f"deadline passed after sleeping {i}/{steps} of {seconds}s")
                time.sleep(seconds / steps)
                if header.get("progress"):
                    call.progress({"progress": [i + 1, steps]}, None)
            return {"slept": seconds, "pid": os.getpid()}, {}
        if operation == "fail":
            raise RuntimeError("failing on purpose")
        raise ServiceError(
            ErrorCode.UNKNOWN_OPERATION, f"echo service has no operation {operation!r}", "operation"
        )


def base_info() -> dict[str, Any]:
    """READY facts every worker reports."""
    return {
        "versions": {"zmq-ik": __version__, "python": platform.python_version()},
        "pid": os.getpid(),
        "host": platform.node(),
        "capacity": 1,
    }
