"""ZIK/1's vocabulary: the constants, the commands (frame 1) and one dataclass per
message kind, as `parse_message` returns them (spec: docs/protocol.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import zmq

from zmq_ik.protocol.payload import (
    Frame,
)

PROTOCOL = b"ZIK/1"
"""Frame 0 of every message: protocol name and version."""
PROTOCOL_PREFIX = b"ZIK/"
"""A frame 0 starting with this but not equal to `PROTOCOL` is another version."""

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
"""The broker's endpoint when none is given: loopback, since ZIK/1 without CURVE is open."""
ENDPOINT_ENV = "ZMQ_IK_ENDPOINT"
"""Environment variable naming the endpoint every command and client uses by default."""

BROKER_SERVICE = "zik.broker"
"""Reserved service name: requests to it are answered by the broker itself (ping, status)."""
ALIVE = "alive"
"""The cheapest `BROKER_SERVICE` operation: an empty FINAL at once. Clients probe a broker
with it while they wait on it (any message from a broker counts as a sign of life; an older
broker's `unknown_operation` ERROR counts too)."""
CANCEL = "cancel"
"""`BROKER_SERVICE` operation: drop the sender's own requests, header ``{"ids": [...]}`` at
most `MAX_CANCEL_IDS` request ids (`cancel_frames`, `cancel_ids`; docs/protocol.md 4.6)."""
MAX_CANCEL_IDS = 4096
"""Request ids one cancel names: its header stays far below the header limit (at most 264 KiB)."""

FEATURE_DECLINE = "decline"
"""Multi-broker extension of ZIK/1 (docs/protocol.md 4.10). A worker lists it in READY's
``features``; a broker that implements it flags its HEARTBEATs to that worker with it. Only
then may the worker send that broker DECLINE and HEARTBEAT state flags (`FLAG_IDLE`,
`FLAG_BUSY`): peers that never showed the feature never see either."""
WATCH = "watch-"
"""Liveness extension (issue 27.1): a worker lists ``watch-<token>`` (16 hex digits, random)
in READY's ``features``, and once the broker answered opens a second connection, its *watch*,
that sends one HEARTBEAT flagged with the same word and then nothing but ZMTP PINGs
carrying a TTL of the liveness window (`set_worker_link_heartbeats`). Only PINGs on it keep
libzmq's TTL timer armed, so the broker's libzmq drops the watch of a worker that is killed
or stopped within that window, whatever either side's Python is doing, and the broker's
next HEARTBEAT to it is undeliverable: the worker is dead. Silence on the worker's own
connection (a starved host) is tolerated for `BrokerSettings.watched_silence` meanwhile.
On the worker's main connection app messages would cancel that timer (libzmq re-arms it
only at a PING), hence the second connection."""
FLAG_IDLE = "idle"
"""HEARTBEAT flag, worker → broker: free for this broker's jobs again."""
FLAG_BUSY = "busy"
"""HEARTBEAT flag, worker → broker: running a job (possibly another broker's)."""

RECONNECT_MAX = 5.0
"""Longest a worker waits between reconnects to a silent broker (seconds; its backoff doubles
from 0.25 s up to this). A restarted broker sees its workers again within this plus one
liveness window (`zmq_ik.settings.broker.BrokerSettings.rejoin_grace`)."""
WARMING_INTERVAL = 1.0
"""Longest a warming worker waits between two WARMING messages (seconds, docs/protocol.md
4.11); it also sends one as each bucket compiles."""
WARMING_TTL = 5.0
"""A warming worker silent this long (seconds) is forgotten by the broker: 5 missed WARMINGs."""


class Command(bytes, Enum):
    """Frame 1 of every message. Which peer may send which command: docs/protocol.md."""

    REQUEST = b"REQUEST"
    FINAL = b"FINAL"
    PARTIAL = b"PARTIAL"
    ERROR = b"ERROR"
    READY = b"READY"
    HEARTBEAT = b"HEARTBEAT"
    DISCONNECT = b"DISCONNECT"
    DECLINE = b"DECLINE"
    WARMING = b"WARMING"


_COMMANDS = {c.value: c for c in Command}
_ZMQ_FRAME = zmq.Frame
_NDARRAY = np.ndarray
REPLY_COMMANDS = frozenset({Command.FINAL, Command.PARTIAL, Command.ERROR})

_DEADLINE = struct.Struct("!I")
MAX_TIMEOUT_MS = 2**32 - 1
"""The longest request timeout the 4-byte deadline frame carries (~49.7 days)."""


# --------------------------------------------------------------------------- envelopes


@dataclass(slots=True)
class Request:
    """REQUEST: client → broker (``request_id`` chosen by the client) and broker → worker
    (``request_id`` is the broker's job id)."""

    request_id: bytes
    """Unique per sender; a retry reuses it."""
    service: str
    """Robot name, or `BROKER_SERVICE` for management requests."""
    operation: str
    """What to do: ``solve``, ``strokebatch``, ``echo``, ``ping``, ``status``..."""
    timeout_ms: int
    """Milliseconds left until the deadline, as seen by the sender when it sent."""
    payload: list[Frame]
    """Header frame plus array frames, undecoded (the broker forwards them untouched)."""


@dataclass(slots=True)
class Reply:
    """FINAL / PARTIAL / ERROR: worker → broker (job id) and broker → client (request id)."""

    command: Command
    """`Command.FINAL`, `Command.PARTIAL` or `Command.ERROR`."""
    request_id: bytes
    """The id of the request this answers (empty for an ERROR about an unparsable message)."""
    payload: list[Frame]
    """Header frame plus array frames, undecoded."""


@dataclass(slots=True)
class Ready:
    """READY: a worker registers and says what it serves."""

    info: dict[str, Any]
    """Decoded header: ``robots`` (list of str) is required; capacity, device, versions..."""

    @property
    def robots(self) -> list[str]:
        return list(self.info["robots"])


@dataclass(slots=True)
class Heartbeat:
    """HEARTBEAT, both ways between broker and worker."""

    flags: frozenset[str] = frozenset()
    """Words of the optional flags frame (multi-broker extension, docs/protocol.md 4.10);
    receivers ignore words they do not know."""


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT, both ways between broker and worker: the sender is going away."""

    reason: str = ""
    """Optional human-readable reason."""


@dataclass(slots=True)
class Decline:
    """DECLINE, worker → broker: the worker did not start this job (it is running another
    broker's): the broker re-queues it, no attempt counted, and leaves the worker alone until
    it flags `FLAG_IDLE`."""

    job_id: bytes


@dataclass(slots=True)
class Warming:
    """WARMING, worker → broker: a worker that is still loading and compiling announces the
    robots it will serve and how far it is (docs/protocol.md 4.11). Never given a job."""

    info: dict[str, Any]
    """Decoded header: ``robots`` required, ``progress`` ``{done, total, elapsed_s}``, and
    READY's ``device``, ``host``, ``pid`` (all bounded as in READY)."""

    @property
    def robots(self) -> list[str]:
        return list(self.info["robots"])


Message = Request | Reply | Ready | Heartbeat | Disconnect | Decline | Warming
