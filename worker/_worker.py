"""The worker's event loop: a DEALER per broker, a poller, threads, and `WorkerCore`
(`_core.py`) doing the thinking: the loop feeds it what the brokers send and the time, and
does what it returns (send frames, open or close a connection). One job at a time.

The main thread receives a job, runs the `Service` on it right there and sends the reply:
no thread hand-off on the way (each one costs a thread wake-up and a GIL switch, tens of
microseconds on a busy machine, more than an echo costs). While a job runs, a small keeper
thread takes over the sockets: it sends HEARTBEATs every interval, so they keep flowing
through a long solve (JAX releases the GIL while XLA computes; pure Python is preempted
every few milliseconds). A lock hands the sockets and the core between the two threads (a
full memory barrier, as ZeroMQ requires), so none is ever used by both at once.

Several brokers (no single point of failure, docs/protocol.md 4.10): one DEALER each, every
one registered and heartbeated on its own, each reconnecting on its own. The worker still
runs one job at a time, whichever broker sent it. A job that arrives from another broker
while one runs is, once the running job is older than `CLAIM_AFTER`, read by the keeper and
(the core decides) declined at once (DECLINE: that broker gives it to another worker, no attempt counted, and
leaves this one alone until its heartbeats say ``idle``); a broker that does not know DECLINE
(it never flagged the feature) gets its job run right after the current one instead.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import zmq

from zmq_ik.base.process import EXIT_CONFIG, exit_now, raise_fd_limit_logged
from zmq_ik.errors import ConfigError
from zmq_ik.protocol import recv_burst, send_frames
from zmq_ik.settings.worker import WorkerSettings
from zmq_ik.worker._connections import Connections, discard
from zmq_ik.worker._core import Op, WorkerCore
from zmq_ik.worker._job import Job, run_job
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

_NOBLOCK = int(zmq.NOBLOCK)
_BURST = 100
"""Messages the keeper reads from one broker in a row before the others get a turn."""


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
        self.core = WorkerCore(self.settings)
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._conns = Connections(self.context, self.settings, self.settings.endpoints)
        self.core.explain = self._conns.explain
        self._stop = threading.Event()
        self._lock = threading.Lock()
        """Held by whichever thread uses the core or a broker socket while a job runs."""
        self._job_link: int | None = None
        """The link whose job runs now (its socket is shared with the keeper), else None."""
        self._claimed = False
        """The keeper holds the other brokers' sockets (a job older than `CLAIM_AFTER`)."""
        self._released = threading.Event()
        self.stopped_by: int | None = None
        """The signal that stopped the worker (`install_signal_handlers`), if one did."""
        self.warmup_abandoned = False
        """`run` left the warm-up (stopped, or every broker refused it) while compiles the
        service had started may still run in other threads (XLA cannot be interrupted)."""
        self._warming = False
        """The main thread is in the service's warm-up: a signal abandons it at once."""

    @property
    def info(self) -> dict[str, Any]:
        """The READY header (empty until the warm-up ended)."""
        return self.core.info

    @property
    def served(self) -> int:
        return self.core.served

    @property
    def declined(self) -> int:
        return self.core.declined

    @property
    def exit_code(self) -> int:
        """What the process should exit with once `run` returned: 130 after SIGINT, else 0."""
        return 130 if self.stopped_by == signal.SIGINT else 0

    def stop(self) -> None:
        """Finish the current job (or the warm-up's current bucket), say DISCONNECT, return
        from `run` (thread-safe)."""
        self.core.stopping = True
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
            self.core.leave("worker stopping" if stopped else "warm-up failed", time.monotonic())
            self._flush()
            self._conns.close_all(100)  # (ms) time for the DISCONNECT to leave
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
            # (ms) time for a DISCONNECT to leave, so the broker re-queues at once
            self._conns.close_all(100 if self._stop.is_set() else 0)
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
        self.core.start(announced, t0)
        self._flush()  # (the connections)
        announcer = Announcer(self.core, list(self._conns.socks), self._flush)
        logger.info("warming up %s; announcing it to %s", ",".join(robots), self._endpoints())

        def progress(done: int, total: int) -> None:  # after each compiled bucket
            if self._stop.is_set():  # `stop()` from another thread: between buckets
                raise WarmupStopped("stop()")
            self._check_refused()  # no broker will take us: why compile on
            self.core.warmup_progress(done, total)

        announcer.start()
        try:
            try:
                self._warming = not self._stop.is_set()
                warm = self.service.warmup(progress) if self._warming else {}
            finally:
                self._warming = False
        finally:
            announcer.stop()
        if self._stop.is_set():
            raise WarmupStopped("stop()")
        info = {**base, **warm, "robots": robots}
        info["warmup_s"] = round(time.monotonic() - t0, 3)
        self.core.ready(info, time.monotonic())  # (leaves those that refused for good)
        logger.info(
            "warm-up took %.2fs; registering %s on %s with %s",
            info["warmup_s"],
            ",".join(robots),
            info.get("device", "cpu"),
            self._endpoints(),
        )
        self._flush()

    def _endpoints(self) -> str:
        return ", ".join(link.endpoint for link in self.core.links)

    def _check_refused(self) -> None:
        """Exit 78 (`ConfigError`) once every broker refused this worker for good."""
        try:
            self.core.check_refused()
        except ConfigError:
            self.warmup_abandoned = self._warming  # called while compiling: leave the compiles
            raise

    def _serve(self) -> None:
        core = self.core
        clock = time.monotonic
        conns = self._conns
        single = len(conns.socks) == 1
        while True:
            if self._stop.is_set():
                core.leave("worker stopping", clock())
                self._flush()
                return
            sock = conns.socks[0] if single else None
            if sock is not None:
                # One broker: a blocking receive with a timeout, not poll + non-blocking
                # receives: one system call, and a queued message costs none (zmq_poll several).
                for frames in recv_burst(sock, 1, block=True):  # (RCVTIMEO, set at connect)
                    self._on_message(0, frames)
            elif not conns.by_socket:  # every broker is between connections: sleep till the next
                self._stop.wait(core.next_wait(clock()))
            else:
                # Read: one message per ready broker per round, so none starves the others.
                for ready, _ in conns.poller.poll(int(core.next_wait(clock()) * 1000) + 1):
                    for frames in recv_burst(ready, 1):
                        self._on_message(conns.by_socket[ready], frames)
            core.tick(clock())
            self._flush()

    def _on_message(self, i: int, frames: list[Any]) -> None:
        job = self.core.handle(i, frames, time.monotonic())
        if self.core.outbox:
            self._flush()
        if job is not None:
            self._run(i, job)

    # ------------------------------------------------------------------ doing what the core says

    def _flush(self) -> None:
        """Do what the core's outbox says: send frames without blocking (a send that cannot
        proceed is the core's to judge: `WorkerCore.send_failed`), open and close
        connections."""
        outbox = self.core.outbox
        conns = self._conns
        while outbox:
            i, what = outbox.popleft()
            if not isinstance(what, Op):
                if not conns.send(i, what):
                    self.core.send_failed(i)
            elif what is Op.OPEN:
                conns.open(i)
            elif what is Op.CLOSE:
                conns.close(i)
            elif what is Op.WATCH:
                conns.watch(i, self.core.watch_frames)
            else:
                conns.discard_watch(i)

    # ------------------------------------------------------------------ jobs

    def _run(self, i: int, job: Job) -> None:
        """Run a job here, then any its run held up (another broker's that could not be
        declined); the sockets are lent to the keeper meanwhile."""
        core = self.core
        while True:
            with self._lock:
                self._job_link = i
                core.job_started(i, time.monotonic())
            try:
                frames = self._run_job(job, i)
            finally:
                with self._lock:
                    self._job_link = None
                    claimed = self._claimed
                if claimed:  # the keeper is polling the other sockets: take them back
                    self._wake_keeper.send(b"")
                    self._released.wait()
                    self._released.clear()
            nxt = core.job_done(frames, time.monotonic(), others_read=claimed)
            self._flush()
            if nxt is None:
                return
            i, job = nxt

    def _keeper_loop(self, done: threading.Event) -> None:
        """HEARTBEATs while a job runs (the main thread sends them otherwise), and, once the
        job is older than `CLAIM_AFTER`, the other brokers' sockets until it ends."""
        interval = self.settings.heartbeat_interval
        socks = self._conns.socks
        tick = interval / 4 if len(socks) == 1 else min(interval / 4, KEEPER_TICK)
        while not done.wait(tick):
            with self._lock:
                i = self._job_link
                if i is None:
                    continue
                now = time.monotonic()
                self.core.busy_tick(now, others=False)
                self._flush()
                others = [j for j, sock in enumerate(socks) if j != i and sock is not None]
                if not others or now - self.core.started_at < CLAIM_AFTER:
                    continue
                self._claimed = True
            self._tend(i, others)

    def _tend(self, job_link: int, others: list[int]) -> None:
        """Keeper: serve the other brokers' sockets until the running job ends: feed what they
        send to the core (it declines or holds their jobs), heartbeat them flagged busy."""
        interval = self.settings.heartbeat_interval
        poller = zmq.Poller()
        poller.register(self._keeper_wake, zmq.POLLIN)
        by_socket = {}
        for j in others:
            sock = self._conns.socks[j]
            assert sock is not None
            poller.register(sock, zmq.POLLIN)
            by_socket[sock] = j
        while True:
            events = poller.poll(int(interval * 250) + 1)
            with self._lock:
                now = time.monotonic()
                for sock, _ in events:
                    if sock is self._keeper_wake:
                        discard(sock)
                        continue
                    for frames in recv_burst(sock, _BURST):
                        self.core.handle(by_socket[sock], frames, now)
                still = self._job_link == job_link
                if still:
                    self.core.busy_tick(now, others=True)
                self._flush()
                if still:
                    continue
                self._claimed = False
            self._released.set()
            return

    def _run_job(self, job: Job, i: int) -> list[Any]:
        """`run_job`, with PARTIAL replies sent on link ``i`` as the service reports them."""
        sock = self._conns.socks[i]
        assert sock is not None

        def send_partial(frames: list[Any]) -> None:
            with self._lock:  # the keeper may be sending a heartbeat right now
                try:
                    send_frames(sock, frames, _NOBLOCK)
                except zmq.ZMQError:  # no usable connection: the FINAL reply's send will tell
                    logger.debug("progress of job %s not sent", job.job_id.hex())
                    return
                self.core.sent(i, time.monotonic())

        return run_job(self.service, job, self.settings.limits, send_partial)


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
