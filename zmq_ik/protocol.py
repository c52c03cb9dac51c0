"""ZIK/1 codec: the one place that knows how messages are framed (spec: docs/protocol.md).

Two layers, so that each party decodes only what it needs:

* the *envelope* (`parse_message`): protocol, command, ids, service, operation, deadline.
  The broker routes on this alone and forwards the payload frames untouched;
* the *payload* (`encode_payload` / `decode_payload`): a msgpack header plus raw array
  frames described by the header. Clients and workers decode it; arrays are built with
  ``np.frombuffer`` on the received frame, so they are read without a copy.

Every malformed input raises `ProtocolError` with a specific `ErrorCode`; nothing here
raises anything else on bad network input.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np
import zmq

from zmq_ik.errors import ErrorCode, InputError, ProtocolError

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

FEATURE_DECLINE = "decline"
"""Multi-broker extension of ZIK/1 (docs/protocol.md 4.10). A worker lists it in READY's
``features``; a broker that implements it flags its HEARTBEATs to that worker with it. Only
then may the worker send that broker DECLINE and HEARTBEAT state flags (`FLAG_IDLE`,
`FLAG_BUSY`): peers that never showed the feature never see either."""
FLAG_IDLE = "idle"
"""HEARTBEAT flag, worker → broker: free for this broker's jobs again."""
FLAG_BUSY = "busy"
"""HEARTBEAT flag, worker → broker: running a job (possibly another broker's)."""


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


_COMMANDS = {c.value: c for c in Command}
REPLY_COMMANDS = frozenset({Command.FINAL, Command.PARTIAL, Command.ERROR})


@dataclass(frozen=True)
class Limits:
    """Hard limits every peer enforces on what it receives (docs/protocol.md, Limits)."""

    max_message_bytes: int = 256 * 1024 * 1024
    """Total bytes of all frames of one message; also the socket's MAXMSGSIZE per frame."""
    max_arrays: int = 64
    """Array frames per message."""
    max_header_bytes: int = 1024 * 1024
    """Bytes of the msgpack header frame (small arrays may ride inside it)."""
    max_id_bytes: int = 64
    """Bytes of a request id."""
    max_name_bytes: int = 128
    """Bytes of a service (robot) or operation name."""
    max_ready_bytes: int = 16 * 1024
    """Bytes of a READY header: the broker keeps every worker's registration and shows it."""
    max_robots: int = 64
    """Robot names one READY may claim (each within `max_name_bytes`)."""
    max_info_chars: int = 256
    """Characters of READY's ``device`` and ``host``."""
    max_versions: int = 16
    """Entries of READY's ``versions`` map."""
    max_version_chars: int = 64
    """Characters of each ``versions`` key and value."""
    max_features: int = 16
    """Entries of READY's ``features`` list (each a word of at most `max_flags_bytes`)."""
    max_flags_bytes: int = 64
    """Bytes of a HEARTBEAT's flags frame."""


LIMITS = Limits()

# Dtypes that may travel as array frames: plain numbers and booleans, little-endian or
# single-byte. Object, string, void (structured) and big-endian dtypes are refused.
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
)

Frame = Any
"""A received frame: ``bytes``, ``memoryview`` or ``zmq.Frame`` (anything with a buffer)."""
OutFrame = bytes | memoryview | np.ndarray
"""A frame to send; numpy arrays are sent from their own memory (C-contiguous)."""

_DEADLINE = struct.Struct("!I")
MAX_TIMEOUT_MS = 2**32 - 1


def _buffer(frame: Frame) -> memoryview:
    """The frame's bytes as a memoryview, without copying (zmq.Frame exposes ``.buffer``)."""
    buf = getattr(frame, "buffer", None)
    if buf is None:
        buf = memoryview(frame)
    return buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf


def _bytes(frame: Frame) -> bytes:
    kind = type(frame)
    if kind is zmq.Frame:
        return frame.bytes  # type: ignore[no-any-return]
    if kind is bytes:
        return frame  # type: ignore[no-any-return]
    b = getattr(frame, "bytes", None)
    return b if isinstance(b, bytes) else bytes(_buffer(frame))


def _frame_len(frame: Frame) -> int:
    kind = type(frame)
    if kind is zmq.Frame or kind is bytes:  # the common cases: len() is the byte count
        return len(frame)
    if kind is np.ndarray:  # an array frame about to be sent (`encode_payload`)
        return int(frame.nbytes)
    return _buffer(frame).nbytes


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True)
class Payload:
    """A decoded header plus the arrays its ``arrays`` entry describes."""

    header: dict[str, Any]
    """The msgpack header, without the reserved ``arrays`` key."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Named arrays; read-only views on the received frames (no copy)."""


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind in "OV":
            raise TypeError(f"refusing to encode {obj.dtype} arrays")
        return msgpack_numpy.encode(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a ZIK/1 header")


def _msgpack_object_hook(obj: dict[Any, Any]) -> Any:
    """Decode msgpack-numpy arrays, refusing object/void kinds (msgpack-numpy pickles those)."""
    if b"nd" in obj:
        kind = obj.get(b"kind", b"")
        if kind in (b"O", b"V") or not isinstance(obj.get(b"type"), str | bytes):
            raise ProtocolError("header holds an object or structured array", ErrorCode.PROTOCOL)
        try:
            arr = msgpack_numpy.decode(obj)
        except Exception as e:
            raise ProtocolError(f"header holds a malformed array: {e}") from e
        if isinstance(arr, np.ndarray) and arr.dtype.kind in "OV":
            raise ProtocolError("header holds an object or structured array")
        return arr
    return obj


def pack_header(header: Mapping[str, Any], limits: Limits = LIMITS) -> bytes:
    """msgpack-encode a header (small numpy arrays allowed via msgpack-numpy)."""
    data: bytes = msgpack.packb(dict(header), default=_msgpack_default, use_bin_type=True)
    if len(data) > limits.max_header_bytes:
        raise ProtocolError(
            f"header is {len(data)} bytes, limit {limits.max_header_bytes}; "
            "send large arrays as array frames",
            ErrorCode.TOO_LARGE,
            "header",
        )
    return data


def unpack_header(frame: Frame, limits: Limits = LIMITS) -> dict[str, Any]:
    """Decode a header frame; anything but a msgpack map with string keys is refused."""
    buf = _buffer(frame)
    if buf.nbytes > limits.max_header_bytes:
        raise ProtocolError(
            f"header is {buf.nbytes} bytes, limit {limits.max_header_bytes}",
            ErrorCode.TOO_LARGE,
            "header",
        )
    try:
        header = msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=False,
            object_hook=_msgpack_object_hook,
        )
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises a zoo of exception types on bad input
        raise ProtocolError(f"header is not valid msgpack: {e}", field="header") from e
    if not isinstance(header, dict) or not all(isinstance(k, str) for k in header):
        raise ProtocolError("header must be a msgpack map with string keys", field="header")
    return header


def encode_payload(
    header: Mapping[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    limits: Limits = LIMITS,
) -> list[OutFrame]:
    """Header frame followed by one raw C-order frame per array.

    Arrays are made C-contiguous (copied only if they were not) and sent from their own
    memory; their dtype and shape go into the header's reserved ``arrays`` entry.
    """
    head = dict(header or {})
    if "arrays" in head:
        raise ProtocolError("'arrays' is a reserved header key", ErrorCode.BAD_REQUEST, "header")
    specs: list[list[Any]] = []
    frames: list[OutFrame] = []
    for name, value in (arrays or {}).items():
        arr = np.asarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"array {name!r} has dtype {arr.dtype}, which ZIK/1 does not carry",
                ErrorCode.BAD_REQUEST,
                name,
            )
        if not arr.flags.c_contiguous:  # np.ascontiguousarray would turn 0-d into 1-d
            arr = arr.copy(order="C")
        specs.append([name, arr.dtype.str, list(arr.shape)])
        frames.append(arr.reshape(-1).view(np.uint8))  # a flat byte view: no copy
    if len(specs) > limits.max_arrays:
        raise ProtocolError(
            f"{len(specs)} arrays, limit {limits.max_arrays}", ErrorCode.TOO_LARGE, "arrays"
        )
    if specs:
        head["arrays"] = specs
    return [pack_header(head, limits), *frames]


def _parse_spec(i: int, spec: Any) -> tuple[str, np.dtype[Any], tuple[int, ...]]:
    where = f"arrays[{i}]"
    if not (isinstance(spec, list | tuple) and len(spec) == 3):
        raise ProtocolError(f"{where} must be [name, dtype, shape]", field=where)
    name, dtype_str, shape = spec
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where} name must be a non-empty string", field=where)
    if not isinstance(dtype_str, str) or dtype_str not in ALLOWED_DTYPES:
        raise ProtocolError(f"array {name!r} has unsupported dtype {dtype_str!r}", field=name)
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
    ):
        raise ProtocolError(f"array {name!r} has an invalid shape {shape!r}", field=name)
    if len(shape) > 32:
        raise ProtocolError(f"array {name!r} has {len(shape)} dimensions, limit 32", field=name)
    return name, np.dtype(dtype_str), tuple(shape)


def decode_payload(frames: Sequence[Frame], limits: Limits = LIMITS) -> Payload:
    """Decode ``[header, *array_frames]``; arrays are read-only views on the frames."""
    if not frames:
        raise ProtocolError("missing header frame", field="header")
    header = unpack_header(frames[0], limits)
    specs = header.pop("arrays", [])
    if not isinstance(specs, list):
        raise ProtocolError("header 'arrays' must be a list", field="arrays")
    array_frames = frames[1:]
    if len(specs) > limits.max_arrays:
        raise ProtocolError(
            f"{len(specs)} arrays, limit {limits.max_arrays}", ErrorCode.TOO_LARGE, "arrays"
        )
    if len(specs) != len(array_frames):
        raise ProtocolError(
            f"header describes {len(specs)} arrays but {len(array_frames)} array frames came",
            field="arrays",
        )
    arrays: dict[str, np.ndarray] = {}
    for i, (spec, frame) in enumerate(zip(specs, array_frames, strict=True)):
        name, dtype, shape = _parse_spec(i, spec)
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice", field=name)
        count = 1
        for d in shape:
            count *= d
        expected = count * dtype.itemsize
        buf = _buffer(frame)
        if buf.nbytes != expected:
            raise ProtocolError(
                f"array {name!r}: header says {dtype.str}{list(shape)} = {expected} bytes, "
                f"frame has {buf.nbytes}",
                field=name,
            )
        arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
        arr.flags.writeable = False
        arrays[name] = arr
    return Payload(header, arrays)


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


Message = Request | Reply | Ready | Heartbeat | Disconnect | Decline


_NAMES: dict[tuple[bytes, int, bool], str] = {}
"""Names (service, operation) already checked by `_text`: the same few arrive over and over."""


def _text(frame: Frame, what: str, max_bytes: int, ascii_only: bool = False) -> str:
    raw = _bytes(frame)
    key = (raw, max_bytes, ascii_only)
    text = _NAMES.get(key)
    if text is not None:
        return text
    text = _check_text(raw, what, max_bytes, ascii_only)
    if len(_NAMES) >= 4096:  # made-up names cannot grow it without bound
        _NAMES.clear()
    _NAMES[key] = text
    return text


def _check_text(raw: bytes, what: str, max_bytes: int, ascii_only: bool) -> str:
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
        total += _frame_len(f)
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
    proto = _bytes(frames[0])
    if proto != PROTOCOL:
        if proto.startswith(PROTOCOL_PREFIX):
            raise ProtocolError(
                f"peer speaks {proto[:16].decode('ascii', 'replace')}, this side speaks "
                f"{PROTOCOL.decode()}",
                ErrorCode.VERSION,
            )
        raise ProtocolError(f"frame 0 is not {PROTOCOL.decode()} (got {proto[:16]!r})")
    cmd = _COMMANDS.get(_bytes(frames[1]))
    if cmd is None:
        raise ProtocolError(f"unknown command {_bytes(frames[1])[:16]!r}", field="command")
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
        request_id = _bytes(frames[2])
        if not request_id or len(request_id) > limits.max_id_bytes:
            raise ProtocolError(
                f"request id must be 1..{limits.max_id_bytes} bytes", field="request_id"
            )
        service = _text(frames[3], "service", limits.max_name_bytes)
        operation = _text(frames[4], "operation", limits.max_name_bytes, ascii_only=True)
        deadline = _bytes(frames[5])
        if len(deadline) != _DEADLINE.size:
            raise ProtocolError("deadline must be a 4-byte unsigned integer", field="deadline")
        (timeout_ms,) = _DEADLINE.unpack(deadline)
        return Request(request_id, service, operation, timeout_ms, list(frames[6:]))
    if cmd in REPLY_COMMANDS:
        if n < 4:
            raise ProtocolError(f"{cmd.name} needs at least 4 frames, got {n}")
        request_id = _bytes(frames[2])
        if len(request_id) > limits.max_id_bytes:
            raise ProtocolError("request id too long", field="request_id")
        return Reply(cmd, request_id, list(frames[3:]))
    if cmd is Command.READY:
        if n != 3:
            raise ProtocolError(f"READY needs exactly 3 frames, got {n}")
        info = unpack_header(frames[2], limits)
        _check_ready(info, limits)  # first: an error naming the field is the more useful
        size = _frame_len(frames[2])
        if size > limits.max_ready_bytes:
            raise ProtocolError(
                f"READY header is {size} bytes, limit {limits.max_ready_bytes}",
                ErrorCode.TOO_LARGE,
                "header",
            )
        return Ready(info)
    if cmd is Command.HEARTBEAT:
        if n == 2:
            return _HEARTBEAT
        if n != 3:
            raise ProtocolError(f"HEARTBEAT takes 2 or 3 frames, got {n}")
        return Heartbeat(_flags(_bytes(frames[2]), limits))
    if cmd is Command.DECLINE:
        if n != 3:
            raise ProtocolError(f"DECLINE needs exactly 3 frames, got {n}")
        job_id = _bytes(frames[2])
        if not job_id or len(job_id) > limits.max_id_bytes:
            raise ProtocolError(f"job id must be 1..{limits.max_id_bytes} bytes", field="job_id")
        return Decline(job_id)
    # DISCONNECT
    if n > 3:
        raise ProtocolError(f"DISCONNECT takes at most 3 frames, got {n}")
    reason = ""
    if n == 3:
        reason = _bytes(frames[2])[:256].decode("utf-8", "replace")
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


def _check_ready(info: dict[str, Any], limits: Limits) -> None:
    """Bound every READY field the broker keeps or shows (a rogue READY must not degrade
    dispatch or make ``ping``/``status`` too large for everyone)."""
    robots = info.get("robots")
    if not isinstance(robots, list) or not robots:
        raise ProtocolError(
            "READY header needs 'robots': a non-empty list of names", field="robots"
        )
    if len(robots) > limits.max_robots:
        raise ProtocolError(
            f"READY claims {len(robots)} robots, limit {limits.max_robots}",
            ErrorCode.TOO_LARGE,
            "robots",
        )
    for r in robots:
        if not isinstance(r, str):
            raise ProtocolError("READY 'robots' must be a list of names", field="robots")
        _check_text(r.encode(), "robots", limits.max_name_bytes, ascii_only=False)
        if r == BROKER_SERVICE:
            raise ProtocolError(f"{BROKER_SERVICE!r} is reserved", field="robots")
    for key in ("device", "host"):
        value = info.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ProtocolError(f"READY {key!r} must be a string", field=key)
        if len(value) > limits.max_info_chars:
            raise ProtocolError(
                f"READY {key!r} is {len(value)} characters, limit {limits.max_info_chars}",
                ErrorCode.TOO_LARGE,
                key,
            )
    pid = info.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise ProtocolError("READY 'pid' must be an integer", field="pid")
    features = info.get("features")
    if features is not None and not (
        isinstance(features, list)
        and len(features) <= limits.max_features
        and all(isinstance(f, str) and 0 < len(f) <= limits.max_flags_bytes for f in features)
    ):
        raise ProtocolError(
            f"READY 'features' must be a list of at most {limits.max_features} names of at "
            f"most {limits.max_flags_bytes} characters",
            field="features",
        )
    versions = info.get("versions")
    if versions is None:
        return
    if not isinstance(versions, dict) or len(versions) > limits.max_versions:
        raise ProtocolError(
            f"READY 'versions' must be a map of at most {limits.max_versions} entries",
            ErrorCode.TOO_LARGE if isinstance(versions, dict) else ErrorCode.PROTOCOL,
            "versions",
        )
    n = limits.max_version_chars
    if not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= n and len(v) <= n
        for k, v in versions.items()
    ):
        raise ProtocolError(
            f"READY 'versions' entries must be strings of at most {n} characters",
            field="versions",
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


def heartbeat_frames(*flags: str) -> list[bytes]:
    """Frames of a HEARTBEAT; ``flags`` only towards a peer that showed `FEATURE_DECLINE`."""
    frames = [PROTOCOL, Command.HEARTBEAT.value]
    if flags:
        frames.append(" ".join(flags).encode("ascii"))
    return frames


def decline_frames(job_id: bytes) -> list[bytes]:
    """Frames of a DECLINE (only to a broker that showed `FEATURE_DECLINE`)."""
    return [PROTOCOL, Command.DECLINE.value, job_id]


def disconnect_frames(reason: str = "") -> list[bytes]:
    """Frames of a DISCONNECT."""
    frames = [PROTOCOL, Command.DISCONNECT.value]
    if reason:
        frames.append(reason.encode()[:256])
    return frames


# --------------------------------------------------------------------------- sockets


def split_endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """Broker endpoints from one string with commas (``"tcp://a:5555,tcp://b:5555"``, as in
    ``ZMQ_IK_ENDPOINT``) or a sequence of them (each may hold commas too, as a repeated
    ``--connect`` does): stripped, duplicates dropped, order kept. None at all is an
    `InputError`."""
    parts = [value] if isinstance(value, str) else list(value)
    endpoints: dict[str, None] = {}
    for part in parts:
        if not isinstance(part, str):
            raise InputError(f"an endpoint must be a string, got {part!r:.60}", "endpoint")
        for e in part.split(","):
            if e.strip():
                endpoints[e.strip()] = None
    if not endpoints:
        raise InputError(
            f"no broker endpoint given in {value!r:.80}: use tcp://host:port", "endpoint"
        )
    return tuple(endpoints)


def endpoints_setting(value: str | Iterable[str], name: str) -> tuple[str, ...]:
    """`split_endpoints` for a settings field: its `InputError` names the field ``name``."""
    try:
        return split_endpoints(value)
    except InputError as e:
        raise InputError(e.message, name) from e


def new_routing_id() -> bytes:
    """A fresh random ZeroMQ routing id for a client or worker socket.

    Our peers name themselves so that the broker's ROUTER never has to invent an id for
    them: ids libzmq invents are ``0x00`` + a 32-bit counter, and a peer that claims the
    counter's next value makes libzmq abort (docs/security.md). The first byte is never 0
    (ids starting with 0 are reserved for libzmq), and 8 random bytes make a collision
    with another peer negligible.
    """
    return bytes([1 + os.urandom(1)[0] % 255]) + os.urandom(7)


_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags, copy=False)``, several µs a message cheaper.

    pyzmq's `send_multipart` ORs the `zmq.Flag` enum into every frame's flags, and each
    enum operation costs about a microsecond; this loop uses plain ints. As with
    `send_multipart`, frames at or above pyzmq's copy threshold (received `zmq.Frame`s,
    large arrays) are sent from their own memory, never copied; smaller ones are copied.
    Raises like `send_multipart` (``zmq.Again``, ``EHOSTUNREACH``...) on the first frame.
    """
    flags = int(flags)
    more = flags | _SNDMORE
    send = sock.send
    last = len(frames) - 1
    for i in range(last):
        send(frames[i], more, copy=False)
    send(frames[last], flags, copy=False)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """``sock.recv_multipart(flags, copy=False)``, about twice as fast for small messages.

    Reads `zmq.Frame.more` instead of a ``getsockopt(RCVMORE)`` per frame. Frames are not
    copied. With ``zmq.NOBLOCK`` only the first frame can raise ``zmq.Again``: a multipart
    message is delivered whole.
    """
    recv = sock.recv
    flags = int(flags)
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame)
    return frames
