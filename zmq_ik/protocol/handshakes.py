"""Why a broker refused a client's connection: libzmq's handshake events, in words.

A CURVE broker that refuses a key (its ZAP handler) sends the client nothing it could read:
the connection just fails, libzmq does not reconnect, and the client hears only silence. A
socket monitor sees it (``EVENT_HANDSHAKE_FAILED_*``); `Handshakes` watches each client
socket for those events and `explain` turns the last one into a sentence that the client's
no-answer errors carry (`client._core.ClientCore.explain`): the key's fingerprint and what
to do. Nothing is read until an error needs it, so a working client pays nothing but the
monitor sockets.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

import zmq

from zmq_ik.security import fingerprint

_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_WATCHED = _FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_NOBLOCK = int(zmq.NOBLOCK)
_names = itertools.count()


class Handshakes:
    """Handshakes of a client's sockets (one monitor each): failures, for error messages;
    successes, so that a slow broker is not taken for none."""

    def __init__(self, curve: Any = None, role: str = "client") -> None:
        self.curve = curve
        """The peer's `security.CurveClient` (None: plaintext), named in explanations."""
        self.role = role
        """``client`` or ``worker``: which key directory of the broker the advice names."""
        self._watched: list[zmq.Socket[Any]] = []
        self._monitors: list[zmq.Socket[Any]] = []
        self._last: list[int | None] = []
        self._reached: list[bool] = []

    def watch(self, sock: zmq.Socket[Any]) -> None:
        """Monitor ``sock`` (call before it connects, so the first failure is seen)."""
        # A fresh name each time: a closed socket's monitor endpoint may linger a moment,
        # and a new socket can get the same address in memory.
        address = f"inproc://zmq-ik-handshakes-{os.getpid()}-{next(_names)}"
        sock.monitor(address, _WATCHED)
        # A plain socket (asyncio clients too), of the socket's own context: closed with it.
        monitor: zmq.Socket[Any] = sock.context.socket(zmq.PAIR, socket_class=zmq.Socket)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        self._watched.append(sock)
        self._monitors.append(monitor)
        self._last.append(None)
        self._reached.append(False)

    def _read(self, i: int) -> None:
        monitor = self._monitors[i]
        while True:
            try:
                frames = monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            event = _event(frames)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # earlier failures are history
                self._reached[i], self._last[i] = True, None
            elif self._last[i] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # the clearest: kept
                self._last[i] = event

    def reached(self, i: int) -> bool:
        """Whether socket ``i`` ever completed a handshake: a ZMTP peer listens there (a
        broker that may just be slow to answer), so silence is not 'nobody there'."""
        if i >= len(self._monitors):
            return False
        self._read(i)
        return self._reached[i]

    def explain(self, i: int) -> str | None:
        """Why the broker of socket ``i`` refused its handshake, if it did, else None."""
        if i >= len(self._monitors):
            return None
        self._read(i)
        last = self._last[i]
        if last is None:
            return None
        if self.curve is None:  # (its failure shows as PROTOCOL or NO_DETAIL, by timing)
            return "the broker uses CURVE: pass --curve-server-key and --curve-secret-key"
        if last == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            own = "" if self.curve is None else f" (fingerprint {fingerprint(self.curve.public)})"
            where = "--worker-keys" if self.role == "worker" else "--allow-keys"
            return (
                f"the broker refused this {self.role}'s CURVE key{own}: put its NAME.key in the "
                f"broker's {where} directory (and pass this {self.role}'s own --curve-secret-key)"
            )
        if last == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return "the broker does not use CURVE (or speaks another protocol): drop the CURVE keys"
        return (
            "the CURVE handshake failed: is --curve-server-key the public key of the broker "
            "at that endpoint?"
        )

    def close(self) -> None:
        """Stop watching; call it *before* closing the watched sockets. (A socket closed
        with its monitor on, while a handshake fails, can leave libzmq 4.3.5 holding its
        connection: measured, 3 file descriptors per client, never freed.)"""
        for sock in self._watched:
            if not sock.closed:
                sock.monitor(None, 0)
        for monitor in self._monitors:
            monitor.close(0)
        self._watched, self._monitors = [], []


def _event(frames: list[bytes]) -> int:
    """The event number of a socket monitor's message (first frame: uint16 event, uint32
    value). Read here rather than with ``zmq.utils.monitor``, which imports asyncio (~30 ms
    of every client's and worker's start)."""
    return int(struct.unpack_from("=H", frames[0])[0]) if frames and len(frames[0]) >= 2 else 0
