"""The worker's event loop: a DEALER to the broker, heartbeats, reconnects, one job at a time.

The main thread owns the broker socket (receives, heartbeats, sends); a compute thread runs
the `Service` and hands replies back over an inproc PAIR socket. So heartbeats keep flowing
while a long solve runs (JAX releases the GIL while XLA computes), and the socket is only
ever touched by one thread.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import zmq

from zmq_ik.errors import ErrorCode, InputError, ProtocolError
from zmq_ik.protocol import (
    Command,
    Disconnect,
    Heartbeat,
    Limits,
    Ready,
    Reply,
    Request,
    decode_payload,
    disconnect_frames,
    encode_payload,
    error_payload,
    heartbeat_frames,
    parse_message,
    ready_frames,
    reply_frames,
)
from zmq_ik.worker._service import Service, ServiceError, base_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """Everything that tunes a worker's connection; the CLI builds one from its flags."""

    connect: str = "tcp://127.0.0.1:5555"
    """Broker endpoint."""
    heartbeat_interval: float = 0.25
    """Seconds between heartbeats to the broker."""
    liveness: int = 4
    """Heartbeat intervals of silence from the broker before reconnecting."""
    reconnect_min: float = 0.25
    """First reconnect delay (seconds); doubles on each failure."""
    reconnect_max: float = 5.0
    """Cap on the reconnect delay."""
    limits: Limits = field(default_factory=Limits)
    """Protocol limits enforced on requests."""
    curve: Any = None
    """`zmq_ik.security.CurveClient` keys, or None for plaintext."""


@dataclass
class _Job:
    job_id: bytes
    robot: str
    operation: str
    deadline: float
    payload: list[Any]


class Worker:
    """Serve a `Service` to a broker until `stop()` or SIGTERM/SIGINT."""

    def __init__(
        self,
        service: Service,
        settings: WorkerSettings | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or WorkerSettings()
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._stop = threading.Event()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._busy = threading.Event()
        self._pair_addr = f"inproc://zmq-ik-worker-{uuid.uuid4().hex}"
        self.info: dict[str, Any] = {}
        self.served = 0

    def stop(self) -> None:
        """Finish the current job, say DISCONNECT, return from `run` (thread-safe)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info(
                "received %s: finishing current job, then leaving", signal.Signals(signum).name
            )
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Warm up, register, serve; reconnect whenever the broker goes silent."""
        t0 = time.monotonic()
        self.info = {**base_info(), **self.service.warmup()}
        self.info["robots"] = list(self.service.robots)
        self.info["warmup_s"] = round(time.monotonic() - t0, 3)
        self.info["heartbeat_ms"] = int(self.settings.heartbeat_interval * 1000)
        logger.info(
            "warm-up took %.2fs; serving %s on %s",
            self.info["warmup_s"],
            ",".join(self.service.robots),
            self.info.get("device", "cpu"),
        )
        pair_in = self.context.socket(zmq.PAIR)
        pair_in.setsockopt(zmq.LINGER, 0)
        pair_in.bind(self._pair_addr)
        compute = threading.Thread(target=self._compute_loop, name="zmq-ik-compute", daemon=True)
        compute.start()
        delay = self.settings.reconnect_min
        try:
            while not self._stop.is_set():
                outcome = self._session(pair_in)
                if outcome == "stopped":
                    break
                logger.warning(
                    "broker %s: %s; reconnecting in %.2fs", self.settings.connect, outcome, delay
                )
                if self._stop.wait(delay):
                    break
                delay = (
                    min(delay * 2, self.settings.reconnect_max)
                    if outcome == "silent"
                    else self.settings.reconnect_min
                )
        finally:
            self._jobs.put(None)
            compute.join(timeout=5)
            pair_in.close(0)
            if self._own_context:
                self.context.term()
        logger.info("worker stopped after %d job(s)", self.served)

    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.limits.max_message_bytes)
        # A send that cannot proceed within the liveness window (no usable connection: e.g.
        # a refused CURVE handshake, after which libzmq never reconnects) raises zmq.Again,
        # and the session ends as 'silent' -> new socket, backoff. Without it, it blocks forever.
        expiry_ms = int(self.settings.heartbeat_interval * self.settings.liveness * 1000)
        sock.setsockopt(zmq.SNDTIMEO, max(100, expiry_ms))
        if self.settings.curve is not None:
            self.settings.curve.apply(sock)
        sock.connect(self.settings.connect)
        sock.send_multipart(ready_frames(self.info))
        return sock

    def _session(self, pair_in: zmq.Socket) -> str:
        """One connection's life; returns why it ended ('stopped', 'silent', 'disconnected')."""
        sock = self._connect()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pair_in, zmq.POLLIN)
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        last_recv = last_sent = time.monotonic()
        stopping_since: float | None = None
        try:
            while True:
                events = dict(poller.poll(int(interval * 1000 / 2) + 1))
                now = time.monotonic()
                if pair_in in events:
                    while True:
                        try:
                            frames = pair_in.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        sock.send_multipart(frames, copy=False)
                        last_sent = now
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        last_recv = now
                        verdict = self._on_broker_message(sock, frames, now)
                        if verdict:
                            return verdict
                if self._stop.is_set():
                    if stopping_since is None:
                        stopping_since = now
                    if (
                        not self._busy.is_set() and self._jobs.empty()
                    ) or now - stopping_since > 30:
                        sock.send_multipart(disconnect_frames("worker stopping"))
                        return "stopped"
                if now - last_recv > expiry:
                    return "silent"
                if now - last_sent >= interval:
                    sock.send_multipart(heartbeat_frames())
                    last_sent = now
        except zmq.Again:
            return "silent"  # could not send for a whole liveness window: start afresh
        finally:
            sock.close(0)

    def _on_broker_message(self, sock: zmq.Socket, frames: list[Any], now: float) -> str | None:
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError as e:
            logger.warning("malformed message from broker ignored: %s", e.message)
            return None
        if isinstance(msg, Request):
            if self._stop.is_set():
                sock.send_multipart(
                    reply_frames(
                        Command.ERROR,
                        msg.request_id,
                        error_payload(ErrorCode.SHUTTING_DOWN, "worker is stopping"),
                    )
                )
            else:
                self._busy.set()
                self._jobs.put(
                    _Job(
                        msg.request_id,
                        msg.service,
                        msg.operation,
                        now + msg.timeout_ms / 1000,
                        msg.payload,
                    )
                )
        elif isinstance(msg, Disconnect):
            return "disconnected"
        elif isinstance(msg, Heartbeat | Ready | Reply):
            pass  # heartbeat: liveness already noted; others are not for workers
        return None

    # ------------------------------------------------------------------ compute thread

    def _compute_loop(self) -> None:
        out = self.context.socket(zmq.PAIR)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self._pair_addr)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                try:
                    for frames in self._run_job(job, out):
                        out.send_multipart(frames, copy=False)
                finally:
                    self.served += 1
                    if self._jobs.empty():
                        self._busy.clear()
        finally:
            out.close(0)

    def _run_job(self, job: _Job, out: zmq.Socket) -> list[list[Any]]:
        def error(code: ErrorCode, message: str, fld: str | None = None) -> list[list[Any]]:
            return [reply_frames(Command.ERROR, job.job_id, error_payload(code, message, fld))]

        if time.monotonic() > job.deadline:
            return error(ErrorCode.TIMEOUT, "deadline passed before the worker started")

        def progress(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None) -> None:
            out.send_multipart(
                reply_frames(Command.PARTIAL, job.job_id, encode_payload(header, arrays)),
                copy=False,
            )

        t0 = time.perf_counter()
        try:
            payload = decode_payload(job.payload, self.settings.limits)
            header, arrays = self.service.handle(
                job.robot, job.operation, payload.header, payload.arrays, progress
            )
            header = {**header, "compute_ms": round((time.perf_counter() - t0) * 1000, 3)}
            return [reply_frames(Command.FINAL, job.job_id, encode_payload(header, arrays))]
        except ProtocolError as e:
            return error(e.code, e.message, e.field)
        except InputError as e:
            return error(ErrorCode.BAD_REQUEST, e.message, e.field)
        except ServiceError as e:
            return error(e.code, e.message, e.field)
        except Exception as e:
            logger.error(
                "job %s (%s/%s) failed:\n%s",
                job.job_id.hex(),
                job.robot,
                job.operation,
                traceback.format_exc(),
            )
            return error(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
