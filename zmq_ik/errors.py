"""Exceptions shared by the client, broker, worker and IK engine.

Every error that crosses the wire has a stable ``code`` (see ``ErrorCode``) so that a
robot can branch on it, a human ``message``, and, where one input is to blame, the
``field`` that names it (``"targets.pos"``, ``"strokes[3].left.meter_coords"``...).
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Stable error codes carried by ZIK/1 ERROR replies (docs/protocol.md, section Errors)."""

    BAD_REQUEST = "bad_request"
    """The request is well framed but its content is invalid (shapes, NaN, missing field)."""
    UNKNOWN_ROBOT = "unknown_robot"
    """No live worker serves the named robot (and none registered before the deadline)."""
    UNKNOWN_OPERATION = "unknown_operation"
    """The worker does not implement the named operation."""
    OVERLOADED = "overloaded"
    """The broker's queue for this robot is full; retry later or slow down."""
    TIMEOUT = "timeout"
    """The request's deadline passed before an answer was produced."""
    INTERNAL = "internal"
    """An unexpected failure in the broker or worker; the message says what."""
    VERSION = "version"
    """The peer speaks another protocol version."""
    PROTOCOL = "protocol"
    """The message is not valid ZIK/1 framing (too few frames, bad command, bad header)."""
    TOO_LARGE = "too_large"
    """The message exceeds a stated limit (size, array count, header size)."""
    WORKER_LOST = "worker_lost"
    """Every worker tried for this request died before answering (retries exhausted)."""
    SHUTTING_DOWN = "shutting_down"
    """The broker is stopping and takes no new work."""
    FORBIDDEN = "forbidden"
    """The peer's CURVE key may not do this: a client key (not in the broker's
    ``--worker-keys``) registering as a worker. For good: the worker exits 78."""


BROKER_ONLY = frozenset(
    {
        ErrorCode.OVERLOADED.value,
        ErrorCode.VERSION.value,
        ErrorCode.WORKER_LOST.value,
        ErrorCode.SHUTTING_DOWN.value,
        ErrorCode.FORBIDDEN.value,
    }
)
"""Codes only a broker may answer a request with (docs/protocol.md 4.3): clients retry some
of them (`worker_lost`, `shutting_down`), so a worker ending a job with one is never
forwarded (the broker treats it as the worker's fault; `shutting_down` as its leaving)."""

WORKER_FAULTS = frozenset({ErrorCode.INTERNAL.value, ErrorCode.UNKNOWN_ROBOT.value, *BROKER_ONLY})
"""A worker's ERROR codes that are of its own making (it crashed, or does not serve the
robot it registered for): what the broker's circuit breaker counts. Never a client's bad
input (`bad_request`, `too_large`, `protocol`, `unknown_operation`) nor `timeout`."""


class IKError(Exception):
    """Base class of every zmq-ik error."""


class InputError(IKError, ValueError):
    """Invalid input detected locally; ``field`` names the offending argument or file entry."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ProtocolError(IKError):
    """A frame sequence that is not valid ZIK/1; ``code`` says which rule it broke."""

    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.PROTOCOL, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field


class RemoteError(IKError):
    """An ERROR reply from the broker or a worker, carrying its code, message and field.

    ``too_large`` is also raised by the clients themselves, before sending a request that
    the broker would refuse (same class, code and message either way)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        where = f" (field: {field})" if field else ""
        super().__init__(f"[{code}] {message}{where}")
        self.code = code
        self.message = message
        self.field = field


class Overloaded(RemoteError):
    """The broker refused the request at once because its queue is full."""


class IKTimeout(IKError, TimeoutError):
    """No answer arrived before the deadline (after the configured retries). ``reason``: why
    the broker may have been silent, when the client knows (a refused CURVE handshake)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class NoBroker(IKTimeout):
    """Nothing ever answered this client, nor completed a handshake with it, within
    `client._failover.NO_ANSWER_AFTER`: no broker at the endpoint, or one that refuses this
    client (the message says which when libzmq told the client)."""


def remote_error(code: str, message: str, field: str | None = None) -> RemoteError:
    """Build the most specific exception for an ERROR reply."""
    if code == ErrorCode.OVERLOADED.value:
        return Overloaded(code, message, field)
    return RemoteError(code, message, field)


class ConfigError(IKError):
    """A process cannot run as configured (no GPU where one is required, a robot that does
    not load): the command exits 78 (EX_CONFIG), which `serve` and systemd do not restart."""
