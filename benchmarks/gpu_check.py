"""The GPU path in one command: engine, worker start, serve end to end, answers vs the CPU.

    bash benchmarks/gpu_check.sh            # on an NVIDIA host: CUDA wheels, then this
    python -m benchmarks.gpu_check          # this, with whatever JAX is installed
    python -m benchmarks.gpu_check --dry-run  # CPU, tiny sizes (CI runs this: it cannot rot)

Steps, each timed and printed as it goes, then one summary table (markdown, also written to
``--out``):

1. the device JAX sees (and ``nvidia-smi``'s name for it);
2. the IK engine in-process: bimanual poses/s at batch 1, 1,024, 16,384 and 131,072, with
   the fresh compile time of each batch's bucket (`benchmarks.bench_ik.throughput`);
3. ``zmq-ik worker --gpu 0``: seconds to READY with an empty compilation cache (cold) and
   again with the cache it just filled (warm);
4. ``zmq-ik serve --workers 1 --gpu 0``: a 10,000-pair ``compute`` end to end and a loop of
   single-pose ``solve`` calls through the broker (p50 / p99);
5. the same 1,024 targets solved on this device and on the CPU (a subprocess with
   ``JAX_PLATFORMS=cpu``): the largest joint difference, goal ≤ 1e-4 rad;
6. reach over every robot of `benchmarks.robots` (FK of 16,384 random joint vectors each,
   the default solve in one call): reached %, limits, worst errors, poses/s, first call.

Goals on an H100/H200 (issue #17): ≥ 1,000,000 poses/s at batch 131,072; single-pose loop
p50 ≤ 1.5 ms through the broker; cold READY ≤ 60 s, warm ≤ 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import robots
from benchmarks._common import nvidia_smi, pct, say
from benchmarks._harness import ROOT, Procs
from zmq_ik.apps.serve import free_endpoint

BATCHES = (1, 1024, 16384, 131072)
DRY_BATCHES = (16, 64)
DRY_BUCKETS = "16,64"
"""The dry run's sizes are the test worker's buckets (tests/conftest.py IK_TEST_BUCKETS), so
in CI it loads their programs from the shared cache instead of compiling others: it checks
the path, not the numbers."""
COMPARE_TARGETS = 1024
ROBOT_TARGETS = 16384
"""Targets per robot in the reach table (FK of random joints; one call each)."""
DRY_COMPARE_TARGETS = 16


def _env(platform: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if platform:
        env["JAX_PLATFORMS"] = platform
    return env


def gpu_names() -> tuple[str, str]:
    """(what nvidia-smi calls the GPUs or why not, the device JAX computes on)."""
    from benchmarks.bench_ik import device_name

    return nvidia_smi(), device_name()


def engine(batches: tuple[int, ...], runs: int, fresh_compile: bool) -> list[dict[str, Any]]:
    """In-process throughput and compile time per bucket (the IK benchmark's rows)."""
    from benchmarks.bench_ik import _robot, throughput

    robot, rest = _robot()
    return throughput(robot, rest, batches, runs, runs, fresh_compile=fresh_compile, verbose=True)


def worker_start(gpu_args: list[str], buckets: list[str], cache: Path) -> dict[str, float]:
    """Seconds from `zmq-ik worker` start to READY with compilation cache ``cache`` (empty
    the first time for a real cold start), then again with what it filled (warm)."""
    times: dict[str, float] = {}
    for kind in ("cold", "warm"):
        with Procs() as procs:
            args = [*gpu_args, *buckets, "--cache-dir", str(cache)]
            # _env: the device JAX finds, not the harness's CPU default
            _, times[kind] = procs.timed_worker(procs.broker().endpoint, *args, env=_env(None))
            say(True, f"  worker READY ({kind} cache): {times[kind]:.1f}s")
    return times


def serve_end_to_end(
    gpu_args: list[str], buckets: list[str], cache: Path, pairs: int, loop: int
) -> dict[str, float]:
    """`zmq-ik serve --workers 1`: a ``pairs``-pair compute and ``loop`` single-pose solves."""
    from benchmarks import _data
    from benchmarks.bench_ik import stroke_targets
    from zmq_ik.client import IKClient

    endpoint = free_endpoint()
    with Procs() as procs:
        procs.env = _env(None)
        procs.serve(endpoint, "--workers", "1", *gpu_args, *buckets, "--cache-dir", str(cache))
        procs.wait_workers(endpoint, 1, timeout=900)
        scene, _ = _data.example()
        strokes = _data.strokes(pairs)
        poses = pairs * scene.stroke_length * scene.offset_num
        with IKClient(endpoint, timeout=600.0) as client:
            client.compute(scene, _data.strokes(1))  # warm the path
            t0 = time.perf_counter()
            batch = client.compute(scene, strokes)
            seconds = time.perf_counter() - t0
            assert len(batch.joints) == pairs
            say(True, f"  compute {pairs} pairs: {seconds:.2f}s ({poses / seconds:,.0f} poses/s)")
            wxyz, pos = stroke_targets(loop, seed=7)
            rest = None
            rtts = []
            for i in range(loop):
                t0 = time.perf_counter()
                sol = client.solve("tatbot", wxyz[i], pos[i], rest, timeout=5.0)
                rtts.append(time.perf_counter() - t0)
                rest = sol.joints[0]
        ms = np.asarray(rtts[min(10, loop // 2) :]) * 1000  # the first calls warm caches
        return {
            "pairs": pairs,
            "compute_s": seconds,
            "compute_poses_per_s": poses / seconds,
            "loop_p50_ms": pct(ms, 50),
            "loop_p99_ms": pct(ms, 99),
        }


def solve_to(path: Path, n: int) -> None:
    """Solve ``n`` fixed stroke-like targets in-process and save the joints (``--solve-to``)."""
    from benchmarks._harness import JAX_CACHE
    from benchmarks.bench_ik import _robot, stroke_targets
    from zmq_ik import ik

    ik.run_inline_on_cpu()
    ik.enable_compilation_cache(JAX_CACHE)
    robot, rest = _robot()
    wxyz, pos = stroke_targets(n, seed=11)
    sol = ik.solve_ik(robot, wxyz, pos, rest)
    np.save(path, np.asarray(sol.joints))


def compare_with_cpu(log_dir: Path) -> float:
    """Largest |joint difference| (rad or m) between this device and the CPU, same targets,
    each solved in a process of its own, both at once."""
    paths = [log_dir / "joints-device.npy", log_dir / "joints-cpu.npy"]
    with Procs() as procs:
        for path, platform in zip(paths, (None, "cpu"), strict=True):
            argv = [sys.executable, "-m", "benchmarks.gpu_check", "--solve-to", str(path)]
            procs.spawn(f"solve-{platform or 'device'}", argv, _env(platform))
        for run in list(procs.procs):
            if run.wait(900) != 0:
                raise RuntimeError(f"{run.args} exited {run.returncode}:\n{procs.log(run)[-2000:]}")
    a, b = (np.load(p) for p in paths)
    return float(np.max(np.abs(a - b)))


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"GPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"nvidia-smi: {result['smi']}; JAX device: {result['device']}",
        "",
        "| measure | value | goal (H100/H200) |",
        "|---|---|---|",
    ]
    for row in result["engine"]:
        goal = "≥ 1,000,000" if row["batch"] == 131072 else ""
        lines.append(
            f"| engine, batch {row['batch']:,} (bucket {row['bucket']:,}) | "
            f"{row['poses_per_s']:,.0f} poses/s, compile {row['compile_s']:.1f} s | {goal} |"
        )
    start = result["start"]
    lines.append(f"| worker READY, cold cache | {start['cold']:.1f} s | ≤ 60 s |")
    lines.append(f"| worker READY, warm cache | {start['warm']:.1f} s | ≤ 10 s |")
    e2e = result["serve"]
    lines.append(
        f"| serve: compute {e2e['pairs']:,} pairs | {e2e['compute_s']:.2f} s, "
        f"{e2e['compute_poses_per_s']:,.0f} poses/s | |"
    )
    lines.append(
        f"| serve: single-pose loop p50 / p99 | {e2e['loop_p50_ms']:.2f} / "
        f"{e2e['loop_p99_ms']:.2f} ms | p50 ≤ 1.5 ms |"
    )
    lines.append(
        f"| max joint difference vs CPU ({result['compared']} targets) | "
        f"{result['vs_cpu']:.2e} | ≤ 1e-4 |"
    )
    lines.append(f"| wall time of this check | {result['wall_s']:.0f} s | ≤ 8 min |")
    lines += [
        "",
        "| robot | joints | targets | reached % (0.01 mm, 1e-4 rad) | outside limits % "
        "| pos p99 (mm) | ori p99 (rad) | poses/s | first call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["robots"]:
        lines.append(
            f"| {row['robot']} | {row['joints']} | {row['targets']:,} | {row['reached %']:.2f} | "
            f"{row['outside limits %']:.2f} | {row['pos p99 (mm)']:.4f} | "
            f"{row['ori p99 (rad)']:.2e} | {row['poses/s']:,.0f} | {row['first call (s)']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (for CI)")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--solve-to", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.solve_to is not None:
        dry = os.environ.get("ZMQ_IK_GPU_CHECK_DRY")
        solve_to(args.solve_to, DRY_COMPARE_TARGETS if dry else COMPARE_TARGETS)
        return 0
    t0 = time.monotonic()
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["ZMQ_IK_GPU_CHECK_DRY"] = "1"
        gpu_args: list[str] = []
        buckets = ["--buckets", DRY_BUCKETS]
    else:
        gpu_args, buckets = ["--gpu", "0"], []
    from benchmarks._harness import JAX_CACHE
    from zmq_ik import ik

    ik.run_inline_on_cpu()
    ik.enable_compilation_cache(JAX_CACHE)
    result: dict[str, Any] = {}
    result["smi"], result["device"] = gpu_names()
    say(True, f"[1/5] device: {result['device']} (nvidia-smi: {result['smi']})")
    if not args.dry_run and result["device"] == "cpu":
        say(True, "JAX sees no GPU: install the CUDA wheels (benchmarks/gpu_check.sh) and rerun")
        return 1
    say(True, "[2/6] IK engine in-process")
    if args.dry_run:  # no fresh compiles: the dry run checks the path, not the numbers
        result["engine"] = engine(DRY_BATCHES, runs=1, fresh_compile=False)
    else:
        result["engine"] = engine(BATCHES, runs=5, fresh_compile=True)
    log_dir = Path(tempfile.mkdtemp(prefix="zmq-ik-gpu-check-"))
    try:
        # The dry run reuses the shared cache: it checks the path, not a cold start.
        cache = JAX_CACHE if args.dry_run else log_dir / "jax-cache"
        say(True, "[3/6] worker start, cold and warm compilation cache")
        result["start"] = worker_start(gpu_args, buckets, cache)
        say(True, "[4/6] zmq-ik serve end to end")
        pairs, loop = (2, 20) if args.dry_run else (10_000, 300)
        result["serve"] = serve_end_to_end(gpu_args, buckets, cache, pairs, loop)
        say(True, "[5/6] answers vs the CPU")
        result["compared"] = DRY_COMPARE_TARGETS if args.dry_run else COMPARE_TARGETS
        result["vs_cpu"] = compare_with_cpu(log_dir)
        say(True, "[6/6] reach over the robots (benchmarks/robots.py), large batches")
        if args.dry_run:
            result["robots"] = robots.large_batches(["so100"], 16, buckets=(64,))
        else:
            result["robots"] = robots.large_batches(list(robots.ROBOTS), ROBOT_TARGETS)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    result["wall_s"] = time.monotonic() - t0
    text = summary(result)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
