"""Soak: steady load for minutes; do the broker's and workers' memory stay flat?

    python -m benchmarks.soak                      # 10 minutes, 16 clients, 2 echo workers
    python -m benchmarks.soak --minutes 2 --warmup 30
    python -m benchmarks.soak --ik                 # IK workers: the JAX host-memory creep check

Broker and worker RSS (``VmRSS``) are sampled every ``--sample`` seconds. Growth is measured
after warm-up: the mean of the first ``--window`` samples after ``--warmup`` seconds against
the mean of the last ``--window`` samples. Target: < 5 % for every process. Output: markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.load import PHASE_HEADER, ROOT, Cluster, RssSampler, Spec, phase_row, run_phase


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
        f"| growth after warm-up | < {target_pct:g} % |",
        "|---|---|---|---|---|---|---|",
    ]
    failures = []
    for n in names:
        every = [r[n] for _, _, r in samples if r[n] is not None]
        vals = [r[n] for _, r in after if r[n] is not None]
        if len(vals) < 2 * window:
            lines.append(f"| {n} | — | — | — | — | too few samples after warm-up | — |")
            failures.append(f"{n}: too few samples")
            continue
        base = sum(vals[:window]) / window
        end = sum(vals[-window:]) / window
        growth = (end - base) / base * 100
        ok = growth < target_pct
        if not ok:
            failures.append(f"{n} grew {growth:.2f} %")
        lines.append(
            f"| {n} | {every[0]:.1f} | {base:.1f} | {end:.1f} | {max(vals):.1f} | "
            f"{growth:+.2f} % | {'yes' if ok else '**no**'} |"
        )
    return "\n".join(lines), failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from growth")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--window", type=int, default=3, help="samples averaged at each end")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1, help="client processes")
    ap.add_argument("--payload-floats", type=int, default=1024, help="array size per request")
    ap.add_argument("--target", type=float, default=5.0, help="allowed growth, percent")
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

    seconds = args.minutes * 60
    print(
        f"# zmq-ik soak: {args.minutes:g} min, {args.clients} clients, "
        f"{args.workers} {'IK' if args.ik else 'echo'} workers"
    )
    print(
        f"\nhost: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; RSS every "
        f"{args.sample:g} s; warm-up {args.warmup:g} s; {args.payload_floats * 4:,}-byte arrays\n"
    )
    with Cluster(args.workers, ik=args.ik, worker_args=worker_args) as cluster:
        cluster.wait_ready()
        sampler = RssSampler(cluster, interval=args.sample)
        sampler.phase = "soak"
        spec = Spec(
            cluster.endpoint,
            args.clients,
            seconds,
            payload_floats=args.payload_floats,
            ik=args.ik,
        )
        sampler.start()
        t0 = time.monotonic()
        result, secs = run_phase(spec, args.procs)
        sampler.phase = "after"
        time.sleep(args.sample)
        sampler.stop()
        status = cluster.status()
        elapsed = time.monotonic() - t0

    # Sampler time 0 is before the clients' 2 s start delay: shift the warm-up accordingly.
    table, failures = growth_table(sampler.samples, args.warmup + 2.0, args.window, args.target)
    print("## Load\n")
    print(PHASE_HEADER)
    print(phase_row("soak", spec, result, secs))
    errors = {k: v for k, v in result.codes.items() if k not in ("ok", "overloaded")}
    if errors or result.wrong:
        failures.append(f"errors {errors}, wrong answers {result.wrong}")
    print(
        f"\n({elapsed:.0f} s wall; broker served {status['counters'].get('replies', 0):,} replies)"
    )
    print("\n## RSS growth\n")
    print(table)
    print("\n### Samples\n")
    names = list(sampler.samples[0][2])
    print("| t (s) | " + " | ".join(f"{n} MiB" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    step = max(1, len(sampler.samples) // 30)
    for t, _, rss in sampler.samples[::step] + sampler.samples[-1:]:
        print(
            f"| {t:.0f} | " + " | ".join(f"{rss[n]:.1f}" if rss[n] else "—" for n in names) + " |"
        )
    if failures:
        print("\n**FAILED:** " + "; ".join(failures))
        return 1
    print(f"\nOK: every process grew less than {args.target:g} % after warm-up.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
