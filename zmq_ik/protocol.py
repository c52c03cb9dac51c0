"""ZIK/1 codec: the one place that knows how messages are framed (spec: docs/protocol.md).

Two layers, so that each party decodes only what it needs:

* the *envelope* (`parse_message`): protocol, command, ids, service, operation, deadline.
  The broker routes on this alone and forwards the payload frames untouched;
* the *payload* (`encode_payload` / `decode_payload`): a msgpack header plus raw array
  frames described by the header. Clients and workers decode it; arrays are built with
  ``np.frombuffer`` on the received frame, so they are read without a copy.

Every malformed input raises `ProtocolError` with a specific `ErrorCode`; nothing here
raises anything else on bad network input. The payload codec lives in `zmq_ik._payload` and
the socket helpers in `zmq_ik._sockets`; both are re-exported here, the one import path.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import zmq

from zmq_ik._payload import ALLOWED_DTYPES as ALLOWED_DTYPES
from zmq_ik._payload import LIMITS as LIMITS
from zmq_ik._payload import Frame as Frame
from zmq_ik._payload import Limits as Limits
from zmq_ik._payload import OutFrame as OutFrame
from zmq_ik._payload import Payload as Payload
from zmq_ik._payload import decode_payload as decode_payload
from zmq_ik._payload import encode_payload as encode_payload
from zmq_ik._payload import frame_buffer as frame_buffer
from zmq_ik._payload import frame_bytes as frame_bytes
from zmq_ik._payload import frame_len as frame_len
from zmq_ik._payload import pack_header as pack_header
from zmq_ik._payload import unpack_header as unpack_header
from zmq_ik._sockets import TRANSPORTS as TRANSPORTS
from zmq_ik._sockets import check_endpoint as check_endpoint
from zmq_ik._sockets import endpoints_setting as endpoints_setting
from zmq_ik._sockets import new_routing_id as new_routing_id
from zmq_ik._sockets import recv_burst as recv_burst
from zmq_ik._sockets import recv_frames as recv_frames
from zmq_ik._sockets import send_frames as send_frames
from zmq_ik._sockets import set_link_heartbeats as set_link_heartbeats
from zmq_ik._sockets import set_worker_link_heartbeats as set_worker_link_heartbeats
from zmq_ik._sockets import split_endpoints as split_endpoints
from zmq_ik.errors import ErrorCode, ProtocolError

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
liveness window (`broker._jobs.BrokerSettings.rejoin_grace`)."""
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


_NAMES: dict[tuple[bytes, int, bool], str] = {}
"""Names (service, operation) already checked by `_text`: the same few arrive over and over."""


def _text(frame: Frame, what: str, max_bytes: int, ascii_only: bool = False) -> str:
    raw = frame_bytes(frame)
    key = (raw, max_bytes, ascii_only)
    text = _NAMES.get(key)
    if text is not None:
        return text
    text = check_text(raw, what, max_bytes, ascii_only)
    if len(_NAMES) >= 4096:  # made-up names cannot grow it without bound
        _NAMES.clear()
    _NAMES[key] = text
    return text


def check_text(raw: bytes, what: str, max_bytes: int, ascii_only: bool) -> str:
    """``raw`` as a name the protocol accepts (ids, robots, operations): 1..``max_bytes``
    bytes of printable UTF-8 (ASCII with ``ascii_only``); `ProtocolError` naming ``what``."""
    if not raw or len(raw) > max_bytes:
        raise ProtocolError(f"{what} must be 1..{max_bytes} bytes, got {len(raw)}", field=what)
    try:
        text = raw.decode("ascii" if ascii_only else "utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(
            f"{what} is not valid {'ascii' if ascii_only else 'utf-8'}", field=what
        ) from e
    if not text.isprintable():
        raise ProtocolError(f"{what} contains control characters", field=what)
    return text


def frames_nbytes(frames: Sequence[Frame]) -> int:
    """Total bytes of ``frames`` (what holding them costs)."""
    total = 0
    for f in frames:
        kind = type(f)
        if kind is _ZMQ_FRAME or kind is bytes:  # `frame_len`'s common cases, inlined
            total += len(f)
        elif kind is _NDARRAY:
            total += f.nbytes
        else:
            total += frame_len(f)
    return total


def check_size(frames: Sequence[Frame], limits: Limits = LIMITS) -> None:
    """Refuse a message over the frame count or total size limits (`too_large`). Receivers
    call it on what arrives; clients on what they are about to send, so that a message the
    broker would refuse (or drop the connection for) is refused once, before any send."""
    if len(frames) > limits.max_arrays + 8:
        raise ProtocolError(
            f"message has {len(frames)} frames, limit {limits.max_arrays + 8}", ErrorCode.TOO_LARGE
        )
    total = frames_nbytes(frames)
    if total > limits.max_message_bytes:
        raise ProtocolError(
            f"message is {total} bytes, limit {limits.max_message_bytes}", ErrorCode.TOO_LARGE
        )


def parse_command(frames: Sequence[Frame]) -> Command:
    """Check frames 0 and 1 (protocol and command) and return the command."""
    if len(frames) < 2:
        raise ProtocolError(f"too few frames ({len(frames)}): need protocol and command")
    proto = frame_bytes(frames[0])
    if proto != PROTOCOL:
        if proto.startswith(PROTOCOL_PREFIX):
            raise ProtocolError(
                f"peer speaks {proto[:16].decode('ascii', 'replace')}, this side speaks "
                f"{PROTOCOL.decode()}",
                ErrorCode.VERSION,
            )
        raise ProtocolError(f"frame 0 is not {PROTOCOL.decode()} (got {proto[:16]!r})")
    cmd = _COMMANDS.get(frame_bytes(frames[1]))
    if cmd is None:
        raise ProtocolError(f"unknown command {frame_bytes(frames[1])[:16]!r}", field="command")
    return cmd


def parse_message(frames: Sequence[Frame], limits: Limits = LIMITS) -> Message:
    """Parse a message's envelope (without the ROUTER identity frame)."""
    check_size(frames, limits)
    cmd = parse_command(frames)
    n = len(frames)
    if cmd is Command.REQUEST:
        if n < 7:
            raise ProtocolError(
                f"REQUEST needs at least 7 frames (protocol, command, request id, service, "
                f"operation, deadline, header), got {n}"
            )
        request_id = frame_bytes(frames[2])
        if not request_id or len(request_id) > limits.max_id_bytes:
            raise ProtocolError(
                f"request id must be 1..{limits.max_id_bytes} bytes", field="request_id"
            )
        service = _text(frames[3], "service", limits.max_name_bytes)
        operation = _text(frames[4], "operation", limits.max_name_bytes, ascii_only=True)
        deadline = frame_bytes(frames[5])
        if len(deadline) != _DEADLINE.size:
            raise ProtocolError("deadline must be a 4-byte unsigned integer", field="deadline")
        (timeout_ms,) = _DEADLINE.unpack(deadline)
        return Request(request_id, service, operation, timeout_ms, list(frames[6:]))
    if cmd in REPLY_COMMANDS:
        if n < 4:
            raise ProtocolError(f"{cmd.name} needs at least 4 frames, got {n}")
        request_id = frame_bytes(frames[2])
        if len(request_id) > limits.max_id_bytes:
            raise ProtocolError("request id too long", field="request_id")
        return Reply(cmd, request_id, list(frames[3:]))
    if cmd is Command.READY or cmd is Command.WARMING:
        if n != 3:
            raise ProtocolError(f"{cmd.name} needs exactly 3 frames, got {n}")
        info = unpack_header(frames[2], limits)
        # First: an error naming the field is the more useful.
        check_worker_header(info, limits, cmd.name)
        size = frame_len(frames[2])
        if size > limits.max_ready_bytes:
            raise ProtocolError(
                f"{cmd.name} header is {size} bytes, limit {limits.max_ready_bytes}",
                ErrorCode.TOO_LARGE,
                "header",
            )
        return Ready(info) if cmd is Command.READY else Warming(info)
    if cmd is Command.HEARTBEAT:
        if n == 2:
            return _HEARTBEAT
        if n != 3:
            raise ProtocolError(f"HEARTBEAT takes 2 or 3 frames, got {n}")
        return Heartbeat(_flags(frame_bytes(frames[2]), limits))
    if cmd is Command.DECLINE:
        if n != 3:
            raise ProtocolError(f"DECLINE needs exactly 3 frames, got {n}")
        job_id = frame_bytes(frames[2])
        if not job_id or len(job_id) > limits.max_id_bytes:
            raise ProtocolError(f"job id must be 1..{limits.max_id_bytes} bytes", field="job_id")
        return Decline(job_id)
    # DISCONNECT
    if n > 3:
        raise ProtocolError(f"DISCONNECT takes at most 3 frames, got {n}")
    reason = ""
    if n == 3:
        reason = frame_bytes(frames[2])[:256].decode("utf-8", "replace")
    return Disconnect(reason)


_HEARTBEAT = Heartbeat()
_FLAG_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_- ")
_FLAGS: dict[bytes, frozenset[str]] = {}
"""Flags frames already parsed: the same one or two arrive with every heartbeat."""


def _flags(raw: bytes, limits: Limits) -> frozenset[str]:
    """A HEARTBEAT's flags frame: lower-case ASCII words separated by spaces, bounded."""
    flags = _FLAGS.get(raw)
    if flags is not None:
        return flags
    if len(raw) > limits.max_flags_bytes or not _FLAG_CHARS.issuperset(raw):
        raise ProtocolError(
            f"HEARTBEAT flags must be at most {limits.max_flags_bytes} bytes of lower-case "
            "words separated by spaces",
            field="flags",
        )
    flags = frozenset(raw.decode("ascii").split())
    if len(_FLAGS) < 64:  # legitimate peers use a handful; made-up ones are parsed each time
        _FLAGS[raw] = flags
    return flags


def check_worker_header(info: dict[str, Any], limits: Limits, what: str = "READY") -> None:
    """Bound every field of a READY or WARMING header (``what``) that the broker keeps or
    shows (a rogue one must not degrade dispatch or make ``ping``/``status`` too large for
    everyone): one set of rules for both."""
    robots = info.get("robots")
    if not isinstance(robots, list) or not robots:
        raise ProtocolError(
            f"{what} header needs 'robots': a non-empty list of names", field="robots"
        )
    if len(robots) > limits.max_robots:
        raise ProtocolError(
            f"{what} claims {len(robots)} robots, limit {limits.max_robots}",
            ErrorCode.TOO_LARGE,
            "robots",
        )
    for r in robots:
        if not isinstance(r, str):
            raise ProtocolError(f"{what} 'robots' must be a list of names", field="robots")
        check_text(r.encode(), "robots", limits.max_name_bytes, ascii_only=False)
        if r == BROKER_SERVICE:
            raise ProtocolError(f"{BROKER_SERVICE!r} is reserved", field="robots")
    for key in ("device", "host"):
        value = info.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ProtocolError(f"{what} {key!r} must be a string", field=key)
        if len(value) > limits.max_info_chars:
            raise ProtocolError(
                f"{what} {key!r} is {len(value)} characters, limit {limits.max_info_chars}",
                ErrorCode.TOO_LARGE,
                key,
            )
    pid = info.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise ProtocolError(f"{what} 'pid' must be an integer", field="pid")
    progress = info.get("progress")
    if progress is not None:
        check_progress(progress, what)
    features = info.get("features")
    if features is not None and not (
        isinstance(features, list)
        and len(features) <= limits.max_features
        and all(isinstance(f, str) and 0 < len(f) <= limits.max_flags_bytes for f in features)
    ):
        raise ProtocolError(
            f"{what} 'features' must be a list of at most {limits.max_features} names of at "
            f"most {limits.max_flags_bytes} characters",
            field="features",
        )
    versions = info.get("versions")
    if versions is None:
        return
    if not isinstance(versions, dict) or len(versions) > limits.max_versions:
        raise ProtocolError(
            f"{what} 'versions' must be a map of at most {limits.max_versions} entries",
            ErrorCode.TOO_LARGE if isinstance(versions, dict) else ErrorCode.PROTOCOL,
            "versions",
        )
    n = limits.max_version_chars
    if not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= n and len(v) <= n
        for k, v in versions.items()
    ):
        raise ProtocolError(
            f"{what} 'versions' entries must be strings of at most {n} characters",
            field="versions",
        )


MAX_PROGRESS = 2**31 - 1
"""Largest ``done``/``total`` of a WARMING ``progress`` (and ``elapsed_s``, in seconds)."""


def check_progress(progress: Any, what: str = "WARMING") -> None:
    """A warm-up's ``progress``: a map of at most ``done`` and ``total`` (integers,
    0 ≤ done ≤ total ≤ `MAX_PROGRESS`) and ``elapsed_s`` (a finite number of seconds, 0 ≤ it
    ≤ `MAX_PROGRESS`); nothing else."""
    field = "progress"
    if not isinstance(progress, dict) or not set(progress) <= {"done", "total", "elapsed_s"}:
        raise ProtocolError(
            f"{what} 'progress' must be a map of 'done', 'total' and 'elapsed_s'", field=field
        )
    counts = [progress.get(k, 0) for k in ("done", "total")]
    if (
        not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_PROGRESS
            for c in counts
        )
        or counts[0] > counts[1]
    ):
        raise ProtocolError(
            f"{what} progress 'done' and 'total' must be integers, 0 <= done <= total <= "
            f"{MAX_PROGRESS}",
            field=field,
        )
    elapsed = progress.get("elapsed_s", 0.0)
    if not (
        isinstance(elapsed, int | float)
        and not isinstance(elapsed, bool)
        and 0 <= elapsed <= MAX_PROGRESS  # NaN fails both
    ):
        raise ProtocolError(
            f"{what} progress 'elapsed_s' must be a number of seconds in 0..{MAX_PROGRESS}",
            field=field,
        )


# --------------------------------------------------------------------------- builders


def request_frames(
    request_id: bytes,
    service: str,
    operation: str,
    timeout_ms: int,
    payload: Sequence[OutFrame | Frame],
) -> list[Any]:
    """Frames of a REQUEST (the same layout client → broker and broker → worker)."""
    timeout_ms = max(0, min(int(timeout_ms), MAX_TIMEOUT_MS))
    return [
        PROTOCOL,
        Command.REQUEST.value,
        request_id,
        service.encode(),
        operation.encode(),
        _DEADLINE.pack(timeout_ms),
        *payload,
    ]


def reply_frames(
    command: Command, request_id: bytes, payload: Sequence[OutFrame | Frame]
) -> list[Any]:
    """Frames of a FINAL, PARTIAL or ERROR reply."""
    return [PROTOCOL, command.value, request_id, *payload]


def error_payload(code: ErrorCode | str, message: str, field: str | None = None) -> list[OutFrame]:
    """The payload of an ERROR reply: a header with code, message and field."""
    code_str = code.value if isinstance(code, ErrorCode) else str(code)
    return [pack_header({"code": code_str, "message": message[:4096], "field": field})]


def error_frames(
    request_id: bytes, code: ErrorCode | str, message: str, field: str | None = None
) -> list[Any]:
    """Frames of an ERROR reply."""
    return reply_frames(Command.ERROR, request_id, error_payload(code, message, field))


def decode_error(payload: Sequence[Frame]) -> tuple[str, str, str | None]:
    """(code, message, field) of an ERROR reply's payload; malformed ones become protocol errors."""
    try:
        header = decode_payload(payload).header
    except ProtocolError as e:
        return ErrorCode.PROTOCOL.value, f"unreadable ERROR reply: {e.message}", None
    code = header.get("code")
    message = header.get("message")
    fld = header.get("field")
    return (
        code if isinstance(code, str) else ErrorCode.INTERNAL.value,
        message if isinstance(message, str) else "no message",
        fld if isinstance(fld, str) else None,
    )


def ready_frames(info: Mapping[str, Any]) -> list[Any]:
    """Frames of a READY: ``info`` must contain ``robots``; may contain anything small."""
    return [PROTOCOL, Command.READY.value, pack_header(info)]


def warming_frames(info: Mapping[str, Any]) -> list[Any]:
    """Frames of a WARMING: ``info`` as READY's (``robots`` required) plus ``progress``."""
    return [PROTOCOL, Command.WARMING.value, pack_header(info)]


def heartbeat_frames(*flags: str) -> list[bytes]:
    """Frames of a HEARTBEAT; ``flags`` only towards a peer that showed `FEATURE_DECLINE`."""
    frames = [PROTOCOL, Command.HEARTBEAT.value]
    if flags:
        frames.append(" ".join(flags).encode("ascii"))
    return frames


def cancel_frames(request_id: bytes, ids: Sequence[bytes], timeout_ms: int = 1000) -> list[Any]:
    """Frames of a `CANCEL` request for ``ids`` (at most `MAX_CANCEL_IDS`; the caller cuts)."""
    return request_frames(
        request_id, BROKER_SERVICE, CANCEL, timeout_ms, encode_payload({"ids": list(ids)})
    )


def cancel_ids(header: Mapping[str, Any], limits: Limits = LIMITS) -> list[bytes]:
    """A `CANCEL` header's ``ids``, checked: a list of 1..`MAX_CANCEL_IDS` request ids (each
    1..``limits.max_id_bytes`` bytes); `ProtocolError` (`bad_request`/`too_large`) naming it."""
    ids = header.get("ids")
    if not isinstance(ids, list) or not ids:
        raise ProtocolError(
            "cancel needs 'ids': a non-empty list of request ids", ErrorCode.BAD_REQUEST, "ids"
        )
    if len(ids) > MAX_CANCEL_IDS:
        raise ProtocolError(
            f"cancel names {len(ids)} ids, limit {MAX_CANCEL_IDS}", ErrorCode.TOO_LARGE, "ids"
        )
    for rid in ids:
        if not isinstance(rid, bytes) or not 0 < len(rid) <= limits.max_id_bytes:
            raise ProtocolError(
                f"cancel ids must be 1..{limits.max_id_bytes} bytes each (msgpack bin), "
                f"got {type(rid).__name__} {rid!r:.40}",
                ErrorCode.BAD_REQUEST,
                "ids",
            )
    return ids


def decline_frames(job_id: bytes) -> list[bytes]:
    """Frames of a DECLINE (only to a broker that showed `FEATURE_DECLINE`)."""
    return [PROTOCOL, Command.DECLINE.value, job_id]


def disconnect_frames(reason: str = "") -> list[bytes]:
    """Frames of a DISCONNECT."""
    frames = [PROTOCOL, Command.DISCONNECT.value]
    if reason:
        frames.append(reason.encode()[:256])
    return frames
