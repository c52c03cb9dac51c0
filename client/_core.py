"""The client's protocol logic without sockets: ids, deadlines, retries, reply matching.

`ClientCore` is a state machine in the spirit of `broker._core.BrokerCore`: requests go in
with `submit`, received messages with `handle`, the clock with `tick`; what it wants sent
lands in `outbox` as ``(connection, frames)``, and what happened to each request goes to the
``sink`` given with it. It never blocks, never reads a clock and never touches a socket, so
tests drive it with any ``now``. `client._exchange` schedules batches and stroke jobs over
it, `client._checks` checks arguments and frames requests. `IKClient` (blocking) and
`AsyncIKClient` (asyncio) are thin loops over these.

Connections: a client may be given several brokers (no single point of failure, #15);
every request is sent on a connection (an index into `ClientCore.connections`, one per
broker), chosen by `client._failover.Brokers`, which also says when to probe a broker the
client waits on and when one is down. What waits on a broker that went down is sent again,
same request id, through a live one (`ClientCore._failover`); the first answer wins.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zmq_ik.client._checks import check_retries, request_message
from zmq_ik.client._failover import NO_ANSWER_AFTER, Brokers, is_probe
from zmq_ik.errors import (
    ErrorCode,
    IKError,
    IKTimeout,
    InputError,
    NoBroker,
    ProtocolError,
    remote_error,
)
from zmq_ik.protocol import (
    MAX_CANCEL_IDS,
    Command,
    Payload,
    Reply,
    cancel_frames,
    decode_error,
    decode_payload,
    frames_nbytes,
    parse_message,
)

logger = logging.getLogger(__name__)

CANCEL_PREFIX = b"cancel"
"""Request ids of the client's cancels: ``cancel`` + 8 bytes (14; its own requests' are 12)."""
CANCEL_WAIT = 0.2
"""Longest `IKClient.close` waits for its brokers to acknowledge its cancels (seconds): the
message is then known delivered before the process may exit (a socket closed with LINGER 0
drops what it has not sent yet)."""
CANCELS_TRACKED = 64
"""Unacknowledged cancels remembered for `CANCEL_WAIT` (oldest forgotten: a broker that
never answers, an older one, costs nothing)."""

MAX_NOTICE = 500
"""Characters kept of a worker's compile notice (any peer is untrusted input)."""
RETRYABLE = frozenset({ErrorCode.WORKER_LOST.value, ErrorCode.SHUTTING_DOWN.value})
"""Error codes after which the same request is worth sending again (same id)."""


def answer_grace(timeout: float) -> float:
    """How long past its deadline a client still waits: the broker answers `timeout` or
    `unknown_robot` *at* the deadline, and that answer is worth more than a local timeout."""
    return min(1.0, 0.1 + 0.05 * timeout)


def _unexplained(connection: int) -> str | None:
    return None


def _unreached(connection: int) -> bool:
    return False


# --------------------------------------------------------------------------- requests


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
    compiling: str | None = None
    """The worker's notice that it compiles a program for this request (a PARTIAL
    ``{"compiling": message}``, docs/protocol.md 4.2): a timeout says it."""


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
        self.cancelling: dict[bytes, int] = {}
        """Cancels sent and not yet acknowledged: request id → connection (bounded)."""
        # (expires, request id) per attempt; stale entries (answered requests, earlier
        # attempts) are skipped when they surface, and the heap is rebuilt when mostly stale.
        self._timers: list[tuple[float, bytes]] = []
        self.explain: Callable[[int], str | None] = _unexplained
        """Why broker ``i`` may have refused this client, for no-answer errors (the loop
        sets it: `zmq_ik.protocol.handshakes.Handshakes.explain`)."""
        self.reached: Callable[[int], bool] = _unreached
        """Whether broker ``i``'s socket completed a handshake (a peer listens there; the
        loop sets it: `zmq_ik.protocol.handshakes.Handshakes.reached`)."""
        self._unheard_since: float | None = None
        """When the first request went out while no broker had ever answered (`NoBroker`)."""

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
        if self._unheard_since is None and not self.brokers.heard_any:
            self._unheard_since = now
        self._send(p, now)
        return rid

    def handle(self, frames: Sequence[Any], now: float, connection: int = 0) -> None:
        """Process one message received on ``connection``."""
        self.brokers.heard(connection, now)  # any message is a sign of life
        self._unheard_since = None
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
            if self.cancelling.pop(msg.request_id, None) is not None:
                return  # a cancel's counts, or an older broker's unknown_operation: either way
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
            try:
                payload = decode_payload(msg.payload)
            except ProtocolError as e:  # a caller reading partials must not miss one silently
                if p.call.on_partial is not None:
                    self._finish(p, FAILED, e)
                return
            notice = payload.header.get("compiling")
            if isinstance(notice, str):
                p.compiling = notice[:MAX_NOTICE]
            if p.call.on_partial is not None:
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
            if code == ErrorCode.TIMEOUT.value and p.compiling:
                message = f"{message} ({p.compiling})"
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
                self._cancel(p.connection, [rid])  # the broker may still hold it
                why = self.explain(p.connection)
                self._finish(
                    p,
                    FAILED,
                    IKTimeout(
                        f"no answer from {self.connections[p.connection].endpoint} for "
                        f"{call.service}/{call.operation} after {p.attempts} attempt(s) of "
                        f"{p.timeout:.1f}s"
                        + (f": {why}" if why else "")
                        + (f" ({p.compiling})" if p.compiling else ""),
                        why,
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
        if self._unheard_since is not None and now >= self._unheard_since + NO_ANSWER_AFTER:
            self._nobody_answers()
        self._probe(self.brokers.tick(now))
        if self.brokers.changed:  # a broker went down
            self._failover(now)

    def _nobody_answers(self) -> None:
        """No broker ever answered, not even the start-up probe, and no handshake with one
        succeeded (nothing listens, or it refused us): fail what waits now (what the
        handshake monitors know included) rather than after every attempt's timeout. A
        broker that completed a handshake is there, perhaps slow: waited for as before."""
        self._unheard_since = None
        if not self.pending or any(self.reached(i) for i in range(len(self.connections))):
            return
        several = len(self.connections) > 1
        why = [
            f"{v.endpoint}: {e}" if several else e
            for i, v in enumerate(self.connections)
            if (e := self.explain(i))
        ]
        where = ", ".join(v.endpoint for v in self.connections)
        self.fail_all(
            NoBroker(
                f"nothing answered at {where} within {NO_ANSWER_AFTER:g}s: "
                + ("; ".join(why) if why else "is a broker (`zmq-ik serve`) running there?")
            )
        )

    def next_due(self) -> float | None:
        """When `tick` next has something to do (None: nothing pending)."""
        timers = self._timers
        pending = self.pending
        due = self.brokers.next_due()
        if self._unheard_since is not None and pending:
            unheard = self._unheard_since + NO_ANSWER_AFTER
            due = unheard if due is None else min(due, unheard)
        while timers:
            expires, rid = timers[0]
            p = pending.get(rid)
            if p is not None and p.expires == expires:
                return expires if due is None else min(due, expires)
            heapq.heappop(timers)
        return due

    def forget(self, *request_ids: bytes) -> None:
        """Stop waiting for requests (their caller left): no retry, no event, a late answer is
        dropped; the broker is told to drop them (a `protocol.CANCEL` in the outbox, sent
        with the loop's next send, not waited for)."""
        abandoned = [p for rid in request_ids if (p := self.pending.pop(rid, None)) is not None]
        if abandoned:  # (an answered request, the common case, costs nothing more)
            for p in abandoned:
                self.brokers.done(p.connection)
            self._cancel_all(abandoned)

    def fail_all(self, error: IKError) -> None:
        """Fail every pending request with ``error`` (the client is closing), and cancel them
        at their brokers."""
        self._cancel_all(list(self.pending.values()))
        for p in list(self.pending.values()):
            self._finish(p, FAILED, error)

    def _cancel_all(self, abandoned: Sequence[Pending]) -> None:
        by_broker: dict[int, list[bytes]] = {}
        for p in abandoned:
            by_broker.setdefault(p.connection, []).append(p.request_id)
        for connection, ids in by_broker.items():
            self._cancel(connection, ids)

    def _cancel(self, connection: int, ids: list[bytes]) -> None:
        """Cancels for ``ids`` (requests last sent on ``connection``) into the outbox, at most
        `protocol.MAX_CANCEL_IDS` each. The broker drops what it still holds of them; the
        answer is only acknowledged (an older broker's `unknown_operation` too)."""
        if connection < 0:
            return  # never sent
        for start in range(0, len(ids), MAX_CANCEL_IDS):
            self._ids += 1
            rid = CANCEL_PREFIX + self._ids.to_bytes(8, "big")
            self.outbox.append(
                (connection, cancel_frames(rid, ids[start : start + MAX_CANCEL_IDS]))
            )
            self.cancelling[rid] = connection
            if len(self.cancelling) > CANCELS_TRACKED:
                del self.cancelling[next(iter(self.cancelling))]

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
            first = brokers.views[src].first_answer  # it was not up yet: no fault
            logger.log(
                logging.DEBUG if first else logging.INFO,
                "broker %s %s: %d request(s) sent again through %s",
                self.connections[src].endpoint,
                "answered for the first time" if first else "down or restarted",
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


__all__ = [
    "CANCEL_WAIT",
    "FAILED",
    "FINAL",
    "PARTIAL",
    "RETRYABLE",
    "Call",
    "ClientCore",
    "Event",
    "Pending",
    "Sink",
    "answer_grace",
    "settle",
]
