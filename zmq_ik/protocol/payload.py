"""ZIK/1 payloads: a msgpack header plus raw array frames it describes (docs/protocol.md).

Clients and workers encode and decode payloads; the broker forwards them untouched. Arrays
are built with ``np.frombuffer`` on the received frame, so they are read without a copy.
Every malformed input raises `ProtocolError`; import these names from `zmq_ik.protocol`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np
import zmq

from zmq_ik.errors import ErrorCode, ProtocolError


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

_DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}
"""Each carried dtype string's dtype (one lookup instead of a `np.dtype` per array)."""
_DTYPE_STRS = {d: s for s, d in _DTYPES.items()}
"""Each carried dtype's string, for the arrays a payload sends (big-endian ones miss)."""
_MAX_DIM = 2**40

Frame = Any
"""A received frame: ``bytes``, ``memoryview`` or ``zmq.Frame`` (anything with a buffer)."""
OutFrame = bytes | memoryview | np.ndarray
"""A frame to send; numpy arrays are sent from their own memory (C-contiguous)."""


def frame_buffer(frame: Frame) -> memoryview:
    """The frame's bytes as a memoryview, without copying (zmq.Frame exposes ``.buffer``)."""
    buf = getattr(frame, "buffer", None)
    if buf is None:
        buf = memoryview(frame)
    return buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf


def frame_bytes(frame: Frame) -> bytes:
    kind = type(frame)
    if kind is zmq.Frame:
        return frame.bytes  # type: ignore[no-any-return]
    if kind is bytes:
        return frame  # type: ignore[no-any-return]
    b = getattr(frame, "bytes", None)
    return b if isinstance(b, bytes) else bytes(frame_buffer(frame))


def frame_len(frame: Frame) -> int:
    kind = type(frame)
    if kind is zmq.Frame or kind is bytes:  # the common cases: len() is the byte count
        return len(frame)
    if kind is np.ndarray:  # an array frame about to be sent (`encode_payload`)
        return int(frame.nbytes)
    return frame_buffer(frame).nbytes


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
    buf = frame_buffer(frame)
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
        arr = value if type(value) is np.ndarray else np.asarray(value)
        dtype_str = _DTYPE_STRS.get(arr.dtype)
        if dtype_str is None:
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            dtype_str = arr.dtype.str
            if dtype_str not in ALLOWED_DTYPES:
                raise ProtocolError(
                    f"array {name!r} has dtype {arr.dtype}, which ZIK/1 does not carry",
                    ErrorCode.BAD_REQUEST,
                    name,
                )
        if not arr.flags.c_contiguous:  # np.ascontiguousarray would turn 0-d into 1-d
            arr = arr.copy(order="C")
        specs.append([name, dtype_str, list(arr.shape)])
        frames.append(arr.reshape(-1).view(np.uint8))  # a flat byte view: no copy
    if len(specs) > limits.max_arrays:
        raise ProtocolError(
            f"{len(specs)} arrays, limit {limits.max_arrays}", ErrorCode.TOO_LARGE, "arrays"
        )
    if specs:
        head["arrays"] = specs
    return [pack_header(head, limits), *frames]


def _parse_spec(i: int, spec: Any) -> tuple[str, np.dtype[Any], tuple[int, ...]]:
    if type(spec) is list and len(spec) == 3:  # the usual case, checked without genexprs
        name, dtype_str, shape = spec
        dtype = _DTYPES.get(dtype_str) if type(dtype_str) is str else None
        if type(name) is str and name and dtype is not None and type(shape) is list:
            if len(shape) <= 32:
                for d in shape:
                    if type(d) is not int or not 0 <= d < _MAX_DIM:
                        break
                else:
                    return name, dtype, tuple(shape)
    where = f"arrays[{i}]"
    if not (isinstance(spec, list | tuple) and len(spec) == 3):
        raise ProtocolError(f"{where} must be [name, dtype, shape]", field=where)
    name, dtype_str, shape = spec
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where} name must be a non-empty string", field=where)
    if not isinstance(dtype_str, str) or dtype_str not in ALLOWED_DTYPES:
        raise ProtocolError(f"array {name!r} has unsupported dtype {dtype_str!r}", field=name)
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < _MAX_DIM for d in shape
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
        buf = frame.buffer if type(frame) is zmq.Frame else frame_buffer(frame)
        if buf.nbytes != expected:
            raise ProtocolError(
                f"array {name!r}: header says {dtype.str}{list(shape)} = {expected} bytes, "
                f"frame has {buf.nbytes}",
                field=name,
            )
        arrays[name] = np.ndarray(shape, dtype, buf.toreadonly())  # a read-only view
    return Payload(header, arrays)
