"""What a worker tells its brokers while it warms up: WARMING (docs/protocol.md 4.11).

Loading robots and compiling can take minutes. Meanwhile the brokers know the worker is
coming (`ping`/`status` list it with its progress, and a request for its robots waits for
it instead of being refused as `unknown_robot`), but never give it a job: it sends READY
only when warm. The main thread compiles; `Announcer` has the brokers' sockets meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from zmq_ik.errors import ProtocolError
from zmq_ik.protocol import (
    WARMING_INTERVAL,
    Command,
    Limits,
    Reply,
    decode_error,
    parse_message,
    recv_frames,
    send_frames,
    warming_frames,
)
from zmq_ik.worker._link import Link, final_refusal

logger = logging.getLogger(__name__)

POLL_S = 0.05
"""How often the announcer looks for news (a compiled bucket is announced within this)."""
_NOBLOCK = int(zmq.NOBLOCK)


class Announcer:
    """Sends WARMING to every broker while the service warms up: at once, as each bucket is
    compiled (`progress`), and at least every `protocol.WARMING_INTERVAL`. Reads what the
    brokers send meanwhile: an ERROR (an older broker does not know the command; a broker
    refused a field, or tracks too many warming workers) stops WARMING to that broker, which
    then learns of the worker at its READY, as before; one that READY could not pass either
    (`_link.final_refusal`) marks the broker `Link.refused`: it gets no READY. Its thread
    owns the brokers' sockets from `start` until `stop` returns."""

    def __init__(self, links: Sequence[Link], info: dict[str, Any], limits: Limits) -> None:
        self.links = [link for link in links if link.sock is not None]
        self.info = info
        self.limits = limits
        self._t0 = time.monotonic()
        self._counts = (0, 0)
        self._news = True
        self._quiet: set[int] = set()
        """Indices of the links that refused WARMING."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zmq-ik-warming", daemon=True)

    def progress(self, done: int, total: int) -> None:
        """A `_service.WarmupHook`: ``done`` of ``total`` buckets compiled (any thread)."""
        self._counts = (done, total)
        self._news = True

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
        for link in self.links:
            poller.register(link.sock, zmq.POLLIN)
        index = {link.sock: i for i, link in enumerate(self.links)}
        last = float("-inf")
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if self._news or now - last >= WARMING_INTERVAL:
                    self._news = False
                    last = now
                    self._announce(now)
                for sock, _ in poller.poll(int(POLL_S * 1000)):
                    for _ in range(100):
                        try:
                            frames = recv_frames(sock, _NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_message(index[sock], frames)
            except Exception:  # a dead announcer would let the broker forget us mid-warm-up
                logger.warning("announcing the warm-up failed; trying again", exc_info=True)
                self._stop.wait(POLL_S)

    def _announce(self, now: float) -> None:
        done, total = self._counts
        progress = {"done": done, "total": total, "elapsed_s": round(now - self._t0, 1)}
        frames = warming_frames({**self.info, "progress": progress})
        for i, link in enumerate(self.links):
            if i in self._quiet or link.sock is None:
                continue
            try:
                send_frames(link.sock, frames, _NOBLOCK)
            except zmq.ZMQError:  # no connection yet, or it stopped reading: the next one
                continue
            link.last_sent = now

    def _on_message(self, i: int, frames: list[Any]) -> None:
        link = self.links[i]
        try:
            msg = parse_message(frames, self.limits)
        except ProtocolError as e:
            logger.debug("malformed message from broker %s ignored: %s", link.endpoint, e.message)
            return
        if not (isinstance(msg, Reply) and msg.command is Command.ERROR) or i in self._quiet:
            return  # nothing else is meant for a worker that is not registered yet
        self._quiet.add(i)
        code, message, field = decode_error(msg.payload)
        if final_refusal(code, field):  # READY would be refused too: no READY there
            link.refused = f"[{code}] {message}" + (f" (field {field})" if field else "")
            logger.error("broker %s refused this worker for good: %s", link.endpoint, link.refused)
        elif field == "command":
            logger.info(
                "broker %s does not take WARMING (an older broker): it lists this worker once "
                "it is READY",
                link.endpoint,
            )
        else:
            logger.warning(
                "broker %s refused WARMING: [%s] %s; it lists this worker once it is READY",
                link.endpoint,
                code,
                message,
            )
