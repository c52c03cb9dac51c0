"""Reading what a peer sends: `parse_message` turns frames into a `Message`, bounding every
field (names, flags, worker headers, progress) so that nothing malformed gets past it;
every refusal is a `ProtocolError` with a specific `ErrorCode`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zmq_ik.errors import ErrorCode, ProtocolError
from zmq_ik.protocol.messages import (
    _COMMANDS,
    _DEADLINE,
    _NDARRAY,
    _ZMQ_FRAME,
    BROKER_SERVICE,
    PROTOCOL,
    PROTOCOL_PREFIX,
    REPLY_COMMANDS,
    Command,
    Decline,
    Disconnect,
    Heartbeat,
    Message,
    Ready,
    Reply,
    Request,
    Warming,
)
from zmq_ik.protocol.payload import (
    LIMITS,
    Frame,
    Limits,
    frame_bytes,
    frame_len,
    unpack_header,
)

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
