"""Socket-level helpers shared by clients, workers and the broker: endpoints, routing ids,
cheap multipart send/receive. Import these names from `zmq_ik.protocol`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import zmq

from zmq_ik.errors import InputError

TRANSPORTS = frozenset({"tcp", "ipc", "inproc", "pgm", "epgm", "vmci", "ws", "wss"})
"""ZeroMQ transports an endpoint may name (``tcp://host:port`` for a remote broker)."""


def check_endpoint(value: object, name: str = "endpoint") -> str:
    """A ZeroMQ endpoint with its transport (``tcp://host:port``), for clients, workers and
    brokers alike (its `InputError` names the setting ``name``): ``gpu-host:5555``, a bare
    port or host used to fail deep in libzmq with a bare 'Invalid argument'; it is refused
    here, saying what to write."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"endpoint must be a string like tcp://host:port, got {value!r:.60}", name)
    scheme, sep, rest = value.partition("://")
    if not sep:
        example = f"127.0.0.1:{value}" if value.isdigit() else value
        example += "" if ":" in example else ":5555"
        raise InputError(
            f"endpoint {value!r:.80} names no transport: use tcp://host:port "
            f"(e.g. tcp://{example:.60})",
            name,
        )
    if scheme not in TRANSPORTS or not rest:
        raise InputError(
            f"endpoint {value!r:.80} is not a ZeroMQ endpoint: use tcp://host:port", name
        )
    host, colon, port = rest.rpartition(":")
    if scheme == "tcp" and not (host and colon and port):
        raise InputError(
            f"endpoint {value!r:.80} needs a host and a port: use tcp://host:port", name
        )
    return value


def split_endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """Broker endpoints from one string with commas (``"tcp://a:5555,tcp://b:5555"``, as in
    ``ZMQ_IK_ENDPOINT``) or a sequence of them (each may hold commas too, as a repeated
    ``--connect`` does): stripped, duplicates dropped, order kept. None at all is an
    `InputError`."""
    parts = [value] if isinstance(value, str) else list(value)
    endpoints: dict[str, None] = {}
    for part in parts:
        if not isinstance(part, str):
            raise InputError(f"an endpoint must be a string, got {part!r:.60}", "endpoint")
        for e in part.split(","):
            if e.strip():
                endpoints[e.strip()] = None
    if not endpoints:
        raise InputError(
            f"no broker endpoint given in {value!r:.80}: use tcp://host:port", "endpoint"
        )
    return tuple(endpoints)


def endpoints_setting(value: str | Iterable[str], name: str) -> tuple[str, ...]:
    """`split_endpoints` for a settings field, each checked by `check_endpoint`: its
    `InputError` names the field ``name``."""
    try:
        endpoints = split_endpoints(value)
    except InputError as e:
        raise InputError(e.message, name) from e
    return tuple(check_endpoint(e, name) for e in endpoints)


def new_routing_id() -> bytes:
    """A fresh random ZeroMQ routing id for a client or worker socket.

    Our peers name themselves so that the broker's ROUTER never has to invent an id for
    them: ids libzmq invents are ``0x00`` + a 32-bit counter, and a peer that claims the
    counter's next value makes libzmq abort (docs/security.md). The first byte is never 0
    (ids starting with 0 are reserved for libzmq), and 8 random bytes make a collision
    with another peer negligible.
    """
    return bytes([1 + os.urandom(1)[0] % 255]) + os.urandom(7)


LINK_HEARTBEATS = {"client": (1000, 5500), "broker": (1000, 3000)}
"""ZMTP heartbeats (libzmq's PING/PONG, answered inside libzmq by any peer) on the sockets
of each side of a client's link to its broker: (``HEARTBEAT_IVL``, ``HEARTBEAT_TIMEOUT``)
in ms. A side that hears nothing (no message, no PONG) for the timeout after a PING drops
the connection; a client's DEALER then reconnects by itself. Why (issue 25.4): a link that
goes half-open (a lost NAT entry, Wi-Fi) sends no FIN, so without them neither side ever
learns, and every request of the client is lost on it.

Why these numbers. A client is answered again about its timeout + one interval after its
link died (5.5-6.5 s, plus a reconnect and a probe; the goal is 10 s). The broker must drop
its end *first* (within its interval + timeout, 4 s): the client reconnects with the same
routing id, and a ROUTER ignores a new connection whose id an old one still holds (no
ROUTER_HANDOVER: `status` shows worker ids, and handover would let any peer take one).
The cost: a frame that takes longer than the timeout to arrive (3 s at the broker, 5.5 s at
a client: 30 MB at 10 MB/s) ends the connection, as the PONG waits behind it. Workers need
none of this on their own connection: their HEARTBEATs and new socket per reconnect
(`worker._link`) cover it; their watch has its own (`set_worker_link_heartbeats`). TCP keepalive is not used: it cannot
see a relay or proxy that still acknowledges bytes, and its first probe comes after
minutes by default."""


def set_link_heartbeats(sock: zmq.Socket, side: str) -> None:
    """Set `LINK_HEARTBEATS` of ``side`` (``client`` or ``broker``) on ``sock``, before it
    connects or binds."""
    interval, timeout = LINK_HEARTBEATS[side]
    sock.setsockopt(zmq.HEARTBEAT_IVL, interval)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)


def set_worker_link_heartbeats(sock: zmq.Socket, interval: float, window: float) -> None:
    """ZMTP heartbeats on a worker's *watch* connection (`protocol.WATCH`; before it
    connects): a PING every ``interval`` seconds from libzmq's I/O thread carrying a TTL of
    ``window`` seconds, so the broker's libzmq drops the connection when it hears nothing on
    it for that long (the worker killed or stopped). This side drops it when the broker
    answers a PING with nothing for the broker side's timeout (`LINK_HEARTBEATS`).

    Why (issue 27.1): the worker's own HEARTBEATs come from Python and wait for the GIL and
    the interpreter, which a busy host (a compile next door, CPU-bound neighbours) can delay
    past the liveness window; PINGs come from a native thread that needs microseconds of CPU.
    The TTL goes over the wire in tenths of a second."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(interval * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(window * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, LINK_HEARTBEATS["broker"][1])


_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags, copy=False)``, several µs a message cheaper.

    pyzmq's `send_multipart` ORs the `zmq.Flag` enum into every frame's flags, and each
    enum operation costs about a microsecond; this loop uses plain ints. As with
    `send_multipart`, frames at or above pyzmq's copy threshold (received `zmq.Frame`s,
    large arrays) are sent from their own memory, never copied; smaller ones are copied.
    Raises like `send_multipart` (``zmq.Again``, ``EHOSTUNREACH``...) on the first frame.
    """
    flags = int(flags)
    more = flags | _SNDMORE
    send = sock.send
    last = len(frames) - 1
    for i in range(last):
        send(frames[i], more, copy=False)
    send(frames[last], flags, copy=False)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """``sock.recv_multipart(flags, copy=False)``, about twice as fast for small messages.

    Reads `zmq.Frame.more` instead of a ``getsockopt(RCVMORE)`` per frame. Frames are not
    copied. With ``zmq.NOBLOCK`` only the first frame can raise ``zmq.Again``: a multipart
    message is delivered whole.
    """
    recv = sock.recv
    flags = int(flags)
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame)
    return frames


_NOBLOCK = int(zmq.NOBLOCK)


def recv_burst(sock: zmq.Socket, limit: int, block: bool = False) -> Iterator[list[zmq.Frame]]:
    """The messages waiting on ``sock``, at most ``limit`` of them (`recv_frames` each), so
    that one busy socket cannot starve the others or the timers: every loop that reads
    (broker, worker, client) reads through this. ``block``: the first receive waits as the
    socket's ``RCVTIMEO`` says (one system call to sleep, none when a message is already
    queued); the rest never wait. Ends at the first ``zmq.Again``; a consumer may stop early."""
    flags = 0 if block else _NOBLOCK
    for _ in range(limit):
        try:
            frames = recv_frames(sock, flags)
        except zmq.Again:
            return
        yield frames
        flags = _NOBLOCK
