"""Which of several brokers a client uses, and when it probes them: failover without sockets.

`Brokers` is the client's view of its brokers (docs/protocol.md 4.10), fed by the client core
with what it sends and hears and the clock, in the spirit of `broker._core.BrokerCore`:

* any message from a broker is a sign of life (`heard`);
* while the client waits on a broker (requests outstanding there) and has heard nothing from
  it for `PROBE_AFTER`, it probes it (`zik.broker` / `alive`, answered by the broker itself)
  every `PROBE_AFTER`; idle clients send nothing;
* while it waits on a broker it hears from, it still probes it every `RECHECK`: an answer
  with another ``boot`` id means the broker restarted (faster than `DOWN_AFTER`) and lost
  what it was sent before, which the core then sends again;
* a broker silent for `DOWN_AFTER` (plus the time its unanswered bytes may still be in
  transit at `TRANSIT_BYTES_PER_S`) while waited on is down: `tick` says so, and the core
  sends what was outstanding there again, same request ids, through `route`;
* a down broker, or one up without workers, is probed every `RECHECK` while the client
  waits on anything, and used again once it answers (with workers): no operator action.

A client's home broker is the first one it was given; it uses the others, in list order,
only while the home is down or has no workers. (Robots that list the brokers in different
orders spread over them; the same order keeps the others as live standbys.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zmq_ik.protocol import ALIVE, BROKER_SERVICE, encode_payload, request_frames

logger = logging.getLogger(__name__)

PROBE_AFTER = 0.1
"""Seconds of silence from a broker the client waits on before it probes it (and between
probes)."""
DOWN_AFTER = 0.4
"""Seconds of silence (despite probes) after which a broker the client waits on is down."""
RECHECK = 0.25
"""Seconds between probes of a broker that is down or has no workers (while the client
waits on anything), so that it is used again soon after it is back; and of a broker the
client waits on even while it hears from it (a restart shows as a new ``boot`` id)."""
TRANSIT_BYTES_PER_S = 10e6
"""Slowest link assumed for the silence allowance: a probe queued behind a large request
cannot be answered before the request is through (a 256 MiB request: 27 s more)."""
NO_ANSWER_AFTER = 2.0
"""Seconds a client's first request waits while no broker has ever answered the client
(not even its start-up probe, answered by a broker at once) nor completed a handshake with
it, before every request fails `errors.NoBroker`: nothing is there, or it refuses this
client. As `zmq-ik ping` (2 s)."""
PROBE_TIMEOUT_MS = 1000
PROBE_PREFIX = b"alive"
"""Request ids of probes: ``alive`` + 8 bytes (13 bytes; the core's own ids are 12)."""


def is_probe(request_id: bytes) -> bool:
    return len(request_id) == 13 and request_id.startswith(PROBE_PREFIX)


@dataclass
class BrokerView:
    """What a client knows about one broker."""

    endpoint: str
    up: bool = True
    """False from the moment it is judged down until it is heard from again."""
    workers: int | None = None
    """Workers it had at its last `alive` answer (None: never said)."""
    boot: str | None = None
    """The broker process's id from its last `alive` answer (None: never said)."""
    last_heard: float = -math.inf
    """When the last message from it arrived."""
    waiting: int = 0
    """Requests outstanding there."""
    first_probe: bool = False
    """The probe sent when the client started is unanswered (it counts as waiting)."""
    epoch: int = 0
    """Bumped when it goes down and when it comes back: a request sent in an earlier epoch
    may have been lost with it."""
    waiting_since: float = -math.inf
    """When ``waiting`` last went from 0 to more: silence counts from then at the earliest."""
    probed: float = -math.inf
    unheard_bytes: int = 0
    """Bytes sent to it since it was last heard (the transit allowance)."""
    first_answer: bool = False
    """Its latest message was the first ever heard from it: a broker that was not up yet
    when the client started (`zmq-ik demo`, `serve` starting) did not go down or restart,
    so what goes again to it now is no fault (logged at debug level only)."""

    def silence(self, now: float) -> float:
        return now - max(self.last_heard, self.waiting_since)

    @property
    def waited_on(self) -> bool:
        return self.waiting > 0 or self.first_probe

    @property
    def ready(self) -> bool:
        return self.up and self.workers != 0


class Brokers:
    """The client's brokers: liveness, probes and the choice of where to send (no sockets)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        home: int = 0,
        probe_after: float = PROBE_AFTER,
        down_after: float = DOWN_AFTER,
        recheck: float = RECHECK,
    ) -> None:
        self.views = [BrokerView(e) for e in endpoints]
        n = len(self.views)
        start = home % n
        self.order = [(start + k) % n for k in range(n)]
        """Preference: the home broker first, then the others in list order after it."""
        self.probe_after = probe_after
        self.down_after = down_after
        self.recheck = recheck
        self._probes = 0
        self.changed = False
        """Set when a broker went down, came back or got or lost its workers (the core then
        moves what waits on a broker that is down, `stays`); the core clears it."""

    def start(self, now: float) -> list[int]:
        """The brokers to probe once as the client starts, for the price of one probe each:
        a dead one is known before it is needed, and each one's ``boot`` id is known before
        a restart could go unnoticed."""
        for v in self.views:
            v.first_probe, v.waiting_since, v.probed = True, now, now
        return list(range(len(self.views)))

    def __len__(self) -> int:
        return len(self.views)

    @property
    def heard_any(self) -> bool:
        """Whether any broker ever sent this client anything."""
        return any(v.last_heard > -math.inf for v in self.views)

    # ------------------------------------------------------------------ input

    def sent(self, i: int, nbytes: int, now: float) -> None:
        """A request went to broker ``i``: the client now waits on it."""
        v = self.views[i]
        if v.waiting == 0:
            v.waiting_since = now
        v.waiting += 1
        v.unheard_bytes += nbytes

    def done(self, i: int) -> None:
        """A request sent to broker ``i`` was answered, forgotten or moved elsewhere."""
        v = self.views[i]
        v.waiting = max(0, v.waiting - 1)

    def heard(self, i: int, now: float) -> None:
        """Any message from broker ``i``: it is alive. Back from down, it starts a new epoch:
        what was sent to it while it was down may have been lost too (a half-open link that
        libzmq since replaced, `protocol.set_link_heartbeats`), so it goes again, same id."""
        v = self.views[i]
        v.first_answer = v.last_heard == -math.inf
        v.last_heard = now
        v.unheard_bytes = 0
        v.first_probe = False
        if not v.up:
            v.up = True
            v.epoch += 1
            self.changed = True

    def probe_answer(self, i: int, header: dict[str, Any]) -> None:
        """The header of broker ``i``'s `alive` answer (an older broker's ERROR has none)."""
        v = self.views[i]
        workers, boot = header.get("workers"), header.get("boot")
        ready = v.ready
        v.workers = workers if isinstance(workers, int) and not isinstance(workers, bool) else None
        if v.ready != ready:
            self.changed = True
        if isinstance(boot, str) and len(boot) <= 64:
            if v.boot is not None and boot != v.boot:  # a new process: what it had is lost
                v.epoch += 1
                self.changed = True
                logger.info("broker %s restarted: what was sent to it goes again", v.endpoint)
            v.boot = boot

    def lost(self, i: int) -> None:
        """Broker ``i`` is going away (it answered ``shutting_down``): down now."""
        self._down(self.views[i])

    def _down(self, v: BrokerView) -> None:
        if v.up:
            v.up = False
            v.epoch += 1
            v.first_probe = False
            self.changed = True

    # ------------------------------------------------------------------ decisions

    def route(self) -> int:
        """Where to send: the first broker in preference order that is up and has workers,
        else the first that is up, else the home broker (its requests wait there, and go
        wherever one comes back first)."""
        views = self.views
        for i in self.order:
            if views[i].ready:
                return i
        for i in self.order:
            if views[i].up:
                return i
        return self.order[0]

    def stays(self, i: int, epoch: int) -> bool:
        """Whether a request sent to broker ``i`` in ``epoch`` may wait there: it is up and
        did not go down since, or no broker is up (it waits for whichever comes back)."""
        v = self.views[i]
        return (v.up and v.epoch == epoch) or not any(w.up for w in self.views)

    def tick(self, now: float) -> list[int]:
        """Judge silences; returns the brokers to probe now (`probe_frames`)."""
        probes = []
        active = any(v.waited_on for v in self.views)
        for i, v in enumerate(self.views):
            if v.waited_on and v.up:
                if now >= self._down_at(v):
                    self._down(v)
                elif now >= self._probe_at(v):
                    v.probed = now
                    probes.append(i)
                    continue
            if active and not v.ready and now >= v.probed + self.recheck:
                v.probed = now
                probes.append(i)
        return probes

    def _down_at(self, v: BrokerView) -> float:
        start = max(v.last_heard, v.waiting_since)
        return start + self.down_after + v.unheard_bytes / TRANSIT_BYTES_PER_S

    def _probe_at(self, v: BrokerView) -> float:
        """After `PROBE_AFTER` of silence, or `RECHECK` even while it answers (a restart)."""
        since = max(v.waiting_since, v.probed)
        return min(max(v.last_heard, since) + self.probe_after, since + self.recheck)

    def next_due(self) -> float | None:
        """When `tick` next has something to do (None: nothing while nothing waits)."""
        due = math.inf
        active = False
        for v in self.views:
            if v.waited_on:
                active = True
                if v.up:
                    due = min(due, self._probe_at(v), self._down_at(v))
        if active:
            for v in self.views:
                if not v.ready:
                    due = min(due, v.probed + self.recheck)
        return None if due == math.inf else due

    def probe_frames(self) -> list[Any]:
        """A fresh `alive` probe (its own request id, never a caller's)."""
        self._probes += 1
        rid = PROBE_PREFIX + self._probes.to_bytes(8, "big")
        return request_frames(rid, BROKER_SERVICE, ALIVE, PROBE_TIMEOUT_MS, _EMPTY)

    def describe(self) -> list[dict[str, Any]]:
        """Each broker's state, for logs and `zmq-ik ping`."""
        return [
            {"endpoint": v.endpoint, "up": v.up, "workers": v.workers, "waiting": v.waiting}
            for v in self.views
        ]


_EMPTY = encode_payload({})
