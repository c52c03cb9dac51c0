"""The client's protocol logic without sockets: ids, deadlines, retries, reply matching, chunks.

`ClientCore` is a state machine in the spirit of `broker._core.BrokerCore`: requests go in
with `submit`, received messages with `handle`, the clock with `tick`; what it wants sent
lands in `outbox` as ``(connection, frames)``, and what happened to each request goes to the
``sink`` given with it. It never blocks, never reads a clock and never touches a socket, so
tests drive it with any ``now``. `Exchange` schedules a batch of calls over it (a window of
calls held at once, answers as they come or in order); `StrokeJob` plans a stroke job's
chunks. `IKClient` (blocking) and `AsyncIKClient` (asyncio) are thin loops over these.

Connections: a client may be given several brokers (no single point of failure, #15);
every request is sent on a connection (an index into `ClientCore.connections`, one per
broker), chosen by `client._failover.Brokers`, which also says when to probe a broker the
client waits on and when one is down. What waits on a broker that went down is sent again,
same request id, through a live one (`ClientCore._failover`); the first answer wins.
"""

from __future__ import annotations

import heapq
import logging
import math
import numbers
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zmq_ik import ops
from zmq_ik.client._failover import Brokers, is_probe
from zmq_ik.errors import (
    ErrorCode,
    IKError,
    IKTimeout,
    InputError,
    ProtocolError,
    remote_error,
)
from zmq_ik.model import PackedStrokes, Scene, StrokeBatch, StrokeList
from zmq_ik.protocol import (
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    MAX_TIMEOUT_MS,
    Command,
    Payload,
    Reply,
    check_size,
    decode_error,
    decode_payload,
    encode_payload,
    frames_nbytes,
    parse_message,
    request_frames,
    split_endpoints,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- settings

"""Environment variable naming the broker endpoint of clients built without one."""
TRANSPORTS = frozenset({"tcp", "ipc", "inproc", "pgm", "epgm", "vmci", "ws", "wss"})
"""ZeroMQ transports an endpoint may name (``tcp://host:port`` for a remote broker)."""

MIN_TIMEOUT = 0.001
"""Shortest request timeout (s): deadlines travel in whole milliseconds."""
MAX_TIMEOUT = MAX_TIMEOUT_MS / 1000
"""Longest request timeout (s), about 49.7 days: the most a deadline frame can carry."""
DEFAULT_MAX_IN_FLIGHT = 8
"""Requests (chunks) a batch or stream holds at once by default."""
DEFAULT_CHUNK_PAIRS = 64
"""Largest automatic chunk of a stroke job, in stroke pairs: big enough that every worker
stays busy and per-message costs vanish, small enough to spread over workers."""

RETRYABLE = frozenset({ErrorCode.WORKER_LOST.value, ErrorCode.SHUTTING_DOWN.value})
"""Error codes after which the same request is worth sending again (same id)."""


def default_endpoint() -> str:
    """``$ZMQ_IK_ENDPOINT`` if set and not empty (read now, not at import), else the default."""
    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


def check_endpoint(value: object) -> str:
    """A ZeroMQ endpoint with its transport (``tcp://host:port``): ``gpu-host:5555`` used to
    fail deep in libzmq with a bare 'Invalid argument'; it is refused here, saying what to write."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(
            f"endpoint must be a string like tcp://host:port, got {value!r:.60}", "endpoint"
        )
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise InputError(
            f"endpoint {value!r:.80} names no transport: use tcp://host:port "
            f"(e.g. tcp://{value:.60})",
            "endpoint",
        )
    if scheme not in TRANSPORTS or not rest:
        raise InputError(
            f"endpoint {value!r:.80} is not a ZeroMQ endpoint: use tcp://host:port", "endpoint"
        )
    return value


def check_timeout(value: object, name: str = "timeout") -> float:
    """A request timeout in seconds, refused at once unless finite and in [MIN_TIMEOUT,
    MAX_TIMEOUT]: past the wire's range it overflowed deep in the send path, and a negative
    one was 'sent' `retries + 1` times, each attempt timing out at once."""
    if type(value) is float or type(value) is int:  # the usual case, without ABC checks
        seconds = float(value)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        seconds = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:  # NaN fails this too
        raise InputError(
            f"{name} must be a finite number of seconds from {MIN_TIMEOUT:g} to "
            f"{MAX_TIMEOUT:.3f}, got {value!r:.40}",
            name,
        )
    return seconds


def check_endpoints(value: object) -> tuple[str, ...]:
    """One broker endpoint or several: a sequence, or one string with commas (as
    ``ZMQ_IK_ENDPOINT`` may hold), each checked by `check_endpoint`."""
    if not isinstance(value, str) and not (
        isinstance(value, Sequence) and all(isinstance(v, str) for v in value)
    ):
        raise InputError(
            f"endpoint must be a string like tcp://host:port or a list of them, got {value!r:.60}",
            "endpoint",
        )
    return tuple(check_endpoint(e) for e in split_endpoints(value))


def check_retries(value: object) -> int:
    """The number of re-sends after the first attempt: an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InputError(f"retries must be an integer >= 0, got {value!r:.40}", "retries")
    return int(value)


def check_count(value: object, name: str) -> int:
    """A positive count (``max_in_flight``, ``chunk_pairs``): an integer >= 1, not a bool.
    ``max_in_flight=0`` used to hang a batch forever, and ``chunk_pairs=0`` was taken as 1."""
    if type(value) is int and value >= 1:  # the usual case, without ABC checks
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r:.40}", name)
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


# --------------------------------------------------------------------------- requests

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


PARTIAL, FINAL, FAILED = 0, 1, 2
"""Event kinds a sink receives: ``(tag, PARTIAL, Payload)`` for each PARTIAL reply (only
for calls with ``on_partial``), then one ``(tag, FINAL, Payload)`` or ``(tag, FAILED,
IKError)``."""
Event = tuple[Any, int, Any]
Sink = Callable[[Event], None]


def settle(events: deque[Event], on_partial: Callable[[Payload], None] | None) -> Payload | None:
    """One call's events so far (a sink's deque): ``on_partial`` run for each PARTIAL, the
    answer returned, its error raised; None while it is still pending."""
    while events:
        _, kind, value = events.popleft()
        if kind == FINAL:
            return value  # type: ignore[no-any-return]
        if kind == FAILED:
            raise value
        if on_partial is not None:
            on_partial(value)
    return None


@dataclass(eq=False, slots=True)
class Pending:
    """One request the core is waiting for an answer to."""

    request_id: bytes
    call: Call
    frames: list[Any]
    timeout: float
    """Its attempts' deadline (s), as sent."""
    patience: float
    """How long one attempt is waited for: ``timeout`` plus `answer_grace`."""
    tag: Any
    sink: Sink
    nbytes: int = 0
    """Bytes of ``frames`` (a broker may take longer to answer while they are in transit)."""
    expires: float = 0.0
    attempts: int = 0
    connection: int = -1
    """The broker it was last sent to (-1: not yet)."""
    epoch: int = 0
    """That broker's `BrokerView.epoch` when it was sent: a later one means it was lost."""


class ClientCore:
    """Request ids, deadlines, retries with the same id, and reply matching, without sockets.

    ``submit`` a call with a ``sink``; feed every received message to ``handle`` and the
    clock to ``tick`` (at the latest at ``next_due``); send what appears in ``outbox``. The
    sink gets the call's events (see `PARTIAL`): its answer, its error, or `IKTimeout` once
    ``retries + 1`` attempts of ``timeout`` + `answer_grace` went unanswered. An error code
    in `RETRYABLE` sends the request again at once (same id), while attempts remain.

    With several brokers (``endpoints``), what waits on a broker that is down goes to a live
    one at once, same id, costing no attempt (`client._failover`); `start` probes each once.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        retries: int = 2,
        prefix: bytes | None = None,
    ) -> None:
        if not endpoints:
            raise InputError("at least one endpoint is needed", "endpoint")
        self.brokers = Brokers(endpoints)
        self.connections = self.brokers.views
        self.retries = check_retries(retries)
        self.outbox: deque[tuple[int, list[Any]]] = deque()
        self.pending: dict[bytes, Pending] = {}
        self._prefix = os.urandom(4) if prefix is None else prefix
        self._ids = 0
        # (expires, request id) per attempt; stale entries (answered requests, earlier
        # attempts) are skipped when they surface, and the heap is rebuilt when mostly stale.
        self._timers: list[tuple[float, bytes]] = []

    def start(self, now: float) -> None:
        """The loop can send from now on: with several brokers, probe each once, so a dead
        one is known before it is needed (optional; idle clients send nothing else)."""
        self._probe(self.brokers.start(now))

    # ------------------------------------------------------------------ input

    def submit(self, call: Call, timeout: float, now: float, sink: Sink, tag: Any = None) -> bytes:
        """Send ``call`` (frames into the outbox) with attempts of ``timeout`` seconds (checked
        by the caller); its events go to ``sink`` with ``tag``. Raises `RemoteError`
        ``too_large`` before sending a request over the protocol's limits."""
        self._ids += 1
        rid = self._prefix + self._ids.to_bytes(8, "big")
        frames = request_message(
            rid, call.service, call.operation, timeout, call.header, call.arrays
        )
        patience = timeout + answer_grace(timeout)
        p = Pending(rid, call, frames, timeout, patience, tag, sink, frames_nbytes(frames))
        self.pending[rid] = p
        self._send(p, now)
        return rid

    def handle(self, frames: Sequence[Any], now: float, connection: int = 0) -> None:
        """Process one message received on ``connection``."""
        self.brokers.heard(connection, now)  # any message is a sign of life
        self._on_message(frames, now, connection)
        if self.brokers.changed:  # a broker came back, or is going away
            self._failover(now)

    def _on_message(self, frames: Sequence[Any], now: float, connection: int) -> None:
        try:
            msg = parse_message(frames)
        except ProtocolError as e:
            logger.warning("malformed reply ignored: %s", e.message)
            return
        if not isinstance(msg, Reply):
            return
        p = self.pending.get(msg.request_id)
        if p is None:
            if is_probe(msg.request_id) and msg.command is Command.FINAL:
                try:
                    self.brokers.probe_answer(connection, decode_payload(msg.payload).header)
                except ProtocolError:
                    pass
                return
            if msg.command is Command.ERROR and not msg.request_id:
                self._unmatched_error(remote_error(*decode_error(msg.payload)), connection)
            return  # an answer to a request answered before (a retry's), or forgotten
        command = msg.command
        if command is Command.FINAL:
            try:
                payload = decode_payload(msg.payload)
            except ProtocolError as e:
                self._finish(p, FAILED, e)
                return
            self._finish(p, FINAL, payload)
        elif command is Command.PARTIAL:
            if p.call.on_partial is None:
                return
            try:
                payload = decode_payload(msg.payload)
            except ProtocolError as e:  # a caller reading partials must not miss one silently
                self._finish(p, FAILED, e)
                return
            p.sink((p.tag, PARTIAL, payload))
        else:
            code, message, fld = decode_error(msg.payload)
            if code == ErrorCode.SHUTTING_DOWN.value and len(self.brokers) > 1:
                self.brokers.lost(connection)  # it is going away: the others take its work
                if not self.brokers.stays(connection, p.epoch):
                    return  # `_failover` sends it to another broker, no attempt counted
            if code in RETRYABLE and p.attempts <= self.retries:
                logger.info(
                    "%s for %s: retrying (attempt %d)", code, p.request_id.hex(), p.attempts + 1
                )
                self._send(p, now)
                return
            self._finish(p, FAILED, remote_error(code, message, fld))

    def tick(self, now: float) -> None:
        """Attempts past their deadline (+ grace): send again (same id) or fail `IKTimeout`.
        Read what has already arrived before calling this: answers waiting unread must not be
        taken for silence."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            expires, rid = heapq.heappop(timers)
            p = self.pending.get(rid)
            if p is None or p.expires != expires:
                continue  # answered, forgotten, or an earlier attempt
            if p.attempts > self.retries:
                call = p.call
                self._finish(
                    p,
                    FAILED,
                    IKTimeout(
                        f"no answer from {self.connections[p.connection].endpoint} for "
                        f"{call.service}/{call.operation} after {p.attempts} attempt(s) of "
                        f"{p.timeout:.1f}s"
                    ),
                )
                continue
            logger.info(
                "no answer for %s after %.1fs: retrying (attempt %d)",
                rid.hex(),
                p.timeout,
                p.attempts + 1,
            )
            self._send(p, now)
        self._probe(self.brokers.tick(now))
        if self.brokers.changed:  # a broker went down
            self._failover(now)

    def next_due(self) -> float | None:
        """When `tick` next has something to do (None: nothing pending)."""
        timers = self._timers
        pending = self.pending
        due = self.brokers.next_due()
        while timers:
            expires, rid = timers[0]
            p = pending.get(rid)
            if p is not None and p.expires == expires:
                return expires if due is None else min(due, expires)
            heapq.heappop(timers)
        return due

    def forget(self, request_id: bytes) -> None:
        """Stop waiting for a request (its caller left): no retry, no event, a late answer is
        dropped. The broker still holds it until its deadline (ZIK/1 has no cancel)."""
        p = self.pending.pop(request_id, None)
        if p is not None:
            self.brokers.done(p.connection)

    def fail_all(self, error: IKError) -> None:
        """Fail every pending request with ``error`` (the client is closing)."""
        for p in list(self.pending.values()):
            self._finish(p, FAILED, error)

    # ------------------------------------------------------------------ internals

    def _send(self, p: Pending, now: float) -> None:
        p.attempts += 1
        self._to(p, self.brokers.route(), now)
        p.expires = now + p.patience
        timers = self._timers
        if len(timers) > 2 * len(self.pending) + 1024:  # mostly stale: rebuild, bounded
            timers[:] = [(q.expires, q.request_id) for q in self.pending.values() if q is not p]
            heapq.heapify(timers)
        heapq.heappush(timers, (p.expires, p.request_id))

    def _to(self, p: Pending, connection: int, now: float) -> None:
        """Send ``p`` to broker ``connection`` (and count it there, no longer where it was)."""
        brokers = self.brokers
        if p.connection >= 0:
            brokers.done(p.connection)
        brokers.sent(connection, p.nbytes, now)
        p.connection = connection
        p.epoch = brokers.views[connection].epoch
        self.outbox.append((connection, p.frames))

    def _failover(self, now: float) -> None:
        """A broker went down, came back or got its workers: each request waiting on a broker
        that is down (while another is up), or that went down since it was sent there, goes
        again, same id, where `Brokers.route` says; no attempt counted, its timer unchanged.
        The first answer from anywhere is the caller's; later ones are dropped."""
        brokers = self.brokers
        brokers.changed = False
        moved: dict[tuple[int, int], int] = {}
        for p in self.pending.values():
            if not brokers.stays(p.connection, p.epoch):
                key = (p.connection, brokers.route())
                moved[key] = moved.get(key, 0) + 1
                self._to(p, key[1], now)
        for (src, dst), n in moved.items():
            logger.info(
                "broker %s down or restarted: %d request(s) sent again through %s",
                self.connections[src].endpoint,
                n,
                self.connections[dst].endpoint,
            )

    def _probe(self, connections: list[int]) -> None:
        for i in connections:
            self.outbox.append((i, self.brokers.probe_frames()))

    def _finish(self, p: Pending, kind: int, value: Any) -> None:
        del self.pending[p.request_id]
        if p.connection >= 0:
            self.brokers.done(p.connection)
        p.sink((p.tag, kind, value))

    def _unmatched_error(self, error: IKError, connection: int) -> None:
        """An ERROR with an empty request id: the broker could not parse a message of ours far
        enough to know its id. Every request in flight on that connection may be the one, and
        none of them will be answered otherwise: all of them fail with it."""
        victims = [p for p in self.pending.values() if p.connection == connection]
        if not victims:
            logger.warning("error about no request of ours ignored: %s", error)
        for p in victims:
            self._finish(p, FAILED, error)


# --------------------------------------------------------------------------- batches


class Exchange:
    """A batch of calls through a `ClientCore`, at most ``window`` held at once.

    Held = sent and unanswered, plus answered but not yet taken: a slow taker holds at most
    ``window`` answers in memory. ``ordered``: answers are taken in call order, and a failed
    call raises when its turn comes (after every earlier answer was taken; no call after it
    is sent). Unordered: answers are taken as they come and a failure raises at once.

    The loop: ``fill(now)``, send the core's outbox, then `take` until it returns None,
    then wait for a message or the core's timer; ``done`` when every call was taken.
    ``abandon`` (in a ``finally``) forgets whatever is still held.
    """

    def __init__(
        self,
        core: ClientCore,
        calls: Iterable[Call],
        *,
        timeout: float,
        window: int = DEFAULT_MAX_IN_FLIGHT,
        ordered: bool = False,
    ) -> None:
        self.core = core
        self.timeout = check_timeout(timeout)
        self.window = check_count(window, "max_in_flight")
        self.ordered = ordered
        self._calls = iter(calls)
        self._exhausted = False
        self._stopped = False  # a call failed (ordered): send no more
        self._sent = 0
        self._taken = 0
        self._in_flight: dict[int, tuple[bytes, Call]] = {}
        self._events: deque[Event] = deque()
        self._done: dict[int, tuple[int, Any]] = {}  # ordered: answers waiting their turn

    @property
    def done(self) -> bool:
        return self._exhausted and self._taken == self._sent

    @property
    def held(self) -> int:
        """Calls sent and not yet taken (in flight or answered)."""
        return self._sent - self._taken

    def append(self, event: Event) -> None:
        """The core's sink for this batch's calls."""
        self._events.append(event)

    def fill(self, now: float, sent: Callable[[], None] | None = None) -> None:
        """Submit calls until ``window`` are held or none are left; ``sent()`` after each (a
        loop sends the outbox there: the next call may take a while to build)."""
        while not self._exhausted and not self._stopped and self._sent - self._taken < self.window:
            index = self._sent
            try:
                call = next(self._calls)
            except StopIteration:
                self._exhausted = True
                return
            except Exception as e:
                if not self.ordered:
                    raise
                self._fail_here(index, e)
                return
            try:
                rid = self.core.submit(call, self.timeout, now, self.append, index)
            except Exception as e:
                if not self.ordered:
                    raise
                self._fail_here(index, e)
                return
            self._in_flight[index] = (rid, call)
            self._sent += 1
            if sent is not None:
                sent()

    def take(self) -> tuple[int, Payload] | None:
        """The next answer ``(index, payload)`` (None: none ready); runs ``on_partial``
        callbacks; raises a failed call's error."""
        events = self._events
        while events:
            index, kind, value = events.popleft()
            if kind == PARTIAL:
                entry = self._in_flight.get(index)
                if entry is not None and entry[1].on_partial is not None:
                    entry[1].on_partial(value)
                continue
            self._in_flight.pop(index, None)
            if self.ordered:
                self._done[index] = (kind, value)
                if kind == FAILED:
                    self._stopped = True
                continue
            self._taken += 1
            if kind == FAILED:
                raise value
            return index, value
        if self.ordered:
            result = self._done.pop(self._taken, None)
            if result is not None:
                index = self._taken
                self._taken += 1
                if result[0] == FAILED:
                    raise result[1]
                return index, result[1]
        return None

    def abandon(self) -> None:
        """Forget every call still held (the taker left): no retries, late answers dropped."""
        for rid, _ in self._in_flight.values():
            self.core.forget(rid)
        self._in_flight.clear()
        self._events.clear()
        self._done.clear()
        self._exhausted = True
        self._sent = self._taken

    def _fail_here(self, index: int, error: Exception) -> None:
        """Building or sending call ``index`` failed: it fails in its turn, nothing after it."""
        self._done[index] = (FAILED, error)
        self._sent += 1
        self._stopped = True


# --------------------------------------------------------------------------- stroke jobs


def plan_chunks(
    pairs: int, chunk_pairs: int | None = None, largest: int = DEFAULT_CHUNK_PAIRS
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a job of ``pairs`` stroke pairs.

    ``chunk_pairs`` None: the first chunk is one pair (the first slice arrives as fast as a
    one-pair job), each next one twice as big, up to ``largest`` (throughput). An integer:
    fixed chunks of that size. An empty job is one empty chunk (its answer still says the
    shape of the result).
    """
    if chunk_pairs is not None:
        size = check_count(chunk_pairs, "chunk_pairs")
        return [(s, min(s + size, pairs)) for s in range(0, pairs, size)] or [(0, 0)]
    largest = check_count(largest, "largest")
    chunks = []
    start, size = 0, 1
    while start < pairs:
        stop = min(start + size, pairs)
        chunks.append((start, stop))
        start, size = stop, min(2 * size, largest)
    return chunks or [(0, 0)]


class StrokeJob:
    """A stroke job ready to stream: cut into chunks (`plan_chunks`), tatbot's first/last
    rest applied to the whole job (`ops.apply_first_last_rest`: chunks are independent, and
    the result equals one-piece computing), answers checked and turned into
    ``(start, StrokeBatch)``.

    Each chunk is packed as it is sent, and the job's strokes are checked while its first
    chunk is computed (packing 10,000 pairs at once takes longer than a one-pair round trip):
    a bad stroke further on raises before any slice is yielded all the same (`part` raises
    it).
    """

    def __init__(
        self,
        scene: Scene,
        strokes: StrokeList | PackedStrokes,
        chunk_pairs: int | None = None,
    ) -> None:
        if not isinstance(scene, Scene):
            raise InputError(f"scene must be a Scene, got {type(scene).__name__}", "scene")
        self._strokes: StrokeList | None = None
        self._packed: PackedStrokes | None = None
        if isinstance(strokes, StrokeList):
            self._strokes = strokes
        elif isinstance(strokes, PackedStrokes):
            self._packed = ops.apply_first_last_rest(strokes, scene)
        else:
            raise InputError(
                f"strokes must be a StrokeList, got {type(strokes).__name__}", "strokes"
            )
        self.scene = scene
        self.pairs = len(strokes)
        self.poses_per_pair = scene.stroke_length * scene.offset_num
        # Largest automatic chunk: also within one request's pose limit.
        largest = ops.MAX_POSES_PER_REQUEST // max(1, self.poses_per_pair)
        self.chunks = plan_chunks(
            self.pairs, chunk_pairs, max(1, min(DEFAULT_CHUNK_PAIRS, largest))
        )
        self.invalid: InputError | None = None
        """Why the job cannot be computed, found after its first chunk was sent."""
        self._ends: PackedStrokes | None = None

    @property
    def poses(self) -> int:
        return self.pairs * self.poses_per_pair

    def calls(self) -> Iterator[Call]:
        """One `strokebatch` request per chunk, built as it is sent."""
        for index, (start, stop) in enumerate(self.chunks):
            if index == 1:
                self._check()
            if self._packed is not None:
                yield self._call(ops.slice_packed(self._packed, start, stop))
            else:
                yield self._call(self._pack(start, stop))

    def _check(self) -> None:
        """Every stroke packable (what `StrokeList.pack` refuses: a stroke of another length),
        with the common length found in one pass; `pack` names the culprit when not."""
        strokes = self._strokes
        if strokes is None or strokes.stroke_length == self.scene.stroke_length:
            return
        try:
            strokes.pack(self.scene.stroke_length)  # all coordinate-less strokes pack too
        except InputError as e:
            self.invalid = e
            raise

    def _pack(self, start: int, stop: int) -> PackedStrokes:
        """Pairs ``start:stop`` with the whole job's rest flags. The rule marks the job's
        first and last pairs only: it is applied once to those two (`_ends`) and their rows
        are copied into the chunks holding them."""
        assert self._strokes is not None
        packed = self._strokes[start:stop].pack(self.scene.stroke_length)
        if stop == start or (start > 0 and stop < self.pairs):
            return packed
        if self._ends is None:
            pairs = self._strokes.pairs
            ends = StrokeList((pairs[0], pairs[-1]) if self.pairs > 1 else (pairs[0],))
            self._ends = ops.apply_first_last_rest(ends.pack(self.scene.stroke_length), self.scene)
        is_rest = packed.is_rest.copy()
        if start == 0:
            is_rest[0] = self._ends.is_rest[0]
        if stop == self.pairs:
            is_rest[-1] = self._ends.is_rest[-1]
        return PackedStrokes(coords=packed.coords, is_inkdip=packed.is_inkdip, is_rest=is_rest)

    def _call(self, packed: PackedStrokes) -> Call:
        header, arrays = ops.strokebatch_request(self.scene, packed)
        return Call(self.scene.robot, ops.STROKEBATCH, header, arrays)

    def part(self, index: int, payload: Payload) -> tuple[int, StrokeBatch]:
        """Chunk ``index``'s answer as ``(start, StrokeBatch)``; a worker's answer of the
        wrong size is refused (`ProtocolError`), never passed on as the robot's motion."""
        if self.invalid is not None:
            raise self.invalid
        start, stop = self.chunks[index]
        try:
            batch = ops.read_strokebatch_reply(payload.arrays)
        except InputError as e:
            raise ProtocolError(f"strokebatch reply for pairs {start}:{stop}: {e}") from e
        want = (stop - start, self.scene.stroke_length, self.scene.offset_num)
        if batch.joints.shape[:3] != want:
            raise ProtocolError(
                f"strokebatch reply for pairs {start}:{stop} has shape "
                f"{batch.joints.shape[:3]}, expected (pairs, stroke_length, offsets) = {want}",
                field="joints",
            )
        return start, batch


class Assembly:
    """`compute` from a stream: the slices joined in order, ``progress(done, total)`` in poses
    called at the start and after each slice."""

    def __init__(self, job: StrokeJob, progress: Progress | None = None) -> None:
        self.job = job
        self.progress = progress
        self.parts: list[StrokeBatch] = []
        self.done = 0
        if progress is not None:
            progress(0, job.poses)

    def add(self, part: StrokeBatch) -> None:
        self.parts.append(part)
        self.done += len(part) * self.job.poses_per_pair
        if self.progress is not None:
            self.progress(self.done, self.job.poses)

    def result(self) -> StrokeBatch:
        return StrokeBatch.concat(self.parts)


__all__ = [
    "DEFAULT_CHUNK_PAIRS",
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_IN_FLIGHT",
    "ENDPOINT_ENV",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "RETRYABLE",
    "Assembly",
    "Call",
    "ClientCore",
    "Exchange",
    "Progress",
    "StrokeJob",
    "answer_grace",
    "check_count",
    "check_endpoint",
    "check_endpoints",
    "check_retries",
    "check_timeout",
    "default_endpoint",
    "plan_chunks",
    "request_message",
    "settle",
]
