"""What the broker says about itself: the `ping` and `status` management answers.

Read-only views of a `BrokerCore`, kept apart from the routing logic in `broker._core`.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from zmq_ik._version import __version__
from zmq_ik.broker._cancel import cancel
from zmq_ik.errors import ErrorCode, ProtocolError
from zmq_ik.protocol import ALIVE, CANCEL, PROTOCOL, OutFrame, Request, encode_payload

if TYPE_CHECKING:
    from zmq_ik.broker._core import BrokerCore

LISTED = 256
"""Most robots and queues a `status` reply names (the rest are counted as omitted)."""


def alive_info(core: BrokerCore, now: float) -> dict[str, Any]:
    """The clients' probe answer (`protocol.ALIVE`), as small as an answer can be: workers
    (0 while stopping: clients then prefer another broker) and this process's `boot` id."""
    return {"workers": 0 if core.stopping else len(core.workers), "boot": core.boot}


def ping_info(core: BrokerCore, now: float) -> dict[str, Any]:
    """Version, uptime, the registered workers and those still warming up (4.11), always
    within one header: every entry is bounded (READY limits) and the lists are cut at half
    the header limit together (``workers_total``, ``warming_total`` count them all)."""
    budget = core.settings.limits.max_header_bytes // 2
    listed: dict[str, list[dict[str, Any]]] = {"workers": [], "warming": []}
    for kind, entries in (("workers", core.workers), ("warming", core.directory.warming)):
        for w in entries.values():
            budget -= w.listing_bytes
            if budget < 0:
                break
            listed[kind].append(w.describe(now))
    warming = core.directory.warming
    return {
        "version": __version__,
        "protocol": PROTOCOL.decode(),
        "uptime_s": round(now - core.started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "workers": listed["workers"],
        "workers_total": len(core.workers),
        "workers_omitted": len(core.workers) - len(listed["workers"]),
        "warming": listed["warming"],
        "warming_total": len(warming),
        "warming_omitted": len(warming) - len(listed["warming"]),
    }


def status(core: BrokerCore, now: float) -> dict[str, Any]:
    """`ping_info` plus queues (the `LISTED` longest), in-flight jobs and counters."""
    info = ping_info(core, now)
    queues = core.queues
    if len(queues) > LISTED:  # the longest queues; the count of the others
        queues = dict(sorted(queues.items(), key=lambda kv: -len(kv[1]))[:LISTED])
    robots = set(core.directory.served)
    info.update(
        queues={robot: len(q) for robot, q in queues.items()},
        queues_omitted=len(core.queues) - len(queues),
        in_flight=core.in_flight(),
        open_jobs=len(core.jobs),
        queued_bytes=core.queued_bytes,
        unread_bytes=core.clients.unread,
        counters=dict(core.counters),
        errors=dict(core.errors_sent),
        rejects=dict(core.rejects),
        robots=sorted(robots)[:LISTED],
        robots_omitted=max(0, len(robots) - LISTED),
    )
    return info


def management_answer(
    core: BrokerCore, client: bytes, request: Request, now: float
) -> list[OutFrame]:
    """The payload of the broker's answer to ``client``'s `protocol.BROKER_SERVICE` request;
    `ProtocolError` for an unknown operation, bad input (`cancel`'s ids), or an answer too
    large for one header."""
    operation = request.operation
    if operation == CANCEL:  # the one that changes state: the sender's own requests only
        return encode_payload(cancel(core, client, request.payload))
    report = {ALIVE: alive_info, "ping": ping_info, "status": status}.get(operation)
    if report is None:
        raise ProtocolError(
            f"the broker answers 'ping', 'status', 'alive' and 'cancel', not {operation!r}",
            ErrorCode.UNKNOWN_OPERATION,
            "operation",
        )
    return encode_payload(report(core, now))
