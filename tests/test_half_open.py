"""Half-open links (#25.4): a client whose TCP connection to its broker silently stops
forwarding (a lost NAT entry, Wi-Fi) notices, reconnects and is answered again within 10 s.

A `Forwarder` in the test relays the client's connections to a real broker (with a real echo
worker); `cut` turns the connections open at that moment into black holes that never close,
while a new connection is relayed as before: only a client that drops the dead one and
reconnects is answered again (`protocol.set_link_heartbeats`).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import KINDS, Processes, run_with, wait_for_workers

RECOVERY_LIMIT = 10.0
"""Seconds after the cut within which the client must be answered again (#25.4)."""
CALL_TIMEOUT = 30.0
"""Each attempt's timeout: longer than the limit, so that an attempt's retry cannot be what
rescues the call, only the new connection."""


class Forwarder(threading.Thread):
    """A TCP relay to ``target`` that can be cut. Each connection accepted gets its own
    connection to the target, and bytes are copied both ways. `cut` makes the connections
    open now half-open: from then on, bytes from either end are read and dropped, and an
    end that closes is not told to the other (as after a lost NAT entry). Connections
    accepted later are relayed normally."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self._peer: dict[socket.socket, socket.socket] = {}
        self._dead: set[socket.socket] = set()
        self._cutting = threading.Event()
        self._stopping = threading.Event()

    def cut(self) -> None:
        self._cutting.set()
        deadline = time.monotonic() + 5.0
        while self._cutting.is_set():  # taken by the relay loop: every byte after this is dropped
            assert self.is_alive() and time.monotonic() < deadline, "the relay loop is stuck"
            time.sleep(0.001)

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                if self._cutting.is_set():
                    self._dead.update(self._peer)
                    self._cutting.clear()
                for key, _ in sel.select(0.01):
                    s: Any = key.fileobj
                    if s is self.listener:
                        client, _ = s.accept()
                        upstream = socket.create_connection(self.target)
                        self._peer[client], self._peer[upstream] = upstream, client
                        sel.register(client, selectors.EVENT_READ)
                        sel.register(upstream, selectors.EVENT_READ)
                        self.accepted += 1
                        continue
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if s in self._dead:  # a black hole: read, drop, tell nobody
                        if not data:
                            sel.unregister(s)
                            s.close()
                            self._dead.discard(s)
                        continue
                    if data:
                        self._peer[s].sendall(data)
                        continue
                    peer = self._peer.pop(s)
                    self._peer.pop(peer, None)
                    for end in (s, peer):
                        sel.unregister(end)
                        end.close()
        finally:
            for s in [self.listener, *self._peer, *self._dead]:
                s.close()
            sel.close()


@contextmanager
def forwarder(target: str) -> Iterator[Forwarder]:
    fw = Forwarder(target)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


@pytest.fixture
def relayed(procs: Processes) -> Iterator[Forwarder]:
    """A broker with an echo worker, reached through a `Forwarder`."""
    broker = procs.broker()
    procs.echo_worker(broker.endpoint)
    wait_for_workers(broker.endpoint, 1)
    with forwarder(broker.endpoint) as fw:
        yield fw


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_behind_a_link_gone_half_open_reconnects_and_is_answered(kind, relayed):
    fw = relayed

    def check(t0: float, payload: Any, i: int) -> float:
        assert payload.header["i"] == i
        return time.monotonic() - t0

    def sync(client: Any) -> list[float]:
        client.request("echo", "echo", {"i": 0})
        fw.cut()
        t0 = time.monotonic()
        # The first call goes into the dead connection: answered once the client has
        # replaced it (its attempt's timeout is far away), then the next ones at once.
        return [check(t0, client.request("echo", "echo", {"i": i}), i) for i in range(1, 4)]

    async def async_(client: Any) -> list[float]:
        await client.request("echo", "echo", {"i": 0})
        fw.cut()
        t0 = time.monotonic()
        return [check(t0, await client.request("echo", "echo", {"i": i}), i) for i in range(1, 4)]

    body = sync if kind == "sync" else async_
    times = run_with(kind, fw.endpoint, body, timeout=CALL_TIMEOUT, retries=1)
    print(f"\n{kind}: answered again {times[0]:.2f} s after the link went half-open")
    assert times[0] < RECOVERY_LIMIT
    assert times[-1] - times[0] < 1.0  # the next calls: the new connection, at once
    assert fw.accepted == 2  # through a new connection: the old one stays dead


def test_a_failover_client_uses_the_other_broker_then_its_home_again(procs):
    home, other = procs.broker(), procs.broker()
    procs.echo_worker(home.endpoint)
    procs.echo_worker(other.endpoint)
    wait_for_workers(home.endpoint, 1)
    wait_for_workers(other.endpoint, 1)
    other_pid = run_with("sync", other.endpoint, lambda c: c.request("echo", "echo").header["pid"])
    with forwarder(home.endpoint) as fw:

        def body(client: Any) -> tuple[float, float]:
            home_pid = client.request("echo", "echo").header["pid"]
            assert home_pid != other_pid
            fw.cut()
            t0 = time.monotonic()
            assert client.request("echo", "echo").header["pid"] == other_pid
            answered = time.monotonic() - t0
            while time.monotonic() - t0 < 3 * RECOVERY_LIMIT:
                if client.request("echo", "echo").header["pid"] == home_pid:
                    return answered, time.monotonic() - t0
                time.sleep(0.05)
            raise AssertionError("the home broker was never used again")

        answered, home_again = run_with(
            "sync", [fw.endpoint, other.endpoint], body, timeout=CALL_TIMEOUT, retries=1
        )
    print(f"\nanswered {answered:.2f} s after the cut, by the home broker {home_again:.2f} s")
    assert answered < RECOVERY_LIMIT
    assert home_again < 2 * RECOVERY_LIMIT and fw.accepted == 2
