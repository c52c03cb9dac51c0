"""The sockets of a worker's links (`_link.Link` is their state, in the core): one DEALER per
broker, its handshake monitor, its watch connection, and a poller over the open ones. The
loop (`_worker.py`) does here what the core's outbox says (`_core.Op`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import zmq

from zmq_ik.protocol import new_routing_id, recv_burst, send_frames, set_worker_link_heartbeats
from zmq_ik.protocol.handshakes import Handshakes
from zmq_ik.settings.worker import WorkerSettings

logger = logging.getLogger(__name__)

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


class Connections:
    """Link i's socket is ``socks[i]`` (None between connections)."""

    def __init__(
        self, context: zmq.Context, settings: WorkerSettings, endpoints: Sequence[str]
    ) -> None:
        self.context = context
        self.settings = settings
        self.endpoints = list(endpoints)
        self.socks: list[zmq.Socket | None] = [None] * len(endpoints)
        self.poller = zmq.Poller()
        self.by_socket: dict[zmq.Socket, int] = {}
        """The open sockets -> their link index."""
        self._handshakes: list[Handshakes | None] = [None] * len(endpoints)
        self._watches: list[zmq.Socket | None] = [None] * len(endpoints)

    def send(self, i: int, frames: Sequence[Any]) -> bool:
        """Send on link ``i`` without blocking; False if that could not proceed (no usable
        connection, e.g. a refused CURVE handshake after which libzmq never reconnects, or a
        broker that stopped reading)."""
        sock = self.socks[i]
        if sock is None:
            return True
        try:
            send_frames(sock, frames, _NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def explain(self, i: int) -> str | None:
        """Why link ``i``'s broker is silent, if it refused our handshake."""
        handshakes = self._handshakes[i]
        return handshakes.explain(0) if handshakes is not None else None

    def open(self, i: int) -> None:
        """A new connection (fresh socket, new routing id) to link ``i``'s broker."""
        self.close(i)
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.limits.max_message_bytes)
        # Sends never block (NOBLOCK): one that cannot proceed ends this connection as
        # 'silent' -> new socket, backoff (the core's); the other brokers are served meanwhile.
        sock.setsockopt(zmq.RCVTIMEO, int(self.settings.heartbeat_interval * 500) + 1)
        if self.settings.curve is not None:
            self.settings.curve.apply(sock)
        handshakes = self._handshakes[i] = Handshakes(self.settings.curve, "worker")
        handshakes.watch(sock)
        sock.connect(self.endpoints[i])
        self.socks[i] = sock
        self.poller.register(sock, zmq.POLLIN)
        self.by_socket[sock] = i

    def watch(self, i: int, frames: Sequence[Any]) -> None:
        """The watch connection to link ``i``'s broker (`protocol.WATCH`): one HEARTBEAT
        naming our word (``frames``), then only libzmq's PINGs, so that the broker can tell a
        starved worker (watch up) from a killed or stopped one (watch dropped within the
        liveness window)."""
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.setsockopt(zmq.LINGER, 0)
        window = self.settings.heartbeat_interval * self.settings.liveness
        set_worker_link_heartbeats(sock, WATCH_PING, window * WATCH_TTL)
        if self.settings.curve is not None:
            self.settings.curve.apply(sock)
        sock.connect(self.endpoints[i])
        self._watches[i] = sock
        try:
            send_frames(sock, frames, _NOBLOCK)
        except zmq.ZMQError:  # (not connected yet: the broker just does not watch us)
            logger.debug("watch of broker %s not announced", self.endpoints[i])

    def discard_watch(self, i: int) -> None:
        """Drop what the broker sent link ``i``'s watch connection (nothing is for us)."""
        watch = self._watches[i]
        if watch is not None:
            discard(watch)

    def close(self, i: int, linger: int = 0) -> None:
        """Close link ``i``'s socket (if any), its handshake monitor (first:
        `Handshakes.close`) and its watch."""
        handshakes, self._handshakes[i] = self._handshakes[i], None
        if handshakes is not None:
            handshakes.close()
        watch, self._watches[i] = self._watches[i], None
        if watch is not None:
            watch.close(0)
        sock, self.socks[i] = self.socks[i], None
        if sock is not None:
            self.poller.unregister(sock)
            del self.by_socket[sock]
            sock.close(linger)

    def close_all(self, linger: int = 0) -> None:
        """Close every link's sockets, ``linger`` ms for what is still queued to leave."""
        for i in range(len(self.socks)):
            self.close(i, linger)


def discard(sock: zmq.Socket) -> None:
    """Read and drop whatever waits on ``sock``."""
    for _ in recv_burst(sock, 100):
        pass
