"""Execute while computing (#16): `IKClient.stream` against `IKClient.compute`, one IK worker.

    python -m benchmarks.stream                  # 1,000- and 10,000-pair jobs (~10 min)
    python -m benchmarks.stream --quick          # 1,000 pairs only
    python -m benchmarks.stream --pairs 1000 --runs 5

One broker and one IK worker on the CPU, each its own process; the client is this process.
Per job size, interleaved runs of:

* a stream (default chunks: 1 pair, then doubling to 64; 8 held): time to its first slice,
  and to its last;
* `compute` with fixed 64-pair chunks (how `compute` cut every job before #16);
* one-pair `compute` round trips, the yardstick for the first slice.

Goals: first slice ≤ 1.5 × a one-pair round trip; whole stream ≤ 1.05 × compute. Then the
client's memory, each case in a fresh process (`--rss`): peak RSS above the RSS just before
the job, for a stream whose consumer sleeps 10 ms per pair (slower than the worker) and for
`compute` (which holds the whole result). Goal: flat for the stream, bounded by
``max_in_flight`` chunks. Not part of ``python -m benchmarks`` (minutes of sleeping
consumers); `run` has the section signature should it join.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks import _data
from benchmarks._common import Config, Section, Table, log, median
from benchmarks._harness import ROOT, Procs

SLEEP_PER_PAIR = 0.010
"""The consumer's pace in the memory runs (s per stroke pair): slower than one CPU worker."""


def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """The highest RSS seen, read every 2 ms (ru_maxrss would include peaks from before the
    job, while the process started)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())


def measure_rss(endpoint: str, pairs: int, mode: str) -> dict[str, Any]:
    """(In a fresh process.) Peak RSS growth of one job: ``stream`` with a consumer sleeping
    `SLEEP_PER_PAIR` per pair, or ``compute``."""
    from zmq_ik.client import IKClient

    scene, _ = _data.example()
    job = _data.strokes(pairs)
    with IKClient(endpoint, timeout=600.0) as client:
        client.compute(scene, _data.strokes(2))  # sockets and buffers warmed
        base = rss_bytes()
        sampler = RssSampler()
        sampler.start()
        t0 = time.perf_counter()
        if mode == "stream":
            for _start, part in client.stream(scene, job):
                time.sleep(SLEEP_PER_PAIR * len(part))
        else:
            batch = client.compute(scene, job)
            del batch
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    return {
        "mode": mode,
        "pairs": pairs,
        "base_mb": base / 2**20,
        "peak_growth_mb": (max(sampler.peak, rss_bytes()) - base) / 2**20,
        "wall_s": wall,
    }


def _rss_child(endpoint: str, pairs: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.stream", "--rss", endpoint, str(pairs), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(cfg: Config, sizes: list[int] | None = None) -> Section:
    section = _data.ik_section("stream", "Execute while computing: `IKClient.stream` vs `compute`")
    if section.skipped:
        return section
    from zmq_ik.client import IKClient

    sizes = sizes or cfg.pick([1000, 10_000], [1000], [8])
    buckets = cfg.pick(None, None, "16,64")
    scene, _ = _data.example()
    one = _data.strokes(1)
    rows: list[list[Any]] = []
    mem: list[list[Any]] = []
    with Procs() as procs:
        ep = procs.broker().endpoint
        procs.ik_worker(ep, buckets=buckets)
        log(cfg, "  waiting for the IK worker")
        procs.wait_workers(ep, 1, robot="tatbot")
        with IKClient(ep, timeout=600.0) as client:
            client.compute(scene, _data.strokes(70))  # every chunk size compiled and warm
            for pairs in sizes:
                job = _data.strokes(pairs)
                runs = max(1, min(cfg.runs, 3 if pairs <= 1000 else 2))
                rtt: list[float] = []
                first: list[float] = []
                total: list[float] = []
                fixed: list[float] = []
                for _ in range(runs):
                    for _ in range(5):
                        t0 = time.perf_counter()
                        client.compute(scene, one)
                        rtt.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    t_first = None
                    n = 0
                    for _start, part in client.stream(scene, job):
                        if t_first is None:
                            t_first = time.perf_counter() - t0
                        n += len(part)
                    total.append(time.perf_counter() - t0)
                    assert n == pairs and t_first is not None
                    first.append(t_first)
                    t0 = time.perf_counter()
                    batch = client.compute(scene, job, chunk_pairs=64)
                    fixed.append(time.perf_counter() - t0)
                    assert len(batch) == pairs
                    del batch
                row = [
                    pairs,
                    runs,
                    median(rtt) * 1000,
                    median(first) * 1000,
                    median(first) / median(rtt),
                    median(total),
                    median(fixed),
                    median(total) / median(fixed),
                ]
                rows.append(row)
                log(cfg, f"  {pairs:,} pairs: " + ", ".join(f"{v:.4g}" for v in row[2:]))
            for pairs in sizes:
                for mode in ("stream", "compute"):
                    r = _rss_child(ep, pairs, mode)
                    mem.append([pairs, mode, r["base_mb"], r["peak_growth_mb"], r["wall_s"]])
                    log(cfg, f"  memory {pairs:,} pairs, {mode}: +{r['peak_growth_mb']:.1f} MB")
    section.tables.append(
        Table(
            "Time to the first slice and to the whole job (one CPU IK worker)",
            [
                "stroke pairs",
                "runs",
                "one-pair compute p50 ms",
                "stream: first slice ms",
                "first slice / one pair (goal ≤ 1.5)",
                "stream: whole job s",
                "compute, 64-pair chunks s",
                "stream / compute (goal ≤ 1.05)",
            ],
            rows,
            note="Medians over interleaved runs; 16 poses × 6 offsets per pair; stream with "
            "its defaults (1, 2, 4… 64-pair chunks, 8 held).",
        )
    )
    section.tables.append(
        Table(
            "Client memory: peak RSS above the RSS before the job",
            ["stroke pairs", "mode", "RSS before MB", "peak growth MB", "wall s"],
            mem,
            note=f"Each in a fresh process. stream: the consumer sleeps "
            f"{SLEEP_PER_PAIR * 1000:g} ms per pair; compute: the whole result is held.",
        )
    )
    section.data = {"timing": rows, "memory": mem}
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 pairs only")
    parser.add_argument("--pairs", type=str, default=None, help="job sizes, e.g. 1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rss", nargs=3, metavar=("ENDPOINT", "PAIRS", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.rss:
        endpoint, pairs, mode = args.rss
        print(json.dumps(measure_rss(endpoint, int(pairs), mode)))
        return 0
    sizes = [int(p) for p in args.pairs.split(",")] if args.pairs else None
    cfg = Config(runs=args.runs, quick=args.quick)
    t0 = time.perf_counter()
    section = run(cfg, sizes)
    if section.skipped:
        print(f"skipped: {section.skipped}")
        return 1
    print(" ".join(["python -m benchmarks.stream", *(argv if argv is not None else sys.argv[1:])]))
    for table in section.tables:
        print(table.markdown())
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
