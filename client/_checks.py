"""The client's argument checks and request framing, shared by every client and the core.

Each check refuses a bad argument at once with an `InputError` naming it (endpoints,
timeouts, retries, counts); `request_message` refuses a request over the protocol's limits
before anything is sent.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from zmq_ik.errors import ErrorCode, InputError, ProtocolError, remote_error
from zmq_ik.protocol import (
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    MAX_TIMEOUT_MS,
    TRANSPORTS,
    check_endpoint,
    check_size,
    encode_payload,
    request_frames,
    split_endpoints,
)

MIN_TIMEOUT = 0.001
"""Shortest request timeout (s): deadlines travel in whole milliseconds."""
MAX_TIMEOUT = MAX_TIMEOUT_MS / 1000
"""Longest request timeout (s), about 49.7 days: the most a deadline frame can carry."""


def default_endpoint() -> str:
    """``$ZMQ_IK_ENDPOINT`` if set and not empty (read now, not at import), else the default."""
    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


def check_timeout(value: object, name: str = "timeout") -> float:
    """A request timeout in seconds, refused at once unless finite and in [MIN_TIMEOUT,
    MAX_TIMEOUT]: past the wire's range it overflowed deep in the send path, and a negative
    one was 'sent' `retries + 1` times, each attempt timing out at once."""
    if type(value) is float or type(value) is int:  # the usual case, without ABC checks
        seconds = float(value)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        seconds = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:  # NaN fails this too
        raise InputError(
            f"{name} must be a finite number of seconds from {MIN_TIMEOUT:g} to "
            f"{MAX_TIMEOUT:.3f}, got {value!r:.40}",
            name,
        )
    return seconds


def check_endpoints(value: object) -> tuple[str, ...]:
    """One broker endpoint or several: a sequence, or one string with commas (as
    ``ZMQ_IK_ENDPOINT`` may hold), each checked by `check_endpoint`."""
    if not isinstance(value, str) and not (
        isinstance(value, Sequence) and all(isinstance(v, str) for v in value)
    ):
        raise InputError(
            f"endpoint must be a string like tcp://host:port or a list of them, got {value!r:.60}",
            "endpoint",
        )
    return tuple(check_endpoint(e) for e in split_endpoints(value))


def check_retries(value: object) -> int:
    """The number of re-sends after the first attempt: an integer >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InputError(f"retries must be an integer >= 0, got {value!r:.40}", "retries")
    return int(value)


def check_client(
    endpoint: object, timeout: object, retries: object
) -> tuple[tuple[str, ...], float, int]:
    """A client's ``endpoint`` (None: `default_endpoint`), ``timeout`` and ``retries``,
    checked: what `IKClient` and `AsyncIKClient` both take."""
    endpoints = check_endpoints(default_endpoint() if endpoint is None else endpoint)
    return endpoints, check_timeout(timeout), check_retries(retries)


def call_timeout(timeout: object, default: float) -> float:
    """One call's ``timeout``: the client's ``default`` when None, else checked."""
    return default if timeout is None else check_timeout(timeout)


def check_count(value: object, name: str) -> int:
    """A positive count (``max_in_flight``, ``chunk_pairs``): an integer >= 1, not a bool.
    ``max_in_flight=0`` used to hang a batch forever, and ``chunk_pairs=0`` was taken as 1."""
    if type(value) is int and value >= 1:  # the usual case, without ABC checks
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r:.40}", name)
    return int(value)


def request_message(
    request_id: bytes,
    service: str,
    operation: str,
    timeout: float,
    header: Mapping[str, Any] | None,
    arrays: Mapping[str, Any] | None,
) -> list[Any]:
    """The REQUEST frames of one call, refused before any send when over a protocol limit
    (message size, array count, header size) with the error the broker's refusal raises:
    `RemoteError` ``too_large``. Sent, a frame over the broker's MAXMSGSIZE only dropped the
    connection, and the request was re-sent until it timed out."""
    try:
        payload = encode_payload(header, arrays)  # checks the header size and array count
        frames = request_frames(request_id, service, operation, int(timeout * 1000), payload)
        check_size(frames)
    except ProtocolError as e:
        if e.code is not ErrorCode.TOO_LARGE:
            raise
        raise remote_error(e.code.value, e.message, e.field) from e
    return frames


__all__ = [
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "TRANSPORTS",
    "call_timeout",
    "check_client",
    "check_count",
    "check_endpoint",
    "check_endpoints",
    "check_retries",
    "check_timeout",
    "default_endpoint",
    "request_message",
]
