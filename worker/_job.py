"""One job on a worker: a broker's REQUEST, run through the `Service`, answered as frames.

Socket-free: `run_job` returns the FINAL or ERROR frames and hands PARTIAL frames to a
callback, so the worker loop (`worker._worker`) only moves frames between sockets.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zmq_ik.errors import ErrorCode, IKTimeout, InputError, ProtocolError
from zmq_ik.protocol import (
    Command,
    Limits,
    Request,
    decode_payload,
    encode_payload,
    error_frames,
    reply_frames,
)
from zmq_ik.worker._service import Service, ServiceCall, ServiceError

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """A request as the worker runs it: the broker's job id, what to do, and until when."""

    job_id: bytes
    robot: str
    operation: str
    deadline: float
    """``time.monotonic()`` seconds on this worker's clock when the client stops waiting."""
    payload: list[Any]

    @classmethod
    def from_request(cls, msg: Request, now: float) -> Job:
        """A job from a broker's REQUEST received at ``now``, its deadline on our clock."""
        deadline = now + msg.timeout_ms / 1000
        return cls(msg.request_id, msg.service, msg.operation, deadline, msg.payload)


def run_job(
    service: Service, job: Job, limits: Limits, send_partial: Callable[[list[Any]], None]
) -> list[Any]:
    """Run ``job`` on ``service``; the FINAL frames, or ERROR frames naming what went wrong
    (bad input, a passed deadline, a service error; an unexpected exception is logged with
    its traceback and answered ``internal``). Never raises."""

    def error(code: ErrorCode, message: str, fld: str | None = None) -> list[Any]:
        return error_frames(job.job_id, code, message, fld)

    if time.monotonic() > job.deadline:
        return error(ErrorCode.TIMEOUT, "deadline passed before the worker started")

    def progress(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None) -> None:
        send_partial(reply_frames(Command.PARTIAL, job.job_id, encode_payload(header, arrays)))

    t0 = time.perf_counter()
    try:
        payload = decode_payload(job.payload, limits)
        header, arrays = service.handle(
            ServiceCall(
                job.robot, job.operation, payload.header, payload.arrays, progress, job.deadline
            )
        )
        header = {**header, "compute_ms": round((time.perf_counter() - t0) * 1000, 3)}
        return reply_frames(Command.FINAL, job.job_id, encode_payload(header, arrays))
    except ProtocolError as e:
        return error(e.code, e.message, e.field)
    except InputError as e:
        return error(ErrorCode.BAD_REQUEST, e.message, e.field)
    except IKTimeout as e:
        return error(ErrorCode.TIMEOUT, str(e))
    except ServiceError as e:
        return error(e.code, e.message, e.field)
    except Exception as e:
        logger.error(
            "job %s (%s/%s) failed:\n%s",
            job.job_id.hex(),
            job.robot,
            job.operation,
            traceback.format_exc(),
        )
        return error(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
