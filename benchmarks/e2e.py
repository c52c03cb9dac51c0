"""Section 3 — end to end: whole stroke jobs through `IKClient.compute`, 1 and 2 IK workers.

Jobs of 100, 1,000 and 10,000 stroke pairs (× 16 poses × 6 offsets = 9,600 to 960,000
poses) are split by the client into chunks sent concurrently (the default 64 pairs per chunk,
8 in flight), so every worker serving the robot works on the job at once. The second worker
joins the same broker for the 2-worker rows. The 10,000-pair job runs once (with progress),
and not at all with ``--quick``.
"""

from __future__ import annotations

import sys
import time

from benchmarks import _data
from benchmarks._common import Config, Section, Table, log, median, ratio
from benchmarks._harness import Procs

COLUMNS = "stroke pairs|poses|IK workers|runs|wall s (median)|poses/s|speed-up vs 1 worker"


def run(cfg: Config) -> Section:
    section = _data.ik_section("e2e", "3. End to end: stroke jobs through `IKClient.compute`")
    if section.skipped:
        return section
    from zmq_ik.client import IKClient

    sizes = cfg.pick([100, 1000, 10_000], [100, 1000], [2])
    reps = {100: cfg.runs, 1000: max(1, min(cfg.runs, 3)), 10_000: 1, 2: 1}
    worker_counts = cfg.pick([1, 2], [1, 2], [1])
    buckets = cfg.pick(None, None, "16,64")
    chunk = cfg.pick(64, 64, 1)
    scene, _ = _data.example()
    per_pair = scene.stroke_length * scene.offset_num
    times: dict[tuple[int, int], list[float]] = {}
    with Procs() as procs:
        ep = procs.broker().endpoint
        started = 0
        with IKClient(ep, timeout=600.0) as client:
            for workers in worker_counts:
                while started < workers:
                    procs.ik_worker(ep, buckets=buckets)
                    started += 1
                log(cfg, f"  waiting for {workers} IK worker(s)")
                procs.wait_workers(ep, workers, robot="tatbot")
                client.compute(scene, _data.strokes(min(sizes[0], 16)), chunk_pairs=chunk)  # warm
                for pairs in sizes:
                    job = _data.strokes(pairs)
                    for _ in range(reps[pairs]):
                        progress = None
                        if pairs >= 10_000 and cfg.verbose:
                            t_start = time.perf_counter()

                            def progress(done: int, total: int, t0: float = t_start) -> None:
                                if done and (done == total or done % (per_pair * 640) == 0):
                                    el = time.perf_counter() - t0
                                    print(
                                        f"    {done:,}/{total:,} poses, {el:.0f}s, "
                                        f"{done / max(el, 1e-9):,.0f} poses/s",
                                        file=sys.stderr,
                                        flush=True,
                                    )

                        t0 = time.perf_counter()
                        batch = client.compute(scene, job, chunk_pairs=chunk, progress=progress)
                        times.setdefault((pairs, workers), []).append(time.perf_counter() - t0)
                        assert batch.joints.shape[0] == pairs
                    log(
                        cfg,
                        f"  {pairs:,} pairs, {workers} worker(s): "
                        f"{median(times[(pairs, workers)]):.2f}s",
                    )
    table = Table(
        "Whole jobs through `IKClient.compute` (16 poses × 6 offsets per stroke pair)",
        COLUMNS.split("|"),
        note=f"Client-side chunks of {chunk} pairs, 8 in flight; CPU workers (JAX_PLATFORMS=cpu) "
        "on the same 2-core machine as the broker and the client.",
    )
    data = {}
    for pairs in sizes:
        for workers in worker_counts:
            t = times.get((pairs, workers))
            if not t:
                continue
            wall = median(t)
            base = median(times.get((pairs, 1), [float("nan")]))
            table.rows.append(
                [
                    pairs,
                    pairs * per_pair,
                    workers,
                    len(t),
                    wall,
                    pairs * per_pair / wall,
                    ratio(base, wall),
                ]
            )
            data[f"{pairs}x{workers}"] = {"wall_s": wall, "poses_s": pairs * per_pair / wall}
    section.tables.append(table)
    section.data.update(data)
    return section
