"""IKClient: the robot side. A DEALER socket, many requests in flight, retries by request id.

Thread safety: an `IKClient` (like a ZeroMQ socket) belongs to one thread. Use one client per
thread, or `AsyncIKClient` for many concurrent calls in one asyncio loop.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from zmq_ik import ops
from zmq_ik.errors import ErrorCode, IKTimeout, InputError, ProtocolError, remote_error
from zmq_ik.model import IKSettings, IKSolution, Scene, StrokeBatch, StrokeList
from zmq_ik.protocol import (
    BROKER_SERVICE,
    LIMITS,
    MAX_TIMEOUT_MS,
    Command,
    Payload,
    Reply,
    check_size,
    decode_error,
    decode_payload,
    encode_payload,
    new_routing_id,
    parse_message,
    recv_frames,
    request_frames,
    send_frames,
)

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = os.environ.get("ZMQ_IK_ENDPOINT", "tcp://127.0.0.1:5555")
_NOBLOCK = int(zmq.NOBLOCK)
RETRYABLE = frozenset({ErrorCode.WORKER_LOST.value, ErrorCode.SHUTTING_DOWN.value})
"""Error codes after which the same request is worth sending again (same id)."""


MIN_TIMEOUT = 0.001
"""Shortest request timeout (s): deadlines travel in whole milliseconds."""
MAX_TIMEOUT = MAX_TIMEOUT_MS / 1000
"""Longest request timeout (s), about 49.7 days: the most a deadline frame can carry."""
_MAX_RCVTIMEO = 2**31 - 1
"""Largest RCVTIMEO (ms) libzmq takes (a C int); a longer wait is taken in several steps."""


def check_timeout(value: object, name: str = "timeout") -> float:
    """A request timeout in seconds, refused at once unless finite and in [MIN_TIMEOUT,
    MAX_TIMEOUT]: past the wire's range it overflowed deep in the send path, and a negative
    one was 'sent' `retries + 1` times, each attempt timing out at once."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    seconds = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:  # NaN fails this too
        raise InputError(
            f"{name} must be a finite number of seconds from {MIN_TIMEOUT:g} to "
            f"{MAX_TIMEOUT:.3f}, got {value!r:.40}",
            name,
        )
    return seconds


def check_retries(value: object) -> int:
    """The number of re-sends after the first attempt: an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InputError(f"retries must be an integer >= 0, got {value!r:.40}", "retries")
    return int(value)


def request_message(
    request_id: bytes,
    service: str,
    operation: str,
    timeout: float,
    header: Mapping[str, Any] | None,
    arrays: Mapping[str, Any] | None,
) -> list[Any]:
    """The REQUEST frames of one call, refused before any send when over a protocol limit
    (message size, array count, header size) with the error the broker's refusal raises:
    `RemoteError` ``too_large``. Sent, a frame over the broker's MAXMSGSIZE only dropped the
    connection, and the request was re-sent until it timed out."""
    try:
        payload = encode_payload(header, arrays)  # checks the header size and array count
        frames = request_frames(request_id, service, operation, int(timeout * 1000), payload)
        check_size(frames)
    except ProtocolError as e:
        if e.code is not ErrorCode.TOO_LARGE:
            raise
        raise remote_error(e.code.value, e.message, e.field) from e
    return frames


def answer_grace(timeout: float) -> float:
    """How long past its deadline a client still waits: the broker answers `timeout` or
    `unknown_robot` *at* the deadline, and that answer is worth more than a local timeout."""
    return min(1.0, 0.1 + 0.05 * timeout)


Progress = Callable[[int, int], None]
"""Called with (poses done, poses total) as a job's chunks come back."""


@dataclass
class Call:
    """One request to send: where, what, and what to do with its PARTIAL replies."""

    service: str
    operation: str
    header: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray]
    on_partial: Callable[[Payload], None] | None = None


@dataclass
class _Pending:
    index: int
    call: Call
    frames: list[Any]
    sent_at: float
    attempts: int


class IKClient:
    """Synchronous ZIK/1 client.

    ``timeout`` is the deadline of one attempt (sent with the request), in seconds from
    `MIN_TIMEOUT` (1 ms) to `MAX_TIMEOUT` (about 49.7 days); after it passes with no answer
    the request is sent again with the same id, up to ``retries`` (an int >= 0) times, then
    `IKTimeout`. The broker never runs a retried request twice while it still holds it.
    Bad values raise `InputError` here; so does a bad per-call ``timeout``. A request over
    the protocol's limits (`protocol.LIMITS`) raises `RemoteError` ``too_large``, as the
    broker's refusal would, but before it is sent.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        context: zmq.Context | None = None,
        curve: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = check_timeout(timeout)
        self.retries = check_retries(retries)
        self.context = context or zmq.Context.instance()
        self._curve = curve
        self._ids = 0
        self._prefix = os.urandom(4)
        self.socket = self._open()
        self._rcvtimeo = -1  # the socket's RCVTIMEO (ms), set as `exchange` needs

    def _open(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, LIMITS.max_message_bytes)
        if self._curve is not None:
            self._curve.apply(sock)
        sock.connect(self.endpoint)
        return sock

    def close(self) -> None:
        self.socket.close(0)

    def __enter__(self) -> IKClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, frames: list[Any]) -> None:
        """Send without blocking. A DEALER with no usable connection (e.g. its CURVE handshake
        was refused, after which libzmq does not reconnect) would block forever; the message
        is then treated as lost, and the deadline/retry logic ends in `IKTimeout`."""
        try:
            send_frames(self.socket, frames, _NOBLOCK)
        except zmq.Again:
            logger.debug("no connection to %s: request not sent", self.endpoint)

    def _next_id(self) -> bytes:
        self._ids += 1
        return self._prefix + self._ids.to_bytes(8, "big")

    # ------------------------------------------------------------------ transport

    def exchange(
        self, calls: Iterable[Call], *, max_in_flight: int = 8, timeout: float | None = None
    ) -> Iterator[tuple[int, Payload]]:
        """Send calls with up to ``max_in_flight`` outstanding; yield (index, payload) as
        FINAL replies arrive (any order). Raises the call's error on an ERROR reply."""
        timeout = check_timeout(self.timeout if timeout is None else timeout)
        patience = timeout + answer_grace(timeout)
        # In order of sent_at: a re-sent request moves to the end (see `_resent`).
        pending: dict[bytes, _Pending] = {}
        source = enumerate(calls)
        exhausted = False
        sock = self.socket
        while True:
            while not exhausted and len(pending) < max_in_flight:
                try:
                    index, call = next(source)
                except StopIteration:
                    exhausted = True
                    break
                rid = self._next_id()
                frames = request_message(
                    rid, call.service, call.operation, timeout, call.header, call.arrays
                )
                pending[rid] = _Pending(index, call, frames, time.monotonic(), 1)
                self._send(frames)
            if not pending:
                return
            wait = next(iter(pending.values())).sent_at + patience - time.monotonic()
            if wait <= 0:
                self._resend_expired(pending, patience)
                continue
            # A blocking receive with a timeout: one system call to sleep, none when a reply
            # is already queued (zmq_poll, then a receive, costs several per reply).
            wait_ms = min(max(1, int(wait * 1000)), _MAX_RCVTIMEO)
            if wait_ms != self._rcvtimeo:
                sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._rcvtimeo = wait_ms
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                self._resend_expired(pending, patience)
                continue
            result = self._on_reply(frames, pending, timeout)
            if result is not None:
                yield result

    def _resend_expired(self, pending: dict[bytes, _Pending], timeout: float) -> None:
        now = time.monotonic()
        for rid, p in list(pending.items()):
            if now < p.sent_at + timeout:
                continue
            if p.attempts > self.retries:
                del pending[rid]
                raise IKTimeout(
                    f"no answer from {self.endpoint} for {p.call.service}/{p.call.operation} "
                    f"after {p.attempts} attempt(s) of {timeout:.1f}s"
                )
            logger.info(
                "no answer for %s after %.1fs: retrying (attempt %d)",
                rid.hex(),
                timeout,
                p.attempts + 1,
            )
            self._resent(pending, rid, p, now)
            self._send(p.frames)

    @staticmethod
    def _resent(pending: dict[bytes, _Pending], rid: bytes, p: _Pending, now: float) -> None:
        """Count another attempt of ``p``, sent at ``now``: it moves to the end of ``pending``."""
        p.attempts += 1
        p.sent_at = now
        del pending[rid]
        pending[rid] = p

    def _on_reply(
        self, frames: list[Any], pending: dict[bytes, _Pending], timeout: float
    ) -> tuple[int, Payload] | None:
        try:
            msg = parse_message(frames)
        except ProtocolError as e:
            logger.warning("malformed reply ignored: %s", e.message)
            return None
        if not isinstance(msg, Reply):
            return None
        p = pending.get(msg.request_id)
        if p is None:
            if msg.command is Command.ERROR and not msg.request_id:
                code, message, fld = decode_error(msg.payload)
                raise remote_error(code, message, fld)
            return None  # an answer to a retried request we already have
        if msg.command is Command.PARTIAL:
            if p.call.on_partial is not None:
                p.call.on_partial(decode_payload(msg.payload))
            return None
        if msg.command is Command.ERROR:
            code, message, fld = decode_error(msg.payload)
            if code in RETRYABLE and p.attempts <= self.retries:
                self._resent(pending, msg.request_id, p, time.monotonic())
                self._send(p.frames)
                return None
            del pending[msg.request_id]
            raise remote_error(code, message, fld)
        del pending[msg.request_id]
        return p.index, decode_payload(msg.payload)

    def request(
        self,
        service: str,
        operation: str,
        header: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        timeout: float | None = None,
        on_partial: Callable[[Payload], None] | None = None,
    ) -> Payload:
        """One request, one answer: the reply's header and arrays."""
        call = Call(service, operation, header or {}, arrays or {}, on_partial)
        for _, payload in self.exchange([call], timeout=timeout):
            return payload
        raise AssertionError("unreachable: exchange yields once per call")  # pragma: no cover

    # ------------------------------------------------------------------ IK calls

    def solve(
        self,
        robot: str,
        target_wxyz: Any,
        target_pos: Any,
        rest: Any = None,
        ee_links: Sequence[str] | None = None,
        *,
        ik: IKSettings | None = None,
        timeout: float | None = None,
    ) -> IKSolution:
        """Solve IK for (N, n_ee) target poses (or one (n_ee, ·) pose) on ``robot``."""
        header, arrays = ops.solve_request(target_wxyz, target_pos, rest, ee_links, ik)
        return ops.read_solve_reply(
            self.request(robot, ops.SOLVE, header, arrays, timeout=timeout).arrays
        )

    def compute(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        chunk_pairs: int = 64,
        max_in_flight: int = 8,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> StrokeBatch:
        """Joint angles for every stroke pose: tatbot's ``strokebatch_from_strokes`` over the wire.

        The job is split into chunks of ``chunk_pairs`` stroke pairs sent concurrently (so all
        workers serving the robot share it), reassembled in order; memory is bounded by
        ``chunk_pairs × max_in_flight``.
        """
        packed = ops.apply_first_last_rest(strokes.pack(scene.stroke_length), scene)
        b = len(packed)
        chunk_pairs = max(1, int(chunk_pairs))
        starts = list(range(0, b, chunk_pairs)) or [0]
        per_pair = scene.stroke_length * scene.offset_num

        def calls() -> Iterator[Call]:
            for s in starts:
                header, arrays = ops.strokebatch_request(
                    scene, ops.slice_packed(packed, s, s + chunk_pairs)
                )
                yield Call(scene.robot, ops.STROKEBATCH, header, arrays)

        parts: dict[int, StrokeBatch] = {}
        done = 0
        if progress is not None:
            progress(0, b * per_pair)
        for index, payload in self.exchange(calls(), max_in_flight=max_in_flight, timeout=timeout):
            parts[index] = ops.read_strokebatch_reply(payload.arrays)
            done += len(parts[index]) * per_pair
            if progress is not None:
                progress(done, b * per_pair)
        return StrokeBatch.concat([parts[i] for i in range(len(starts))])

    def describe(
        self,
        robot: str,
        ee_links: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """What a worker solves for ``robot``: ``ee_links`` (the defaults when None), and per
        joint in the order of ``rest`` / ``joints``: ``joint_names``, ``lower``, ``upper``,
        ``limited`` and the default ``rest``."""
        payload = self.request(robot, ops.DESCRIBE, ops.describe_request(ee_links), timeout=timeout)
        return ops.read_describe_reply(payload.header, payload.arrays)

    # ------------------------------------------------------------------ management

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Round trip to the broker: ``rtt_ms``, broker ``version`` and live ``workers``."""
        t0 = time.perf_counter()
        payload = self.request(BROKER_SERVICE, "ping", timeout=timeout)
        info = dict(payload.header)
        info["rtt_ms"] = (time.perf_counter() - t0) * 1000
        return info

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        """The broker's full status: workers, queues, in-flight jobs, counters."""
        return dict(self.request(BROKER_SERVICE, "status", timeout=timeout).header)
