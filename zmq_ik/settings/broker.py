"""What tunes a broker: `BrokerSettings` (the CLI builds one from its flags; `zmq-ik serve`
passes it on) and the check of the endpoints it binds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zmq_ik.errors import InputError
from zmq_ik.protocol import DEFAULT_ENDPOINT, RECONNECT_MAX, Limits, check_endpoint

if TYPE_CHECKING:
    from zmq_ik.broker._jobs import ClientAccount

MIB = 1024 * 1024


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
