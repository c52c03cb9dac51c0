"""Which robots the broker can expect to serve, beyond its registered workers.

Workers still loading and compiling announce themselves (WARMING, docs/protocol.md 4.11):
they are shown by ``ping``/``status`` and count as serving their robots, but are never given
a job. With them, a request for a robot that no worker serves or announces can be answered
`unknown_robot` at once, naming the robots that are served, instead of at its deadline;
except within `BrokerSettings.rejoin_grace` of the broker's start, or `DEPARTED_WAIT` of a
robot's last worker leaving, when workers may still be on their way back (then it waits, as
before).
Plain state, no sockets: `broker._core` feeds it.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from zmq_ik.broker._jobs import KEPT_INFO, peer_label
from zmq_ik.protocol import WARMING_TTL, pack_header
from zmq_ik.settings.broker import BrokerSettings

NAMED = 16
"""Most robot names an `unknown_robot` message lists (the rest are counted)."""
LEFT_MEMORY = 4096
"""Most robots remembered as recently left (oldest forgotten first)."""
DEPARTED_WAIT = 300.0
"""Seconds a robot whose last worker left still counts as served-soon: a crashed worker
restarted by systemd imports JAX, loads its robots and announces itself, which on a busy
host takes far longer than the rejoin grace. Within it a request waits (to its deadline), as
before warming announcements existed; a misspelt robot, never served, is refused at once."""


@dataclass(slots=True)
class WarmingWorker:
    """A worker that sent WARMING and no READY yet."""

    identity: bytes
    robots: tuple[str, ...]
    info: dict[str, Any]
    """The `KEPT_INFO` fields of its last WARMING (bounded by `protocol.Limits`)."""
    since: float
    last_seen: float
    progress: dict[str, Any] = field(default_factory=dict)
    """Its last ``progress``: ``done``, ``total`` (buckets), ``elapsed_s`` (its own clock)."""
    listing_bytes: int = 0
    """An upper bound on the encoded size of `describe` (for summarising `ping`)."""

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": peer_label(self.identity),
            "robots": list(self.robots),
            "state": "warming",
            "device": self.info.get("device", "?"),
            "host": self.info.get("host"),
            "pid": self.info.get("pid"),
            "progress": {
                "done": self.progress.get("done", 0),
                "total": self.progress.get("total", 0),
                "elapsed_s": round(float(self.progress.get("elapsed_s", now - self.since)), 1),
            },
            "since_s": round(now - self.since, 3),
        }


def name_list(names: Iterable[str]) -> str:
    """``a, b, c`` (at most `NAMED`, then ``+ N more``), or ``none``."""
    names = list(names)
    first = heapq.nsmallest(NAMED, names)
    more = f" + {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(first) + more if first else "none"


class RobotDirectory:
    """Robots served (by registered workers), announced (by warming workers) and recently
    left, for `BrokerCore`: all bounded (`max_warming` entries, each field as READY's;
    `LEFT_MEMORY` names)."""

    def __init__(self, settings: BrokerSettings, started: float) -> None:
        self.max_warming = settings.max_warming
        self.grace = settings.rejoin_grace
        self.started = started
        self.served: Counter[str] = Counter()
        """Registered workers per robot (kept by the core at READY and removal)."""
        self.warming: dict[bytes, WarmingWorker] = {}
        self._warming_robots: Counter[str] = Counter()
        self._left: OrderedDict[str, float] = OrderedDict()
        """Robot → when its last registered worker left, oldest first."""

    # -------------------------------------------------------------- registered workers

    def add_worker(self, robots: Iterable[str]) -> None:
        self.served.update(robots)

    def remove_worker(self, robots: Iterable[str], now: float) -> None:
        for robot in robots:
            self.served[robot] -= 1
            if self.served[robot] <= 0:
                del self.served[robot]
                self._left[robot] = now
                self._left.move_to_end(robot)
        while len(self._left) > LEFT_MEMORY:
            self._left.popitem(last=False)

    # -------------------------------------------------------------- warming workers

    def announce(self, identity: bytes, info: dict[str, Any], now: float) -> str | None:
        """Note a WARMING (fields already checked by `protocol.parse_message`); returns why it
        is refused (too many warming workers), else None."""
        entry = self.warming.get(identity)
        if entry is None:
            if len(self.warming) >= self.max_warming:
                return (
                    f"the broker tracks {len(self.warming)} warming workers (max_warming "
                    f"{self.max_warming}): this one is listed once it sends READY"
                )
            robots = tuple(sorted(set(info["robots"])))
            entry = self.warming[identity] = WarmingWorker(identity, robots, {}, now, now)
            self._warming_robots.update(robots)
        elif set(info["robots"]) != set(entry.robots):  # it may name them differently now
            self._unannounce(entry.robots)
            entry.robots = tuple(sorted(set(info["robots"])))
            self._warming_robots.update(entry.robots)
        entry.info = {k: info[k] for k in KEPT_INFO if k in info and k != "versions"}
        entry.progress = dict(info.get("progress") or {})
        entry.last_seen = now
        entry.listing_bytes = len(pack_header(entry.describe(now))) + 64
        return None

    def forget(self, identity: bytes) -> WarmingWorker | None:
        """A warming worker is gone or ready (READY, DISCONNECT, silence)."""
        entry = self.warming.pop(identity, None)
        if entry is not None:
            self._unannounce(entry.robots)
        return entry

    def _unannounce(self, robots: Iterable[str]) -> None:
        counts = self._warming_robots
        for robot in robots:
            counts[robot] -= 1
            if counts[robot] <= 0:
                del counts[robot]

    def expire(self, now: float) -> list[WarmingWorker]:
        """Forget warming workers silent for `protocol.WARMING_TTL`, and robots that left
        `DEPARTED_WAIT` ago or more; returns the warming workers forgotten."""
        gone = [w for w in self.warming.values() if now - w.last_seen > WARMING_TTL]
        for w in gone:
            self.forget(w.identity)
        left = self._left
        while left and now - next(iter(left.values())) >= DEPARTED_WAIT:
            left.popitem(last=False)
        return gone

    def stalled(self, now: float) -> None:
        """The broker did not run for a while: every warming worker counts as just seen."""
        for w in self.warming.values():
            w.last_seen = max(w.last_seen, now)

    # -------------------------------------------------------------- requests

    def expects(self, robot: str, now: float) -> bool:
        """Whether a request for ``robot`` should wait for a worker: one serves it or is
        warming up for it, or one may be on its way back (the broker started, or the robot's
        last worker left, less than `BrokerSettings.rejoin_grace` / `DEPARTED_WAIT` ago)."""
        if robot in self.served or robot in self._warming_robots:
            return True
        if now - self.started < self.grace:
            return True
        left = self._left.get(robot)
        return left is not None and now - left < DEPARTED_WAIT

    def warming_up(self, robot: str) -> bool:
        """Whether a warming worker announced ``robot``."""
        return robot in self._warming_robots

    def unknown(self, robot: str) -> str:
        """The `unknown_robot` message: the robot asked for, and the robots served."""
        text = f"unknown robot {robot!r}: no worker serves it; served: {name_list(self.served)}"
        if self._warming_robots:
            text += f"; warming up: {name_list(self._warming_robots)}"
        return text
