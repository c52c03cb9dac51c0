"""IKClient: the robot side. A DEALER socket, many requests in flight, retries by request id.

A thin blocking loop over `ClientCore` (client/_core.py) and its batches and stroke jobs
(client/_exchange.py), which hold every protocol rule; `AsyncIKClient` is the same over
asyncio, with the same methods.

Thread safety: an `IKClient` (like a ZeroMQ socket) belongs to one thread. Use one client per
thread, or `AsyncIKClient` for many concurrent calls in one asyncio loop. Within its thread,
calls may interleave: a `stream` being iterated and a `solve` between its slices share the
socket, and each answer goes to its own call.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from zmq_ik.client import _exchange as calls
from zmq_ik.client._checks import call_timeout, check_client, check_endpoint
from zmq_ik.client._core import CANCEL_WAIT, Call, ClientCore, Event, settle
from zmq_ik.client._exchange import (
    DEFAULT_MAX_IN_FLIGHT,
    Assembly,
    Exchange,
    Progress,
    StrokeJob,
)
from zmq_ik.errors import InputError
from zmq_ik.model import (
    ORI_TOL,
    POS_TOL,
    EEPoses,
    IKSettings,
    IKSolution,
    Scene,
    StrokeBatch,
    StrokeList,
)
from zmq_ik.protocol import (
    LIMITS,
    Payload,
    new_routing_id,
    recv_burst,
    send_frames,
    set_link_heartbeats,
)
from zmq_ik.protocol.handshakes import Handshakes

logger = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
_MAX_RCVTIMEO = 2**31 - 1
"""Largest RCVTIMEO (ms) libzmq takes (a C int); a longer wait is taken in several steps."""
_WAIT_STEP_MS = 1000
"""Longest blocking receive (ms) of the one-broker loop; longer waits are taken in steps of
this. A request's wait (its deadline from now) differs by a millisecond or so from call to
call, so without a cap RCVTIMEO was set again on most calls; with it, any request with a
timeout over a second leaves it alone."""
_DRAIN = 10_000
"""Messages read without waiting before a due timer is handled (bounds one drain)."""


def open_dealers(
    context: zmq.Context[Any],
    endpoints: Sequence[str],
    curve: Any = None,
    handshakes: Handshakes | None = None,
) -> list[zmq.Socket[Any]]:
    """One DEALER per broker (`open_dealer`); none is left open if one cannot be made."""
    sockets: list[zmq.Socket[Any]] = []
    try:
        for endpoint in endpoints:
            sockets.append(open_dealer(context, endpoint, curve, handshakes))
    except BaseException:
        if handshakes is not None:
            handshakes.close()
        for sock in sockets:
            sock.close(0)
        raise
    return sockets


def open_dealer(
    context: zmq.Context[Any],
    endpoint: str,
    curve: Any = None,
    handshakes: Handshakes | None = None,
) -> zmq.Socket[Any]:
    """A client DEALER connected to ``endpoint`` (checked: `InputError` naming it if libzmq
    refuses it, never a bare `ZMQError`), its handshakes watched by ``handshakes``."""
    endpoint = check_endpoint(endpoint)
    sock = context.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, LIMITS.max_message_bytes)
        set_link_heartbeats(sock, "client")  # a half-open link is dropped and reconnected
        if curve is not None:
            curve.apply(sock)
        if handshakes is not None:
            handshakes.watch(sock)
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise InputError(
            f"cannot connect to endpoint {endpoint!r:.80} ({e}): use tcp://host:port", "endpoint"
        ) from e
    except BaseException:
        sock.close(0)
        raise
    return sock


class IKClient:
    """Synchronous ZIK/1 client.

    ``endpoint``: ``tcp://host:port`` of the broker, or of several (a list, or one string
    with commas): the client then fails over between them (docs/protocol.md 4.9); None
    reads ``$ZMQ_IK_ENDPOINT`` (at construction), else ``tcp://127.0.0.1:5555``. ``timeout`` is the deadline of one attempt
    (sent with the request), in seconds from `MIN_TIMEOUT` (1 ms) to `MAX_TIMEOUT` (about
    49.7 days); after it passes with no answer the request is sent again with the same id,
    up to ``retries`` (an int >= 0) times, then `IKTimeout`. The broker never runs a retried
    request twice while it still holds it. Bad values raise `InputError` here; so does a bad
    per-call ``timeout``. A request over the protocol's limits (`protocol.LIMITS`) raises
    `RemoteError` ``too_large``, as the broker's refusal would, but before it is sent.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        context: zmq.Context[Any] | None = None,
        curve: Any = None,
    ) -> None:
        self.endpoints, self.timeout, self.retries = check_client(endpoint, timeout, retries)
        self.endpoint = ",".join(self.endpoints)
        self.context = context or zmq.Context.instance()
        self._core = ClientCore(self.endpoints, retries=self.retries)
        self._bounds = calls.BoundsCache()
        self._handshakes = Handshakes(curve)
        self._core.explain = self._handshakes.explain
        self._core.reached = self._handshakes.reached
        self.sockets = open_dealers(self.context, self.endpoints, curve, self._handshakes)
        self.socket = self.sockets[0]
        """The first broker's socket (the only one, with one broker)."""
        self._poller = zmq.Poller()
        for sock in self.sockets:
            self._poller.register(sock, zmq.POLLIN)
        self._index = {sock: i for i, sock in enumerate(self.sockets)}
        self._rcvtimeo = [-1] * len(self.sockets)  # each socket's RCVTIMEO (ms), as `_pump` set it
        self._core.start(time.monotonic())
        self._flush()

    def close(self) -> None:
        """Fail what still waits and cancel it at the brokers (waiting at most `CANCEL_WAIT`
        for them to take the cancel), then close the sockets."""
        self._core.fail_all(InputError("the client was closed", "client"))
        try:
            if not self.socket.closed:
                self._flush()
                self._await_cancels()
        finally:
            self._handshakes.close()  # (first: `Handshakes.close`)
            for sock in self.sockets:
                sock.close(0)

    def _await_cancels(self) -> None:
        """Read until every cancel sent was acknowledged, for at most `CANCEL_WAIT`: closed
        with LINGER 0, a socket drops what it has not sent yet, and so would a process
        exiting (Ctrl-C)."""
        core = self._core
        deadline = time.monotonic() + CANCEL_WAIT
        while core.cancelling and (left := deadline - time.monotonic()) > 0:
            for sock, _ in self._poller.poll(max(1, int(left * 1000))):
                for frames in recv_burst(sock, 1):
                    core.handle(frames, time.monotonic(), self._index[sock])

    def _cancelled(self) -> None:
        """Send the cancel that leaving a call put in the outbox (unless the client closed)."""
        if self._core.outbox and not self.socket.closed:
            self._flush()

    def __enter__(self) -> IKClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop

    def _flush(self) -> None:
        """Send the core's outbox without blocking. A DEALER with no usable connection (e.g.
        its CURVE handshake was refused, after which libzmq does not reconnect) would block
        forever; the message is then treated as lost, and the deadline/retry logic ends in
        `IKTimeout`."""
        outbox = self._core.outbox
        sockets = self.sockets
        while outbox:
            i, frames = outbox.popleft()
            try:
                send_frames(sockets[i], frames, _NOBLOCK)
            except zmq.Again:
                logger.debug("no connection to %s: request not sent", self.endpoints[i])

    def _on_frames(self, frames: list[Any], now: float, connection: int = 0) -> None:
        """Every received message goes through here to the core."""
        self._core.handle(frames, now, connection)

    def _pump(self) -> None:
        """Wait for one message or the core's next timer, whichever comes first."""
        core = self._core
        due = core.next_due()
        now = time.monotonic()
        wait = 1.0 if due is None else due - now
        if wait > 0:
            i = self._listened()
            if i is None:  # several brokers waited on: poll them all, one message each
                events = self._poller.poll(min(max(1, int(wait * 1000)), _MAX_RCVTIMEO))
                for sock, _ in events:
                    for frames in recv_burst(sock, 1):
                        self._on_frames(frames, time.monotonic(), self._index[sock])
                if events:
                    if core.outbox:
                        self._flush()
                    return
            else:
                # A blocking receive with a timeout: one system call to sleep, none when a
                # reply is already queued (zmq_poll, then a receive, costs several per reply).
                sock = self.sockets[i]
                wait_ms = min(max(1, int(wait * 1000)), _WAIT_STEP_MS)
                if wait_ms != self._rcvtimeo[i]:
                    sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                    self._rcvtimeo[i] = wait_ms
                for frames in recv_burst(sock, 1, block=True):
                    self._on_frames(frames, time.monotonic(), i)
                    if core.outbox:  # a retry (a retryable error), a failover
                        self._flush()
                    return
        # A timer is due (or a wait step ended: `tick` then finds nothing due). Answers that
        # arrived while nobody read (a stream's consumer was busy, or they came from a broker
        # not listened to) are read first: they must not be taken for silence and sent again.
        for i, sock in enumerate(self.sockets):
            for frames in recv_burst(sock, _DRAIN):
                self._on_frames(frames, time.monotonic(), i)
        core.tick(time.monotonic())
        self._flush()

    def _listened(self) -> int | None:
        """The one broker worth a blocking receive: the only one, or the only one waited on
        (the others' messages, late answers or probe answers, are read when a timer is due:
        at most `client._failover.RECHECK` later). None: poll them all."""
        views = self._core.connections
        if len(views) == 1:
            return 0
        waited = [i for i, v in enumerate(views) if v.waited_on]
        return waited[0] if len(waited) == 1 else None

    def _run(self, exchange: Exchange) -> Iterator[tuple[int, Payload]]:
        """Drive ``exchange`` to its end, yielding its answers; forget what is left on exit."""
        try:
            while True:
                exchange.fill(time.monotonic(), self._flush)
                item = exchange.take()
                if item is not None:
                    yield item
                    continue
                if exchange.done:
                    return
                self._pump()
        finally:
            exchange.abandon()
            self._cancelled()

    # ------------------------------------------------------------------ transport

    def exchange(
        self,
        calls: Iterable[Call],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float | None = None,
    ) -> Iterator[tuple[int, Payload]]:
        """Send calls with up to ``max_in_flight`` outstanding; yield (index, payload) as
        FINAL replies arrive (any order). Raises the call's error on an ERROR reply."""
        ex = Exchange(
            self._core, calls, timeout=call_timeout(timeout, self.timeout), window=max_in_flight
        )
        return self._run(ex)

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
        """One request, one answer: the reply's header and arrays. ``on_partial`` is called
        with each PARTIAL reply (progress, streamed pieces) before the answer."""
        call = Call(service, operation, header or {}, arrays or {}, on_partial)
        seconds = call_timeout(timeout, self.timeout)
        events: deque[Event] = deque()
        core = self._core
        rid = core.submit(call, seconds, time.monotonic(), events.append)
        try:  # every control loop's hot path: no `Exchange` for one call
            self._flush()
            while True:
                answer = settle(events, on_partial)
                if answer is not None:
                    return answer
                self._pump()
        finally:
            core.forget(rid)

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
        pos_tol: float = POS_TOL,
        ori_tol: float = ORI_TOL,
        strict: bool = False,
        active: Any = None,
    ) -> IKSolution:
        """Joint angles that put ``robot``'s end effectors at the target poses.

        - ``target_wxyz``: (N, n_ee, 4) or (n_ee, 4) quaternions, w-x-y-z, world frame.
        - ``target_pos``: (N, n_ee, 3) or (n_ee, 3) positions in metres, world frame.
        - ``rest``: (n_joints,) or (N, n_joints) rest pose; None: the robot's default rest
          pose (what `describe` reports; joint order is ``describe()["joint_names"]``).
        - ``ee_links``: end-effector links, one per target; None: the worker's defaults.
        - ``ik``: `IKSettings`; None: tatbot's defaults.
        - ``timeout``: seconds per attempt (None: the client's), retried ``retries`` times
          with the same request id.
        - ``pos_tol`` (metres, <= 1 cm), ``ori_tol`` (radians, <= 0.5): what counts as
          reached (defaults `zmq_ik.model.POS_TOL`, `ORI_TOL`, as ``compute``'s); judged
          here, from the errors the worker returns.
        - ``strict``: raise `IKError` (as ``compute --strict``) naming how many of the N
          poses missed and the worst errors, instead of returning them.
        - ``active``: (N, n_ee) or (n_ee,) bool, which end effectors have a target (None:
          all). One without (a resting arm) weighs nothing: its target is ignored (any
          values, NaN included), the joints only it moves keep ``rest``, its errors are NaN
          and ``reached`` judges the others. A worker older than this argument refuses
          such a request (its targets are sent as NaN).

        Returns an `IKSolution`: ``joints`` (N, n_joints) float32, ``pos_err`` (metres) and
        ``ori_err`` (radians) per pose and end effector, ``reached`` (N,) per pose and
        ``n_over``, the poses not reached: check them before commanding a robot. An
        unreachable target is not an error (unless ``strict``): it gets the best answer
        found. Raises `InputError` (bad input, before anything is sent), `IKTimeout` (no
        answer) or `RemoteError` (the broker's or worker's error, with ``.code``).
        """
        call, judging = calls.solve_call(
            robot, target_wxyz, target_pos, rest, ee_links, ik, pos_tol, ori_tol, strict, active
        )
        bounds = self._bounds.get(robot, ee_links)
        if bounds is None:  # once per robot: what its answers are checked against
            bounds = self._bounds.put(
                robot, ee_links, self.describe(robot, ee_links, timeout=timeout)
            )
        return calls.read_solve(self.request(*call, timeout=timeout), call, bounds, judging)

    def fk(
        self,
        robot: str,
        joints: Any,
        ee_links: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> EEPoses:
        """Forward kinematics: where ``robot``'s end effectors are for joint vectors, computed
        by a worker with the IK engine's own FK (the numbers `solve`'s errors are measured
        with), so no JAX is needed here.

        - ``joints``: (N, n_joints) or (n_joints,), in the order of ``rest`` / ``joints``
          (``describe()["joint_names"]``); radians or metres; limits are not checked.
        - ``ee_links``: end effectors whose poses are wanted (their chains' joints, in this
          order, make the vector); None: the worker's defaults.

        Returns an `EEPoses`: ``wxyz`` (N, n_ee, 4) unit quaternions and ``pos`` (N, n_ee, 3)
        metres, world frame, and ``ee_links``; ``solve(robot, p.wxyz, p.pos)`` asks for the
        same poses back. Raises as `solve` does.
        """
        call = calls.fk_call(robot, joints, ee_links)
        return calls.read_fk(self.request(*call, timeout=timeout), call)

    def stream(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float | None = None,
        chunk_pairs: int | None = None,
    ) -> Iterator[tuple[int, StrokeBatch]]:
        """A stroke job's joint angles in order, as they are computed: ``(start, part)``, the
        consecutive slices of what `compute` returns, ``start`` the index of ``part``'s first
        stroke pair. Execute each part while the next ones are computed.

        Chunks: the first is one pair (it arrives about as fast as a one-pair job), each next
        one twice as big up to 64 pairs; ``chunk_pairs=N`` gives fixed chunks instead. At
        most ``max_in_flight`` chunks are held (sent, or answered and not yet yielded), so a
        slow consumer holds that much memory. Each chunk is one request (``timeout`` per
        attempt, retried like any request; a chunk waits its turn behind up to
        ``max_in_flight - 1`` others, so leave time for that). An error raises where it
        happened, after every earlier slice was yielded.

        Leaving early (``break``, an exception, closing the iterator) forgets the chunks
        still held: nothing more is sent, late answers are dropped, and the broker is told to
        drop them (a `cancel`, docs/protocol.md 4.6): only a chunk a worker is computing
        then still runs (its answer dropped).
        """
        return self._stream(StrokeJob(scene, strokes, chunk_pairs), max_in_flight, timeout)

    def _stream(
        self, job: StrokeJob, max_in_flight: int, timeout: float | None
    ) -> Iterator[tuple[int, StrokeBatch]]:
        timeout = call_timeout(timeout, self.timeout)
        ex = Exchange(self._core, job.calls(), timeout=timeout, window=max_in_flight, ordered=True)
        return (job.part(index, payload) for index, payload in self._run(ex))

    def compute(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        chunk_pairs: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> StrokeBatch:
        """Joint angles for every stroke pose: tatbot's ``strokebatch_from_strokes`` over the wire.

        The job is split into chunks sent concurrently (so all workers serving the robot
        share it) and reassembled in order: `stream`, joined. ``progress(done, total)`` (in
        poses) is called at the start and after each chunk.
        """
        job = StrokeJob(scene, strokes, chunk_pairs)
        joined = Assembly(job, progress)
        for _, part in self._stream(job, max_in_flight, timeout):
            joined.add(part)
        return joined.result()

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
        return calls.read_describe(
            self.request(*calls.describe_call(robot, ee_links), timeout=timeout)
        )

    # ------------------------------------------------------------------ management

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Round trip to the broker: ``rtt_ms``, broker ``version``, live ``workers`` and
        ``warming``: workers still warming up (robots, ``progress`` ``{done, total,
        elapsed_s}`` in compiled buckets; never given a job until READY)."""
        t0 = time.perf_counter()
        return calls.read_ping(self.request(*calls.PING, timeout=timeout), t0)

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        """The broker's full status: workers, queues, in-flight jobs, counters."""
        return calls.read_status(self.request(*calls.STATUS, timeout=timeout))


__all__ = ["IKClient", "open_dealer"]
