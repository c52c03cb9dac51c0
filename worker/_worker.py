"""The worker's event loop: a DEALER per broker, heartbeats, reconnects, one job at a time.

The main thread receives a job, runs the `Service` on it right there and sends the reply:
no thread hand-off on the way (each one costs a thread wake-up and a GIL switch, tens of
microseconds on a busy machine, more than an echo costs). While a job runs, a small keeper
thread takes over the sockets: it sends HEARTBEATs every interval, so they keep flowing
through a long solve (JAX releases the GIL while XLA computes; pure Python is preempted
every few milliseconds). A lock hands the sockets between the two threads (a full memory
barrier, as ZeroMQ requires), so none is ever used by both at once.

Several brokers (no single point of failure, docs/protocol.md 4.10): one DEALER each, every
one registered and heartbeated on its own, each reconnecting on its own. The worker still
runs one job at a time, whichever broker sent it. A job that arrives from another broker
while one runs is, once the running job is older than `CLAIM_AFTER`, read by the keeper and
declined at once (DECLINE: that broker gives it to another worker, no attempt counted, and
leaves this one alone until its heartbeats say ``idle``); a broker that does not know DECLINE
(it never flagged the feature) gets its job run right after the current one instead.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import zmq

from zmq_ik.base.process import EXIT_CONFIG, exit_now, raise_fd_limit_logged
from zmq_ik.errors import ConfigError, ErrorCode, ProtocolError
from zmq_ik.protocol import (
    FEATURE_DECLINE,
    FLAG_BUSY,
    FLAG_IDLE,
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
    new_routing_id,
    parse_message,
    ready_frames,
    recv_frames,
    send_frames,
    set_worker_link_heartbeats,
)
from zmq_ik.protocol.handshakes import Handshakes
from zmq_ik.worker._job import Job, run_job
from zmq_ik.worker._link import Link, WorkerSettings, final_refusal
from zmq_ik.worker._service import Service, base_info
from zmq_ik.worker._warming import Announcer

logger = logging.getLogger(__name__)

CLAIM_AFTER = 0.005
"""Seconds a job runs before the keeper reads the other brokers' sockets (to decline what
they send meanwhile). Shorter jobs never hand those sockets over: a job another broker sends
during one simply runs next, at most this much later."""
KEEPER_TICK = 0.025
"""How often the keeper of a worker with several brokers looks whether a job runs (single
broker: a quarter heartbeat). A job that another broker sends while a long one starts is
declined within about this long; waking more often cost the jobs themselves (each wake-up
contends for the GIL: 200 a second measured ~5 % of echo throughput)."""

WATCH_PING = 0.05
"""Seconds between the ZMTP PINGs of a watch connection (`protocol.WATCH`). libzmq arms the
broker's TTL timer at each PING and disarms it at any other message, such as the PONG to the
broker's own PING (every second): a worker stopped between that PONG and its next PING is
found by the broker's own ZMTP timeout instead (up to 4 s). Frequent PINGs make that rare
(a 50 ms window a second: about 1 stop in 40) and cost a few hundred bytes a second."""
WATCH_TTL = 0.6
"""A watch's TTL as a share of the liveness window (0.6 s of 1 s): the broker looks at a
watch only once the worker was silent for the whole window, so a watch dropped by then makes
a stopped worker's verdict as quick as before (measured 1.72 s on a loaded host with the
whole window as TTL); the native I/O thread that PINGs may stall for 0.55 s meanwhile."""

_NOBLOCK = int(zmq.NOBLOCK)
_ABSENT = object()


class WarmupStopped(BaseException):
    """SIGTERM/SIGINT (or `Worker.stop`) during the warm-up: it is abandoned at once (a
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it)."""


class Worker:
    """Serve a `Service` to one or more brokers until `stop()` or SIGTERM/SIGINT."""

    def __init__(
        self,
        service: Service,
        settings: WorkerSettings | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or WorkerSettings()
        self._links = [Link(e, self.settings.reconnect_min) for e in self.settings.endpoints]
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        """Held by whichever thread uses a broker socket while a job runs."""
        self._job_link: Link | None = None
        """The broker whose job runs now (its socket is shared with the keeper), else None."""
        self._job_started = 0.0
        self._claimed = False
        """The keeper holds the other brokers' sockets (a job older than `CLAIM_AFTER`)."""
        self._released = threading.Event()
        self._postponed: list[tuple[Link, list[Any]]] = []
        """Messages the keeper read during a job that only the main thread may act on."""
        self.info: dict[str, Any] = {}
        self.served = 0
        self.declined = 0
        self.stopped_by: int | None = None
        """The signal that stopped the worker (`install_signal_handlers`), if one did."""
        self.warmup_abandoned = False
        """`run` left the warm-up (stopped, or every broker refused it) while compiles the
        service had started may still run in other threads (XLA cannot be interrupted)."""
        self._warming = False
        """The main thread is in the service's warm-up: a signal abandons it at once."""
        self._watch_word = WATCH + os.urandom(8).hex()
        """Named in READY and by each watch connection (`protocol.WATCH`)."""

    @property
    def exit_code(self) -> int:
        """What the process should exit with once `run` returned: 130 after SIGINT, else 0."""
        return 130 if self.stopped_by == signal.SIGINT else 0

    def stop(self) -> None:
        """Finish the current job (or the warm-up's current bucket), say DISCONNECT, return
        from `run` (thread-safe)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            self.stopped_by = self.stopped_by or signum
            self.stop()
            if self._warming:  # compiling may take minutes: leave it now, not at READY
                self._warming = False
                logger.info("received %s during the warm-up: abandoning it, leaving", name)
                raise WarmupStopped(name)
            logger.info("received %s: finishing current job, then leaving", name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Connect to every broker and announce the robots (WARMING), warm up, register
        (READY) and serve; reconnect to whichever broker goes silent."""
        try:
            self._warm_up()
        except BaseException as e:  # a robot that does not load, or a stop: the brokers
            stopped = isinstance(e, WarmupStopped)  # forget us at once
            for link in self._links:
                if link.sock is not None:
                    why = "worker stopping" if stopped else "warm-up failed"
                    self._send(link, disconnect_frames(why))
                link.close(100)  # (ms) time for the DISCONNECT to leave
            if self._own_context:
                self.context.term()
            if not stopped:
                raise
            self.warmup_abandoned = True
            logger.info("worker stopped during its warm-up")
            return
        # The main thread wakes the keeper from its poll with this pair when a job ends.
        address = f"inproc://zmq-ik-keeper-{id(self):x}"
        self._wake_keeper = self.context.socket(zmq.PAIR)
        self._wake_keeper.setsockopt(zmq.LINGER, 0)
        self._wake_keeper.bind(address)
        self._keeper_wake = self.context.socket(zmq.PAIR)
        self._keeper_wake.setsockopt(zmq.LINGER, 0)
        self._keeper_wake.connect(address)
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keeper_loop, args=(done,), name="zmq-ik-heartbeat", daemon=True
        )
        keeper.start()
        try:
            self._serve()
        finally:
            done.set()
            keeper.join(timeout=5)
            for link in self._links:
                # (ms) time for a DISCONNECT to leave, so the broker re-queues at once
                link.close(100 if self._stop.is_set() else 0)
            self._wake_keeper.close(0)
            self._keeper_wake.close(0)
            if self._own_context:
                self.context.term()
        logger.info("worker stopped after %d job(s), %d declined", self.served, self.declined)

    def _warm_up(self) -> None:
        """The service's warm-up, announced to every broker while it runs (WARMING, with the
        buckets compiled so far); then READY to each."""
        t0 = time.monotonic()
        base = base_info()
        robots = list(self.service.robots)
        announced = {"robots": robots, "host": base["host"], "pid": base["pid"]}
        for link in self._links:
            self._open(link, t0)
        announcer = Announcer(self._links, announced, self.settings.limits)
        logger.info("warming up %s; announcing it to %s", ",".join(robots), self._endpoints())
        service: Any = self.service  # `warmup_progress` is optional (_service.WarmupHook)
        own: Any = getattr(service, "warmup_progress", _ABSENT)
        if own is not _ABSENT:  # the service reports its buckets: pass them on too

            def both(done: int, total: int) -> None:
                if self._stop.is_set():  # `stop()` from another thread: between buckets
                    raise WarmupStopped("stop()")
                self._check_refused()  # no broker will take us: why compile on
                announcer.progress(done, total)
                if own is not None:
                    own(done, total)

            service.warmup_progress = both
        announcer.start()
        try:
            try:
                self._warming = not self._stop.is_set()
                warm = service.warmup() if self._warming else {}
            finally:
                self._warming = False
        finally:
            announcer.stop()
            if own is not _ABSENT:
                service.warmup_progress = own
        if self._stop.is_set():
            raise WarmupStopped("stop()")
        self.info = {**base, **warm, "robots": robots}
        self.info["warmup_s"] = round(time.monotonic() - t0, 3)
        self.info["heartbeat_ms"] = int(self.settings.heartbeat_interval * 1000)
        self.info["features"] = [FEATURE_DECLINE, self._watch_word]
        now = time.monotonic()
        for link in self._links:
            if link.refused is not None:  # it refused our WARMING for good (`Announcer`)
                self._drop(link, "refused", now)
        logger.info(
            "warm-up took %.2fs; registering %s on %s with %s",
            self.info["warmup_s"],
            ",".join(robots),
            self.info.get("device", "cpu"),
            self._endpoints(),
        )
        for link in self._links:
            if link.refused is None:
                link.last_recv = now  # what a broker sent meanwhile was read: silence anew
                self._send(link, ready_frames(self.info))

    def _endpoints(self) -> str:
        return ", ".join(link.endpoint for link in self._links)

    def _check_refused(self) -> None:
        """Exit 78 (`ConfigError`) once every broker refused this worker for good."""
        if all(link.refused is not None for link in self._links):
            why = "; ".join(f"{link.endpoint}: {link.refused}" for link in self._links)
            self.warmup_abandoned = self._warming  # called while compiling: leave the compiles
            raise ConfigError(f"every broker refused this worker, retrying cannot help: {why}")

    def _serve(self) -> None:
        interval = self.settings.heartbeat_interval
        expiry = interval * self.settings.liveness
        poller = zmq.Poller()
        links = self._links
        single = links[0] if len(links) == 1 else None
        by_socket: dict[zmq.Socket, Link] = {}
        for link in links:  # connected (and announced) before the warm-up
            if link.sock is not None:
                poller.register(link.sock, zmq.POLLIN)
                by_socket[link.sock] = link
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                for link in links:
                    if link.sock is not None:
                        self._send(link, disconnect_frames("worker stopping"))
                return
            for link in links:
                if link.sock is None and now >= link.reconnect_at:
                    self._connect(link, now)
                    assert link.sock is not None
                    poller.register(link.sock, zmq.POLLIN)
                    by_socket[link.sock] = link
            # Read: one message per ready broker per round, so none starves the others.
            if single is not None and single.sock is not None:
                # One broker: a blocking receive with a timeout, not poll + non-blocking
                # receives: one system call, and a queued message costs none (zmq_poll several).
                try:
                    frames = recv_frames(single.sock)
                except zmq.Again:  # nothing within the timeout (RCVTIMEO, set at connect)
                    pass
                else:
                    self._on_broker_message(single, frames)
            else:
                wait = interval / 2
                for link in links:
                    if link.sock is None:
                        wait = min(wait, max(0.001, link.reconnect_at - now))
                if not by_socket:  # every broker is between connections: sleep till the next
                    self._stop.wait(wait)
                    continue
                for sock, _ in poller.poll(int(wait * 1000) + 1):
                    link = by_socket[sock]
                    if link.broken is not None:
                        continue  # a message handled before in this round ended it
                    try:
                        frames = recv_frames(sock, _NOBLOCK)
                    except zmq.Again:
                        continue
                    self._on_broker_message(link, frames)
            now = time.monotonic()
            for link in links:
                if link.sock is None:
                    continue
                if link.broken is None and now - link.last_recv > expiry:
                    link.broken = "silent"
                if link.broken is not None:
                    poller.unregister(link.sock)
                    del by_socket[link.sock]
                    self._drop(link, link.broken, now)
                    continue
                if now - link.last_sent >= interval:
                    self._send(link, self._idle_beat(link))
                    if link.watch is not None:  # what the broker sent it while we were silent
                        _discard(link.watch)
                if link.watch is None and link.answered:
                    self._open_watch(link)

    def _idle_beat(self, link: Link) -> list[bytes]:
        if link.declines:
            link.owed_idle = False
            return _IDLE_BEAT
        return _PLAIN_BEAT

    def _connect(self, link: Link, now: float) -> None:
        """A new connection to ``link``'s broker, registered at once (READY)."""
        self._open(link, now)
        self._send(link, ready_frames(self.info))

    def _open(self, link: Link, now: float) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.limits.max_message_bytes)
        # Sends never block (NOBLOCK): one that cannot proceed (no usable connection, e.g. a
        # refused CURVE handshake after which libzmq never reconnects, or a broker that
        # stopped reading) ends this connection as 'silent' -> new socket, backoff; the
        # other brokers are served meanwhile.
        sock.setsockopt(zmq.RCVTIMEO, int(self.settings.heartbeat_interval * 500) + 1)
        if self.settings.curve is not None:
            self.settings.curve.apply(sock)
        link.close()  # (none open: `_drop` closed it; its handshake monitor goes too)
        link.handshakes = Handshakes(self.settings.curve, "worker")
        link.handshakes.watch(sock)
        sock.connect(link.endpoint)
        link.sock = sock
        link.answered = link.declines = link.owed_idle = False
        link.deferred = None
        link.broken = None
        link.held_off = False
        link.last_recv = now

    def _open_watch(self, link: Link) -> None:
        """The watch connection to ``link``'s broker (`protocol.WATCH`): one HEARTBEAT naming
        our word, then only libzmq's PINGs, so that the broker can tell a starved worker
        (watch up) from a killed or stopped one (watch dropped within the liveness window)."""
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        window = self.settings.heartbeat_interval * self.settings.liveness
        set_worker_link_heartbeats(sock, WATCH_PING, window * WATCH_TTL)
        if self.settings.curve is not None:
            self.settings.curve.apply(sock)
        sock.connect(link.endpoint)
        link.watch = sock
        try:
            send_frames(sock, heartbeat_frames(self._watch_word), _NOBLOCK)
        except zmq.ZMQError:  # (not connected yet: the broker just does not watch us)
            logger.debug("watch of broker %s not announced", link.endpoint)

    def _drop(self, link: Link, outcome: str, now: float) -> None:
        """End a connection ('silent', 'disconnected'); reconnect after the backoff."""
        assert link.sock is not None
        why = link.handshakes.explain(0) if link.handshakes is not None else None
        link.close()
        link.deferred = None  # its answer could not reach the broker on a new connection
        if outcome == "refused":  # for good: no reconnect (`_on_refusal`)
            link.reconnect_at = math.inf
            logger.warning("broker %s: no longer served (it refused this worker)", link.endpoint)
            self._check_refused()
            return
        if link.answered:
            # We were registered: this is a new outage, not the same one going on, so back
            # off from the start (without this the delay kept growing over separate outages).
            link.delay = self.settings.reconnect_min
        if why is not None:  # silent because it refused our handshake: say so
            outcome = f"{outcome}: {why}"
        logger.warning("broker %s: %s; reconnecting in %.2fs", link.endpoint, outcome, link.delay)
        link.reconnect_at = now + link.delay
        link.delay = (
            min(link.delay * 2, self.settings.reconnect_max)
            if outcome == "silent" or link.held_off  # (refused for now: back off too)
            else self.settings.reconnect_min
        )

    def _send(self, link: Link, frames: Sequence[Any]) -> None:
        """Send without blocking; a send that cannot proceed marks the connection broken."""
        if link.sock is None:
            return
        try:
            send_frames(link.sock, frames, _NOBLOCK)
        except zmq.ZMQError:
            link.broken = "silent"
            return
        link.last_sent = time.monotonic()

    def _on_broker_message(self, link: Link, frames: list[Any]) -> None:
        link.last_recv = time.monotonic()
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError as e:
            logger.warning("malformed message from broker %s ignored: %s", link.endpoint, e.message)
            return
        first = not link.answered
        if isinstance(msg, Heartbeat | Request) and first:
            link.answered = True  # the broker knows us: only registered workers get these
            logger.info("registered with broker %s: serving it", link.endpoint)
        if isinstance(msg, Heartbeat):
            if FEATURE_DECLINE in msg.flags:
                link.declines = True
            if first:  # the READY's acknowledgement: confirm at once (a broker forgets, or
                self._send(link, self._idle_beat(link))  # lets others evict, a silent READY)
        elif isinstance(msg, Request):
            if self._stop.is_set():
                self._send(
                    link,
                    error_frames(msg.request_id, ErrorCode.SHUTTING_DOWN, "worker is stopping"),
                )
            else:
                self._run(Job.from_request(msg), link)
        elif isinstance(msg, Disconnect):
            link.broken = "disconnected"
        elif isinstance(msg, Reply) and msg.command is Command.ERROR:
            # The broker refused something we sent (e.g. READY): say so, or the worker would
            # just reconnect and re-register forever without a word.
            code, message, field = decode_error(msg.payload)  # never raises: bad ones say so
            if not link.answered and self._on_refusal(link, code, message, field):
                return
            logger.error(
                "broker %s refused a message from this worker: [%s] %s",
                link.endpoint,
                code,
                message,
            )
        # READY and other replies are not for workers: liveness is all they are.

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

    # ------------------------------------------------------------------ jobs

    def _run(self, job: Job, link: Link) -> None:
        """Run a job here, then any its run held up (another broker's that could not be
        declined); the sockets are lent to the keeper meanwhile. Then tell every broker we
        declined or flagged busy that we are free again."""
        while True:
            with self._lock:
                self._job_link = link
                self._job_started = time.monotonic()
            try:
                assert link.sock is not None
                frames = self._run_job(job, link.sock)
            finally:
                with self._lock:
                    self._job_link = None
                    claimed = self._claimed
                if claimed:  # the keeper is polling the other sockets: take them back
                    self._wake_keeper.send(b"")
                    self._released.wait()
                    self._released.clear()
                self.served += 1
            self._send(link, frames)
            # What the brokers sent during the job (heartbeats) is still queued, unless the
            # keeper read it: silence counts from now, not from before the job.
            now = time.monotonic()
            for other in self._links:
                if other is link or not claimed:
                    other.last_recv = max(other.last_recv, now)
            postponed, self._postponed = self._postponed, []
            for other, msg in postponed:
                if other.sock is not None and other.broken is None:
                    self._on_broker_message(other, msg)
            nxt = next((x for x in self._links if x.deferred is not None), None)
            if nxt is None:
                break
            deferred, nxt.deferred = nxt.deferred, None
            assert deferred is not None
            link, job = nxt, deferred
        for other in self._links:
            if other.owed_idle and other.sock is not None:
                self._send(other, self._idle_beat(other))

    def _keeper_loop(self, done: threading.Event) -> None:
        """HEARTBEATs while a job runs (the main thread sends them otherwise), and, once the
        job is older than `CLAIM_AFTER`, the other brokers' sockets until it ends."""
        interval = self.settings.heartbeat_interval
        tick = interval / 4 if len(self._links) == 1 else min(interval / 4, KEEPER_TICK)
        while not done.wait(tick):
            with self._lock:
                link = self._job_link
                if link is None:
                    continue
                now = time.monotonic()
                self._beat_busy(link, now)
                others = [x for x in self._links if x is not link and x.sock is not None]
                if not others or now - self._job_started < CLAIM_AFTER:
                    continue
                self._claimed = True
            self._tend(link, others)

    def _beat_busy(self, link: Link, now: float) -> None:
        if link.sock is not None and now - link.last_sent >= self.settings.heartbeat_interval:
            self._send(link, _BUSY_BEAT if link.declines else _PLAIN_BEAT)

    def _tend(self, job_link: Link, others: list[Link]) -> None:
        """Keeper: serve the other brokers' sockets until the running job ends: decline or
        hold the jobs they send, heartbeat them flagged busy, note their liveness."""
        interval = self.settings.heartbeat_interval
        poller = zmq.Poller()
        poller.register(self._keeper_wake, zmq.POLLIN)
        by_socket = {}
        for x in others:
            assert x.sock is not None
            poller.register(x.sock, zmq.POLLIN)
            by_socket[x.sock] = x
        while True:
            events = poller.poll(int(interval * 250) + 1)
            now = time.monotonic()
            for sock, _ in events:
                if sock is self._keeper_wake:
                    while True:
                        try:
                            self._keeper_wake.recv(_NOBLOCK)
                        except zmq.Again:
                            break
                    continue
                x = by_socket[sock]
                for _ in range(100):
                    if x.broken is not None:
                        break
                    try:
                        frames = recv_frames(sock, _NOBLOCK)
                    except zmq.Again:
                        break
                    self._while_busy(x, frames, now)
            for x in others:
                if x.broken is None and now - x.last_sent >= interval:
                    self._send(x, _BUSY_BEAT if x.declines else _PLAIN_BEAT)
                    x.owed_idle = x.owed_idle or x.declines
            with self._lock:
                if self._job_link is job_link:
                    self._beat_busy(job_link, now)
                    continue
                self._claimed = False
            self._released.set()
            return

    def _while_busy(self, link: Link, frames: list[Any], now: float) -> None:
        """Keeper: a message from another broker while a job runs."""
        link.last_recv = now
        try:
            msg = parse_message(frames, self.settings.limits)
        except ProtocolError:
            self._postponed.append((link, frames))  # the main thread logs it
            return
        if isinstance(msg, Heartbeat):
            link.answered = True
            link.declines = link.declines or FEATURE_DECLINE in msg.flags
        elif isinstance(msg, Request):
            link.answered = True
            if link.declines:
                self._send(link, decline_frames(msg.request_id))
                link.owed_idle = True
                self.declined += 1
            elif link.deferred is None:
                link.deferred = Job.from_request(msg)  # a broker without DECLINE: its job runs next
            else:  # it sent a second job to a worker it believes busy with its first
                self._send(
                    link,
                    error_frames(
                        msg.request_id, ErrorCode.INTERNAL, "worker busy with another job"
                    ),
                )
        else:
            self._postponed.append((link, frames))

    def _run_job(self, job: Job, sock: zmq.Socket) -> list[Any]:
        """`run_job`, with PARTIAL replies sent on ``sock`` as the service reports them."""

        def send_partial(frames: list[Any]) -> None:
            with self._lock:  # the keeper may be sending a heartbeat right now
                try:
                    send_frames(sock, frames, _NOBLOCK)
                except zmq.ZMQError:  # no usable connection: the FINAL reply's send will tell
                    logger.debug("progress of job %s not sent", job.job_id.hex())
                    return
                if self._job_link is not None:
                    self._job_link.last_sent = time.monotonic()

        return run_job(self.service, job, self.settings.limits, send_partial)


def _discard(sock: zmq.Socket) -> None:
    """Read and drop whatever waits on ``sock``."""
    for _ in range(100):
        try:
            sock.recv(_NOBLOCK)
        except zmq.Again:
            return


_PLAIN_BEAT = heartbeat_frames()
_IDLE_BEAT = heartbeat_frames(FLAG_IDLE)
_BUSY_BEAT = heartbeat_frames(FLAG_BUSY)


def run_as_process(w: Worker) -> int:
    """Run ``w`` as this process's whole work (`zmq-ik worker`): raise the fd limit, take
    SIGTERM/SIGINT, serve; the exit code (130 after SIGINT). Left during its warm-up (a
    signal, or `ConfigError`: every broker refused it, 78), the process ends at once
    (`exit_now`): the bucket compiles the warm-up started cannot be interrupted and would
    hold a normal exit for as long as they take; so does a process whose buckets still
    compile after READY."""
    raise_fd_limit_logged()
    w.install_signal_handlers()
    try:
        w.run()
    except ConfigError as e:
        if not w.warmup_abandoned:
            raise
        logger.error("%s", e)
        exit_now(EXIT_CONFIG)
    if w.warmup_abandoned or _compiling_after_ready():
        exit_now(w.exit_code)
    return w.exit_code


def _compiling_after_ready() -> bool:
    """A thread of the service's warm-up still compiles (`IKService.finish_warmup`, its
    ``zmq-ik-warmup*`` threads): a normal exit would wait for it, or abort when it ends."""
    return any(t.name.startswith("zmq-ik-warmup") and t.is_alive() for t in threading.enumerate())
