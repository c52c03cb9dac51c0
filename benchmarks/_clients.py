"""Load-test clients shared by the benchmarks and the fault tests: `CountingClient`, which
counts every answer per request id (duplicates included), and `ClientThreads`, the start/stop
scaffolding of N client threads, and `EchoLoad`, such threads sending echo requests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import zmq

from zmq_ik.client import IKClient
from zmq_ik.client._failover import is_probe
from zmq_ik.errors import IKError, ProtocolError
from zmq_ik.protocol import Command, Reply, parse_message

T = TypeVar("T", bound="ClientThreads")


class CountingClient(IKClient):
    """An IKClient that counts every FINAL/ERROR reaching its socket, per request id, so a
    duplicate answer shows even though IKClient itself would drop it (its own liveness
    probes, client/_failover.py, are not counted: each has its own id)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: Counter[bytes] = Counter()

    def _count(self, frames: list[Any]) -> None:
        try:
            msg = parse_message(frames)
        except ProtocolError:
            return
        if (
            isinstance(msg, Reply)
            and msg.command is not Command.PARTIAL
            and not is_probe(msg.request_id)
        ):
            self.answers[msg.request_id] += 1

    def _on_frames(self, frames: list[Any], now: float, connection: int = 0) -> None:
        self._count(frames)
        super()._on_frames(frames, now, connection)

    def duplicates(self) -> dict[bytes, int]:
        """The request ids answered more than once, and how often."""
        return {rid: n for rid, n in self.answers.items() if n > 1}

    def drain(self, seconds: float = 0.3) -> None:
        """Read whatever else arrives for ``seconds`` (a duplicate would be here)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                self._count(self.socket.recv_multipart())


class ClientThreads:
    """``clients`` threads, each running ``self._run(c)`` until ``self._stop`` is set: entering
    starts them, leaving stops them, joins each (``join`` seconds) and fails if one hung."""

    def __init__(self, clients: int, join: float = 60.0) -> None:
        self._join = join
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,)) for c in range(clients)]

    def _run(self, c: int) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self._join)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"


@dataclass
class Tally:
    """What the load threads saw."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    """(sent, answered) of every answered request, monotonic seconds."""
    errors: list[str] = field(default_factory=list)
    wrong: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latencies_ms(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [(b - a) * 1000 for a, b in self.spans if start <= a and b <= end]


class EchoLoad(ClientThreads):
    """``clients`` threads, each an `IKClient` given ``endpoints``, sending back-to-back echo
    requests; each answer must carry the thread's own (client, sequence) and array (else it
    counts as ``wrong``). ``spread``: client c lists the brokers from the c-th on (its home),
    so every broker carries load; else every client lists them in the same order."""

    def __init__(
        self,
        endpoints: list[str],
        clients: int = 4,
        *,
        spread: bool = True,
        timeout: float = 3.0,
        retries: int = 2,
        join: float = 60.0,
    ) -> None:
        self.endpoints = endpoints
        self.spread = spread
        self.timeout = timeout
        self.retries = retries
        self.tally = Tally()
        super().__init__(clients, join)

    def _run(self, c: int) -> None:
        ctx = zmq.Context()
        tally = self.tally
        try:
            eps = self.endpoints
            if self.spread:
                eps = eps[c % len(eps) :] + eps[: c % len(eps)]
            where = eps[0] if len(eps) == 1 else eps
            with IKClient(where, timeout=self.timeout, retries=self.retries, context=ctx) as cl:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    x = np.full(16, c * 1_000_000 + i, np.float64)
                    t0 = time.monotonic()
                    try:
                        got = cl.request("echo", "echo", {"c": c, "i": i}, {"x": x})
                    except IKError as e:
                        with tally.lock:
                            tally.errors.append(f"client {c} request {i}: {e!r}")
                        continue
                    t1 = time.monotonic()
                    good = (got.header.get("c"), got.header.get("i")) == (c, i) and np.array_equal(
                        got.arrays.get("x"), x
                    )
                    with tally.lock:
                        tally.spans.append((t0, t1))
                        tally.wrong += not good
        finally:
            ctx.destroy(linger=0)
