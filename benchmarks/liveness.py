"""Issue #27.1: false deaths on a busy host, and how fast a killed or stopped worker is found.

    python -m benchmarks.liveness --seconds 90

For each broker rule: ``old`` (``--watched-silence 1``: a worker silent for the liveness
window, 4 x 0.25 s, is dead, as before) and ``new`` (the default: a worker whose link carries
ZMTP heartbeats with a TTL is dead when its connection drops; Python silence alone is
tolerated for 10 s): a broker, a serving IK worker (tatbot, warm cache) under one client's
back-to-back `solve`, two IK workers warming from a cold cache and ``--hogs`` CPU-bound
processes, for ``--seconds``. Counted: the broker's ``workers_lost`` + ``workers_unreachable``
(false deaths: nothing was killed) and the client's errors. Then, hogs still running, the
serving worker is SIGSTOPped, and later SIGKILLed: seconds until the broker stops listing it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from typing import Any

from benchmarks._procs import JAX_CACHE, Procs
from benchmarks.chaos import SolveLoad, reference_targets
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError

HOG = "while True: pass"


def listed(endpoint: str, pid: int) -> bool:
    with IKClient(endpoint, timeout=0.5, retries=0) as probe:
        try:
            return pid in {w.get("pid") for w in probe.ping()["workers"]}
        except IKError:
            return True  # no answer (the broker is starved too): not seen gone


def detection(procs: Procs, endpoint: str, proc: Any, sig: int) -> float:
    """Seconds from ``sig`` to ``proc`` until the broker no longer lists it."""
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    while listed(endpoint, proc.pid) and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    return time.monotonic() - t0


def trial(rule: str, seconds: float, hogs: int, cold: int) -> dict[str, Any]:
    extra = ("--watched-silence", "1") if rule == "old" else ()
    with Procs() as procs, tempfile.TemporaryDirectory() as empty:
        ep = procs.broker(*extra).endpoint  # type: ignore[attr-defined]
        cached = ("--buckets", "16", "--cache-dir", str(JAX_CACHE))
        serving = procs.zmq_ik("serving", "worker", "--connect", ep, *cached)
        procs.wait_workers(ep, 1, timeout=300)
        targets = reference_targets(ep, 64, 0)
        for i in range(cold):  # a cache of their own each: they compile, not read
            cache = os.path.join(empty, str(i))
            procs.zmq_ik(
                "cold", "worker", "--connect", ep, "--buckets", "16,64", "--cache-dir", cache
            )
        for _ in range(hogs):
            procs.start("hog", [sys.executable, "-c", HOG])
        with SolveLoad([ep], 1, targets, timeout=5.0) as load:
            time.sleep(seconds)
        with IKClient(ep, timeout=10) as client:
            counters = client.status()["counters"]
        out = {
            "rule": rule,
            "answers": len(load.tally.answers),
            "deaths": counters.get("workers_lost", 0) + counters.get("workers_unreachable", 0),
            "errors": len(load.tally.errors) + len(load.tally.lost),
            "retries": counters.get("retries", 0),
            "load": os.getloadavg()[0],
        }
        procs.wait_workers(ep, 1, timeout=60)
        out["sigstop_s"] = detection(procs, ep, serving, signal.SIGSTOP)
        serving.send_signal(signal.SIGCONT)
        procs.wait_workers(ep, 1, timeout=60)
        out["sigkill_s"] = detection(procs, ep, serving, signal.SIGKILL)
        procs.procs.remove(serving)
        serving.wait(5)
    print(
        f"| {rule} | {seconds:.0f} | {out['load']:.1f} | {out['answers']:,} | {out['deaths']} "
        f"| {out['retries']} | {out['errors']} | {out['sigstop_s']:.2f} | {out['sigkill_s']:.2f} |",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.liveness", description=__doc__)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--hogs", type=int, default=4)
    ap.add_argument("--cold", type=int, default=2, help="workers warming from a cold cache")
    ap.add_argument("--rules", default="old,new")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"# liveness on a busy host: {os.cpu_count()} CPUs, {args.hogs} hogs, {args.cold} cold")
    print(
        "\n| rule | s | load avg | answers | workers declared dead | retries | client errors "
        "| SIGSTOP found s | SIGKILL found s |\n|---|---|---|---|---|---|---|---|---|"
    )
    for _ in range(args.rounds):
        for rule in args.rules.split(","):
            trial(rule, args.seconds, args.hogs, args.cold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
