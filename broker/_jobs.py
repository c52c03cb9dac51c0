"""What tunes the broker core and what it keeps: settings, jobs, workers, recent answers.

Plain records, no routing logic (that is `broker._core`).
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zmq_ik.errors import ErrorCode, InputError
from zmq_ik.protocol import (
    DEFAULT_ENDPOINT,
    RECONNECT_MAX,
    Command,
    Frame,
    Limits,
    check_endpoint,
    decode_error,
)

MIB = 1024 * 1024
_LABEL_KEY = os.urandom(16)

KEPT_INFO = ("device", "host", "pid", "versions")
"""The READY fields a registration keeps (for `ping`/`status`); the rest is dropped."""


@dataclass(frozen=True)
class BrokerSettings:
    """Everything that tunes a broker; the CLI builds one from its flags."""

    bind: str = DEFAULT_ENDPOINT
    """Endpoint for clients and workers. Loopback by default: ZIK/1 without CURVE is open."""
    worker_bind: str | None = None
    """Optional second endpoint for workers only (e.g. another interface)."""
    heartbeat_interval: float = 0.25
    """Seconds between heartbeats to each worker."""
    liveness: int = 4
    """Heartbeat intervals of silence after which a worker is dead (one without a watch:
    see `watched_silence`)."""
    watched_silence: float = 10.0
    """Seconds of silence after which a *watched* worker is dead (`protocol.WATCH`: its
    watch connection carries only ZMTP PINGs with a TTL of its liveness window). Killed or
    stopped, such a worker loses its watch within that window and is forgotten at the next
    HEARTBEAT sent there (unreachable); silence while the watch stands means a starved host,
    not a dead worker (issue 27.1). One silent this long (hung in native code) is dead all
    the same."""
    max_queue: int = 1024
    """Requests waiting per robot before new ones get `overloaded` at once."""
    max_open_jobs: int = 16 * 1024
    """Open jobs (queued and in flight) over all robots before new ones get `overloaded`:
    requests for many made-up robot names cannot pile up without bound."""
    max_queued_bytes: int = 1024 * MIB
    """Bytes the broker holds for clients, over all of them, before new requests get
    `overloaded`: the payloads of open jobs plus replies handed to ZeroMQ that their client
    has not taken yet (`ClientBytes`). A count of requests alone does not bound memory: one
    may be 256 MiB; nor do requests alone: a client that never reads leaves its replies in
    the broker."""
    max_client_bytes: int = 256 * MIB
    """One client's share of `max_queued_bytes` (the same bytes, counted per client): past
    it, its new requests get `overloaded`, and a reply that would pass it is dropped and the
    request answered `overloaded` instead. At least one largest message (256 MiB)."""
    answered_memory: int = 64 * 1024
    """Recently answered (client, request id) pairs remembered, so a retry arriving after
    its answer is dropped rather than run again."""
    max_warming: int = 1024
    """Warming workers (WARMING sent, no READY yet) the broker tracks at once; a WARMING from
    one more is refused (`overloaded`; that worker is still taken at its READY)."""
    max_workers: int = 4096
    """Registered workers the broker keeps at once; a READY from one more is refused
    (`overloaded`, naming this limit: the worker retries with backoff). Each costs a little
    memory and a heartbeat per interval; without a bound any peer could add workers forever."""
    max_retries: int = 2
    """Re-dispatches of a job whose worker died (or failed it by its own fault), before
    `worker_lost`."""
    overdue_grace: float = 1.0
    """Seconds past the deadline it was given after which a worker still holding a job is
    *overdue* (a worker checks its deadline between chunks and gives up with `timeout`): the
    job is run elsewhere if its deadline (extended by a client's retry, or a stall's hold)
    leaves time, and the worker gets no job until it answers."""
    max_overruns: int = 3
    """Overdue jobs in a row (no timely answer between) after which a worker is dropped
    (forgotten and told DISCONNECT: it registers afresh)."""
    overdue_drop: float = 30.0
    """Seconds a worker may stay overdue (holding a job it never answers while it
    heartbeats) before it is dropped the same way."""
    breaker_failures: int = 5
    """Circuit breaker: failures of a worker's own making in a row (`errors.WORKER_FAULTS`,
    overdue jobs) after which, while another worker of one of its robots answered since
    the first of them, it is paused (given no job)."""
    breaker_pause: float = 10.0
    """Seconds of a worker's first pause; each further pause in a row doubles it, up to
    `BREAKER_PAUSE_MAX`. After a pause the worker is given jobs again; a success ends the
    series, one more own failure pauses it again."""
    shutdown_grace: float = 2.0
    """Seconds in-flight jobs may still finish after SIGINT/SIGTERM."""
    limits: Limits = field(default_factory=Limits)
    """Protocol limits enforced on everything received."""
    sndhwm: int = 10_000
    """Outgoing messages queued per peer before sends to it fail (counted as dropped)."""
    rcvhwm: int = 10_000
    """Incoming messages queued per peer before the peer's sends block."""
    curve_secret_key: str | None = None
    """Path to the broker's CURVE secret key file (enables CURVE)."""
    allow_keys: str | None = None
    """Directory of the public keys of clients admitted (CURVE): they may send requests,
    never register as workers."""
    worker_keys: str | None = None
    """Directory of the public keys of workers admitted (CURVE): only these may register
    (READY, WARMING); they may send requests too. A key in both directories is a worker key."""

    def __post_init__(self) -> None:
        for name in ("bind", "worker_bind"):
            check_bind_endpoint(getattr(self, name), name)
        keys = "allow_keys" if self.allow_keys else "worker_keys" if self.worker_keys else None
        if keys and not self.curve_secret_key:  # the operator believes the door is locked
            raise InputError(
                "needs --curve-secret-key FILE too: without CURVE the broker is plaintext "
                "and admits anyone",
                keys,
            )
        if self.curve_secret_key and not (self.allow_keys or self.worker_keys):
            raise InputError(
                "needs --allow-keys DIR (clients) and/or --worker-keys DIR (workers) too",
                "curve_secret_key",
            )

    def refusal(
        self, robot: str, queued: int, open_jobs: int, held: int, nbytes: int, client: ClientAccount
    ) -> str | None:
        """Why a new request of ``nbytes`` for ``robot`` must be refused at once
        (`overloaded`) when ``queued`` wait for that robot and the broker holds ``open_jobs``
        and ``held`` bytes (``client``: its sender's part); None when it fits every budget."""
        if queued >= self.max_queue:
            return f"queue for robot {robot!r} is full ({self.max_queue} waiting)"
        if open_jobs >= self.max_open_jobs:
            return f"the broker holds {open_jobs} open jobs (max_open_jobs {self.max_open_jobs})"
        return self.bytes_refusal("this request", held, nbytes, client.requests, client.unread)

    def bytes_refusal(
        self, what: str, held: int, nbytes: int, requests: int, unread: int
    ) -> str | None:
        """Why ``what`` (a request, or a reply, of ``nbytes``) does not fit the byte budgets
        when the broker holds ``held`` bytes, of them ``requests`` (open requests) and
        ``unread`` (replies it has not read) for its client; None when it fits."""
        if requests + unread + nbytes > self.max_client_bytes:
            return (
                f"this client has {requests / MIB:.1f} MiB of requests open and "
                f"{unread / MIB:.1f} MiB of replies it has not read; {what} "
                f"({nbytes / MIB:.1f} MiB) would pass its share, max_client_bytes "
                f"{self.max_client_bytes / MIB:.0f} MiB" + (": read your replies" if unread else "")
            )
        if held + nbytes > self.max_queued_bytes:
            return (
                f"the broker holds {held / MIB:.1f} MiB of requests and unread replies; "
                f"{what} ({nbytes / MIB:.1f} MiB) would pass its budget, max_queued_bytes "
                f"{self.max_queued_bytes / MIB:.0f} MiB"
            )
        return None

    def worker_refusal(self, registered: int) -> str | None:
        """Why a READY must be refused (`overloaded`) while ``registered`` workers are
        registered (not counting the sender); None when it fits."""
        if registered >= self.max_workers:
            return (
                f"the broker has {registered} registered workers (max_workers "
                f"{self.max_workers}): retry later"
            )
        return None

    @property
    def rejoin_grace(self) -> float:
        """Seconds within which every live worker has (re)announced itself: after a broker
        (re)start, a worker notices the silence (one liveness window) and reconnects within
        its longest backoff (`protocol.RECONNECT_MAX`). Until then, and for as long after a
        robot's last worker left, a request for a robot nobody serves or announces waits
        (as a request is never lost while a healthy worker exists); after it, it is answered
        `unknown_robot` at once. Default 5 + 0.25 × 4 = 6 s."""
        return RECONNECT_MAX + self.heartbeat_interval * self.liveness


def check_bind_endpoint(endpoint: str | None, name: str = "bind") -> None:
    """A broker binds one endpoint per option: a comma list (as ``ZMQ_IK_ENDPOINT`` may hold
    for clients and workers, docs/protocol.md 4.10) is refused saying so, not as libzmq's
    'No such device'; a bare port or host gets `protocol.check_endpoint`'s ``tcp://host:port``
    hint, not libzmq's 'Invalid argument'."""
    if endpoint is None:
        return
    if "," in endpoint:
        raise InputError(
            f"a broker binds one endpoint, got several: {endpoint!r:.120} (one broker per "
            f"endpoint; the list is for clients and workers)",
            name,
        )
    check_endpoint(endpoint, name)


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
