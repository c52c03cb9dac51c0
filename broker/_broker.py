"""The broker's event loop: one ROUTER socket, a poller, and `BrokerCore` doing the thinking."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import zmq

from zmq_ik.base.memory import malloc_trim
from zmq_ik.broker._core import BrokerCore, peer_label
from zmq_ik.broker._jobs import Tracked
from zmq_ik.protocol import recv_burst, send_frames, set_link_heartbeats
from zmq_ik.settings.broker import BrokerSettings

logger = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
_BURST = 1000
"""Messages read in a row before timers get their turn: after a stall, what queued up (late
replies, heartbeats, retries) is read before `BrokerCore.tick` judges workers and deadlines."""
_TRIM_BYTES = 64 * 1024 * 1024
"""Payload bytes freed after which the heap is handed back to the OS (`malloc_trim`)."""
_seeded = False
LISTENING = "broker listening on %s"
"""Logged (INFO) for each socket once bound, with the endpoint libzmq reports (a ``:*``
wildcard port resolved): how a script or the test suite learns the port a broker picked."""


def is_local_endpoint(endpoint: str) -> bool:
    """Whether a bound endpoint (as libzmq reports it) is reachable from this host only:
    loopback TCP, ipc, inproc. Anything else (``0.0.0.0``, an interface) is not."""
    transport, _, rest = endpoint.partition("://")
    if transport != "tcp":
        return transport in ("ipc", "inproc")
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name libzmq did not resolve: assume the worst
        return host == "localhost"


def _seed_libzmq_routing_ids() -> None:
    """Make the ids libzmq invents for peers that do not name themselves unpredictable.

    libzmq (4.3.5, router.cpp ``identify_peer``) gives such a peer ``0x00`` + a 32-bit
    counter and never checks that the value is free, so a peer that already claimed it with
    its own ``ROUTING_ID`` makes the next nameless connection abort the whole process
    (``Assertion failed: ok (src/socket_base.cpp:...)``). The counter starts at libc's
    ``rand()``, which libzmq never seeds: every broker started at ``0x006b8b4567``. Seeding
    ``rand()`` from the OS before the ROUTER exists puts the start out of reach, and the
    broker never shows a libzmq-assigned id (`broker._core.peer_label`), so a peer cannot
    learn the next one either. Once per process; a no-op where libc cannot be loaded.
    """
    global _seeded
    if _seeded:
        return
    try:
        ctypes.CDLL(None).srand(int.from_bytes(os.urandom(4), "little"))
    except (OSError, AttributeError) as e:  # no dlopen(NULL) / srand (e.g. Windows)
        logger.warning("cannot seed libzmq's routing ids (%s): they stay predictable", e)
    _seeded = True


def _send_tracked(sock: zmq.Socket, identity: bytes, frames: list[Any]) -> zmq.MessageTracker:
    """Send a message like `send_frames`, its last frame tracked: the tracker is done once
    libzmq let go of the message (written into the kernel, or dropped with its peer)."""
    send_frames(sock, [identity, *frames[:-1]], _NOBLOCK | zmq.SNDMORE)
    last = zmq.Frame(frames[-1], copy=False, track=True)
    tracker: zmq.MessageTracker = sock.send(last, _NOBLOCK, copy=False, track=True)
    return tracker


class Broker:
    """Runs a `BrokerCore` on a ROUTER socket until `stop()` or SIGINT/SIGTERM.

    Socket options, chosen on purpose:
    * ROUTER_MANDATORY: a reply to a vanished client raises instead of vanishing silently,
      so it is counted (``unroutable``) and dropped;
    * SNDHWM/RCVHWM 10,000 messages per peer: far above one robot's in-flight window (a
      count, not bytes: the bytes queued for a client that does not read are bounded by the
      core, `ClientBytes`, from the messages the loop tracks);
    * MAXMSGSIZE = the protocol's message limit, so an oversized frame is refused by libzmq
      before it is buffered;
    * LINGER 0: on exit, undeliverable replies are not worth waiting for;
    * ZMTP heartbeats (`protocol.set_link_heartbeats`): a half-open connection is dropped
      before its client reconnects with the same routing id.
    """

    def __init__(self, settings: BrokerSettings | None = None, context: zmq.Context | None = None):
        self.settings = settings or BrokerSettings()
        self.core = BrokerCore(self.settings)
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._stop = threading.Event()
        self._authenticator: Any = None
        self.sockets: list[zmq.Socket] = []
        self.endpoints: list[str] = []
        self._bind()

    def _make_socket(self) -> zmq.Socket:
        _seed_libzmq_routing_ids()
        sock = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, self.settings.sndhwm)
        sock.setsockopt(zmq.RCVHWM, self.settings.rcvhwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.limits.max_message_bytes)
        set_link_heartbeats(sock, "broker")
        if self.settings.curve_secret_key:
            from zmq_ik.security import configure_curve_server

            self._authenticator, allowed = configure_curve_server(
                sock,
                self.context,
                self.settings.curve_secret_key,
                self.settings.allow_keys,
                self._authenticator,
                self.settings.worker_keys,
            )
            # Roles: only worker keys register. libzmq tags each message with the key its
            # connection was authenticated with (ZAP User-Id); read only for READY/WARMING.
            refusal = allowed.registration_refusal
            self.core.registration_refusal = lambda frames: refusal(frames[0].get("User-Id"))
        return sock

    def _bind(self) -> None:
        for endpoint in filter(None, (self.settings.bind, self.settings.worker_bind)):
            sock = self._make_socket()
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as e:
                sock.close(0)
                self.close()
                raise OSError(f"cannot bind {endpoint}: {e}") from e
            self.sockets.append(sock)
            self.endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
            logger.info(LISTENING, self.endpoints[-1])
        reachable = [e for e in self.endpoints if not is_local_endpoint(e)]
        if reachable and not self.settings.curve_secret_key:
            logger.warning(
                "%s reachable from other hosts without CURVE: anyone who can connect may "
                "submit jobs, register as a worker and read requests (docs/security.md)",
                " and ".join(reachable),
            )

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (useful with port 0 / wildcard binds)."""
        return self.endpoints[0]

    def stop(self) -> None:
        """Ask the loop to shut down gracefully (thread-safe)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM → graceful stop (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s: shutting down", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def run(self) -> None:
        """Serve until stopped; then drain in-flight work for the grace period and return."""
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        poll = poller.poll
        core = self.core
        handle = core.handle
        outbox = core.outbox
        clock = time.monotonic
        # Which socket each peer talks on, so replies leave by the socket the peer knows.
        self._route: dict[bytes, zmq.Socket] = {}
        route = self._route
        grace_until: float | None = None
        only = self.sockets[0] if len(self.sockets) == 1 else None
        rcvtimeo = -1
        try:
            while True:
                now = clock()
                if self._stop.is_set() and grace_until is None:
                    core.begin_shutdown(now)
                    grace_until = now + self.settings.shutdown_grace
                    logger.info(
                        "draining %d in-flight job(s) for up to %.1fs",
                        core.in_flight(),
                        self.settings.shutdown_grace,
                    )
                if grace_until is not None and (core.in_flight() == 0 or now >= grace_until):
                    core.finish_shutdown()
                    self._flush()
                    break
                timeout_ms = min(max(0, int(core.next_timeout(now) * 1000)) + 1, 100)
                if only is not None:
                    # One socket: a blocking receive with a timeout. It sleeps in one system
                    # call and returns queued messages with none, where zmq_poll plus a
                    # non-blocking receive until EAGAIN costs about five per wake-up.
                    if timeout_ms != rcvtimeo:
                        only.setsockopt(zmq.RCVTIMEO, timeout_ms)
                        rcvtimeo = timeout_ms
                    for frames in recv_burst(only, _BURST, block=True):  # then timers
                        identity = frames[0].bytes
                        route[identity] = only
                        handle(identity, frames[1:], clock())
                        if outbox:
                            self._flush()
                    events = []
                else:
                    events = poll(timeout_ms)
                for sock, _ in events:
                    for frames in recv_burst(sock, _BURST):  # bounded, then timers get a turn
                        identity = frames[0].bytes
                        route[identity] = sock
                        handle(identity, frames[1:], clock())
                        if outbox:
                            self._flush()
                core.tick(clock())  # returns at once unless a heartbeat or deadline is due
                if outbox:
                    self._flush()
                if core.freed_bytes >= _TRIM_BYTES:  # large payloads left: give the heap back
                    core.freed_bytes = 0
                    malloc_trim()
                if len(route) > 4 * (len(core.workers) + len(core.by_client)) + 10_000:
                    live = set(core.workers) | set(core.watches) | {c for c, _ in core.by_client}
                    self._route = route = {k: v for k, v in route.items() if k in live}
        finally:
            self.close()
        logger.info("broker stopped; counters: %s", dict(core.counters))

    def _flush(self) -> None:
        outbox = self.core.outbox
        route = self._route
        default = self.sockets[0]
        while outbox:  # `undelivered` may add messages (a re-dispatched job): sent here too
            identity, frames = outbox.popleft()
            try:
                if type(frames) is Tracked:
                    frames.receipt.tracker = _send_tracked(
                        route.get(identity, default), identity, frames
                    )
                else:
                    send_frames(route.get(identity, default), [identity, *frames], _NOBLOCK)
            except zmq.ZMQError as e:  # EHOSTUNREACH (peer gone) or EAGAIN (peer not reading)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("dropped message to %s: %s", peer_label(identity), e)
                self.core.undelivered(identity, frames, time.monotonic())

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(0)
        self.sockets = []
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._own_context:
            self.context.term()
            self._own_context = False
