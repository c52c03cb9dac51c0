"""The `cancel` management operation: a client drops its own requests it no longer waits for.

ZIK/1 REQUESTs a client abandoned (a stream left early, Ctrl-C, a closed client, a request
that gave up) would otherwise stay queued until their deadline and be computed, taking
worker time from other clients. A client names them by its own request ids; the broker
looks them up under the sender's identity only, so one client can never cancel another's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zmq_ik.broker._jobs import peer_label
from zmq_ik.protocol import Frame, cancel_ids, decode_payload

if TYPE_CHECKING:
    from zmq_ik.broker._core import BrokerCore

logger = logging.getLogger(__name__)


def cancel(core: BrokerCore, client: bytes, payload: Sequence[Frame]) -> dict[str, int]:
    """Drop ``client``'s open requests named in the `protocol.CANCEL` ``payload``; the answer's
    counts. A queued one is forgotten (its budget freed, never answered); one a worker runs
    is closed too: its answer is dropped when it comes, and it is not re-dispatched if its
    worker dies. Ids not open for this client (answered, never sent, another client's) are
    ``unknown``. Bad input raises `ProtocolError` naming the field."""
    ids = cancel_ids(decode_payload(payload, core.settings.limits).header, core.settings.limits)
    counts = {"dropped": 0, "running": 0, "unknown": 0}
    for rid in ids:
        job = core.by_client.get((client, rid))
        if job is None or job.closed:
            counts["unknown"] += 1
            continue
        counts["running" if job.worker is not None else "dropped"] += 1
        # Remembered as answered: a retry of it that crossed the cancel never runs.
        core.close_job(job, answered=True)
    counters = core.counters
    counters["cancel_requests"] += 1
    counters["cancelled"] += counts["dropped"]
    counters["cancelled_running"] += counts["running"]
    counters["cancel_unknown"] += counts["unknown"]
    if counts["dropped"] or counts["running"]:
        logger.debug("client %s cancelled %s", peer_label(client), counts)
    return counts
