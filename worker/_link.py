"""The brokers a worker serves: `Link`, one broker's connection state (timers, what the broker
was told and owes); how a worker connects is `zmq_ik.settings.worker.WorkerSettings`."""

from __future__ import annotations

from zmq_ik.errors import ErrorCode
from zmq_ik.worker._job import Job


class Link:
    """One broker this worker serves, as `_core.WorkerCore` sees it: no socket (the loop,
    `_worker.py`, holds those), only what was said, when, and what is owed."""

    def __init__(self, endpoint: str, reconnect_min: float) -> None:
        self.endpoint = endpoint
        self.connected = False
        """A connection is open (the loop holds its socket); False between connections."""
        self.last_recv = 0.0
        self.last_sent = 0.0
        self.answered = False
        """The broker answered our READY (a HEARTBEAT or a request: only registered workers
        get them): the registration took, so the reconnect backoff starts afresh."""
        self.declines = False
        """The broker flagged `FEATURE_DECLINE`: it may be sent DECLINE and state flags."""
        self.owed_idle = False
        """We declined its job or flagged busy: it waits for FLAG_IDLE before sending more."""
        self.deferred: Job | None = None
        """Its job that arrived during another broker's job (it cannot be declined): run next."""
        self.broken: str | None = None
        """Why the connection is unusable ('silent', 'disconnected', 'refused'): it is dropped
        at the next `WorkerCore.tick` that is not during a job."""
        self.refused: str | None = None
        """The broker's message when it refused this worker for good (`final_refusal`): it is
        no longer served."""
        self.held_off = False
        """It refused our READY for now (``overloaded``): the reconnect that follows backs off."""
        self.quiet = False
        """It refused our WARMING: no more WARMING to it (READY only)."""
        self.watching = False
        """The watch connection (`protocol.WATCH`) is open; opened once the broker answered."""
        self.delay = reconnect_min
        self.reconnect_at = 0.0

    @property
    def state(self) -> str:
        """``refused`` (for good), ``backoff`` (between connections), ``connecting`` (READY
        or WARMING sent, not answered yet) or ``ready`` (registered)."""
        if self.refused is not None and not self.connected:
            return "refused"
        if not self.connected:
            return "backoff"
        return "ready" if self.answered else "connecting"


_NOT_OURS = ("command", "progress")
"""ERROR fields that do not condemn a READY: ``command`` (an older broker that does not know
WARMING), ``progress`` (a WARMING-only field)."""


def final_refusal(code: str, field: str | None) -> bool:
    """Whether a broker's ERROR to this worker's READY or WARMING is one that sending it again
    cannot fix: another protocol version, or a header field over the broker's bounds
    (`protocol.check_worker_header`: too many robots, a name or device string too long, the
    header too large; the field is named), or a key that may not register as a worker
    (``forbidden``). ``overloaded`` (the broker is at a cap) is not: retry with backoff.
    Neither is an unreadable ERROR (no field)."""
    if code in (ErrorCode.VERSION.value, ErrorCode.FORBIDDEN.value):
        return True
    bounds = (ErrorCode.TOO_LARGE.value, ErrorCode.PROTOCOL.value)
    return code in bounds and field is not None and field not in _NOT_OURS
