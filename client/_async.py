"""AsyncIKClient: `IKClient`'s methods on asyncio, many concurrent calls on one socket.

A thin loop over `ClientCore` (client/_core.py), as `IKClient` is: one reader task feeds
received messages to the core, one timer wakes it at its next deadline, and each call
waits for its own events. Same rules (ids, retries, reply matching, chunks) by construction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import zmq
import zmq.asyncio

from zmq_ik.client import _exchange as calls
from zmq_ik.client._checks import call_timeout, check_client
from zmq_ik.client._client import IKClient, open_dealers
from zmq_ik.client._core import CANCEL_WAIT, Call, ClientCore, Event, settle
from zmq_ik.client._exchange import (
    DEFAULT_MAX_IN_FLIGHT,
    Assembly,
    Exchange,
    Progress,
    StrokeJob,
)
from zmq_ik.errors import InputError
from zmq_ik.model import (
    ORI_TOL,
    POS_TOL,
    EEPoses,
    IKSettings,
    IKSolution,
    Scene,
    StrokeBatch,
    StrokeList,
)
from zmq_ik.protocol import Payload
from zmq_ik.protocol.handshakes import Handshakes

logger = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)


class _Wake:
    """Wakes the task waiting for a sink's next event."""

    _waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until the core delivers the next event."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class _Events(_Wake):
    """One call's sink: its events, and a wake-up for the task waiting on them."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()

    def append(self, event: Event) -> None:
        self.events.append(event)
        self._wake()


class _Inbox(Exchange, _Wake):
    """An `Exchange` whose sink also wakes the task waiting for it."""

    def append(self, event: Event) -> None:
        super().append(event)
        self._wake()


T = TypeVar("T")


def _pair(index: int, payload: Payload) -> tuple[int, Payload]:
    return index, payload


class _Answers(Generic[T]):
    """An exchange's answers as an async iterator. Whatever ends it early (an error, a
    cancelled task, `aclose`, or the iterator simply dropped after a ``break``) forgets the
    calls still held, at once: no retries, late answers dropped."""

    def __init__(
        self,
        client: AsyncIKClient,
        exchange: _Inbox,
        convert: Callable[[int, Payload], T],
    ) -> None:
        self._client = client
        self._exchange = exchange
        self._convert = convert

    def __aiter__(self) -> _Answers[T]:
        return self

    async def __anext__(self) -> T:
        ex = self._exchange
        client = self._client
        try:
            while True:
                ex.fill(time.monotonic(), client._flush)
                item = ex.take()
                if item is not None:
                    return self._convert(*item)
                if ex.done:
                    raise StopAsyncIteration
                await ex.wait()
        except BaseException:
            ex.abandon()
            client._cancelled()
            raise

    async def aclose(self) -> None:
        self._exchange.abandon()
        self._client._cancelled()

    def __del__(self) -> None:
        self._exchange.abandon()


class AsyncIKClient:
    """Asynchronous ZIK/1 client; use ``async with AsyncIKClient(...) as client``.

    The same methods and parameters as `IKClient`, awaited (``stream`` and ``exchange``
    return async iterators); ``endpoint``, ``timeout``, ``retries`` and the limits are
    checked as in `IKClient` (same functions).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        context: zmq.asyncio.Context | None = None,
        curve: Any = None,
    ) -> None:
        self.endpoints, self.timeout, self.retries = check_client(endpoint, timeout, retries)
        self.endpoint = ",".join(self.endpoints)
        self.context = context or zmq.asyncio.Context.instance()
        self._core = ClientCore(self.endpoints, retries=self.retries)
        self._bounds = calls.BoundsCache()
        self._handshakes = Handshakes(curve)
        self._core.explain = self._handshakes.explain
        self._core.reached = self._handshakes.reached
        self.sockets: list[zmq.asyncio.Socket] = open_dealers(
            self.context, self.endpoints, curve, self._handshakes
        )  # type: ignore[assignment]
        self.socket = self.sockets[0]
        """The first broker's socket (the only one, with one broker)."""
        self._readers: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None

    async def __aenter__(self) -> AsyncIKClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail whatever still waits and cancel it at the brokers (waiting at most
        `CANCEL_WAIT` for them to take the cancel, as `IKClient.close`), stop reading, close
        the socket."""
        core = self._core
        core.fail_all(InputError("the client was closed", "client"))
        self._cancelled()
        deadline = time.monotonic() + CANCEL_WAIT
        while core.cancelling and any(not r.done() for r in self._readers):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.005)  # the readers feed the acknowledgements to the core
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for reader in self._readers:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
        self._readers = []
        self._handshakes.close()  # (first: `Handshakes.close`)
        for sock in self.sockets:
            sock.close(0)

    # ------------------------------------------------------------------ the loop

    def _flush(self) -> None:
        """Send the core's outbox without blocking (as `IKClient._flush`), then make sure the
        timer is set for the core's next deadline."""
        outbox = self._core.outbox
        while outbox:
            i, frames = outbox.popleft()
            sent: asyncio.Future[Any] = self.sockets[i].send_multipart(frames, _NOBLOCK, copy=False)  # type: ignore[assignment]
            if sent.done() and sent.exception() is not None:  # NOBLOCK: already settled
                logger.debug("no connection to %s: request not sent", self.endpoints[i])
        self._arm()

    def _arm(self) -> None:
        due = self._core.next_due()
        if due is None:
            return  # nothing pending; a set timer finds nothing to do
        if self._timer is not None and self._timer_due is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)
        self._timer_due = due

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        # After a busy spell of the loop, answers may be waiting: the reader's wake-up is
        # already queued (it then reads every queued message in one step); go after it.
        asyncio.get_running_loop().call_soon(self._on_due)

    def _on_due(self) -> None:
        if self.socket.closed:
            return
        # Read what has arrived and nobody read yet, so that it is not taken for silence.
        # NOBLOCK receives complete at once and take no waiting reader's message.
        for i, sock in enumerate(self.sockets):
            for _ in range(10_000):
                got: asyncio.Future[Any] = sock.recv_multipart(_NOBLOCK, copy=False)  # type: ignore[assignment]
                if not got.done() or got.exception() is not None:
                    if not got.done():
                        got.cancel()
                    break
                self._core.handle(got.result(), time.monotonic(), i)
        self._core.tick(time.monotonic())
        self._flush()

    def _cancelled(self) -> None:
        """Send the cancel that leaving a call put in the outbox (unless the client closed)."""
        if self._core.outbox and not self.socket.closed:
            self._flush()

    async def _read(self, connection: int) -> None:
        core = self._core
        sock = self.sockets[connection]
        while True:
            frames = await sock.recv_multipart(copy=False)
            core.handle(frames, time.monotonic(), connection)
            if core.outbox:  # a retry (a retryable error), a failover
                self._flush()

    def _start(self) -> None:
        """One reader per broker socket, started with the first call (and the probes that
        tell a dead broker before it is needed)."""
        if not self._readers:
            self._core.start(time.monotonic())
            self._flush()
        if not self._readers or any(r.done() for r in self._readers):
            for r in self._readers:
                r.cancel()
            self._readers = [asyncio.ensure_future(self._read(i)) for i in range(len(self.sockets))]

    def _answers(self, exchange: _Inbox) -> _Answers[tuple[int, Payload]]:
        self._start()
        return _Answers(self, exchange, _pair)

    # ------------------------------------------------------------------ transport

    def exchange(
        self,
        calls: Iterable[Call],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float | None = None,
    ) -> AsyncIterator[tuple[int, Payload]]:
        """As `IKClient.exchange`: ``async for index, payload in client.exchange(calls)``."""
        ex = _Inbox(
            self._core, calls, timeout=call_timeout(timeout, self.timeout), window=max_in_flight
        )
        return self._answers(ex)

    async def request(
        self,
        service: str,
        operation: str,
        header: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        timeout: float | None = None,
        on_partial: Callable[[Payload], None] | None = None,
    ) -> Payload:
        """One request, one answer; concurrent calls share the socket."""
        call = Call(service, operation, header or {}, arrays or {}, on_partial)
        seconds = call_timeout(timeout, self.timeout)
        inbox = _Events()
        core = self._core
        rid = core.submit(call, seconds, time.monotonic(), inbox.append)
        self._start()
        try:
            self._flush()
            while True:
                answer = settle(inbox.events, on_partial)
                if answer is not None:
                    return answer
                await inbox.wait()
        finally:
            core.forget(rid)
            self._cancelled()

    # ------------------------------------------------------------------ IK calls

    @calls.doc_from(IKClient.solve, "As `IKClient.solve`, awaited.")
    async def solve(
        self,
        robot: str,
        target_wxyz: Any,
        target_pos: Any,
        rest: Any = None,
        ee_links: Sequence[str] | None = None,
        *,
        ik: IKSettings | None = None,
        timeout: float | None = None,
        pos_tol: float = POS_TOL,
        ori_tol: float = ORI_TOL,
        strict: bool = False,
        active: Any = None,
    ) -> IKSolution:
        call, judging = calls.solve_call(
            robot, target_wxyz, target_pos, rest, ee_links, ik, pos_tol, ori_tol, strict, active
        )
        bounds = self._bounds.get(robot, ee_links)
        if bounds is None:  # once per robot: what its answers are checked against
            bounds = self._bounds.put(
                robot, ee_links, await self.describe(robot, ee_links, timeout=timeout)
            )
        return calls.read_solve(await self.request(*call, timeout=timeout), call, bounds, judging)

    @calls.doc_from(IKClient.fk, "As `IKClient.fk`, awaited.")
    async def fk(
        self,
        robot: str,
        joints: Any,
        ee_links: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> EEPoses:
        call = calls.fk_call(robot, joints, ee_links)
        return calls.read_fk(await self.request(*call, timeout=timeout), call)

    def stream(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float | None = None,
        chunk_pairs: int | None = None,
    ) -> AsyncIterator[tuple[int, StrokeBatch]]:
        """As `IKClient.stream`: ``async for start, part in client.stream(scene, strokes)``.
        Leaving the loop, or cancelling the task, forgets the chunks still held (for a
        ``break``, when the iterator is closed: at once with ``contextlib.aclosing``)."""
        return self._stream(StrokeJob(scene, strokes, chunk_pairs), max_in_flight, timeout)

    def _stream(
        self, job: StrokeJob, max_in_flight: int, timeout: float | None
    ) -> AsyncIterator[tuple[int, StrokeBatch]]:
        timeout = call_timeout(timeout, self.timeout)
        ex = _Inbox(self._core, job.calls(), timeout=timeout, window=max_in_flight, ordered=True)
        self._start()
        return _Answers(self, ex, job.part)

    async def compute(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        chunk_pairs: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> StrokeBatch:
        """As `IKClient.compute`: chunks fanned out concurrently, reassembled in order."""
        job = StrokeJob(scene, strokes, chunk_pairs)
        joined = Assembly(job, progress)
        async for _, part in self._stream(job, max_in_flight, timeout):
            joined.add(part)
        return joined.result()

    @calls.doc_from(IKClient.describe, "As `IKClient.describe`, awaited.")
    async def describe(
        self,
        robot: str,
        ee_links: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return calls.read_describe(
            await self.request(*calls.describe_call(robot, ee_links), timeout=timeout)
        )

    # ------------------------------------------------------------------ management

    @calls.doc_from(IKClient.ping, "As `IKClient.ping`, awaited.")
    async def ping(self, timeout: float | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        return calls.read_ping(await self.request(*calls.PING, timeout=timeout), t0)

    @calls.doc_from(IKClient.status, "As `IKClient.status`, awaited.")
    async def status(self, timeout: float | None = None) -> dict[str, Any]:
        return calls.read_status(await self.request(*calls.STATUS, timeout=timeout))
