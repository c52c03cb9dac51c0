"""What the broker core keeps: jobs, workers, recent answers, clients' bytes.

Plain records, no routing logic (that is `broker._core`); what tunes them is
`zmq_ik.settings.broker`.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zmq_ik.errors import ErrorCode
from zmq_ik.protocol import Command, Frame, decode_error

_LABEL_KEY = os.urandom(16)

KEPT_INFO = ("device", "host", "pid", "versions")
"""The READY fields a registration keeps (for `ping`/`status`); the rest is dropped."""


def peer_label(identity: bytes) -> str:
    """How a peer's routing id is shown in `status`/`ping` and logs.

    Ids our own peers choose (`protocol.new_routing_id`) are shown as hex. Ids libzmq
    invented (first byte 0) are shown only as a keyed hash: they are a counter, and a peer
    that learns the next value can crash libzmq (see `broker._broker`).
    """
    if identity[:1] != b"\0":
        return identity.hex()
    return "~" + hashlib.blake2b(identity, key=_LABEL_KEY, digest_size=5).hexdigest()


@dataclass(eq=False, slots=True)
class Job:
    """One client request as the broker tracks it, from receipt to its single answer."""

    job_id: bytes
    client: bytes
    request_id: bytes
    service: str
    operation: str
    payload: list[Frame]
    """Dropped (emptied) when the job closes, so its memory goes at once."""
    nbytes: int
    """Bytes of ``payload``, counted against the broker's byte budget while the job is open."""
    received: float
    deadline: float
    attempts: int = 0
    worker: bytes | None = None
    dispatched: float | None = None
    closed: bool = False
    tried: set[bytes] = field(default_factory=set)
    """Every worker identity this job was dispatched to: only they may answer it."""
    sent_deadline: float | None = None
    """``deadline`` as it was when the job was last dispatched (the worker judges by it)."""
    refusals: int = 0
    """Times a stopping worker refused it (`shutting_down`): re-queued without counting an
    attempt while this is at most `BrokerSettings.max_retries` (a worker that keeps
    re-registering to refuse it cannot keep it from the others for free)."""

    def timed_out_too_soon(
        self, command: Command, payload: Sequence[Frame], now: float, current: bool
    ) -> bool:
        """Whether a worker's answer is a `timeout` that this job should outlive. From the
        worker running it (``current``): judged by a deadline a client's retry has since
        moved later (after a broker stall, a job re-queued from a lost worker goes out just
        before the retry extending it is read); the job runs again. From any other worker
        (a forgotten one's late answer): while the job's deadline holds, another attempt
        is queued or running; the answer is dropped."""
        if command is not Command.ERROR or self.sent_deadline is None:
            return False
        judged = self.sent_deadline if current else now
        if self.deadline <= max(now, judged) + RETRY_EXTENSION_MIN:
            return False
        return decode_error(payload)[0] == ErrorCode.TIMEOUT.value


BREAKER_PAUSE_MAX = 120.0
"""Longest a circuit breaker pause grows to (seconds)."""
RETRY_EXTENSION_MIN = 0.05
"""Seconds a deadline must have moved for `Job.timed_out_too_soon` (more than clock noise)."""


@dataclass
class WorkerState:
    """A registered worker."""

    identity: bytes
    robots: frozenset[str]
    """A set: dispatch asks "does it serve this robot?" in O(1), however many it claims."""
    info: dict[str, Any]
    """The `KEPT_INFO` fields of its READY (each bounded by `protocol.Limits`)."""
    registered: float
    last_seen: float
    last_sent: float
    job: Job | None = None
    served: int = 0
    errors: int = 0
    last_latency_ms: float | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    listing_bytes: int = 0
    """An upper bound on the encoded size of `describe` (for summarising `ping`)."""
    watch_word: str | None = None
    """``watch-<token>`` from its READY's features (`protocol.WATCH`), if it listed one."""
    watch: bytes | None = None
    """Routing id of its watch connection, once that said the word: silence is then
    tolerated for `BrokerSettings.watched_silence`, and a lost watch is its death."""
    declines: bool = False
    """Its READY listed `protocol.FEATURE_DECLINE`: it may serve other brokers too, so it
    gets flagged HEARTBEATs and may send DECLINE and state flags."""
    away: bool = False
    """Busy with another broker's job (it declined ours or flagged busy): not idle here
    until it flags idle."""
    unconfirmed_since: float | None = None
    """When it sent READY, until its first other message (a HEARTBEAT, an answer): a
    registration not confirmed within the liveness window is forgotten, and one that is
    not yet confirmed makes room for a new READY when `max_workers` are registered."""
    overdue: bool = False
    """It holds a job past the deadline it was given plus `overdue_grace`: no job until it
    answers (its job may run elsewhere meanwhile)."""
    overruns: int = 0
    """Overdue jobs since its last timely answer (`max_overruns`)."""
    failures: int = 0
    """Failures of its own making since its last success (circuit breaker)."""
    failing_since: float = 0.0
    """When the first of those failures came."""
    paused_until: float | None = None
    """Paused by the circuit breaker until then: no job."""
    pauses: int = 0
    """Times the circuit breaker paused it (shown in `ping`/`status`)."""
    due: float = 0.0
    """When its job is overdue: the deadline it was given + `overdue_grace`."""

    @property
    def state(self) -> str:
        if self.job is not None:
            return "overdue" if self.overdue else "busy"
        return "paused" if self.paused_until is not None else "away" if self.away else "idle"

    def describe(self, now: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        return {
            "id": peer_label(self.identity),
            "robots": sorted(self.robots),
            "device": self.info.get("device", "?"),
            "host": self.info.get("host"),
            "pid": self.info.get("pid"),
            "state": self.state,
            "served": self.served,
            "errors": self.errors,
            "pauses": self.pauses,
            "overruns": self.overruns,
            "last_latency_ms": self.last_latency_ms,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "uptime_s": round(now - self.registered, 3),
            "versions": self.info.get("versions", {}),
        }


class Deadlines:
    """The open jobs' deadlines, soonest first, so that the broker's timer costs nothing until
    one is due: a heap of (deadline, job id). Entries of closed jobs and of deadlines extended
    since (a retry of the request) are skipped when they surface; a heap holding mostly such
    entries is rebuilt (bounded)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, bytes]] = []

    def __bool__(self) -> bool:
        return bool(self._heap)

    def next(self) -> float:
        """The soonest deadline (call only when not empty)."""
        return self._heap[0][0]

    def push(self, job: Job, jobs: Mapping[bytes, Job]) -> None:
        """Track ``job`` (``jobs``: every open job, to rebuild from)."""
        heap = self._heap
        if len(heap) > 2 * len(jobs) + 1024:  # mostly answered jobs: rebuild, bounded
            heap[:] = [(j.deadline, j.job_id) for j in jobs.values() if j is not job]
            heapq.heapify(heap)
        heapq.heappush(heap, (job.deadline, job.job_id))

    def due(self, now: float, jobs: Mapping[bytes, Job]) -> list[Job]:
        """The open jobs whose deadline has passed, taken off the heap."""
        heap = self._heap
        expired: list[Job] = []
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            job = jobs.get(job_id)
            if job is None:  # answered or closed since
                continue
            if job.deadline > now:  # extended by a retry of the request: wait for the new one
                heapq.heappush(heap, (job.deadline, job_id))
                continue
            expired.append(job)
        return expired


class AnsweredMemory:
    """Recently answered (client, request id) pairs, each until its own horizon.

    A client re-sends a request (same id) when its attempt times out; that retry can reach
    the broker after the answer left (it crossed the answer, or both were queued while the
    broker stalled). Remembering the answer lets the broker drop the retry instead of
    running the request a second time. Bounded: at most ``size`` pairs, oldest dropped.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._until: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        self._offset = 0.0  # added to every horizon: time the broker spent stalled

    def __len__(self) -> int:
        return len(self._until)

    def remember(self, key: tuple[bytes, bytes], until: float, now: float) -> None:
        pairs = self._until
        pairs[key] = until - self._offset
        pairs.move_to_end(key)
        # Drop expired pairs from the oldest end, two per call: O(1), faster than they come.
        for _ in range(2):
            oldest = next(iter(pairs.items()), None)
            if oldest is None or oldest[1] + self._offset >= now:
                break
            del pairs[oldest[0]]
        while len(pairs) > self.size:
            pairs.popitem(last=False)

    def holds(self, key: tuple[bytes, bytes], now: float) -> bool:
        until = self._until.get(key)
        return until is not None and until + self._offset >= now

    def forget(self, key: tuple[bytes, bytes]) -> None:
        self._until.pop(key, None)

    def extend(self, seconds: float) -> None:
        """Push every horizon out (the broker was not running for ``seconds``)."""
        self._offset += seconds


TRACKED_BYTES = 64 * 1024
"""Reply bytes handed to one client between two tracked messages (`ClientBytes`)."""


class Receipt:
    """Says when ZeroMQ let go of a tracked message to a client: the loop sets ``tracker``
    (pyzmq's `zmq.MessageTracker`, done once libzmq freed the message: written to the
    kernel, or dropped with its connection) when it hands the message over."""

    __slots__ = ("folded", "own", "tracker")

    def __init__(self, own: int, folded: int) -> None:
        self.own = own
        """Bytes of the tracked message."""
        self.folded = folded
        """Bytes of the untracked messages handed to the same client just before it: a pipe
        is FIFO, so they are gone when it is."""
        self.tracker: Any = None

    @property
    def done(self) -> bool:
        return self.tracker is not None and bool(self.tracker.done)


class Tracked(list):  # type: ignore[type-arg]
    """An outbox message (its frames) whose handing over the loop tracks (`Receipt`)."""

    __slots__ = ("receipt",)

    def __init__(self, frames: list[Any], receipt: Receipt) -> None:
        super().__init__(frames)
        self.receipt = receipt


@dataclass(slots=True)
class ClientAccount:
    """The bytes the broker holds for one client (`BrokerSettings.max_client_bytes`)."""

    requests: int = 0
    """Payload bytes of its open jobs."""
    unread: int = 0
    """Bytes of replies handed to ZeroMQ for it and not known to have left the broker."""
    residue: int = 0
    """Bytes handed since its last tracked message: not counted yet, below `TRACKED_BYTES`."""
    receipts: deque[Receipt] = field(default_factory=deque)


class ClientBytes:
    """What the broker holds for each client, in bytes: its open requests, and replies its
    ROUTER queued for it that it has not taken (a client that never reads leaves them in the
    broker: ZeroMQ's send limit is in messages, not bytes, and it never says how much waits).

    A reply is counted from the moment it is queued until libzmq frees it (pyzmq's message
    tracking, `Receipt`): written into the kernel, or dropped with its client's connection.
    Tracking a message costs tens of microseconds, so only one in `TRACKED_BYTES` is tracked:
    a message once the bytes handed since the last tracked one reach it (any reply of 64 KiB
    or more), counting those before it too (FIFO: they leave first). At most that much per
    client is not counted."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, ClientAccount] = {}
        self.unread = 0
        """Unread reply bytes over all clients."""

    def get(self, client: bytes) -> ClientAccount:
        """``client``'s account, settled (a zero one when it has none)."""
        account = self.accounts.get(client)
        if account is None:
            return ClientAccount()
        self.settle(account)
        return account

    def opened(self, client: bytes, nbytes: int) -> None:
        account = self.accounts.get(client)
        if account is None:
            account = self.accounts[client] = ClientAccount()
        account.requests += nbytes

    def closed(self, client: bytes, nbytes: int) -> None:
        account = self.accounts.get(client)
        if account is not None:
            account.requests -= nbytes

    def handed(self, client: bytes, nbytes: int) -> Receipt | None:
        """A reply of ``nbytes`` is queued for ``client``: the receipt to track it by, when
        it is to be tracked (`TRACKED_BYTES`)."""
        account = self.accounts.get(client)
        if account is None:
            account = self.accounts[client] = ClientAccount()
        account.residue += nbytes
        if account.residue < TRACKED_BYTES:
            return None
        receipt = Receipt(nbytes, account.residue - nbytes)
        account.unread += account.residue
        self.unread += account.residue
        account.residue = 0
        account.receipts.append(receipt)
        return receipt

    def failed(self, client: bytes, receipt: Receipt) -> None:
        """A tracked message never reached ZeroMQ (its peer gone, or its queue full): its
        bytes are not held; those folded into it are still queued, untracked again."""
        account = self.accounts.get(client)
        if account is None or receipt not in account.receipts:
            return
        account.receipts.remove(receipt)
        account.unread -= receipt.own + receipt.folded
        self.unread -= receipt.own + receipt.folded
        account.residue += receipt.folded

    def settle(self, account: ClientAccount) -> int:
        """Take the replies ZeroMQ let go of off ``account``; the bytes freed."""
        receipts = account.receipts
        freed = 0
        while receipts and receipts[0].done:
            receipt = receipts.popleft()
            freed += receipt.own + receipt.folded
        account.unread -= freed
        self.unread -= freed
        return freed

    def settle_all(self) -> int:
        """`settle` every account, and forget those of clients the broker holds nothing for.
        One with an uncounted residue is kept (so the residue stays below `TRACKED_BYTES` per
        client) while at most `ACCOUNTS_KEPT` accounts exist. The bytes freed."""
        freed = 0
        idle = []
        for client, account in self.accounts.items():
            if account.receipts:
                freed += self.settle(account)
            if not account.requests and not account.unread:
                idle.append((client, account.residue))
        crowded = len(self.accounts) > ACCOUNTS_KEPT
        for client, residue in idle:
            if crowded or not residue:
                del self.accounts[client]
        return freed


ACCOUNTS_KEPT = 1024
"""Client accounts kept with only an uncounted residue (`ClientBytes.settle_all`)."""
