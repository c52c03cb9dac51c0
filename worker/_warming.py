"""What a worker tells its brokers while it warms up: WARMING (docs/protocol.md 4.11).

Loading robots and compiling can take minutes. Meanwhile the brokers know the worker is
coming (`ping`/`status` list it with its progress, and a request for its robots waits for
it instead of being refused as `unknown_robot`), but never give it a job: it sends READY
only when warm. The main thread compiles; `Announcer`, a thread, has the brokers' sockets
meanwhile: it feeds what they send and the time to the core (`_core.WorkerCore`: what to
announce when, what a refusal means) and sends what the core says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import zmq

from zmq_ik.protocol import recv_burst
from zmq_ik.worker._core import WorkerCore

logger = logging.getLogger(__name__)

POLL_S = 0.05
"""How often the announcer looks for news (a compiled bucket is announced within this)."""
_BURST = 100
"""Messages read from one broker in a row before the others (and the timers) get a turn."""


class Announcer:
    """Runs the core's warm-up timers (WARMING at once, as each bucket is compiled, and at
    least every `protocol.WARMING_INTERVAL`) and hands it what the brokers send, on its own
    thread: it owns the brokers' sockets (``socks``, by link) from `start` until `stop`
    returns. ``flush`` sends the core's outbox."""

    def __init__(
        self, core: WorkerCore, socks: Sequence[zmq.Socket | None], flush: Callable[[], None]
    ) -> None:
        self.core = core
        self.socks = socks
        self.flush = flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zmq-ik-warming", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop announcing; the sockets are the caller's again when this returns, and not
        before (ZeroMQ sockets are not thread-safe): a signal's exception (`WarmupStopped`)
        raised during the join is re-raised once the thread has ended."""
        self._stop.set()
        interrupted: BaseException | None = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except BaseException as e:
                interrupted = e
        if interrupted is not None:
            raise interrupted

    def _run(self) -> None:
        poller = zmq.Poller()
        index = {}
        for i, sock in enumerate(self.socks):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
                index[sock] = i
        core = self.core
        while not self._stop.is_set():
            try:
                core.tick(time.monotonic())
                self.flush()
                for sock, _ in poller.poll(int(POLL_S * 1000)):
                    for frames in recv_burst(sock, _BURST):
                        core.handle(index[sock], frames, time.monotonic())
            except Exception:  # a dead announcer would let the broker forget us mid-warm-up
                logger.warning("announcing the warm-up failed; trying again", exc_info=True)
                self._stop.wait(POLL_S)
