"""Load: many concurrent clients against a broker and 2 workers; throughput, latency, errors, RSS.

    python -m benchmarks.load                      # 64 clients, 60 s, 2 echo workers
    python -m benchmarks.load --seconds 20 --overload-seconds 10
    python -m benchmarks.load --ik                 # IK workers, single-pose `solve`

Two phases, each printed as a markdown table:

1. **steady** — every client has one request in flight (a robot's control loop). Only
   ``overloaded`` errors are acceptable (none are expected here).
2. **overload** — every client keeps ``--overload-in-flight`` requests in flight on slow
   requests (``sleep`` of ``--work-ms``), so clients outpace workers: the broker's queue
   fills, the excess gets ``overloaded`` at once, and the broker's RSS must stay bounded.

Broker and worker RSS (``VmRSS`` from ``/proc/PID/status``) are sampled every second.
Clients run in ``--procs`` processes (asyncio, one `AsyncIKClient` socket per client).
Everything runs on 127.0.0.1; the broker and workers are started and stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import ROOT, Procs

# --------------------------------------------------------------------------- processes


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Cluster:
    """A broker and N workers as subprocesses (`Procs`: logs in a temp directory, always
    reaped), with what the load and soak runs read of them."""

    def __init__(
        self,
        workers: int = 2,
        ik: bool = False,
        broker_args: tuple[str, ...] = (),
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.procs = Procs()
        self.broker = self.procs.broker(*broker_args)
        self.endpoint: str = self.broker.endpoint  # type: ignore[attr-defined]
        kind = () if ik else ("--echo",)
        self.workers = [
            self.procs.start("worker", *kind, "--connect", self.endpoint, *worker_args)
            for i in range(workers)
        ]

    def wait_ready(self, timeout: float = 300.0) -> None:
        self.procs.wait_workers(self.endpoint, len(self.workers), timeout=timeout)

    def status(self) -> dict[str, Any]:
        from zmq_ik.client import IKClient

        with IKClient(self.endpoint, timeout=5.0, retries=1) as client:
            return client.status()

    def rss(self) -> dict[str, float | None]:
        out = {"broker": rss_mib(self.broker.pid)}
        for i, w in enumerate(self.workers):
            out[f"worker{i}"] = rss_mib(w.pid)
        return out

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.procs.__exit__(*exc)


class RssSampler(threading.Thread):
    """Samples the cluster's RSS every ``interval`` seconds, tagged with the current phase.

    With ``served=True`` each sample also asks the broker how many jobs each worker has
    served so far (``served[i]`` belongs to ``samples[i]``; -1 where the broker did not
    answer), so memory can be read per request as well as per second.
    """

    def __init__(self, cluster: Cluster, interval: float = 1.0, served: bool = False) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.phase = "idle"
        self.samples: list[tuple[float, str, dict[str, float | None]]] = []
        self.served: list[dict[str, int]] = []
        self._track_served = served
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def _served(self) -> dict[str, int]:
        names = {w.pid: f"worker{i}" for i, w in enumerate(self.cluster.workers)}
        out = dict.fromkeys(names.values(), -1)
        try:
            for w in self.cluster.status()["workers"]:
                if w.get("pid") in names:
                    out[names[w["pid"]]] = int(w["served"])
        except Exception:  # a busy broker that misses one status request is no failure here
            pass
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.cluster.rss()
            t = time.monotonic() - self.t0
            if self._track_served:
                self.served.append(self._served())
            self.samples.append((t, self.phase, rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# --------------------------------------------------------------------------- clients


@dataclass
class Spec:
    """What each client process does."""

    endpoint: str
    clients: int
    seconds: float
    in_flight: int = 1
    operation: str = "echo"
    work_ms: float = 0.0
    payload_floats: int = 16
    timeout: float = 10.0
    ik: bool = False
    ik_sizes: tuple[int, ...] = (1,)
    """Targets per `solve` request, cycled through (with ``ik``)."""
    ik_targets: tuple[np.ndarray, np.ndarray] | None = None
    """Reachable (wxyz (M, n_ee, 4), pos (M, n_ee, 3)) targets requests are drawn from (with
    ``ik``; see `ik_targets`); None: one fixed pose repeated."""


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    """Answered `solve` requests by number of targets."""
    compiles: int = 0
    """Largest ``compiles_since_ready`` any IK reply reported (0: nothing recompiled)."""

    def merge(self, other: Result) -> None:
        self.latencies_ms += other.latencies_ms
        self.codes.update(other.codes)
        self.wrong += other.wrong
        self.sizes.update(other.sizes)
        self.compiles = max(self.compiles, other.compiles)


IK_ROBOT = "tatbot"
IK_POS_TOL_M = 0.005
"""A `solve` answer counts as wrong when any target misses by more than this (the targets
are reachable by construction: FK of joint configurations inside the limits)."""


def ik_targets(count: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` reachable tatbot targets: FK of random joint configurations around the rest
    pose (σ 0.15 rad, clipped to the limits). Imports JAX (CPU) in the calling process."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from zmq_ik import ik
    from zmq_ik.robots import BUNDLED

    bundled = BUNDLED[IK_ROBOT]
    robot = ik.Robot.from_urdf(str(bundled.urdf_path), bundled.ee_links)
    rest = np.asarray(bundled.rest, np.float32)
    rng = np.random.default_rng(seed)
    q = np.clip(rest + rng.normal(0.0, 0.15, (count, rest.size)), robot.lower, robot.upper)
    pose = robot.fk(q.astype(np.float32))
    wxyz = np.asarray(pose.rotation().wxyz, np.float32)
    pos = np.asarray(pose.translation(), np.float32)
    return wxyz, pos


async def _client_loop(spec: Spec, index: int, until: float, result: Result) -> None:
    import zmq.asyncio

    from zmq_ik.client import AsyncIKClient
    from zmq_ik.errors import IKError, IKTimeout, Overloaded, RemoteError

    ctx = zmq.asyncio.Context.instance()
    arrays = {"x": np.full(spec.payload_floats, index, np.float32)}
    wxyz = np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (2, 1))
    pos = np.array([[0.25, 0.1, 0.15], [0.25, -0.1, 0.15]], np.float32)
    rng = np.random.default_rng(index)
    async with AsyncIKClient(spec.endpoint, timeout=spec.timeout, retries=0, context=ctx) as client:

        async def solve(k: int) -> None:
            from zmq_ik import ops

            if spec.ik_targets is None:
                await client.solve(IK_ROBOT, wxyz, pos)
                result.sizes[1] += 1
                return
            # Cycle through the sizes (offset per client, so all sizes are in flight at once)
            # over a random window of the reachable targets.
            size = spec.ik_sizes[(index + k) % len(spec.ik_sizes)]
            tw, tp = spec.ik_targets
            start = int(rng.integers(0, len(tw) - size + 1))
            header, arrs = ops.solve_request(tw[start : start + size], tp[start : start + size])
            reply = await client.request(IK_ROBOT, ops.SOLVE, header, arrs)
            sol = ops.read_solve_reply(reply.arrays)
            result.compiles = max(result.compiles, int(reply.header.get("compiles_since_ready", 0)))
            if (
                sol.joints.shape[0] != size
                or not np.isfinite(sol.joints).all()
                or not float(np.max(sol.pos_err)) <= IK_POS_TOL_M
            ):
                result.wrong += 1
            result.sizes[size] += 1

        async def lane(lane_no: int) -> None:
            n = 0
            while time.monotonic() < until:
                n += 1
                t0 = time.perf_counter()
                try:
                    if spec.ik:
                        await solve(n)
                    elif spec.operation == "sleep":
                        await client.request("echo", "sleep", {"seconds": spec.work_ms / 1000})
                    else:
                        reply = await client.request("echo", "echo", {"n": n}, arrays)
                        if reply.header.get("n") != n or reply.arrays["x"][0] != index:
                            result.wrong += 1
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    result.codes["ok"] += 1
                except Overloaded:
                    result.codes["overloaded"] += 1
                    await asyncio.sleep(0.002)  # a polite robot backs off a little
                except RemoteError as e:
                    result.codes[e.code] += 1
                except IKTimeout:
                    result.codes["client_timeout"] += 1
                except IKError as e:
                    result.codes[type(e).__name__] += 1

        await asyncio.gather(*(lane(i) for i in range(spec.in_flight)))


def _client_process(spec: Spec, start_at: float, queue: Any) -> None:
    async def main() -> Result:
        result = Result()
        # Wall-clock start so every process begins together (monotonic is per boot, but the
        # parent and children share it on Linux; use time.time for clarity).
        await asyncio.sleep(max(0.0, start_at - time.time()))
        until = time.monotonic() + spec.seconds
        await asyncio.gather(*(_client_loop(spec, i, until, result) for i in range(spec.clients)))
        return result

    res = asyncio.run(main())
    queue.put((res.latencies_ms, dict(res.codes), res.wrong, dict(res.sizes), res.compiles))


def run_phase(spec: Spec, procs: int) -> tuple[Result, float]:
    """Run ``spec.clients`` clients spread over ``procs`` processes; (merged result, wall s)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [spec.clients // procs + (1 if i < spec.clients % procs else 0) for i in range(procs)]
    start_at = time.time() + 2.0  # time for spawned interpreters to import
    workers = [
        ctx.Process(
            target=_client_process,
            args=(Spec(**{**spec.__dict__, "clients": n}), start_at, queue),
        )
        for n in per
        if n
    ]
    for w in workers:
        w.start()
    merged = Result()
    for _ in workers:
        lat, codes, wrong, sizes, compiles = queue.get(timeout=spec.seconds + spec.timeout + 120)
        merged.merge(Result(lat, Counter(codes), wrong, Counter(sizes), compiles))
    for w in workers:
        w.join(30)
    return merged, spec.seconds


# --------------------------------------------------------------------------- report


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def phase_row(name: str, spec: Spec, result: Result, seconds: float) -> str:
    ok = result.codes.get("ok", 0)
    errors = {k: v for k, v in sorted(result.codes.items()) if k != "ok"}
    lat = result.latencies_ms
    return (
        f"| {name} | {spec.clients} | {spec.in_flight} | {seconds:.0f} | {ok:,} | "
        f"{ok / seconds:,.0f} | {pct(lat, 50):.2f} | {pct(lat, 99):.2f} | "
        f"{max(lat) if lat else float('nan'):.1f} | {errors or '—'} | {result.wrong} |"
    )


PHASE_HEADER = (
    "| phase | clients | in flight each | s | answered | req/s | p50 ms | p99 ms | max ms "
    "| errors by code | wrong answers |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def rss_table(samples: list[tuple[float, str, dict[str, float | None]]], every: float) -> str:
    names = list(samples[0][2]) if samples else []
    lines = [
        "| t (s) | phase | " + " | ".join(f"{n} RSS MiB" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    last = -1e9
    for t, phase, rss in samples:
        if t - last >= every or (t, phase, rss) == samples[-1]:
            cells = " | ".join(f"{rss[n]:.1f}" if rss[n] is not None else "—" for n in names)
            lines.append(f"| {t:.0f} | {phase} | {cells} |")
            last = t
    return "\n".join(lines)


def rss_summary(samples: list[tuple[float, str, dict[str, float | None]]]) -> str:
    names = list(samples[0][2]) if samples else []
    lines = [
        "| process | phase | start MiB | peak MiB | end MiB |",
        "|---|---|---|---|---|",
    ]
    for phase in dict.fromkeys(p for _, p, _ in samples):
        rows = [r for _, p, r in samples if p == phase]
        for n in names:
            vals = [v for r in rows if (v := r[n]) is not None]
            if vals:
                lines.append(
                    f"| {n} | {phase} | {vals[0]:.1f} | {max(vals):.1f} | {vals[-1]:.1f} |"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="steady phase length")
    ap.add_argument("--overload-seconds", type=float, default=20.0, help="0 skips the phase")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--overload-in-flight", type=int, default=32)
    ap.add_argument("--work-ms", type=float, default=5.0, help="per request in the overload phase")
    ap.add_argument("--max-queue", type=int, default=1024, help="broker --max-queue")
    ap.add_argument("--ik", action="store_true", help="IK workers and `solve` (needs zmq_ik.ik)")
    ap.add_argument("--buckets", default="16", help="IK worker --buckets (with --ik)")
    args = ap.parse_args(argv)

    worker_args: tuple[str, ...] = ()
    if args.ik:
        try:
            import zmq_ik.ik  # noqa: F401
        except ImportError:
            ap.error("--ik needs the IK engine (zmq_ik.ik), which is not installed yet")
        worker_args = ("--buckets", args.buckets, "--cache-dir", str(ROOT / ".jax_cache"))

    print(
        f"# zmq-ik load: {args.clients} clients, {args.workers} {'IK' if args.ik else 'echo'} workers"
    )
    print(f"\nhost: {os.cpu_count()} CPUs, python {sys.version.split()[0]}\n")
    with Cluster(
        args.workers,
        ik=args.ik,
        broker_args=("--max-queue", str(args.max_queue)),
        worker_args=worker_args,
    ) as cluster:
        cluster.wait_ready()
        sampler = RssSampler(cluster)
        sampler.start()
        rows = []
        failures = []
        steady = Spec(cluster.endpoint, args.clients, args.seconds, ik=args.ik)
        sampler.phase = "steady"
        result, secs = run_phase(steady, args.procs)
        rows.append(phase_row("steady", steady, result, secs))
        bad = {k: v for k, v in result.codes.items() if k not in ("ok", "overloaded")}
        if bad or result.wrong:
            failures.append(f"steady phase: errors {bad}, wrong answers {result.wrong}")
        if args.overload_seconds > 0 and not args.ik:
            sampler.phase = "overload"
            over = Spec(
                cluster.endpoint,
                args.clients,
                args.overload_seconds,
                in_flight=args.overload_in_flight,
                operation="sleep",
                work_ms=args.work_ms,
                timeout=30.0,
            )
            result, secs = run_phase(over, args.procs)
            rows.append(phase_row(f"overload ({args.work_ms:g} ms jobs)", over, result, secs))
            bad = {k: v for k, v in result.codes.items() if k not in ("ok", "overloaded")}
            if bad:
                failures.append(f"overload phase: errors other than overloaded: {bad}")
        sampler.phase = "after"
        time.sleep(3.0)
        sampler.stop()
        status = cluster.status()

    print("## Throughput and latency\n")
    print(PHASE_HEADER)
    print("\n".join(rows))
    print("\n## RSS (VmRSS)\n")
    print(rss_summary(sampler.samples))
    print("\n### Over time\n")
    print(rss_table(sampler.samples, every=5.0))
    print("\n## Broker counters at the end\n")
    print("| counter | value |\n|---|---|")
    for k, v in sorted(
        {**status["counters"], **{f"error:{k}": v for k, v in status["errors"].items()}}.items()
    ):
        print(f"| {k} | {v:,} |")
    if failures:
        print("\n**FAILED:** " + "; ".join(failures))
        return 1
    print("\nOK: no errors other than `overloaded`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
