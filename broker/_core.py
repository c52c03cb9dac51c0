"""The broker's protocol logic: workers, queues, in-flight jobs and timers, without sockets.

`BrokerCore` is a state machine fed with received messages (`handle`) and clock ticks
(`tick`); everything it wants to send lands in `outbox` for the event loop to deliver. It
never blocks and never reads a clock itself, so tests drive it with any ``now`` they like
(the pyzmq auth split: logic here, the thin loop in `_broker.py`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zmq_ik._version import __version__
from zmq_ik.errors import ErrorCode, ProtocolError
from zmq_ik.protocol import (
    BROKER_SERVICE,
    PROTOCOL,
    Command,
    Disconnect,
    Frame,
    Heartbeat,
    Limits,
    Ready,
    Reply,
    Request,
    disconnect_frames,
    encode_payload,
    error_frames,
    heartbeat_frames,
    parse_message,
    reply_frames,
    request_frames,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerSettings:
    """Everything that tunes a broker; the CLI builds one from its flags."""

    bind: str = "tcp://127.0.0.1:5555"
    """Endpoint for clients and workers. Loopback by default: ZIK/1 without CURVE is open."""
    worker_bind: str | None = None
    """Optional second endpoint for workers only (e.g. another interface)."""
    heartbeat_interval: float = 0.25
    """Seconds between heartbeats to each worker."""
    liveness: int = 4
    """Heartbeat intervals of silence after which a worker is dead."""
    max_queue: int = 1024
    """Requests waiting per robot before new ones get `overloaded` at once."""
    max_retries: int = 2
    """Re-dispatches of a job whose worker died, before `worker_lost`."""
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
    """Directory of allowed client/worker public keys (CURVE)."""


_LABEL_KEY = os.urandom(16)


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
    received: float
    deadline: float
    attempts: int = 0
    worker: bytes | None = None
    dispatched: float | None = None
    closed: bool = False
    tried: set[bytes] = field(default_factory=set)
    """Every worker identity this job was dispatched to: only they may answer it."""


@dataclass
class WorkerState:
    """A registered worker."""

    identity: bytes
    robots: tuple[str, ...]
    info: dict[str, Any]
    registered: float
    last_seen: float
    last_sent: float
    job: Job | None = None
    served: int = 0
    errors: int = 0
    last_latency_ms: float | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def state(self) -> str:
        return "busy" if self.job is not None else "idle"

    def describe(self, now: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        return {
            "id": peer_label(self.identity),
            "robots": list(self.robots),
            "device": self.info.get("device", "?"),
            "host": self.info.get("host"),
            "pid": self.info.get("pid"),
            "state": self.state,
            "served": self.served,
            "errors": self.errors,
            "last_latency_ms": self.last_latency_ms,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "uptime_s": round(now - self.registered, 3),
            "versions": self.info.get("versions", {}),
        }


class BrokerCore:
    """Majordomo-style routing with in-flight tracking; see docs/protocol.md section 4.7."""

    def __init__(self, settings: BrokerSettings | None = None, now: float | None = None) -> None:
        self.settings = settings or BrokerSettings()
        self.started = time.monotonic() if now is None else now
        self.outbox: deque[tuple[bytes, list[Any]]] = deque()
        self.workers: dict[bytes, WorkerState] = {}
        self.idle: OrderedDict[bytes, None] = OrderedDict()  # LRU order: front = longest idle
        self.queues: dict[str, deque[Job]] = {}
        self.jobs: dict[bytes, Job] = {}  # every open job, queued or in flight
        self.by_client: dict[tuple[bytes, bytes], Job] = {}
        self.counters: Counter[str] = Counter()
        self.errors_sent: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.stopping = False
        self._job_ids = itertools.count(1)
        self._now = self.started
        # Timers, so that `tick` costs nothing until something is due (the loop calls it
        # after every burst of messages): a heap of (deadline, job id), stale entries
        # (closed jobs, extended deadlines) skipped when they surface; and the time the
        # workers are next looked at for heartbeats and expiry.
        self._deadlines: list[tuple[float, bytes]] = []
        self._next_scan = self.started

    # ------------------------------------------------------------------ input

    def handle(self, identity: bytes, frames: Sequence[Frame], now: float) -> None:
        """Process one message received from ``identity`` (ROUTER identity frame removed)."""
        self._now = now
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError as e:
            self._reject(identity, e)
            broken = self.workers.get(identity)
            if broken is not None and broken.job is not None:
                # A worker that answers its job with garbage will not answer it properly:
                # give the job to another worker now rather than at its deadline.
                self.counters["workers_dropped_malformed"] += 1
                logger.warning(
                    "worker %s sent a malformed message (%s): forgotten",
                    peer_label(identity),
                    e.message,
                )
                self._remove_worker(broken, now, "sent a malformed message")
            return
        worker = self.workers.get(identity)
        if worker is not None:
            worker.last_seen = now
        if isinstance(msg, Request):
            self._on_request(identity, msg, now)
        elif isinstance(msg, Reply):
            self._on_worker_reply(identity, worker, msg, now)
        elif isinstance(msg, Ready):
            self._on_ready(identity, msg, now)
        elif isinstance(msg, Heartbeat):
            if worker is None:  # a worker we forgot (or a restarted broker): ask it to re-register
                self._send(identity, disconnect_frames("unknown worker: send READY"))
        elif isinstance(msg, Disconnect):
            if worker is not None:
                logger.info(
                    "worker %s disconnected (%s)", peer_label(identity), msg.reason or "no reason"
                )
                self._remove_worker(worker, now, "disconnected")

    def _reject(self, identity: bytes, e: ProtocolError) -> None:
        self.rejects[e.code.value] += 1
        logger.debug("rejected message from %s: %s", peer_label(identity), e.message)
        self._send(identity, error_frames(b"", e.code, e.message, e.field))

    def _on_request(self, client: bytes, req: Request, now: float) -> None:
        if req.service == BROKER_SERVICE:
            self._on_management(client, req, now)
            return
        self.counters["requests"] += 1
        if self.stopping:
            self._error_to(
                client, req.request_id, ErrorCode.SHUTTING_DOWN, "broker is shutting down"
            )
            return
        existing = self.by_client.get((client, req.request_id))
        if existing is not None:  # a retry of a request we still hold: one job, one answer
            existing.deadline = max(existing.deadline, now + req.timeout_ms / 1000)
            self.counters["duplicate_requests"] += 1
            return
        queue = self.queues.setdefault(req.service, deque())
        if len(queue) >= self.settings.max_queue:
            self._error_to(
                client,
                req.request_id,
                ErrorCode.OVERLOADED,
                f"queue for robot {req.service!r} is full ({self.settings.max_queue} waiting)",
            )
            return
        job = Job(
            job_id=next(self._job_ids).to_bytes(8, "big"),
            client=client,
            request_id=req.request_id,
            service=req.service,
            operation=req.operation,
            payload=req.payload,
            received=now,
            deadline=now + req.timeout_ms / 1000,
        )
        self.jobs[job.job_id] = job
        self.by_client[(client, req.request_id)] = job
        self._push_deadline(job)
        queue.append(job)
        self._dispatch(req.service, now)

    def _on_ready(self, identity: bytes, msg: Ready, now: float) -> None:
        old = self.workers.get(identity)
        if old is not None:  # re-registration replaces the old one (its job is lost to it)
            self._remove_worker(old, now, "re-registered")
        if self.stopping:
            self._send(identity, disconnect_frames("broker is shutting down"))
            return
        worker = WorkerState(
            identity=identity,
            robots=tuple(dict.fromkeys(msg.robots)),
            info=msg.info,
            registered=now,
            last_seen=now,
            last_sent=now,
        )
        self.workers[identity] = worker
        self.idle[identity] = None
        self.counters["workers_registered"] += 1
        logger.info(
            "worker %s ready: robots=%s device=%s",
            peer_label(identity),
            ",".join(worker.robots),
            msg.info.get("device", "?"),
        )
        for robot in worker.robots:
            self._dispatch(robot, now)

    def _on_worker_reply(
        self, identity: bytes, worker: WorkerState | None, msg: Reply, now: float
    ) -> None:
        job = self.jobs.get(msg.request_id)
        current = (
            worker is not None and worker.job is not None and worker.job.job_id == msg.request_id
        )
        final = msg.command is not Command.PARTIAL
        if worker is None:
            # A worker we declared dead (frozen, partitioned) came back with an old answer.
            # Take it if its job is still open (first answer wins), then have it re-register.
            self._send(identity, disconnect_frames("unknown worker: send READY"))
            # If the job was re-dispatched, that worker stays busy with it until it answers
            # (its answer is then dropped): simpler and safer than preempting it.
            # Only a peer this job was dispatched to may answer it: job ids are sequential,
            # so any other peer could otherwise forge another client's answer.
            if job is None or job.closed or not final or identity not in job.tried:
                self.counters["late_replies_dropped"] += 1
                return
        elif current:
            if final:
                worker.job = None
                if job is not None and not job.closed and job.dispatched is not None:
                    latency = (now - job.dispatched) * 1000
                    worker.last_latency_ms = round(latency, 3)
                    worker.latencies_ms.append(latency)
                worker.served += 1
                if msg.command is Command.ERROR:
                    worker.errors += 1
                self._release(worker, now)
        else:
            self.counters["late_replies_dropped"] += 1
            return
        if job is None or job.closed:
            self.counters["late_replies_dropped"] += 1
            return
        self._deliver(job, msg.command, msg.payload)
        if final:
            self._close(job)

    def _on_management(self, client: bytes, req: Request, now: float) -> None:
        self.counters["management"] += 1
        if req.operation == "ping":
            body = self.ping_info(now)
        elif req.operation == "status":
            body = self.status(now)
        else:
            self._error_to(
                client,
                req.request_id,
                ErrorCode.UNKNOWN_OPERATION,
                f"the broker answers 'ping' and 'status', not {req.operation!r}",
                "operation",
            )
            return
        try:
            payload = encode_payload(body)
        except ProtocolError as e:  # e.g. a status too large for one header: answer, never crash
            self._error_to(client, req.request_id, e.code, e.message, e.field)
            return
        self._send(client, reply_frames(Command.FINAL, req.request_id, payload))

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Heartbeats, dead workers, expired deadlines. Call at least every heartbeat interval;
        calling it more often is cheap (it returns at once until a timer is due)."""
        self._now = now
        scan = now >= self._next_scan
        if scan:
            self._scan_workers(now)
        expire = bool(self._deadlines) and self._deadlines[0][0] <= now
        if expire:
            self._expire_jobs(now)
        if scan or expire:
            # Forget empty queues, or every made-up robot name ever asked for would stay.
            for robot in [r for r, q in self.queues.items() if not q]:
                del self.queues[robot]

    def _scan_workers(self, now: float) -> None:
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        next_scan = now + interval
        for worker in list(self.workers.values()):
            if now - worker.last_seen > expiry:
                logger.warning(
                    "worker %s missed heartbeats for %.2fs: declared dead",
                    peer_label(worker.identity),
                    now - worker.last_seen,
                )
                self.counters["workers_lost"] += 1
                self._remove_worker(worker, now, "expired")
                continue
            if now - worker.last_sent >= interval:
                self._send(worker.identity, heartbeat_frames())
            # last_sent/last_seen only move forward, so this is never later than needed.
            next_scan = min(next_scan, worker.last_sent + interval, worker.last_seen + expiry)
        self._next_scan = next_scan

    def _expire_jobs(self, now: float) -> None:
        heap = self._deadlines
        expired: list[Job] = []
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is None:  # answered or closed since
                continue
            if job.deadline > now:  # extended by a retry of the request: wait for the new one
                heapq.heappush(heap, (job.deadline, job_id))
                continue
            expired.append(job)
        for job in expired:
            if job.closed:
                continue
            served = any(job.service in w.robots for w in self.workers.values())
            if job.worker is None and not served and job.attempts == 0:
                code, text = ErrorCode.UNKNOWN_ROBOT, f"no worker serves robot {job.service!r}"
            else:
                code, text = (
                    ErrorCode.TIMEOUT,
                    f"deadline passed for robot {job.service!r} ({job.operation})",
                )
            self._error_job(job, code, text)

    def _push_deadline(self, job: Job) -> None:
        heap = self._deadlines
        if len(heap) > 2 * len(self.jobs) + 1024:  # mostly answered jobs: rebuild, bounded
            heap[:] = [(j.deadline, j.job_id) for j in self.jobs.values() if j is not job]
            heapq.heapify(heap)
        heapq.heappush(heap, (job.deadline, job.job_id))

    def next_timeout(self, now: float) -> float:
        """Seconds until `tick` has something to do (for the loop's poll timeout)."""
        wait = min(self.settings.heartbeat_interval, self._next_scan - now)
        if self._deadlines:
            wait = min(wait, self._deadlines[0][0] - now)
        return max(0.0, wait)

    # ------------------------------------------------------------------ shutdown

    def begin_shutdown(self, now: float) -> None:
        """Stop taking work: queued jobs are answered `shutting_down`; in-flight ones may finish."""
        self.stopping = True
        for queue in self.queues.values():
            while queue:
                self._error_job(queue[0], ErrorCode.SHUTTING_DOWN, "broker is shutting down")

    def in_flight(self) -> int:
        return sum(1 for j in self.jobs.values() if j.worker is not None)

    def finish_shutdown(self) -> None:
        """Answer what is left and tell every worker we are going."""
        for job in list(self.jobs.values()):
            self._error_job(job, ErrorCode.SHUTTING_DOWN, "broker stopped before the job finished")
        for identity in list(self.workers):
            self._send(identity, disconnect_frames("broker shutting down"))
        self.workers.clear()
        self.idle.clear()

    # ------------------------------------------------------------------ reporting

    def ping_info(self, now: float) -> dict[str, Any]:
        return {
            "version": __version__,
            "protocol": PROTOCOL.decode(),
            "uptime_s": round(now - self.started, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "workers": [w.describe(now) for w in self.workers.values()],
        }

    def status(self, now: float) -> dict[str, Any]:
        info = self.ping_info(now)
        info.update(
            queues={robot: len(q) for robot, q in self.queues.items()},
            in_flight=self.in_flight(),
            open_jobs=len(self.jobs),
            counters=dict(self.counters),
            errors=dict(self.errors_sent),
            rejects=dict(self.rejects),
            robots=sorted({r for w in self.workers.values() for r in w.robots}),
        )
        return info

    # ------------------------------------------------------------------ internals

    def _dispatch(self, robot: str, now: float) -> None:
        queue = self.queues.get(robot)
        while queue:
            worker = next(
                (self.workers[i] for i in self.idle if robot in self.workers[i].robots), None
            )
            if worker is None:
                return
            job = queue.popleft()
            del self.idle[worker.identity]
            worker.job = job
            job.worker = worker.identity
            job.tried.add(worker.identity)
            job.dispatched = now
            job.attempts += 1
            remaining_ms = max(1, int((job.deadline - now) * 1000))
            self._send(
                worker.identity,
                request_frames(job.job_id, job.service, job.operation, remaining_ms, job.payload),
            )

    def _release(self, worker: WorkerState, now: float) -> None:
        """Put a worker back at the end of the LRU list and give it more work."""
        if worker.identity not in self.workers:
            return
        self.idle.pop(worker.identity, None)
        self.idle[worker.identity] = None
        for robot in worker.robots:
            self._dispatch(robot, now)

    def _remove_worker(self, worker: WorkerState, now: float, why: str) -> None:
        self.workers.pop(worker.identity, None)
        self.idle.pop(worker.identity, None)
        job = worker.job
        worker.job = None
        if job is None or job.closed:
            return
        job.worker = None
        job.dispatched = None
        if job.attempts > self.settings.max_retries:
            self._error_job(
                job,
                ErrorCode.WORKER_LOST,
                f"{job.attempts} workers for robot {job.service!r} died before answering",
            )
            return
        self.counters["retries"] += 1
        logger.warning(
            "worker %s %s with job %s in flight: re-queued (attempt %d)",
            peer_label(worker.identity),
            why,
            job.job_id.hex(),
            job.attempts + 1,
        )
        self.queues.setdefault(job.service, deque()).appendleft(job)
        self._dispatch(job.service, now)

    def _deliver(self, job: Job, command: Command, payload: list[Frame]) -> None:
        if command is Command.ERROR:
            self.counters["worker_errors"] += 1
        elif command is Command.FINAL:
            self.counters["replies"] += 1
        else:
            self.counters["partials"] += 1
        self._send(job.client, reply_frames(command, job.request_id, payload))

    def _error_job(self, job: Job, code: ErrorCode, message: str) -> None:
        self._error_to(job.client, job.request_id, code, message)
        self._close(job)

    def _close(self, job: Job) -> None:
        job.closed = True
        self.jobs.pop(job.job_id, None)
        self.by_client.pop((job.client, job.request_id), None)
        if job.worker is None:  # still queued
            queue = self.queues.get(job.service)
            if queue is not None:
                try:
                    queue.remove(job)
                except ValueError:
                    pass

    def _error_to(
        self,
        client: bytes,
        request_id: bytes,
        code: ErrorCode,
        message: str,
        field: str | None = None,
    ) -> None:
        self.errors_sent[code.value] += 1
        self._send(client, error_frames(request_id, code, message, field))

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        worker = self.workers.get(identity)
        if worker is not None:
            worker.last_sent = self._now
        self.outbox.append((identity, frames))
