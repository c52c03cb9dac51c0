"""Writing messages: the frames of each command (request, reply, error, ready, warming,
heartbeat, cancel, decline, disconnect), as `parse` reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zmq_ik.errors import ErrorCode, ProtocolError
from zmq_ik.protocol.messages import (
    _DEADLINE,
    BROKER_SERVICE,
    CANCEL,
    MAX_CANCEL_IDS,
    MAX_TIMEOUT_MS,
    PROTOCOL,
    Command,
)
from zmq_ik.protocol.payload import (
    LIMITS,
    Frame,
    Limits,
    OutFrame,
    decode_payload,
    encode_payload,
    pack_header,
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
