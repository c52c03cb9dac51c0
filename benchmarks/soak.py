"""Soak: steady load for minutes; do the broker's and workers' memory stay flat?

    python -m benchmarks.soak                      # 10 minutes, 16 clients, 2 echo workers
    python -m benchmarks.soak --minutes 2 --warmup 30
    python -m benchmarks.soak --ik                 # IK workers: the JAX host-memory creep check

Broker and worker RSS (``VmRSS``) are sampled every ``--sample`` seconds. Growth is measured
after warm-up: the mean of the first ``--window`` samples after ``--warmup`` seconds against
the mean of the last ``--window`` samples. Target: < 5 % for every process. A least-squares
slope (MiB per minute) over everything after warm-up is printed too, so a slow creep that the
two end windows might hide shows. Output: markdown.

With ``--ik`` the workers compile ``--buckets`` (default 16…256) and every client cycles
through ``--ik-sizes`` targets per `solve` (default 1…300: every bucket, padded and exact
sizes, and one size above the largest bucket, which is solved in chunks). Targets are
reachable (FK of random joint configurations), so each answer is checked: right shape,
finite, every target met within 5 mm, and no recompilation (``compiles_since_ready``).
After the soak, one request of each size is re-checked here with FK (JAX on the CPU).
The default warm-up is 120 s with ``--ik`` (60 s without): JAX's first runs of each bucket
and the allocator's arenas settle in the first minute or two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchmarks.load import (
    IK_POS_TOL_M,
    IK_ROBOT,
    PHASE_HEADER,
    ROOT,
    Cluster,
    RssSampler,
    Spec,
    ik_targets,
    phase_row,
    run_phase,
)

IK_BUCKETS = "16,32,64,128,256"
IK_SIZES = "1,8,16,17,32,40,64,100,128,200,256,300"


def growth_table(
    samples: list[tuple[float, str, dict[str, float | None]]],
    warmup: float,
    window: int,
    target_pct: float,
) -> tuple[str, list[str]]:
    names = list(samples[0][2]) if samples else []
    after = [(t, r) for t, phase, r in samples if phase == "soak" and t >= warmup]
    lines = [
        "| process | RSS at start MiB | after warm-up MiB | at end MiB | peak after warm-up MiB "
        f"| growth after warm-up | slope after warm-up MiB/min | < {target_pct:g} % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for n in names:
        every = [v for _, _, r in samples if (v := r[n]) is not None]
        vals = [v for _, r in after if (v := r[n]) is not None]
        if len(vals) < 2 * window:
            lines.append(f"| {n} | — | — | — | — | too few samples after warm-up | — | — |")
            failures.append(f"{n}: too few samples")
            continue
        base = sum(vals[:window]) / window
        end = sum(vals[-window:]) / window
        growth = (end - base) / base * 100
        ok = growth < target_pct
        if not ok:
            failures.append(f"{n} grew {growth:.2f} %")
        ts = [t for t, r in after if r[n] is not None]
        slope = float(np.polyfit(ts, vals, 1)[0]) * 60 if len(set(ts)) > 1 else 0.0
        lines.append(
            f"| {n} | {every[0]:.1f} | {base:.1f} | {end:.1f} | {max(vals):.1f} | "
            f"{growth:+.2f} % | {slope:+.3f} | {'yes' if ok else '**no**'} |"
        )
    return "\n".join(lines), failures


def verify_ik(
    endpoint: str, sizes: tuple[int, ...], targets: tuple[np.ndarray, np.ndarray]
) -> tuple[float, list[str]]:
    """One `solve` per size through the broker, the answer checked here by FK: (worst
    position error in m, problems)."""
    from zmq_ik import ik
    from zmq_ik.client import IKClient
    from zmq_ik.robots import BUNDLED

    bundled = BUNDLED[IK_ROBOT]
    robot = ik.Robot.from_urdf(str(bundled.urdf_path), bundled.ee_links)
    tw, tp = targets
    worst, bad = 0.0, []
    with IKClient(endpoint, timeout=30.0, retries=1) as client:
        for n in sizes:
            sol = client.solve(IK_ROBOT, tw[:n], tp[:n])
            if sol.joints.shape != (n, robot.n_joints):
                bad.append(f"size {n}: joints shape {sol.joints.shape}")
                continue
            got = np.asarray(robot.fk(np.asarray(sol.joints, np.float32)).translation())
            err = float(np.max(np.linalg.norm(got - tp[:n], axis=-1)))
            worst = max(worst, err)
            if not err <= IK_POS_TOL_M:
                bad.append(f"size {n}: FK misses by {err * 1000:.1f} mm")
    return worst, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds excluded from growth (default 60; 120 with --ik)",
    )
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--window", type=int, default=3, help="samples averaged at each end")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1, help="client processes")
    ap.add_argument("--payload-floats", type=int, default=1024, help="array size per request")
    ap.add_argument("--target", type=float, default=5.0, help="allowed growth, percent")
    ap.add_argument("--ik", action="store_true", help="IK workers and `solve` (needs zmq_ik.ik)")
    ap.add_argument("--buckets", default=IK_BUCKETS, help="IK worker --buckets (with --ik)")
    ap.add_argument(
        "--ik-sizes", default=IK_SIZES, help="targets per solve request, cycled (with --ik)"
    )
    args = ap.parse_args(argv)
    if args.warmup is None:
        args.warmup = 120.0 if args.ik else 60.0

    worker_args: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    targets: tuple[np.ndarray, np.ndarray] | None = None
    if args.ik:
        try:
            import zmq_ik.ik  # noqa: F401
        except ImportError:
            ap.error("--ik needs the IK engine (zmq_ik.ik), which is not installed yet")
        worker_args = ("--buckets", args.buckets, "--cache-dir", str(ROOT / ".jax_cache"))
        sizes = tuple(int(n) for n in args.ik_sizes.split(","))
        if not sizes or min(sizes) < 1:
            ap.error("--ik-sizes: positive integers, comma-separated")
        targets = ik_targets(count=max(2048, 4 * max(sizes)))

    seconds = args.minutes * 60
    print(
        f"# zmq-ik soak: {args.minutes:g} min, {args.clients} clients, "
        f"{args.workers} {'IK' if args.ik else 'echo'} workers"
    )
    what = (
        f"`solve` of {args.ik_sizes} targets (cycled), buckets {args.buckets}"
        if args.ik
        else f"{args.payload_floats * 4:,}-byte arrays"
    )
    load = os.getloadavg()
    print(
        f"\nhost: {os.cpu_count()} CPUs (load average at start {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f}), python {sys.version.split()[0]}; RSS every {args.sample:g} s; "
        f"warm-up {args.warmup:g} s; {what}\n"
    )
    t_start = time.monotonic()
    with Cluster(args.workers, ik=args.ik, worker_args=worker_args) as cluster:
        cluster.wait_ready()
        ready_s = time.monotonic() - t_start
        sampler = RssSampler(cluster, interval=args.sample, served=True)
        sampler.phase = "soak"
        spec = Spec(
            cluster.endpoint,
            args.clients,
            seconds,
            payload_floats=args.payload_floats,
            ik=args.ik,
            ik_sizes=sizes or (1,),
            ik_targets=targets,
        )
        sampler.start()
        t0 = time.monotonic()
        result, secs = run_phase(spec, args.procs)
        sampler.phase = "after"
        time.sleep(args.sample)
        sampler.stop()
        status = cluster.status()
        elapsed = time.monotonic() - t0
        checked = verify_ik(cluster.endpoint, sizes, targets) if targets is not None else None
        load = os.getloadavg()

    # Sampler time 0 is before the clients' 2 s start delay: shift the warm-up accordingly.
    table, failures = growth_table(sampler.samples, args.warmup + 2.0, args.window, args.target)
    print("## Load\n")
    print(PHASE_HEADER)
    print(phase_row("soak", spec, result, secs))
    errors = {k: v for k, v in result.codes.items() if k not in ("ok", "overloaded")}
    if errors or result.wrong:
        failures.append(f"errors {errors}, wrong answers {result.wrong}")
    if result.compiles:
        failures.append(f"IK workers recompiled after ready ({result.compiles} compiles)")
    pids = {w.pid: f"worker{i}" for i, w in enumerate(cluster.workers)}
    per_worker = ", ".join(
        f"{pids.get(w.get('pid'), w.get('pid'))} {w['served']:,}" for w in status["workers"]
    )
    print(
        f"\n({elapsed:.0f} s wall after {ready_s:.0f} s start-up; broker served "
        f"{status['counters'].get('replies', 0):,} replies; per worker: {per_worker}; "
        f"load average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f})"
    )
    if args.ik:
        print("\n## IK requests\n")
        print("| targets per request | answered | targets solved |\n|---|---|---|")
        for n, count in sorted(result.sizes.items()):
            print(f"| {n} | {count:,} | {n * count:,} |")
        total = sum(n * c for n, c in result.sizes.items())
        print(
            f"\n{total:,} targets solved; wrong answers (shape, NaN, miss > "
            f"{IK_POS_TOL_M * 1000:g} mm): {result.wrong}; max `compiles_since_ready`: "
            f"{result.compiles}."
        )
        if checked is not None:
            worst, bad = checked
            print(
                f"Re-checked here with FK after the soak, one request per size: worst position "
                f"error {worst * 1000:.3f} mm{'' if not bad else f'; **wrong: {bad}**'}."
            )
            if bad:
                failures.append(f"FK re-check: {bad}")
    print("\n## RSS growth\n")
    print(table)
    print("\n### Samples\n")
    names = list(sampler.samples[0][2])
    served_names = list(sampler.served[0]) if sampler.served else []
    print(
        "| t (s) | "
        + " | ".join(f"{n} MiB" for n in names)
        + "".join(f" | {n} served" for n in served_names)
        + " |"
    )
    print("|---|" + "---|" * (len(names) + len(served_names)))
    step = max(1, len(sampler.samples) // 30)
    idx = list(range(0, len(sampler.samples), step))
    if idx and idx[-1] != len(sampler.samples) - 1:
        idx.append(len(sampler.samples) - 1)
    for i in idx:
        t, _, rss = sampler.samples[i]
        served = sampler.served[i] if i < len(sampler.served) else {}
        print(
            f"| {t:.0f} | "
            + " | ".join(f"{rss[n]:.1f}" if rss[n] else "—" for n in names)
            + "".join(f" | {served.get(n, -1):,}" for n in served_names)
            + " |"
        )
    if failures:
        print("\n**FAILED:** " + "; ".join(failures))
        return 1
    print(f"\nOK: every process grew less than {args.target:g} % after warm-up.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
