"""The broker's protocol logic: workers, queues, in-flight jobs and timers, without sockets.

`BrokerCore` is a state machine fed with received messages (`handle`) and clock ticks
(`tick`); everything it wants to send lands in `outbox` for the event loop to deliver. It
never blocks and never reads a clock itself, so tests drive it with any ``now`` they like
(the pyzmq auth split: logic here, the thin loop in `_broker.py`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from zmq_ik.broker._jobs import (
    BREAKER_PAUSE_MAX,
    KEPT_INFO,
    AnsweredMemory,
    ClientAccount,
    ClientBytes,
    Deadlines,
    Job,
    Tracked,
    WorkerState,
    peer_label,
)
from zmq_ik.broker._report import management_answer, ping_info, status
from zmq_ik.broker._warming import RobotDirectory
from zmq_ik.errors import BROKER_ONLY, WORKER_FAULTS, ErrorCode, ProtocolError
from zmq_ik.protocol import (
    BROKER_SERVICE,
    FEATURE_DECLINE,
    FLAG_BUSY,
    FLAG_IDLE,
    WATCH,
    Command,
    Decline,
    Disconnect,
    Frame,
    Heartbeat,
    Ready,
    Reply,
    Request,
    Warming,
    decode_error,
    disconnect_frames,
    error_frames,
    frames_nbytes,
    heartbeat_frames,
    pack_header,
    parse_message,
    reply_frames,
    request_frames,
)
from zmq_ik.security import KeyNotices, held_back
from zmq_ik.settings.broker import BrokerSettings

__all__ = ["BrokerCore", "BrokerSettings", "Job", "WorkerState", "peer_label"]

logger = logging.getLogger(__name__)

ANSWER_HORIZON_MAX = 60.0
"""Longest a (client, request id) is remembered after its answer (seconds)."""
_HEARTBEAT = heartbeat_frames()
_FLAGGED_HEARTBEAT = heartbeat_frames(FEATURE_DECLINE)  # "DECLINE and state flags known here"


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
        self.directory = RobotDirectory(self.settings, self.started)
        """Robots served, announced by warming workers (never given a job), recently left."""
        self.boot = os.urandom(8).hex()
        """This broker process's id in `alive` answers: a client that sees it change knows
        the broker restarted and lost what it was sent before."""
        self._job_ids = itertools.count(1)
        self._now = self.started
        # Timers, so that `tick` (after every burst of messages) costs nothing until something
        # is due: job deadlines, and when workers are next looked at (heartbeats, expiry).
        self._deadlines = Deadlines()
        self._next_scan = self.started
        self.queued_bytes = 0
        """Payload bytes of open jobs (with `ClientBytes.unread`: the `max_queued_bytes`
        budget)."""
        self.clients = ClientBytes()
        """Bytes held per client: open requests, replies it has not read."""
        self.freed_bytes = 0
        """Payload bytes released since the loop last reset this (it trims the heap)."""
        self._answered = AnsweredMemory(self.settings.answered_memory)
        # A gap longer than this between two calls means the broker itself stalled (stopped,
        # swapped out, starved): judging workers or deadlines before reading what queued up
        # meanwhile would be wrong. Liveness judgement and deadlines wait until _hold_until.
        self._stall_gap = self.settings.heartbeat_interval * self.settings.liveness / 2
        self._hold_until = self.started
        self._unconfirmed: OrderedDict[bytes, None] = OrderedDict()
        self.watches: dict[bytes, bytes] = {}
        """Routing id of a worker's watch connection -> the worker's (`protocol.WATCH`)."""
        self._watch_words: dict[str, bytes] = {}
        """``watch-<token>`` a registered worker listed -> the worker's routing id."""
        """Registered workers that sent nothing since READY, oldest first (`_on_ready`)."""
        self._succeeded: dict[str, tuple[float, bytes]] = {}
        """Robot → when, and which worker, last answered one of its jobs FINAL (breaker)."""
        self.registration_refusal: Callable[[Sequence[Frame]], str | None] | None = None
        """With CURVE: why the sender of a READY/WARMING (its frames) may not register as a
        worker, or None. The loop sets it from the key libzmq authenticated the connection
        with (`security.AllowedKeys.registration_refusal`); None: every peer may."""
        self._role_notices = KeyNotices()

    # ------------------------------------------------------------------ input

    def handle(self, identity: bytes, frames: Sequence[Frame], now: float) -> None:
        """Process one message received from ``identity`` (ROUTER identity frame removed)."""
        if now - self._now > self._stall_gap:
            self._on_stall(now)
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
            if worker.unconfirmed_since is not None and not isinstance(msg, Ready):
                worker.unconfirmed_since = None  # it heartbeats: a registration that took,
                self._unconfirmed.pop(identity, None)  # and a worker that may get jobs
                self._release(worker, now)
        if isinstance(msg, Request):
            self._on_request(identity, msg, now)
        elif isinstance(msg, Reply):
            self._on_worker_reply(identity, worker, msg, now)
        elif isinstance(msg, Ready | Warming):
            if self.registration_refusal is not None and self._refused_role(identity, frames, now):
                return
            if isinstance(msg, Ready):
                self._on_ready(identity, msg, now)
            else:
                self._on_warming(identity, msg, now)
        elif isinstance(msg, Heartbeat):
            if worker is None and self._on_watch(identity, msg):
                return
            if worker is None:  # a worker we forgot (or a restarted broker): ask it to re-register
                self._send(identity, disconnect_frames("unknown worker: send READY"))
            elif msg.flags and worker.job is None:  # (with one of our jobs its state is known)
                self._on_worker_state(worker, msg.flags, now)
        elif isinstance(msg, Decline):
            self._on_decline(worker, msg.job_id, now)
        elif isinstance(msg, Disconnect):
            why = msg.reason or "no reason"
            if worker is not None:
                logger.info("worker %s disconnected (%s)", peer_label(identity), why)
                self._remove_worker(worker, now, "disconnected")
            elif self.directory.forget(identity):
                logger.info("warming worker %s disconnected (%s)", peer_label(identity), why)

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
        key = (client, req.request_id)
        existing = self.by_client.get(key)
        if existing is not None:  # a retry of a request we still hold: one job, one answer
            existing.deadline = max(existing.deadline, now + req.timeout_ms / 1000)
            self.counters["duplicate_requests"] += 1
            return
        if self._answered.holds(key, now):  # a retry that crossed its answer: never run twice
            self.counters["duplicate_requests"] += 1
            return
        if not self.directory.expects(req.service, now):  # no worker serves it, none is coming
            text = self.directory.unknown(req.service)
            self._error_to(client, req.request_id, ErrorCode.UNKNOWN_ROBOT, text, "robot")
            return
        nbytes = frames_nbytes(req.payload)
        queued = len(self.queues.get(req.service, ()))
        refusal = self.settings.refusal(
            req.service, queued, len(self.jobs), self.held_bytes, nbytes, self._account(client)
        )
        if refusal is not None:
            self.freed_bytes += nbytes  # (it goes now: the heap may be trimmed)
            self._error_to(client, req.request_id, ErrorCode.OVERLOADED, refusal)
            return
        job = Job(
            job_id=next(self._job_ids).to_bytes(8, "big"),
            client=client,
            request_id=req.request_id,
            service=req.service,
            operation=req.operation,
            payload=req.payload,
            nbytes=nbytes,
            received=now,
            deadline=now + req.timeout_ms / 1000,
        )
        self.jobs[job.job_id] = job
        self.by_client[key] = job
        self.queued_bytes += nbytes
        self.clients.opened(client, nbytes)
        self._deadlines.push(job, self.jobs)
        queue = self.queues.setdefault(req.service, deque())
        queue.append(job)
        self._dispatch(req.service, now)

    def _refused_role(self, identity: bytes, frames: Sequence[Frame], now: float) -> bool:
        """A READY/WARMING from a key that may not register (a client key): ERROR
        ``forbidden`` (final: the worker exits), logged once a minute per key."""
        assert self.registration_refusal is not None
        why = self.registration_refusal(frames)
        if why is None:
            return False
        self.counters["workers_refused_key"] += 1
        if (held := self._role_notices.due(why, now)) is not None:
            logger.warning("refused worker %s: %s%s", peer_label(identity), why, held_back(held))
        self._send(identity, error_frames(b"", ErrorCode.FORBIDDEN, why))
        return True

    def _on_warming(self, identity: bytes, msg: Warming, now: float) -> None:
        """A worker still warming up says what it will serve (4.11): listed, never dispatched
        to, forgotten at its READY, DISCONNECT or after `protocol.WARMING_TTL` of silence."""
        if identity in self.workers:
            why = "WARMING from a registered worker: send it only before READY"
            self._reject(identity, ProtocolError(why, field="command"))
            return
        new = identity not in self.directory.warming
        refusal = self.directory.announce(identity, msg.info, now)
        if refusal is not None:
            self._reject(identity, ProtocolError(refusal, ErrorCode.OVERLOADED))
        elif new:
            self.counters["warming_announced"] += 1
            robots = ",".join(sorted(msg.robots))
            logger.info("worker %s warming up: robots=%s", peer_label(identity), robots)

    def _on_watch(self, identity: bytes, msg: Heartbeat) -> bool:
        """A HEARTBEAT from a worker's watch connection (`protocol.WATCH`), naming the word
        its READY listed: from now on that worker's death is its watch's loss. Whether it
        was one (a word nobody registered is not: that peer is told to register)."""
        word = next((f for f in msg.flags if f.startswith(WATCH)), None)
        owner = self._watch_words.get(word) if word is not None else None
        worker = self.workers.get(owner) if owner is not None else None
        if worker is None or worker.watch is not None:
            return False
        worker.watch = identity
        self.watches[identity] = worker.identity
        self.counters["workers_watched"] += 1
        return True

    def _on_ready(self, identity: bytes, msg: Ready, now: float) -> None:
        old = self.workers.get(identity)
        since = now
        if old is not None:  # re-registration replaces the old one (its job is lost to it)
            if old.unconfirmed_since is not None:  # a READY is no heartbeat: READYs alone
                since = old.unconfirmed_since  # never keep a registration
            self._remove_worker(old, now, "re-registered")
        if self.stopping:
            self._send(identity, disconnect_frames("broker is shutting down"))
            return
        refusal = self.settings.worker_refusal(len(self.workers))
        if refusal is not None and not self._evict_unconfirmed(now):
            return self._reject(identity, ProtocolError(refusal, ErrorCode.OVERLOADED))
        self.directory.forget(identity)  # (a refused one stays announced while it retries)
        worker = WorkerState(
            identity=identity,
            robots=frozenset(msg.robots),
            info={k: msg.info[k] for k in KEPT_INFO if k in msg.info},
            registered=now,
            last_seen=now,
            last_sent=now,
            declines=FEATURE_DECLINE in msg.info.get("features", ()),
            unconfirmed_since=since,
        )
        self._unconfirmed[identity] = None
        word = next((f for f in msg.info.get("features", ()) if f.startswith(WATCH)), None)
        if word is not None and word not in self._watch_words:  # (taken: no watch for it)
            worker.watch_word = word
            self._watch_words[word] = identity
        if old is not None:  # a READY again does not wipe its record (circuit breaker, overruns)
            for name in ("failures", "failing_since", "paused_until", "pauses", "overruns"):
                setattr(worker, name, getattr(old, name))
            if worker.paused_until is not None:
                self._next_scan = min(self._next_scan, worker.paused_until)
        # Fields are bounded (protocol.Limits), so this is small; numbers may grow a little.
        worker.listing_bytes = len(pack_header(worker.describe(now))) + 64
        self.workers[identity] = worker
        self.directory.add_worker(worker.robots)
        self.counters["workers_registered"] += 1
        # An immediate heartbeat acknowledges the READY: the worker then knows its
        # registration took (and resets its reconnect backoff) without waiting an interval,
        # and, flagged, that DECLINE is understood here (4.10). It is given jobs from its
        # first message after READY (which it sends at once), not before: a peer that only
        # ever sends READY is never given one (and is forgotten, or evicted, 4.5).
        self._send(identity, _FLAGGED_HEARTBEAT if worker.declines else _HEARTBEAT)
        logger.info(
            "worker %s ready: robots=%s device=%s",
            peer_label(identity),
            ",".join(sorted(worker.robots)),
            worker.info.get("device", "?"),
        )

    def _on_worker_reply(
        self, identity: bytes, worker: WorkerState | None, msg: Reply, now: float
    ) -> None:
        job = self.jobs.get(msg.request_id)
        if job is not None and job.closed:
            job = None
        final = msg.command is not Command.PARTIAL
        code = decode_error(msg.payload)[0] if msg.command is Command.ERROR else None
        running = False  # the job is this worker's attempt (not run elsewhere since)
        if worker is None:
            # A worker we declared dead (frozen, partitioned) came back with an old answer.
            # Take it if its job is still open (first answer wins), then have it re-register.
            self._send(identity, disconnect_frames("unknown worker: send READY"))
            # It computes a re-dispatched job until it answers (then dropped): no preempting.
            # Only a peer this job was dispatched to may answer it: job ids are sequential,
            # so any other peer could otherwise forge another client's answer.
            if job is None or not final or identity not in job.tried or code in BROKER_ONLY:
                self.counters["late_replies_dropped"] += 1
                return
        elif worker.job is not None and worker.job.job_id == msg.request_id:
            running = job is not None and job.worker == identity
            if final and not self._job_ended(worker, job if running else None, code, now):
                return
            if not running and (not final or code is not None):
                # An overdue worker whose job runs elsewhere now: only its FINAL may still
                # be the first answer; its progress and its errors are not the client's.
                self.counters["late_replies_dropped"] += 1
                return
        else:
            self.counters["late_replies_dropped"] += 1
            return
        if job is None:
            self.counters["late_replies_dropped"] += 1
            return
        if final and job.timed_out_too_soon(msg.command, msg.payload, now, running):
            self.counters["retimed" if running else "late_replies_dropped"] += 1
            if running:  # not an attempt lost: it runs again
                job.attempts -= 1
                self._requeue(job, now)
            return
        if self._deliver(job, msg.command, msg.payload) and final:
            self.close_job(job, answered=True)

    def _job_ended(
        self, worker: WorkerState, job: Job | None, code: str | None, now: float
    ) -> bool:
        """Bookkeeping when ``worker`` ends the job it holds (``job``: None when that job is
        closed or runs elsewhere since the worker was overdue) with a FINAL (``code`` None)
        or an ERROR. Whether its answer may go to the client: never with a code only a
        broker may send (`errors.BROKER_ONLY`, 4.3)."""
        if code == ErrorCode.SHUTTING_DOWN.value:  # it is stopping: the job never ran
            self._on_stopping(worker, job, now)
            return False
        ended = worker.job
        worker.job = None
        if job is not None and job.dispatched is not None:
            latency = (now - job.dispatched) * 1000
            worker.last_latency_ms = round(latency, 3)
            worker.latencies_ms.append(latency)
        worker.served += 1
        if code is not None:
            worker.errors += 1
        if not worker.overdue:
            worker.overruns = 0  # a timely answer
        worker.overdue = False
        if code is None:  # a success: its failures in a row end, and others' count against
            worker.failures = 0
            if ended is not None:
                self._succeeded[ended.service] = (now, worker.identity)
        elif code in WORKER_FAULTS:
            self._fault(worker, now)
        if code in BROKER_ONLY:
            self.counters["broker_codes_from_workers"] += 1
            logger.warning(
                "worker %s ended job %s with %r, a code only a broker may send: re-queued",
                peer_label(worker.identity),
                ended.job_id.hex() if ended is not None else "?",
                code,
            )
            if job is not None:
                self._retry(job, now, f"worker ended it with {code!r}")
        self._release(worker, now)
        return code not in BROKER_ONLY

    def _on_stopping(self, worker: WorkerState, job: Job | None, now: float) -> None:
        """A stopping worker refused its job (`shutting_down`): it is leaving, so it is
        forgotten now, and the job goes back to the front of its queue at once, costing no
        attempt (it never ran there) unless refused that way more than `max_retries` times."""
        self.counters["refused_stopping"] += 1
        logger.info("worker %s is stopping: its job goes to another", peer_label(worker.identity))
        if job is None:
            worker.job = None
        else:
            job.refusals += 1
        lost = job is not None and job.refusals <= self.settings.max_retries
        self._remove_worker(worker, now, "is stopping", undelivered=lost)

    def _fault(self, worker: WorkerState, now: float) -> None:
        """A failure of the worker's own making (`errors.WORKER_FAULTS`, an overdue job).
        Circuit breaker: `breaker_failures` in a row while another worker of one of its
        robots answered since the first of them pause it; the pause doubles each time."""
        settings = self.settings
        if worker.failures == 0:
            worker.failing_since = now
        worker.failures += 1
        if worker.failures < settings.breaker_failures or worker.paused_until is not None:
            return
        since, me = worker.failing_since, worker.identity
        others = (self._succeeded.get(r) for r in worker.robots)
        if not any(s is not None and s[0] >= since and s[1] != me for s in others):
            return  # nobody does better: the robot or its requests are to blame, not it
        more = worker.failures - settings.breaker_failures
        pause = min(BREAKER_PAUSE_MAX, settings.breaker_pause * 2 ** min(more, 16))
        worker.paused_until = now + pause
        worker.pauses += 1
        self.idle.pop(worker.identity, None)
        self.counters["workers_paused"] += 1
        self._next_scan = min(self._next_scan, worker.paused_until)
        logger.warning(
            "worker %s failed its last %d jobs while others served its robots: paused %.0fs",
            peer_label(worker.identity),
            worker.failures,
            pause,
        )

    def _on_worker_state(self, worker: WorkerState, flags: frozenset[str], now: float) -> None:
        """A worker serving several brokers says whether it is free for our jobs (4.10)."""
        if FLAG_IDLE in flags and worker.away:
            worker.away = False
            self._release(worker, now)
        elif FLAG_BUSY in flags and not worker.away:
            worker.away = True  # running another broker's job: no dispatch until it is idle
            self.idle.pop(worker.identity, None)

    def _on_decline(self, worker: WorkerState | None, job_id: bytes, now: float) -> None:
        """The worker did not start the job (it runs another broker's): the job goes back to
        the front of its queue, no attempt counted, and the worker waits for FLAG_IDLE."""
        job = worker.job if worker is not None else None
        if worker is None or job is None or job.job_id != job_id:
            self.counters["declines_dropped"] += 1
            return
        self.counters["declined"] += 1
        worker.job = None
        worker.away = True
        worker.overdue = False
        if job.worker != worker.identity:  # it was overdue: the job runs elsewhere already
            return
        job.attempts -= 1
        job.tried.discard(worker.identity)
        if not job.closed:
            self._requeue(job, now)

    def _on_management(self, client: bytes, req: Request, now: float) -> None:
        self.counters["management"] += 1
        try:
            payload = management_answer(self, client, req, now)
        except ProtocolError as e:  # unknown, or a status too large for one header: never crash
            self._error_to(client, req.request_id, e.code, e.message, e.field)
            return
        nbytes = frames_nbytes(payload)
        refusal = self._reply_refusal(client, nbytes, 0)
        if refusal is not None:
            self._error_to(client, req.request_id, ErrorCode.OVERLOADED, refusal)
            return
        self._to_client(client, reply_frames(Command.FINAL, req.request_id, payload), nbytes)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Heartbeats, dead workers, expired deadlines. Call at least every heartbeat interval;
        calling it more often is cheap (it returns at once until a timer is due)."""
        if now - self._now > self._stall_gap:
            self._on_stall(now)
        self._now = now
        scan = now >= self._next_scan
        if scan:
            self._scan_workers(now)
            self.freed_bytes += self.clients.settle_all()
        expire = bool(self._deadlines) and self._deadlines.next() <= now and now >= self._hold_until
        if expire:
            self._expire_jobs(now)
        if scan or expire:
            # Forget empty queues, or every made-up robot name ever asked for would stay.
            for robot in [r for r, q in self.queues.items() if not q]:
                del self.queues[robot]

    def _on_stall(self, now: float) -> None:
        """The broker did not run for a while: what workers and clients sent meanwhile is
        still queued. Judge nothing before reading it: every worker counts as just seen,
        deadlines wait one heartbeat interval (retries read meanwhile extend them), and
        answers are remembered for the stall's length longer."""
        gap = now - self._now
        self.counters["stalls"] += 1
        logger.warning(
            "broker did not run for %.2fs (stopped, swapped out or starved): reading what "
            "queued up before judging workers and deadlines",
            gap,
        )
        for worker in self.workers.values():
            worker.last_seen = max(worker.last_seen, now)
            if worker.unconfirmed_since is not None:
                worker.unconfirmed_since = max(worker.unconfirmed_since, now)
        self.directory.stalled(now)
        self._hold_until = now + self.settings.heartbeat_interval
        self._answered.extend(gap)

    def _scan_workers(self, now: float) -> None:
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        next_scan = now + interval
        for gone in self.directory.expire(now):
            self.counters["warming_expired"] += 1
            logger.warning("warming worker %s went silent: forgotten", peer_label(gone.identity))
        judge = now >= self._hold_until  # (after a stall: answers queued meanwhile first)
        watched = max(expiry, self.settings.watched_silence)
        for worker in list(self.workers.values()):
            silence = expiry if worker.watch is None else watched
            if now - worker.last_seen > silence:
                logger.warning(
                    "worker %s missed heartbeats for %.2fs: declared dead",
                    peer_label(worker.identity),
                    now - worker.last_seen,
                )
                self.counters["workers_lost"] += 1
                self._remove_worker(worker, now, "expired")
                continue
            since = worker.unconfirmed_since
            if since is not None and now - since > expiry:  # READYs, never a heartbeat
                logger.warning(
                    "worker %s sent nothing but READY for %.2fs: forgotten",
                    peer_label(worker.identity),
                    now - since,
                )
                self.counters["workers_unconfirmed"] += 1
                self._remove_worker(worker, now, "never confirmed")
                continue
            if judge and worker.job is not None and self._judge_overdue(worker, now):
                continue
            if worker.paused_until is not None and now >= worker.paused_until:
                worker.paused_until = None  # the breaker half-opens: it gets jobs again
                if worker.job is None and not worker.away:
                    self._release(worker, now)
            if now - worker.last_sent >= interval:
                beat = _FLAGGED_HEARTBEAT if worker.declines else _HEARTBEAT
                self._send(worker.identity, beat)
                if worker.watch is not None and now - worker.last_seen > expiry:
                    # Silent: is its watch still there? Undeliverable once libzmq dropped it.
                    self.outbox.append((worker.watch, _HEARTBEAT))
            # last_sent/last_seen only move forward, so this is never later than needed.
            next_scan = min(next_scan, worker.last_sent + interval, worker.last_seen + silence)
            if since is not None:
                next_scan = min(next_scan, since + expiry)
            if worker.job is not None:
                due = worker.due + (self.settings.overdue_drop if worker.overdue else 0.0)
                next_scan = min(next_scan, max(due, self._hold_until))
            if worker.paused_until is not None:
                next_scan = min(next_scan, worker.paused_until)
        self._next_scan = next_scan

    def _judge_overdue(self, worker: WorkerState, now: float) -> bool:
        """A worker holding its job past the deadline it was given (+ `overdue_grace`): the
        job runs elsewhere when its deadline (a retry's, a stall's hold) leaves time; the
        worker gets no job until it answers, and is dropped after `max_overruns` such jobs
        in a row or `overdue_drop` seconds overdue. Whether it was dropped."""
        settings = self.settings
        job = worker.job
        assert job is not None
        if worker.overdue:
            if now <= worker.due + settings.overdue_drop:
                return False
            why = f"held a job {now - worker.due + settings.overdue_grace:.0f}s past its deadline"
        elif now <= worker.due:
            return False
        else:
            worker.overdue = True
            worker.overruns += 1
            self.counters["jobs_overdue"] += 1
            logger.warning(
                "worker %s holds job %s past its deadline (%d in a row)",
                peer_label(worker.identity),
                job.job_id.hex(),
                worker.overruns,
            )
            if worker.overruns < settings.max_overruns:
                self._fault(worker, now)
                left = job.deadline - now
                if job.worker == worker.identity and not job.closed:
                    if left >= settings.heartbeat_interval and job.attempts <= settings.max_retries:
                        self.counters["overdue_rerun"] += 1
                        self._requeue(job, now)  # (the worker keeps it, to match its answer)
                return False
            why = f"held {worker.overruns} jobs in a row past their deadlines"
        self.counters["workers_dropped_overdue"] += 1
        logger.warning("worker %s %s: dropped", peer_label(worker.identity), why)
        self._send(worker.identity, disconnect_frames(f"dropped: {why}"))
        self._remove_worker(worker, now, "dropped (overdue)")
        return True

    def _expire_jobs(self, now: float) -> None:
        for job in self._deadlines.due(now, self.jobs):
            if job.closed:
                continue
            robot = job.service
            if job.worker is None and robot not in self.directory.served and job.attempts == 0:
                code, text = ErrorCode.UNKNOWN_ROBOT, self.directory.unknown(robot)
                if self.directory.warming_up(robot):
                    code, text = ErrorCode.TIMEOUT, f"deadline passed: {robot!r} is warming up"
            else:
                code, text = (
                    ErrorCode.TIMEOUT,
                    f"deadline passed for robot {job.service!r} ({job.operation})",
                )
            self._error_job(job, code, text)

    def next_timeout(self, now: float) -> float:
        """Seconds until `tick` has something to do (for the loop's poll timeout)."""
        wait = min(self.settings.heartbeat_interval, self._next_scan - now)
        if self._deadlines:
            wait = min(wait, max(self._deadlines.next(), self._hold_until) - now)
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

    ping_info = ping_info  # the `ping` answer (broker._report)
    status = status  # the `status` answer: `ping` plus queues, in-flight jobs, counters

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
            job.sent_deadline = max(job.deadline, self._hold_until)  # hold: 4.7
            worker.due = job.sent_deadline + self.settings.overdue_grace
            remaining_ms = max(1, int((job.sent_deadline - now) * 1000))
            self._send(
                worker.identity,
                request_frames(job.job_id, job.service, job.operation, remaining_ms, job.payload),
            )

    def _release(self, worker: WorkerState, now: float) -> None:
        """Put a worker back at the end of the LRU list and give it more work."""
        if (
            worker.identity not in self.workers
            or worker.paused_until is not None
            or worker.unconfirmed_since is not None
        ):
            return
        self.idle.pop(worker.identity, None)
        self.idle[worker.identity] = None
        self._give_work(worker, now)

    def _give_work(self, worker: WorkerState, now: float) -> None:
        """Dispatch to a worker that just became idle: the oldest job among its robots.

        Only robots with waiting jobs are looked at (iterating the smaller of its robots and
        the non-empty queues), so the cost does not grow with the names a worker claims.
        A robot with waiting jobs has no other idle worker, so this one is the only taker.
        """
        robots, queues = worker.robots, self.queues
        if len(robots) <= len(queues):
            waiting = [r for r in robots if queues.get(r)]
        else:
            waiting = [r for r, q in queues.items() if q and r in robots]
        if waiting:
            self._dispatch(min(waiting, key=lambda r: queues[r][0].received), now)

    def _remove_worker(
        self, worker: WorkerState, now: float, why: str, undelivered: bool = False
    ) -> None:
        """Forget a worker; its job goes back to the front of the queue. ``undelivered``:
        the job never reached it (the dispatch could not be sent), so it was no attempt."""
        if self.workers.pop(worker.identity, None) is not None:
            self.directory.remove_worker(worker.robots, now)
            for robot in worker.robots:
                if robot not in self.directory.served:
                    self._succeeded.pop(robot, None)
        self.idle.pop(worker.identity, None)
        self._unconfirmed.pop(worker.identity, None)
        if worker.watch_word is not None and self._watch_words.get(worker.watch_word) == (
            worker.identity
        ):
            del self._watch_words[worker.watch_word]
        if worker.watch is not None:
            self.watches.pop(worker.watch, None)
        job = worker.job
        worker.job = None
        if job is None or job.closed or job.worker != worker.identity:
            return  # (not its attempt any more: an overdue job runs elsewhere)
        if undelivered:
            job.attempts -= 1
            job.tried.discard(worker.identity)
        self._retry(job, now, f"worker {peer_label(worker.identity)} {why}")

    def _retry(self, job: Job, now: float, why: str) -> None:
        """A job its worker will not answer goes back to the front of its queue, unless it
        was tried `max_retries` + 1 times: then `worker_lost` (the client may re-send it)."""
        if job.attempts > self.settings.max_retries:
            self._error_job(
                job,
                ErrorCode.WORKER_LOST,
                f"{job.attempts} workers for robot {job.service!r} failed before answering "
                f"(last: {why})",
            )
            return
        self.counters["retries"] += 1
        logger.warning(
            "%s with job %s in flight: re-queued (attempt %d)",
            why,
            job.job_id.hex(),
            job.attempts + 1,
        )
        self._requeue(job, now)

    def _evict_unconfirmed(self, now: float) -> bool:
        """Make room for a READY at `max_workers`: forget the oldest registration that sent
        nothing since its READY (no heartbeat yet), so such registrations can never fill the
        broker; its job, if any, is re-queued costing no attempt. Whether one was."""
        oldest = next(iter(self._unconfirmed), None)
        if oldest is None:
            return False
        self.counters["workers_evicted_unconfirmed"] += 1
        logger.warning("worker %s never confirmed its READY: evicted", peer_label(oldest))
        self._remove_worker(self.workers[oldest], now, "evicted", undelivered=True)
        return True

    def _requeue(self, job: Job, now: float) -> None:
        """A job that left its worker goes first in its queue, to the next idle worker."""
        job.worker = job.dispatched = None
        self.queues.setdefault(job.service, deque()).appendleft(job)
        self._dispatch(job.service, now)

    def _deliver(self, job: Job, command: Command, payload: list[Frame]) -> bool:
        """Forward a worker's reply to the job's client; unless it does not fit the client's
        byte share or the broker's (the client does not read its replies): then the job is
        answered `overloaded` and closed instead (counter `replies_dropped_unread`). Whether
        it was forwarded."""
        nbytes = frames_nbytes(payload)
        refusal = self._reply_refusal(job.client, nbytes, job.nbytes)
        if refusal is not None:
            self.counters["replies_dropped_unread"] += 1
            self._error_job(job, ErrorCode.OVERLOADED, refusal)
            return False
        if command is Command.ERROR:
            self.counters["worker_errors"] += 1
        elif command is Command.FINAL:
            self.counters["replies"] += 1
        else:
            self.counters["partials"] += 1
        self._to_client(job.client, reply_frames(command, job.request_id, payload), nbytes)
        return True

    @property
    def held_bytes(self) -> int:
        """Bytes held for clients: open jobs' payloads and unread replies (`max_queued_bytes`)."""
        return self.queued_bytes + self.clients.unread

    def _account(self, client: bytes) -> ClientAccount:
        """``client``'s `ClientAccount`, with the replies ZeroMQ let go of since taken off."""
        before = self.clients.unread
        account = self.clients.get(client)
        self.freed_bytes += before - self.clients.unread
        return account

    def _reply_refusal(self, client: bytes, nbytes: int, request: int) -> str | None:
        """Why a reply of ``nbytes`` to ``client`` may not be queued (its request's
        ``request`` bytes, still held, make room for it): see `BrokerSettings.bytes_refusal`."""
        account = self._account(client)
        return self.settings.bytes_refusal(
            "a reply to it (dropped)",
            self.held_bytes - request,
            nbytes,
            account.requests - request,
            account.unread,
        )

    def _to_client(self, client: bytes, frames: list[Any], nbytes: int) -> None:
        """Queue a reply of ``nbytes`` payload to ``client``, counted until ZeroMQ lets go
        of it (`ClientBytes`)."""
        receipt = self.clients.handed(client, nbytes)
        self.outbox.append((client, frames if receipt is None else Tracked(frames, receipt)))

    def _error_job(self, job: Job, code: ErrorCode, message: str) -> None:
        self._error_to(job.client, job.request_id, code, message)
        # The client re-sends after `worker_lost` with the same id (client.RETRYABLE): that
        # retry must run. After any other answer, a retry is a duplicate.
        self.close_job(job, answered=code is not ErrorCode.WORKER_LOST)

    def close_job(self, job: Job, answered: bool) -> None:
        """Forget an open job (answered, or cancelled by its client: broker._cancel)."""
        job.closed = True
        self.jobs.pop(job.job_id, None)
        key = (job.client, job.request_id)
        self.by_client.pop(key, None)
        if answered:  # for as long as the client may still be re-sending it (capped)
            horizon = min(ANSWER_HORIZON_MAX, max(1.0, job.deadline - job.received))
            self._answered.remember(key, self._now + horizon, self._now)
        self.queued_bytes -= job.nbytes
        self.clients.closed(job.client, job.nbytes)
        self.freed_bytes += job.nbytes
        job.payload = []  # the frames go now, not when the last reference to the job does
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
        frames = error_frames(request_id, code, message, field)
        self._to_client(client, frames, frames_nbytes(frames))

    def undelivered(self, identity: bytes, frames: list[Any], now: float) -> None:
        """The loop could not send ``frames`` to ``identity``: the peer's connection is gone
        (ROUTER_MANDATORY) or it stopped reading (its queue is full). A worker is forgotten
        at once (its job re-queued; a dispatch that never left costs no attempt); an answer
        that never left is forgotten, so the client's retry runs."""
        self.counters["unroutable"] += 1
        if type(frames) is Tracked:
            self.clients.failed(identity, frames.receipt)
        watched = self.watches.get(identity)
        if watched is not None:  # its watch is gone: killed or stopped (`protocol.WATCH`)
            identity, frames = watched, []
        worker = self.workers.get(identity)
        command, ident = (frames[1], frames[2]) if len(frames) > 2 else (b"", b"")
        if worker is not None:
            job = worker.job
            lost = command == Command.REQUEST.value and job is not None and job.job_id == ident
            self.counters["workers_unreachable"] += 1
            logger.warning("worker %s is unreachable: forgotten", peer_label(identity))
            self._remove_worker(worker, now, "unreachable", undelivered=lost)
        elif command in (Command.FINAL.value, Command.ERROR.value):
            self._answered.forget((identity, bytes(ident)))

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        worker = self.workers.get(identity)
        if worker is not None:
            worker.last_sent = self._now
        self.outbox.append((identity, frames))
