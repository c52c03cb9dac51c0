"""Shared fixtures: real broker/worker processes that are always reaped, on loopback ports
they pick themselves (a broker binds ``tcp://127.0.0.1:*`` and says which port it got; a
socket in this process binds with `bind_to_random_port`), so no port is chosen here and
then lost to another process before it is bound."""

from __future__ import annotations

import asyncio
import heapq
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio

from benchmarks._harness import (  # noqa: F401  (re-exported to the test modules)
    ANY_PORT,
    JAX_CACHE,
    ROOT,
    Proc,
    Procs,
    bound_endpoint,
    wait_for_broker,
    wait_for_workers,
)

os.environ.setdefault("JAX_PLATFORMS", "cpu")


class Processes(Procs):
    """`Procs` as the tests use it: logs in the test's ``tmp_path``, `zmq-ik` processes with
    their INFO logs (tests read them), and SIGKILL for whatever is left at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, quiet=False, kill=True)
        self.tmp_path = tmp_path


def ctrl_c_reaches() -> None:
    """`subprocess.Popen(preexec_fn=...)` for a child a test sends SIGINT (Ctrl-C): the
    signal's default action, as in a terminal. A test run started in the background by a
    non-interactive shell (`make test &`) ignores SIGINT, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


LAST = ("test_benchmarks_smoke.py", "test_chaos.py")
"""Test files run after all others: each benchmark section, and the chaos test, starts
processes that compile the IK programs of the session's test worker (buckets
`IK_TEST_BUCKETS`, the shared JAX cache) at the same time, which on a fresh clone (an empty cache, as in CI) means several
cold compiles of the same programs competing for the CPUs; run last, they load them."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in LAST)  # stable: the rest keep their order
    if not wants_slow(config):  # the `slow` marker's promise (pyproject): skipped unless asked
        skip = pytest.mark.skip(reason="slow: set ZMQ_IK_SLOW=1 or pass -m slow")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(skip)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def endpoint(procs: Processes) -> str:
    """A broker with default settings on a port it picked: its endpoint."""
    return procs.broker().endpoint


@pytest.fixture
def serve_endpoint() -> str:
    """A loopback endpoint free now, for `zmq-ik serve`: its workers must know the port before
    its broker binds it, so serve cannot take a wildcard port (the one place a test still
    chooses a port for another process to bind)."""
    from zmq_ik.apps.serve import free_endpoint

    return free_endpoint()


@contextmanager
def refusing_endpoint() -> Iterator[str]:
    """A loopback endpoint where nothing listens, for as long as the context lasts: its port
    is held by a socket bound but never listening, so a connect is refused and no other
    process can bind the port meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def nowhere() -> Iterator[str]:
    """An endpoint where nothing listens (`refusing_endpoint`) for the whole test."""
    with refusing_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


SLOW = os.environ.get("ZMQ_IK_SLOW", "") not in ("", "0")
FORMS = ["reduced", pytest.param("full", marks=pytest.mark.slow)]
"""``@pytest.mark.parametrize("form", FORMS)``: every fault/fuzz test has a reduced form (CI)
and a full one (longer, more load: ``ZMQ_IK_SLOW=1`` or ``-m slow``)."""


def wants_slow(config: pytest.Config) -> bool:
    """Whether tests marked ``slow`` run: ZMQ_IK_SLOW=1, or ``-m`` names them."""
    return SLOW or "slow" in (config.getoption("markexpr") or "")


def full_form(request: pytest.FixtureRequest, form: str) -> bool:
    """True for the full form (marked ``slow`` in `FORMS`, so only run when `wants_slow`)."""
    return form == "full"


def wire(frames: Any) -> list[bytes]:
    """What the receiver sees: every frame as bytes (as a socket would deliver it)."""
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]


# --------------------------------------------------------------------------- clients


KINDS = ["sync", "async"]
"""``@pytest.mark.parametrize("kind", KINDS)``: a test run with `IKClient` and `AsyncIKClient`."""


def run_with(kind: str, endpoint: str, body: Callable[[Any], Any], **kwargs: Any) -> Any:
    """Run ``body(client)`` with an `IKClient` (kind "sync") or, awaited, an `AsyncIKClient`
    (kind "async"), each on a context of its own."""
    from zmq_ik.client import AsyncIKClient, IKClient

    if kind == "sync":
        ctx = zmq.Context()
        try:
            with IKClient(endpoint, context=ctx, **kwargs) as client:
                return body(client)
        finally:
            ctx.destroy(linger=0)

    async def go() -> Any:
        actx = zmq.asyncio.Context()
        try:
            async with AsyncIKClient(endpoint, context=actx, **kwargs) as client:
                return await body(client)
        finally:
            actx.destroy(linger=0)

    return asyncio.run(go())


class Box:
    """A sink for `ClientCore` events that keeps them: ``(tag, kind, value)`` each."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def kinds(self) -> list[int]:
        return [kind for _, kind, _ in self.events]


def outbox(core: Any) -> list[tuple[int, Any]]:
    """Take everything out of a `ClientCore`'s outbox: ``(connection, parsed REQUEST)``."""
    from zmq_ik.protocol import Request, parse_message

    out = []
    while core.outbox:
        connection, frames = core.outbox.popleft()
        msg = parse_message(frames)
        assert isinstance(msg, Request)
        out.append((connection, msg))
    return out


def final(rid: bytes, **header: Any) -> list[Any]:
    """The frames of a FINAL answer to ``rid`` with ``header``."""
    from zmq_ik.protocol import Command, encode_payload, reply_frames

    return reply_frames(Command.FINAL, rid, encode_payload(header))


IK_TEST_BUCKETS = "16,64"
"""Small shape buckets for IK workers in tests: quick to compile, still exercising padding."""


@contextmanager
def ik_service(
    tmp_path_factory: pytest.TempPathFactory,
    robot: str = "tatbot",
    buckets: str = IK_TEST_BUCKETS,
    extra: tuple[str, ...] = (),
) -> Iterator[str]:
    """A broker and one real IK worker serving ``robot`` (shared JAX cache; ``extra``: more
    worker options, e.g. ``--robot``): the broker's endpoint, once the worker is READY."""
    pytest.importorskip("jax")
    procs = Processes(tmp_path_factory.mktemp(f"ikworker-{robot}"))
    try:
        endpoint = procs.broker().endpoint
        procs.ik_worker(endpoint, buckets=buckets, extra=extra)
        procs.wait_workers(endpoint, 1, robot=robot, timeout=400)
        yield endpoint
    finally:
        procs.close()


@pytest.fixture(scope="session")
def ik_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker + one real IK worker (tatbot, small buckets, shared JAX cache) per session."""
    with ik_service(tmp_path_factory) as endpoint:
        yield endpoint


def stroke_like(n, seed=0):
    """Needle points in a 4 x 4 cm patch around the lasercross, +-2 mm depth, tatbot's
    fixed needle orientations and ee offsets."""
    rng = np.random.default_rng(seed)
    design = np.array([0.25045, 0.0, 0.102])
    offsets = np.array(
        [
            [-0.0032011130459314863, -0.006146244846220735, 0.0],
            [0.0003607626669337727, 0.011764407112841976, 0.00529831437515331],
        ]
    )
    xy = rng.uniform(-0.02, 0.02, (n, 2, 2))
    depth = rng.uniform(-0.002, 0.002, (n, 2, 1))
    pos = design + np.concatenate([xy, depth], -1) + offsets
    wxyz = np.broadcast_to(np.array([[0.7071, 0, 0, -0.7071], [0.7071, 0, 0, 0.7071]]), (n, 2, 4))
    return wxyz, pos


class FakeBroker(threading.Thread):
    """A ROUTER in a thread standing in for the broker, to script what a client gets.

    Each REQUEST received (parsed, in ``requests``) goes to ``script(n, request)`` (n counts
    from 1), which returns the answers to send back: ``(delay_s, frames)`` pairs, frames
    without the identity; ``[]`` is silence. The clients' liveness probes (`alive`) are
    answered at once and not passed on. Answers are sent once their delay has passed,
    so a script can answer out of order.
    """

    def __init__(self, ctx: zmq.Context, script: Any) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.script = script
        self.requests: list[Any] = []
        self.stop = threading.Event()
        self._later: list[tuple[float, int, bytes, list[Any]]] = []

    def run(self) -> None:
        from zmq_ik.protocol import (
            ALIVE,
            BROKER_SERVICE,
            Command,
            Request,
            encode_payload,
            parse_message,
            reply_frames,
        )

        alive = encode_payload({"workers": 1})
        seq = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, identity, frames = heapq.heappop(self._later)
                    self.sock.send_multipart([identity, *frames])
                wait = 20 if not self._later else max(0, int((self._later[0][0] - now) * 1000))
                if not self.sock.poll(min(wait, 20)):
                    continue
                identity, *frames = self.sock.recv_multipart()
                msg = parse_message(frames)
                if isinstance(msg, Request) and (msg.service, msg.operation) == (
                    BROKER_SERVICE,
                    ALIVE,
                ):  # a client's liveness probe: answered at once, as a broker does
                    answer = reply_frames(Command.FINAL, msg.request_id, alive)
                    self.sock.send_multipart([identity, *answer])
                    continue
                self.requests.append(msg)
                for delay, answer in self.script(len(self.requests), msg) or []:
                    seq += 1
                    out = [bytes(memoryview(f)) for f in answer]
                    heapq.heappush(self._later, (time.monotonic() + delay, seq, identity, out))
        finally:
            self.sock.close(0)

    def __enter__(self) -> FakeBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
