"""AsyncIKClient: the same calls as `IKClient` on zmq.asyncio, many requests in flight.

One reader task routes replies to per-request futures; each call waits for its own answer,
resending with the same id when an attempt's deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from zmq_ik import ops
from zmq_ik.client._client import (
    DEFAULT_ENDPOINT,
    RETRYABLE,
    answer_grace,
    check_retries,
    check_timeout,
    request_message,
)
from zmq_ik.errors import IKTimeout, ProtocolError, RemoteError, remote_error
from zmq_ik.model import IKSettings, IKSolution, Scene, StrokeBatch, StrokeList
from zmq_ik.protocol import (
    BROKER_SERVICE,
    LIMITS,
    Command,
    Payload,
    Reply,
    decode_error,
    decode_payload,
    new_routing_id,
    parse_message,
)

logger = logging.getLogger(__name__)


class AsyncIKClient:
    """Asynchronous ZIK/1 client; use ``async with AsyncIKClient(...) as client``.

    ``timeout``, ``retries`` and the limits are checked as in `IKClient` (same functions).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        context: zmq.asyncio.Context | None = None,
        curve: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = check_timeout(timeout)
        self.retries = check_retries(retries)
        self.context = context or zmq.asyncio.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, new_routing_id())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, LIMITS.max_message_bytes)
        if curve is not None:
            curve.apply(self.socket)
        self.socket.connect(endpoint)
        self._futures: dict[bytes, asyncio.Future[Payload]] = {}
        self._prefix = os.urandom(4)
        self._ids = 0
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncIKClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        self.socket.close(0)

    async def _read(self) -> None:
        while True:
            frames = await self.socket.recv_multipart(copy=False)
            try:
                msg = parse_message(frames)
            except ProtocolError as e:
                logger.warning("malformed reply ignored: %s", e.message)
                continue
            if not isinstance(msg, Reply) or msg.command is Command.PARTIAL:
                continue
            fut = self._futures.get(msg.request_id)
            if fut is None or fut.done():
                continue
            if msg.command is Command.ERROR:
                fut.set_exception(remote_error(*decode_error(msg.payload)))
            else:
                try:
                    fut.set_result(decode_payload(msg.payload))
                except ProtocolError as e:
                    fut.set_exception(e)

    async def request(
        self,
        service: str,
        operation: str,
        header: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        timeout: float | None = None,
    ) -> Payload:
        """One request, one answer; concurrent calls share the socket."""
        timeout = check_timeout(self.timeout if timeout is None else timeout)
        self._ids += 1
        rid = self._prefix + self._ids.to_bytes(8, "big")
        frames = request_message(rid, service, operation, timeout, header, arrays)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        loop = asyncio.get_running_loop()
        try:
            for attempt in range(self.retries + 1):
                fut: asyncio.Future[Payload] = loop.create_future()
                self._futures[rid] = fut
                try:  # never block: with no usable connection the attempt just times out
                    await self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    logger.debug("no connection to %s: request not sent", self.endpoint)
                try:
                    return await asyncio.wait_for(fut, timeout + answer_grace(timeout))
                except asyncio.TimeoutError:
                    logger.info(
                        "no answer for %s after %.1fs (attempt %d)", rid.hex(), timeout, attempt + 1
                    )
                except RemoteError as e:
                    if e.code not in RETRYABLE or attempt == self.retries:
                        raise
            raise IKTimeout(
                f"no answer from {self.endpoint} for {service}/{operation} after "
                f"{self.retries + 1} attempt(s) of {timeout:.1f}s"
            )
        finally:
            self._futures.pop(rid, None)

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
    ) -> IKSolution:
        header, arrays = ops.solve_request(target_wxyz, target_pos, rest, ee_links, ik)
        payload = await self.request(robot, ops.SOLVE, header, arrays, timeout=timeout)
        return ops.read_solve_reply(payload.arrays)

    async def compute(
        self,
        scene: Scene,
        strokes: StrokeList,
        *,
        chunk_pairs: int = 64,
        max_in_flight: int = 8,
        timeout: float | None = None,
    ) -> StrokeBatch:
        """As `IKClient.compute`: chunks fanned out concurrently, reassembled in order."""
        packed = ops.apply_first_last_rest(strokes.pack(scene.stroke_length), scene)
        starts = list(range(0, len(packed), max(1, chunk_pairs))) or [0]
        limit = asyncio.Semaphore(max_in_flight)

        async def one(start: int) -> StrokeBatch:
            async with limit:
                header, arrays = ops.strokebatch_request(
                    scene, ops.slice_packed(packed, start, start + chunk_pairs)
                )
                payload = await self.request(
                    scene.robot, ops.STROKEBATCH, header, arrays, timeout=timeout
                )
                return ops.read_strokebatch_reply(payload.arrays)

        parts = await asyncio.gather(*(one(s) for s in starts))
        return StrokeBatch.concat(list(parts))

    async def describe(
        self,
        robot: str,
        ee_links: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """As `IKClient.describe`."""
        header = ops.describe_request(ee_links)
        payload = await self.request(robot, ops.DESCRIBE, header, timeout=timeout)
        return ops.read_describe_reply(payload.header, payload.arrays)

    async def ping(self, timeout: float | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        payload = await self.request(BROKER_SERVICE, "ping", timeout=timeout)
        return {**payload.header, "rtt_ms": (time.perf_counter() - t0) * 1000}

    async def status(self, timeout: float | None = None) -> dict[str, Any]:
        return dict((await self.request(BROKER_SERVICE, "status", timeout=timeout)).header)
