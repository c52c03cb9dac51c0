"""The worker's decisions, without sockets: its brokers' links and their states, heartbeats,
reconnect backoff, the job lifecycle, refusals, and the warm-up's announcements (WARMING).

`WorkerCore` is fed what the brokers send (`handle`) and the time (`tick`, `busy_tick`);
what it wants done lands in `outbox` for the loop (`_worker.py`) to do: frames to send on a
link, or an `Op` on the link's connection. It never reads a clock or touches a socket, so
tests drive it with any ``now`` they like (the broker's shape: `broker._core`). Every
message a broker sends is handled here, in `handle`, whichever thread of the loop read it;
the loop calls the core from one thread at a time.
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from zmq_ik.errors import ConfigError, ErrorCode, ProtocolError
from zmq_ik.protocol import (
    FEATURE_DECLINE,
    FLAG_BUSY,
    FLAG_IDLE,
    WARMING_INTERVAL,
    WATCH,
    Command,
    Disconnect,
    Heartbeat,
    Reply,
    Request,
    decline_frames,
    decode_error,
    disconnect_frames,
    error_frames,
    heartbeat_frames,
    parse_message,
    ready_frames,
    warming_frames,
)
from zmq_ik.settings.worker import WorkerSettings
from zmq_ik.worker._job import Job
from zmq_ik.worker._link import Link, final_refusal

logger = logging.getLogger(__name__)

_PLAIN_BEAT = heartbeat_frames()
_IDLE_BEAT = heartbeat_frames(FLAG_IDLE)
_BUSY_BEAT = heartbeat_frames(FLAG_BUSY)


class Op(enum.Enum):
    """What the loop does to a link's connection (`WorkerCore.outbox`), besides sending."""

    OPEN = "open"
    """A new connection (a fresh DEALER with a new routing id) to the link's broker."""
    CLOSE = "close"
    """Close the connection and its watch."""
    WATCH = "watch"
    """Open the watch connection and send it `WorkerCore.watch_frames`."""
    DISCARD = "discard"
    """Read and drop what the broker sent the watch connection."""


Action = tuple[int, "Op | list[Any]"]
"""(link index, frames to send on it, or an `Op` on its connection)."""


class WorkerCore:
    """One worker's protocol logic for its brokers (docs/protocol.md 4.7, 4.10, 4.11).

    Phases: `start` (connections opened, WARMING announced by `tick` while the service warms
    up), `ready` (READY to each broker: serving), `leave` (DISCONNECT). While serving, the
    loop runs the `Job` that `handle` returns and tells `job_started` / `job_done`;
    meanwhile `busy_tick` heartbeats, and a job another broker sends is declined or
    deferred."""

    def __init__(self, settings: WorkerSettings, watch_word: str | None = None) -> None:
        self.settings = settings
        self.links = [Link(e, settings.reconnect_min) for e in settings.endpoints]
        self.outbox: deque[Action] = deque()
        self.info: dict[str, Any] = {}
        """The READY header (`ready`)."""
        self.warming = False
        self.stopping = False
        """Set by the loop when asked to stop: a request is refused ``shutting_down``."""
        self.running: int | None = None
        """The link whose job runs now (`job_started`), else None."""
        self.started_at = 0.0
        """When the running job started."""
        self.served = 0
        self.declined = 0
        self.watch_word = watch_word or WATCH + os.urandom(8).hex()
        """Named in READY and by each watch connection (`protocol.WATCH`)."""
        self.watch_frames = heartbeat_frames(self.watch_word)
        self.explain: Callable[[int], str | None] | None = None
        """Why link i's broker is silent, from its handshakes (`zmq_ik.protocol.handshakes`), or
        None; the loop sets it (it has the sockets)."""
        self._announced: dict[str, Any] = {}
        self._progress = (0, 0)
        self._news = False
        self._warm_t0 = 0.0
        self._announced_at = -math.inf

    # ------------------------------------------------------------------ phases

    def start(self, announced: dict[str, Any], now: float) -> None:
        """Connect to every broker and announce the warm-up (WARMING, ``announced`` with the
        progress) at the next `tick` and at least every `protocol.WARMING_INTERVAL`."""
        self.warming = True
        self._announced = announced
        self._warm_t0 = now
        self._news = True
        for i in range(len(self.links)):
            self._open(i, now)

    def warmup_progress(self, done: int, total: int) -> None:
        """A `_service.WarmupHook`: ``done`` of ``total`` buckets compiled; announced at the
        next `tick` (any thread may call it)."""
        self._progress = (done, total)
        self._news = True

    def ready(self, info: dict[str, Any], now: float) -> None:
        """The warm-up is over: READY (``info`` with the heartbeat interval and features) to
        every broker that did not refuse this worker for good; those are left (`ConfigError`
        once all did)."""
        self.warming = False
        self.info = {
            **info,
            "heartbeat_ms": int(self.settings.heartbeat_interval * 1000),
            "features": [FEATURE_DECLINE, self.watch_word],
        }
        for i, link in enumerate(self.links):
            if link.refused is not None and link.connected:  # it refused our WARMING for good
                self._drop(i, "refused", now)
        for i, link in enumerate(self.links):
            if link.refused is None:
                link.last_recv = now  # what a broker sent meanwhile was read: silence anew
                self._send(i, ready_frames(self.info), now)

    def leave(self, why: str, now: float) -> None:
        """DISCONNECT to every connected broker (stopping, or a failed warm-up): they forget
        this worker at once (and re-queue its job) instead of at its silence."""
        for i, link in enumerate(self.links):
            if link.connected:
                self._send(i, disconnect_frames(why), now)

    def check_refused(self) -> None:
        """`ConfigError` (exit 78) once every broker refused this worker for good."""
        if all(link.refused is not None for link in self.links):
            why = "; ".join(f"{link.endpoint}: {link.refused}" for link in self.links)
            raise ConfigError(f"every broker refused this worker, retrying cannot help: {why}")

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Timers, outside a job: WARMING while warming up; else, per link, reconnect once
        its backoff ended, drop it when broken or silent for the liveness window, heartbeat
        it every interval, and watch it once it answered."""
        if self.warming:
            if self._news or now - self._announced_at >= WARMING_INTERVAL:
                self._announce(now)
            return
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        for i, link in enumerate(self.links):
            if not link.connected:
                if now >= link.reconnect_at:
                    self._connect(i, now)
                continue
            if link.broken is None and now - link.last_recv > expiry:
                link.broken = "silent"
            if link.broken is not None:
                self._drop(i, link.broken, now)
                continue
            if now - link.last_sent >= interval:
                self._send(i, self._idle_beat(link), now)
                if link.watching:  # what the broker sent it while we were silent
                    self.outbox.append((i, Op.DISCARD))
            if not link.watching and link.answered:
                link.watching = True
                self.outbox.append((i, Op.WATCH))

    def next_wait(self, now: float) -> float:
        """Seconds the loop may wait for messages before the next `tick` is due."""
        wait = self.settings.heartbeat_interval / 2
        for link in self.links:
            if not link.connected:
                wait = min(wait, max(0.001, link.reconnect_at - now))
        return wait

    def busy_tick(self, now: float, others: bool) -> None:
        """Timers while a job runs: HEARTBEATs flagged busy to its broker every interval, and
        (``others``: the loop reads their sockets meanwhile) to the other brokers, which then
        are owed an idle HEARTBEAT once the job is done."""
        interval = self.settings.heartbeat_interval
        for i, link in enumerate(self.links):
            if not link.connected or link.broken is not None or now - link.last_sent < interval:
                continue
            if i == self.running:
                self._send(i, _BUSY_BEAT if link.declines else _PLAIN_BEAT, now)
            elif others:
                self._send(i, _BUSY_BEAT if link.declines else _PLAIN_BEAT, now)
                link.owed_idle = link.owed_idle or link.declines

    # ------------------------------------------------------------------ messages

    def handle(self, i: int, frames: list[Any], now: float) -> Job | None:
        """A message from link ``i``'s broker, in any phase, read by any thread of the loop:
        the job to run now if it is one the worker takes, else None. Never raises for what
        a broker sends: a malformed message is logged and ignored."""
        link = self.links[i]
        if not link.connected or link.broken is not None:
            return None  # a message handled before ended this connection
        if self.warming:
            self._while_warming(link, frames)
            return None
        link.last_recv = now
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError as e:
            logger.warning("malformed message from broker %s ignored: %s", link.endpoint, e.message)
            return None
        first = not link.answered
        if isinstance(msg, Heartbeat | Request) and first:
            link.answered = True  # the broker knows us: only registered workers get these
            logger.info("registered with broker %s: serving it", link.endpoint)
        if isinstance(msg, Heartbeat):
            if FEATURE_DECLINE in msg.flags:
                link.declines = True
            if first and self.running is None:  # the READY's acknowledgement: confirm at
                self._send(i, self._idle_beat(link), now)  # once (a broker forgets, or
            # lets others evict, a silent READY)
        elif isinstance(msg, Request):
            return self._on_request(i, msg, now)
        elif isinstance(msg, Disconnect):
            link.broken = "disconnected"
        elif isinstance(msg, Reply) and msg.command is Command.ERROR:
            # The broker refused something we sent (e.g. READY): say so, or the worker would
            # just reconnect and re-register forever without a word.
            code, message, field = decode_error(msg.payload)  # never raises: bad ones say so
            if not link.answered and self._on_refusal(link, code, message, field):
                return None
            logger.error(
                "broker %s refused a message from this worker: [%s] %s",
                link.endpoint,
                code,
                message,
            )
        # READY and other replies are not for workers: liveness is all they are.
        return None

    def _on_request(self, i: int, msg: Request, now: float) -> Job | None:
        link = self.links[i]
        if self.running is not None:  # another broker's job while one runs
            if link.declines:  # it gives the job to another worker, no attempt counted
                self._send(i, decline_frames(msg.request_id), now)
                link.owed_idle = True
                self.declined += 1
            elif link.deferred is None:
                link.deferred = Job.from_request(msg, now)  # no DECLINE there: it runs next
            else:  # it sent a second job to a worker it believes busy with its first
                busy = error_frames(
                    msg.request_id, ErrorCode.INTERNAL, "worker busy with another job"
                )
                self._send(i, busy, now)
            return None
        if self.stopping:
            refusal = error_frames(msg.request_id, ErrorCode.SHUTTING_DOWN, "worker is stopping")
            self._send(i, refusal, now)
            return None
        return Job.from_request(msg, now)

    def _while_warming(self, link: Link, frames: list[Any]) -> None:
        """An ERROR (an older broker does not know WARMING; a broker refused a field, or
        tracks too many warming workers) stops WARMING to that broker, which then learns of
        the worker at its READY; one that READY could not pass either (`final_refusal`)
        marks the broker `Link.refused`: it gets no READY. Nothing else is meant for a
        worker that is not registered yet."""
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError as e:
            logger.debug("malformed message from broker %s ignored: %s", link.endpoint, e.message)
            return
        if not (isinstance(msg, Reply) and msg.command is Command.ERROR) or link.quiet:
            return
        link.quiet = True
        code, message, field = decode_error(msg.payload)
        if final_refusal(code, field):  # READY would be refused too: no READY there
            link.refused = f"[{code}] {message}" + (f" (field {field})" if field else "")
            logger.error("broker %s refused this worker for good: %s", link.endpoint, link.refused)
        elif field == "command":
            logger.info(
                "broker %s does not take WARMING (an older broker): it lists this worker once "
                "it is READY",
                link.endpoint,
            )
        else:
            logger.warning(
                "broker %s refused WARMING: [%s] %s; it lists this worker once it is READY",
                link.endpoint,
                code,
                message,
            )

    def _on_refusal(self, link: Link, code: str, message: str, field: str | None) -> bool:
        """An ERROR before the broker took our READY: a refusal of the READY (or of a late
        WARMING: as final, a WARMING refusal means READY's too). For good (`final_refusal`):
        that broker is no longer served (`_drop`). ``overloaded``: the DISCONNECT that our next
        heartbeat gets ends the connection, and its reconnect backs off (`Link.held_off`)."""
        text = f"[{code}] {message}" + (f" (field {field})" if field else "")
        if final_refusal(code, field):
            link.refused, link.broken = text, "refused"
            logger.error("broker %s refused this worker for good: %s", link.endpoint, text)
        elif code == ErrorCode.OVERLOADED.value:
            link.held_off = True
            logger.warning("broker %s refused this worker for now: %s", link.endpoint, text)
        else:
            return False
        return True

    def sent(self, i: int, now: float) -> None:
        """The loop sent on link ``i`` itself (a job's PARTIAL reply): a heartbeat is due an
        interval from now."""
        self.links[i].last_sent = now

    def send_failed(self, i: int) -> None:
        """A send on link ``i`` could not proceed (no usable connection, or a broker that
        stopped reading): the connection is dropped as silent, then re-made after the
        backoff. While warming up, the next WARMING simply tries again."""
        if not self.warming:
            self.links[i].broken = "silent"

    # ------------------------------------------------------------------ jobs

    def job_started(self, i: int, now: float) -> None:
        """The loop runs link ``i``'s job now."""
        self.running = i
        self.started_at = now

    def job_done(self, frames: list[Any], now: float, others_read: bool) -> tuple[int, Job] | None:
        """The running job's answer (``frames``) goes to its broker. What the brokers sent
        during the job is still queued (its broker's always, the others' unless
        ``others_read``): their silence counts from now. Then the job that waited (a broker
        without DECLINE sent it during this one), as (link, job), or None: then every broker
        that was declined or flagged busy hears that this worker is idle again."""
        i = self.running
        assert i is not None, "job_done without job_started"
        self.running = None
        self.served += 1
        self._send(i, frames, now)
        for j, other in enumerate(self.links):
            if j == i or not others_read:
                other.last_recv = max(other.last_recv, now)
        for j, other in enumerate(self.links):
            if other.deferred is not None:
                job, other.deferred = other.deferred, None
                return j, job
        for j, other in enumerate(self.links):
            if other.owed_idle and other.connected:
                self._send(j, self._idle_beat(other), now)
        return None

    # ------------------------------------------------------------------ links

    def _announce(self, now: float) -> None:
        self._news = False
        self._announced_at = now
        done, total = self._progress
        progress = {"done": done, "total": total, "elapsed_s": round(now - self._warm_t0, 1)}
        frames = warming_frames({**self._announced, "progress": progress})
        for i, link in enumerate(self.links):
            if not link.quiet:
                self._send(i, frames, now)

    def _idle_beat(self, link: Link) -> list[bytes]:
        if link.declines:
            link.owed_idle = False
            return _IDLE_BEAT
        return _PLAIN_BEAT

    def _send(self, i: int, frames: list[Any], now: float) -> None:
        if self.links[i].connected:
            self.outbox.append((i, frames))
            self.links[i].last_sent = now

    def _open(self, i: int, now: float) -> None:
        link = self.links[i]
        self.outbox.append((i, Op.OPEN))
        link.connected = True
        link.answered = link.declines = link.owed_idle = False
        link.deferred = None
        link.broken = None
        link.held_off = False
        link.watching = False
        link.last_recv = now

    def _connect(self, i: int, now: float) -> None:
        """A new connection to link ``i``'s broker, registered at once (READY)."""
        self._open(i, now)
        self._send(i, ready_frames(self.info), now)

    def _drop(self, i: int, outcome: str, now: float) -> None:
        """End a connection ('silent', 'disconnected'); reconnect after the backoff; a broker
        that refused this worker for good ('refused') is no longer served."""
        link = self.links[i]
        why = self.explain(i) if self.explain is not None else None
        link.connected = link.watching = False
        self.outbox.append((i, Op.CLOSE))
        link.deferred = None  # its answer could not reach the broker on a new connection
        if outcome == "refused":  # for good: no reconnect (`_on_refusal`)
            link.reconnect_at = math.inf
            logger.warning("broker %s: no longer served (it refused this worker)", link.endpoint)
            self.check_refused()
            return
        if link.answered:
            # We were registered: this is a new outage, not the same one going on, so back
            # off from the start (without this the delay kept growing over separate outages).
            link.delay = self.settings.reconnect_min
        said = outcome if why is None else f"{outcome}: {why}"  # it refused our handshake
        logger.warning("broker %s: %s; reconnecting in %.2fs", link.endpoint, said, link.delay)
        link.reconnect_at = now + link.delay
        link.delay = (
            min(link.delay * 2, self.settings.reconnect_max)
            if outcome == "silent" or link.held_off  # (refused for now: back off too)
            else self.settings.reconnect_min
        )
