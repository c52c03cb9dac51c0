"""The worker's event loop: a DEALER to the broker, heartbeats, reconnects, one job at a time.

The main thread receives a job, runs the `Service` on it right there and sends the reply:
no thread hand-off on the way (each one costs a thread wake-up and a GIL switch, tens of
microseconds on a busy machine, more than an echo costs). While a job runs, a small
heartbeat thread takes over the socket: it sends HEARTBEATs every interval, so they keep
flowing through a long solve (JAX releases the GIL while XLA computes; pure Python is
preempted every few milliseconds). A lock hands the socket between the two threads (a full
memory barrier, as ZeroMQ requires), so it is never used by both at once: the heartbeat
thread touches it only while a job runs, when the main thread does not.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import zmq

from zmq_ik.errors import ErrorCode, IKTimeout, InputError, ProtocolError
from zmq_ik.protocol import (
    DEFAULT_ENDPOINT,
    Command,
    Disconnect,
    Heartbeat,
    Limits,
    Ready,
    Reply,
    Request,
    decode_error,
    decode_payload,
    disconnect_frames,
    encode_payload,
    error_payload,
    heartbeat_frames,
    new_routing_id,
    parse_message,
    ready_frames,
    recv_frames,
    reply_frames,
    send_frames,
)
from zmq_ik.worker._service import Service, ServiceError, base_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """Everything that tunes a worker's connection; the CLI builds one from its flags."""

    connect: str = DEFAULT_ENDPOINT
    """Broker endpoint."""
    heartbeat_interval: float = 0.25
    """Seconds between heartbeats to the broker."""
    liveness: int = 4
    """Heartbeat intervals of silence from the broker before reconnecting."""
    reconnect_min: float = 0.25
    """First reconnect delay (seconds); doubles while the broker stays silent, and starts
    afresh once a broker has answered (each outage backs off from the start)."""
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


_NOBLOCK = int(zmq.NOBLOCK)


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
        self._lock = threading.Lock()
        """Held by whichever thread uses the broker socket while a job runs."""
        self._lent: zmq.Socket | None = None
        """The broker socket while a job runs (the heartbeat thread may use it), else None."""
        self._last_sent = 0.0
        """When anything was last sent to the broker (monotonic)."""
        self.info: dict[str, Any] = {}
        self.served = 0
        self._answered = False
        """Whether the broker of the current session has answered our READY (a HEARTBEAT or
        a request from it): the registration took, so the reconnect backoff starts afresh."""

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
        done = threading.Event()
        keeper = threading.Thread(
            target=self._heartbeat_loop, args=(done,), name="zmq-ik-heartbeat", daemon=True
        )
        keeper.start()
        delay = self.settings.reconnect_min
        try:
            while not self._stop.is_set():
                outcome = self._session()
                if outcome == "stopped" or self._stop.is_set():
                    # A DISCONNECT from a broker that is itself shutting down, received
                    # while we stop too, is the normal end: no reconnect, no warning.
                    break
                if self._answered:
                    # We were registered: this is a new outage, not the same one going on,
                    # so back off from the start (without this the delay kept growing over
                    # separate outages, up to reconnect_max for every later broker restart).
                    delay = self.settings.reconnect_min
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
            done.set()
            keeper.join(timeout=5)
            if self._own_context:
                self.context.term()
        logger.info("worker stopped after %d job(s)", self.served)

    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
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

    def _session(self) -> str:
        """One connection's life; returns why it ended ('stopped', 'silent', 'disconnected')."""
        sock = self._connect()
        self._answered = False
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        last_recv = self._last_sent = time.monotonic()
        # A blocking receive with a timeout, not poll + non-blocking receives: it waits in one
        # system call and returns a queued message with none (zmq_poll costs several).
        sock.setsockopt(zmq.RCVTIMEO, int(interval * 1000 / 2) + 1)
        try:
            while True:
                try:
                    frames = recv_frames(sock)
                except zmq.Again:  # nothing within the timeout
                    now = time.monotonic()
                else:
                    now = last_recv = time.monotonic()
                    verdict = self._on_broker_message(sock, frames, now)
                    if verdict:
                        return verdict
                    # A job may have run meanwhile: what the broker sent during it (heartbeats)
                    # is still queued, so silence counts from now, not from the request.
                    now = last_recv = time.monotonic()
                if self._stop.is_set():
                    sock.send_multipart(disconnect_frames("worker stopping"))
                    return "stopped"
                if now - last_recv > expiry:
                    return "silent"
                if now - self._last_sent >= interval:
                    sock.send_multipart(heartbeat_frames())
                    self._last_sent = now
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
        if isinstance(msg, Heartbeat | Request):
            self._answered = True  # the broker knows us: only registered workers get these
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
                job = _Job(
                    msg.request_id,
                    msg.service,
                    msg.operation,
                    now + msg.timeout_ms / 1000,
                    msg.payload,
                )
                self._run(job, sock)
        elif isinstance(msg, Disconnect):
            return "disconnected"
        elif isinstance(msg, Reply) and msg.command is Command.ERROR:
            # The broker refused something we sent (e.g. READY): say so, or the worker would
            # just reconnect and re-register forever without a word.
            try:
                code, message, _ = decode_error(msg.payload)
            except ProtocolError:
                code, message = "?", "(unreadable error)"
            logger.error("broker refused a message from this worker: [%s] %s", code, message)
        elif isinstance(msg, Heartbeat | Ready | Reply):
            pass  # heartbeat: liveness already noted; others are not for workers
        return None

    # ------------------------------------------------------------------ jobs

    def _run(self, job: _Job, sock: zmq.Socket) -> None:
        """Run one job here, the socket lent to the heartbeat thread meanwhile; send its reply."""
        with self._lock:
            self._lent = sock
        try:
            frames = self._run_job(job, sock)
        finally:
            with self._lock:
                self._lent = None
            self.served += 1
        send_frames(sock, frames)
        self._last_sent = time.monotonic()

    def _heartbeat_loop(self, done: threading.Event) -> None:
        """HEARTBEATs to the broker while a job runs (the main thread sends them otherwise)."""
        interval = self.settings.heartbeat_interval
        beat = heartbeat_frames()
        while not done.wait(interval / 4):
            with self._lock:
                sock = self._lent
                now = time.monotonic()
                if sock is None or now - self._last_sent < interval:
                    continue
                try:
                    send_frames(sock, beat, _NOBLOCK)
                except zmq.ZMQError:
                    continue  # no usable connection now: the main loop deals with it later
                self._last_sent = now

    def _run_job(self, job: _Job, sock: zmq.Socket) -> list[Any]:
        def error(code: ErrorCode, message: str, fld: str | None = None) -> list[Any]:
            return reply_frames(Command.ERROR, job.job_id, error_payload(code, message, fld))

        if time.monotonic() > job.deadline:
            return error(ErrorCode.TIMEOUT, "deadline passed before the worker started")

        def progress(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None) -> None:
            frames = reply_frames(Command.PARTIAL, job.job_id, encode_payload(header, arrays))
            with self._lock:  # the heartbeat thread may be sending right now
                try:
                    send_frames(sock, frames)
                except zmq.Again:  # no usable connection: the FINAL reply's send will tell
                    logger.debug("progress of job %s not sent", job.job_id.hex())
                    return
                self._last_sent = time.monotonic()

        t0 = time.perf_counter()
        try:
            payload = decode_payload(job.payload, self.settings.limits)
            header, arrays = self.service.handle(
                job.robot, job.operation, payload.header, payload.arrays, progress, job.deadline
            )
            header = {**header, "compute_ms": round((time.perf_counter() - t0) * 1000, 3)}
            return reply_frames(Command.FINAL, job.job_id, encode_payload(header, arrays))
        except ProtocolError as e:
            return error(e.code, e.message, e.field)
        except InputError as e:
            return error(ErrorCode.BAD_REQUEST, e.message, e.field)
        except IKTimeout as e:
            return error(ErrorCode.TIMEOUT, str(e))
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
