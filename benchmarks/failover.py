"""Issue #15 measurement: several brokers, failover under load (not in ``python -m benchmarks``).

    python -m benchmarks.failover               # echo workers: steady state, kill/restart/kill, freeze
    python -m benchmarks.failover --ik          # also: a 1,000-pair compute across a broker kill

Echo part: brokers A and B, 2 echo workers connected to both, ``--clients`` client threads
(`IKClient` given both brokers, ``timeout=3``, ``retries=2``; half list B first, so both
brokers carry load) sending back-to-back ``echo`` requests whose answer must carry the
thread's own (client, sequence) and array.

* ``steady``: throughput and latency with one broker (workers and clients given only A),
  with two where every client lists A first (B a live standby), and with two where half the
  clients list B first (spread), alternating ``--rounds`` times, fresh processes each, all in
  this one run;
* ``faults``: 2 brokers under load; SIGKILL A; restart A; SIGKILL B (``--phase`` seconds
  apart). Reports the longest time any request took (the stall), errors, wrong answers;
* ``freeze``: 2 brokers under load; SIGSTOP A for ``--freeze`` seconds, SIGCONT;
* ``restart1``: one broker only, SIGKILLed under load and restarted at once.

IK part (``--ik``): 2 brokers, 2 IK workers connected to both; a 1,000-pair `compute` runs
once undisturbed, then again while the broker it is using is SIGKILLed ~1 s in; the joints
must be the same.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

import numpy as np

from benchmarks._harness import JAX_CACHE, EchoLoad, Procs, Tally
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError

TIMEOUT = 3.0
RETRIES = 2


class Load(EchoLoad):
    """`EchoLoad` with this benchmark's timeout and retries."""

    def __init__(self, endpoints: list[str], clients: int, spread: bool = True) -> None:
        super().__init__(endpoints, clients, spread=spread, timeout=TIMEOUT, retries=RETRIES)


def start(procs: Procs, brokers: int, workers: int = 2, worker: str = "--echo") -> list[str]:
    endpoints = [procs.broker().endpoint for _ in range(brokers)]
    connect = [a for ep in endpoints for a in ("--connect", ep)]
    for _ in range(workers):
        if worker == "--echo":
            procs.start("worker", "--echo", *connect)
        else:
            procs.start("worker", *connect, *worker.split())
    for ep in endpoints:
        procs.wait_workers(ep, workers)
    return endpoints


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def steady(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for r in range(args.rounds):
        for n, spread in ((1, False), (2, False), (2, True)):
            with Procs() as procs:
                endpoints = start(procs, n)
                with Load(endpoints, args.clients, spread) as load:
                    time.sleep(1.0)  # warm-up
                    t0 = time.monotonic()
                    time.sleep(args.seconds)
                    t1 = time.monotonic()
                lat = load.tally.latencies_ms(t0, t1)
                rows.append(
                    {
                        "round": r + 1,
                        "brokers": n,
                        "spread": spread,
                        "req_s": len(lat) / (t1 - t0),
                        "p50": pct(lat, 50),
                        "p99": pct(lat, 99),
                        "errors": len(load.tally.errors),
                        "wrong": load.tally.wrong,
                    }
                )
                how = "" if n == 1 else ", clients spread" if spread else ", one home"
                print(
                    f"  steady round {r + 1}, {n} broker(s){how}: {rows[-1]['req_s']:,.0f} req/s, "
                    f"p50 {rows[-1]['p50']:.2f} ms, p99 {rows[-1]['p99']:.2f} ms",
                    flush=True,
                )
    return rows


def kill(procs: Procs, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, and forget it (`Procs.check_alive` would take its death for a failure)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    procs.procs.remove(proc)


def faults(args: argparse.Namespace) -> dict[str, Any]:
    """Kill A, restart it, kill B, under load."""
    with Procs() as procs:
        a, b = start(procs, 2)
        broker_a, broker_b = procs.procs[0], procs.procs[1]
        events: dict[str, float] = {}
        with Load([a, b], args.clients) as load:
            time.sleep(args.phase)
            kill(procs, broker_a)
            events["kill A"] = time.monotonic()
            time.sleep(args.phase)
            procs.broker(endpoint=a)
            events["restart A"] = time.monotonic()
            procs.wait_workers(a, 2, timeout=30)
            events["A has its workers"] = time.monotonic()
            time.sleep(args.phase)
            kill(procs, broker_b)
            events["kill B"] = time.monotonic()
            time.sleep(args.phase)
        return summarise("kill A, restart A, kill B", load.tally, events)


def freeze(args: argparse.Namespace) -> dict[str, Any]:
    """SIGSTOP A for ``args.freeze`` seconds under load."""
    with Procs() as procs:
        a, b = start(procs, 2)
        broker_a = procs.procs[0]
        events: dict[str, float] = {}
        with Load([a, b], args.clients) as load:
            time.sleep(args.phase)
            broker_a.send_signal(signal.SIGSTOP)
            events["SIGSTOP A"] = time.monotonic()
            time.sleep(args.freeze)
            broker_a.send_signal(signal.SIGCONT)
            events["SIGCONT A"] = time.monotonic()
            time.sleep(args.phase)
        return summarise(f"SIGSTOP A for {args.freeze:g} s", load.tally, events)


def restart_one(args: argparse.Namespace) -> dict[str, Any]:
    """One broker only: SIGKILL it under load, restart it at once. Before #15 a request lost
    with it waited for its whole attempt timeout (3 s here); now for the broker's return."""
    with Procs() as procs:
        [a] = start(procs, 1)
        events: dict[str, float] = {}
        with Load([a], args.clients) as load:
            time.sleep(args.phase)
            kill(procs, procs.procs[0])
            events["kill"] = time.monotonic()
            procs.broker(endpoint=a)
            events["restart"] = time.monotonic()
            procs.wait_workers(a, 2, timeout=30)
            events["broker and workers back"] = time.monotonic()
            time.sleep(args.phase)
        out = summarise("one broker: kill, restart at once", load.tally, events)
        outage = events["broker and workers back"] - events["kill"]
        out["outage_ms"] = outage * 1000
        out["stall_beyond_outage_ms"] = out["longest_ms"] - outage * 1000
        print(
            f"    outage (kill to broker and workers back) {outage * 1000:.0f} ms; longest stall "
            f"beyond it {out['stall_beyond_outage_ms']:.0f} ms (timeout {TIMEOUT:g} s)"
        )
        return out


def summarise(name: str, tally: Tally, events: dict[str, float]) -> dict[str, Any]:
    lat = tally.latencies_ms()
    worst = max(tally.spans, key=lambda s: s[1] - s[0]) if tally.spans else (0.0, 0.0)
    first = min(events.values())
    near = min(events, key=lambda k: abs(events[k] - worst[0]))
    out = {
        "fault": name,
        "answered": len(lat),
        "errors": len(tally.errors),
        "wrong": tally.wrong,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "longest_ms": max(lat) if lat else float("nan"),
        "longest_near": f"{near} ({(worst[0] - events[near]) * 1000:+.0f} ms)",
        "events_s": {k: round(v - first, 3) for k, v in events.items()},
    }
    print(
        f"  {name}: {out['answered']:,} answered, {out['errors']} errors, {out['wrong']} wrong, "
        f"longest {out['longest_ms']:.0f} ms (sent {out['longest_near']}), "
        f"p99 {out['p99']:.1f} ms",
        flush=True,
    )
    for e in tally.errors[:5]:
        print("    ", e)
    return out


def ik(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import _data

    reason = _data.ik_missing()
    if reason:
        return {"skipped": reason}
    scene, _ = _data.example()
    strokes = _data.strokes(args.pairs)
    worker = f"--buckets {args.buckets} --cache-dir {JAX_CACHE}"
    with Procs() as procs:
        a, b = start(procs, 2, worker=worker)
        brokers = {a: procs.procs[0], b: procs.procs[1]}
        with IKClient([a, b], timeout=30, retries=2) as client:
            client.compute(scene, _data.strokes(16))  # warm
            t0 = time.monotonic()
            clean = client.compute(scene, strokes)
            clean_s = time.monotonic() - t0
            killed: list[str] = []

            def killer() -> None:
                time.sleep(min(1.0, clean_s / 3))
                for ep in (a, b):  # the broker with the job's chunks in flight
                    with IKClient(ep, timeout=1, retries=0) as probe:
                        try:
                            busy = probe.status()["in_flight"]
                        except IKError:
                            continue
                    if busy:
                        kill(procs, brokers[ep])
                        killed.append(ep)
                        return

            t = threading.Thread(target=killer)
            t.start()
            t0 = time.monotonic()
            faulted = client.compute(scene, strokes)
            fault_s = time.monotonic() - t0
            t.join()
    diff = float(np.max(np.abs(clean.joints - faulted.joints)))
    out = {
        "pairs": args.pairs,
        "clean_s": clean_s,
        "with_kill_s": fault_s,
        "killed": "A" if killed == [a] else "B" if killed == [b] else "none",
        "max_joint_diff": diff,
        "same": bool(np.array_equal(clean.joints, faulted.joints)),
    }
    print(
        f"  IK compute of {args.pairs} pairs: {clean_s:.2f} s clean, {fault_s:.2f} s with broker "
        f"{out['killed']} killed; joints identical: {out['same']} (max diff {diff:.3g})",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="steady-state window")
    parser.add_argument("--rounds", type=int, default=3, help="1-vs-2-broker rounds")
    parser.add_argument("--phase", type=float, default=2.0, help="seconds between faults")
    parser.add_argument("--freeze", type=float, default=5.0, help="SIGSTOP length (s)")
    parser.add_argument("--ik", action="store_true", help="also the IK compute measurement")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--buckets", default="16,64,256")
    parser.add_argument(
        "--only", choices=["steady", "faults", "freeze", "restart1", "ik"], default=None
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.only in (None, "steady"):
        rows = steady(args)
        one = [r for r in rows if r["brokers"] == 1]
        for spread in (False, True):
            two = [r for r in rows if r["brokers"] == 2 and r["spread"] == spread]
            for key in ("req_s", "p50", "p99"):
                m1 = statistics.median(r[key] for r in one)
                m2 = statistics.median(r[key] for r in two)
                print(
                    f"  steady median {key}: 1 broker {m1:.2f}, 2 brokers "
                    f"({'spread' if spread else 'one home'}) {m2:.2f} ({m2 / m1:.3f}x)"
                )
        results["steady"] = rows
    if args.only in (None, "faults"):
        results["faults"] = faults(args)
    if args.only in (None, "freeze"):
        results["freeze"] = freeze(args)
    if args.only in (None, "restart1"):
        results["restart1"] = restart_one(args)
    if args.ik or args.only == "ik":
        results["ik"] = ik(args)
    print(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
