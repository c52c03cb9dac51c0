"""Issue #27.1: false deaths on a busy host, and how fast a killed or stopped worker is found.

    python -m benchmarks.liveness --seconds 90

For each broker rule: ``old`` (``--watched-silence 1``: a worker silent for the liveness
window, 4 x 0.25 s, is dead, as before) and ``new`` (the default: a worker whose link carries
ZMTP heartbeats with a TTL is dead when its connection drops; Python silence alone is
tolerated for 10 s): a broker, a serving IK worker (tatbot, warm cache) under one client's
back-to-back `solve`, two IK workers warming from a cold cache and ``--hogs`` CPU-bound
processes, for ``--seconds`` (``--nice``: the serving worker's niceness; ``--base DIR``: the
warming workers also from that tree, in turns). Counted: the broker's ``workers_lost`` +
``workers_unreachable`` (false deaths: nothing was killed), the client's errors. Then, hogs
still running, the serving worker is SIGSTOPped, later SIGKILLed: seconds until it is dead.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from datetime import datetime
from itertools import product
from pathlib import Path
from typing import Any

from benchmarks._harness import JAX_CACHE, ROOT, Procs, tree_env
from benchmarks.chaos import SolveLoad, reference_targets
from zmq_ik.client import IKClient

HOG = "while True: pass"
DEAD = re.compile(rb"^(\S+ \S+) WARNING .*worker \S+ (is unreachable|missed heartbeats)", re.M)


def detection(broker: Any, proc: Any, sig: int) -> float:
    """Seconds from ``sig`` to ``proc`` until the broker's log says it found the worker dead
    (its own timestamp: how long a `ping` takes on a loaded host does not count)."""
    log = Path(broker.log_path)
    start = log.stat().st_size
    t0 = time.time()
    os.kill(proc.pid, sig)
    while time.time() - t0 < 30:
        found = DEAD.search(log.read_bytes()[start:])
        if found:
            when = datetime.strptime(found.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f")
            return when.timestamp() - t0
        time.sleep(0.05)
    return float("nan")


def trial(rule: str, seconds: float, hogs: int, cold: int, nice: int, tree: Path) -> dict:
    extra = ("--watched-silence", "1") if rule == "old" else ()
    with Procs() as procs, tempfile.TemporaryDirectory() as empty:
        ep = procs.broker(*extra).endpoint
        cached = ("--buckets", "16", "--cache-dir", str(JAX_CACHE))
        cli = ["nice", "-n", str(nice), sys.executable, "-m", "zmq_ik.cli", "-q", "worker"]
        serving = procs.spawn("serving", [*cli, "--connect", ep, *cached])
        procs.wait_workers(ep, 1, timeout=300)
        targets = reference_targets(ep, 64, 0)
        for i in range(cold):  # a cache of their own each: they compile, not read
            cache = os.path.join(empty, str(i))
            argv = ("worker", "--connect", ep, "--buckets", "16,64", "--cache-dir", cache)
            procs.start(*argv, env=tree_env(tree), cwd=tree)  # (`-m` puts the cwd first)
        for _ in range(hogs):
            procs.spawn("hog", [sys.executable, "-c", HOG])
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
            "max_ms": max(((b - a) * 1000 for a, b, *_ in load.tally.answers), default=0.0),
            "load": os.getloadavg()[0],
        }
        procs.wait_workers(ep, 1, timeout=60)
        time.sleep(1.0)  # (its watch is up)
        out["sigstop_s"] = detection(procs.procs[0], serving, signal.SIGSTOP)
        serving.send_signal(signal.SIGCONT)
        procs.wait_workers(ep, 1, timeout=60)
        time.sleep(1.0)
        out["sigkill_s"] = detection(procs.procs[0], serving, signal.SIGKILL)
        procs.procs.remove(serving)
        serving.wait(120)  # (a big process, niced, on a loaded host: its exit takes seconds)
    cells = (rule, tree.name, f"{seconds:.0f}", f"{out['load']:.1f}", f"{out['answers']:,}")
    cells += (f"{out['max_ms']:,.0f}", *(str(out[k]) for k in ("deaths", "retries", "errors")))
    print("| " + " | ".join(cells) + f" | {out['sigstop_s']:.2f} | {out['sigkill_s']:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.liveness", description=__doc__)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--hogs", type=int, default=4)
    ap.add_argument("--cold", type=int, default=2, help="workers warming from a cold cache")
    ap.add_argument("--rules", default="old,new")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--nice", type=int, default=0, help="niceness of the serving worker")
    ap.add_argument("--base", type=Path, help="source tree the warming workers run, in turns")
    args = ap.parse_args(argv)
    print(
        f"# liveness on a busy host: {os.cpu_count()} CPUs, {args.hogs} hogs, {args.cold} "
        f"cold, serving worker at nice {args.nice}"
    )
    print(
        "\n| rule | warming tree | s | load avg | answers | max latency ms | workers declared "
        "dead | retries | client errors | SIGSTOP found s | SIGKILL found s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for _, rule, tree in product(range(args.rounds), args.rules.split(","), [ROOT, args.base]):
        if tree is not None:
            trial(rule, args.seconds, args.hogs, args.cold, args.nice, tree)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
