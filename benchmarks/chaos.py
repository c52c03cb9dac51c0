"""Issue #25.8, a standing chaos test: random faults under IK load; is every answer right?

    python -m benchmarks.chaos --minutes 5
    python -m benchmarks.chaos --seconds 30 --seed 1      # (tests/test_chaos.py runs this)

Two brokers, two IK workers (tatbot, ``--buckets``, the shared JAX cache) connected to both,
``--clients`` client threads (`IKClient` given both brokers, half listing the second first)
sending single-pose `solve` requests for reachable targets (FK, by a worker, of random joint
vectors near the rest pose). One fault at a time, 1-3 s apart, drawn at random among those
that leave a serving worker and a live broker:

* a worker SIGKILLed or SIGTERMed, and started again at once (it warms up from the cache);
* a broker SIGKILLed, and started again on its port after 1-3 s;
* a worker or a broker SIGSTOPped for 3 s, then SIGCONT.

Every answer is checked afterwards: the FK of its joints (by a worker, once the faults are
over) must put each end effector within ``--pos-tol`` / ``--ori-tol`` of the target. A call
that raises `IKTimeout` is *lost*; any other error is an *error*. Output: a markdown table
(sent / right / wrong / lost / errors / max latency) and the faults injected. Goal for 5
minutes: 0 wrong, 0 lost, 0 errors, max latency under 2 s.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from benchmarks._common import pct
from benchmarks._harness import ClientThreads, Procs
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError, IKTimeout

IK_ROBOT = "tatbot"
FAULTS = ("worker SIGKILL", "worker SIGTERM", "broker SIGKILL", "worker SIGSTOP", "broker SIGSTOP")


@dataclass
class Tally:
    """What the client threads saw: (sent, answered, target index, joints) per answer."""

    answers: list[tuple[float, float, int, np.ndarray]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SolveLoad(ClientThreads):
    """Client threads, each an `IKClient` given both brokers (in turn, its home first),
    sending one `solve` after another for a random target of ``targets``."""

    def __init__(self, endpoints: list[str], clients: int, targets: Any, timeout: float) -> None:
        self.endpoints, self.targets, self.timeout = endpoints, targets, timeout
        self.tally = Tally()
        super().__init__(clients, join=3 * timeout + 30)

    def _run(self, c: int) -> None:
        ctx = zmq.Context()
        eps = self.endpoints[c % 2 :] + self.endpoints[: c % 2]
        rng = np.random.default_rng(c)
        wxyz, pos = self.targets
        try:
            with IKClient(eps, timeout=self.timeout, retries=2, context=ctx) as client:
                while not self._stop.is_set():
                    i = int(rng.integers(len(pos)))
                    t0 = time.monotonic()
                    try:
                        sol = client.solve(IK_ROBOT, wxyz[i], pos[i])
                    except IKTimeout as e:
                        with self.tally.lock:
                            self.tally.lost.append(f"{t0:.3f} client {c}: {e}")
                        continue
                    except IKError as e:
                        with self.tally.lock:
                            self.tally.errors.append(f"{t0:.3f} client {c}: {e!r}")
                        continue
                    with self.tally.lock:
                        self.tally.answers.append((t0, time.monotonic(), i, sol.joints[0]))
        finally:
            ctx.destroy(linger=0)


class Chaos:
    """The cluster (`Procs.cluster`) and the faults, one at a time."""

    def __init__(self, procs: Procs, buckets: str, rng: random.Random) -> None:
        self.procs, self.rng = procs, rng
        self.buckets = buckets
        self.endpoints = procs.cluster(2, workers=2, buckets=buckets)
        self.brokers = procs.procs[:2]
        self.workers = procs.procs[2:4]
        self.events: list[tuple[float, str]] = []

    def _serving(self, broker: subprocess.Popen[bytes]) -> set[int]:
        """Worker pids registered at ``broker`` (empty if it does not answer at once)."""
        ep = self.endpoints[self.brokers.index(broker)]
        with IKClient(ep, timeout=0.5, retries=0) as probe:
            try:
                return {w.get("pid") for w in probe.ping()["workers"]}
            except IKError:
                return set()

    def possible(self) -> list[tuple[str, int]]:
        """(fault, target) pairs that leave a broker and a worker serving: a worker fault
        while both workers serve at both brokers, a broker fault while the other broker
        answers and has a worker (a restarted worker may still be warming up meanwhile)."""
        serving = [self._serving(b) for b in self.brokers]
        pids = {w.pid for w in self.workers}
        out = []
        for kind in FAULTS:
            if kind.startswith("worker"):
                out += [(kind, i) for i in range(2) if all(pids <= s for s in serving)]
            else:
                out += [(kind, i) for i in range(2) if serving[1 - i] & pids]
        return out

    def inject(self, kind: str, i: int) -> None:
        who, how = kind.split()
        group = self.workers if who == "worker" else self.brokers
        proc = group[i]
        self.events.append((time.monotonic(), f"{kind} {who} {i} (pid {proc.pid})"))
        if how == "SIGSTOP":
            proc.send_signal(signal.SIGSTOP)
            time.sleep(3.0)
            proc.send_signal(signal.SIGCONT)
        elif who == "broker":
            self.procs.kill(proc)
            time.sleep(self.rng.uniform(1.0, 3.0))
            group[i] = self.procs.broker(endpoint=self.endpoints[i], wait=False)
        else:
            self.procs.kill(proc, signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM, 30)
            group[i] = self.procs.ik_worker(*self.endpoints, buckets=self.buckets)
        self.events.append((time.monotonic(), f"{kind} {who} {i} done"))

    def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            choices = self.possible()
            if choices:
                self.inject(*self.rng.choice(choices))
                time.sleep(self.rng.uniform(1.0, 3.0))
            else:
                time.sleep(0.2)


def reference_targets(endpoint: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` reachable targets: a worker's FK of random joint vectors near the rest pose."""
    with IKClient(endpoint, timeout=60) as client:
        info = client.describe(IK_ROBOT)
        rest, lo, hi = (np.asarray(info[k], np.float64) for k in ("rest", "lower", "upper"))
        q = np.clip(rest + np.random.default_rng(seed).normal(0, 0.15, (count, rest.size)), lo, hi)
        poses = client.fk(IK_ROBOT, q.astype(np.float32))
    return np.asarray(poses.wxyz), np.asarray(poses.pos)


def check(
    endpoint: str, tally: Tally, targets: Any, pos_tol: float, ori_tol: float
) -> tuple[int, list[str]]:
    """(right, why each wrong one is wrong): FK of every answer against its target."""
    wxyz, pos = targets
    if not tally.answers:
        return 0, []
    joints = np.stack([a[3] for a in tally.answers])
    index = np.array([a[2] for a in tally.answers])
    with IKClient(endpoint, timeout=120) as client:
        got = client.fk(IK_ROBOT, joints)
    pos_err = np.linalg.norm(got.pos - pos[index], axis=-1).max(-1)
    dot = np.abs(np.sum(got.wxyz * wxyz[index], axis=-1)).clip(0, 1)
    ori_err = (2 * np.arccos(dot)).max(-1)
    bad = np.flatnonzero((pos_err > pos_tol) | (ori_err > ori_tol) | ~np.isfinite(pos_err))
    why = [f"target {index[k]}: {pos_err[k] * 1000:.2f} mm, {ori_err[k]:.3f} rad" for k in bad]
    return len(joints) - len(bad), why


def run(
    seconds: float,
    clients: int = 8,
    buckets: str = "16",
    seed: int = 0,
    timeout: float = 5.0,
    pos_tol: float = 0.005,
    ori_tol: float = 0.05,
) -> dict[str, Any]:
    """Start the cluster, run the load and the faults for ``seconds``; the figures."""
    rng = random.Random(seed)
    with Procs() as procs:
        chaos = Chaos(procs, buckets, rng)
        targets = reference_targets(chaos.endpoints[0], 256, seed)
        with SolveLoad(chaos.endpoints, clients, targets, timeout) as load:
            time.sleep(1.0)
            t0 = time.monotonic()
            chaos.run(seconds)
        t1 = time.monotonic()
        procs.wait_workers(chaos.endpoints[0], 1, timeout=300)  # (for the check)
        tally = load.tally
        right, wrong = check(chaos.endpoints[0], tally, targets, pos_tol, ori_tol)
    lat = [(b - a) * 1000 for a, b, _, _ in tally.answers]
    worst = max(tally.answers, key=lambda a: a[1] - a[0]) if tally.answers else None
    return {
        "seconds": round(t1 - t0, 1),
        "sent": len(tally.answers) + len(tally.lost) + len(tally.errors),
        "right": right,
        "wrong": len(wrong),
        "lost": len(tally.lost),
        "errors": len(tally.errors),
        "max_ms": max(lat, default=float("nan")),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "worst_sent_s": round(worst[0] - t0, 2) if worst else None,
        "faults": Counter(
            e.split(" ", 2)[0] + " " + e.split(" ", 2)[1]
            for _, e in chaos.events
            if not e.endswith("done")
        ),
        "events": [(round(t - t0, 2), e) for t, e in chaos.events],
        "problems": wrong[:10] + tally.lost[:10] + tally.errors[:10],
    }


def table(r: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} x{v}" for k, v in sorted(r["faults"].items())) or "none"
    return (
        "| s | sent | right | wrong | lost | errors | max latency ms | p50 ms | p99 ms | faults |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {r['seconds']:.0f} | {r['sent']:,} | {r['right']:,} | {r['wrong']} | {r['lost']} "
        f"| {r['errors']} | {r['max_ms']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
        f"| {faults} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=None, help="instead of --minutes")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--buckets", default="16", help="IK worker --buckets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=5.0, help="client attempt timeout (s)")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    print(f"# zmq-ik chaos: {seconds:.0f} s, {os.cpu_count()} CPUs, seed {args.seed}", flush=True)
    r = run(seconds, args.clients, args.buckets, args.seed, args.timeout)
    print(table(r))
    print("\nfaults (s from the start):")
    for t, e in r["events"]:
        print(f"  {t:8.2f}  {e}")
    print(f"\nlongest request sent at {r['worst_sent_s']} s")
    for p in r["problems"]:
        print("  ", p)
    ok = r["wrong"] == r["lost"] == r["errors"] == 0 and r["max_ms"] < 2000
    print("\nOK: goal met" if ok else "\nGOAL NOT MET (0 wrong, 0 lost, 0 errors, max < 2 s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
