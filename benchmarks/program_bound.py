"""Host memory of an IK worker whose clients keep asking for programs it did not warm.

    python -m benchmarks.program_bound                 # seeds 2..13, bound 3, then unbounded
    python -m benchmarks.program_bound --programs 4 --bound 2 --no-unbounded

In process (an `IKService` as a worker runs it, tatbot, bucket 16): one `solve` request per
distinct ``seeds`` setting, each a new program; RSS after each. With the bound, programs
compiled on demand are dropped every ``--bound`` compiles (see docs/reliability.md).
Output: markdown rows on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(programs: int, bound: int, cache_dir: str) -> list[tuple[int, int, float]]:
    """(seeds, compiles since READY, RSS MiB) after each request."""
    from zmq_ik import ik
    from zmq_ik.robots import BUNDLED
    from zmq_ik.worker import ServiceCall
    from zmq_ik.worker.ik_service import IKService

    service = IKService(buckets=(16,), cache_dir=cache_dir, max_extra_compiles=bound)
    service.warmup()
    tatbot = BUNDLED["tatbot"]
    robot = ik.Robot.from_urdf(tatbot.urdf_path, tatbot.ee_links)
    T = robot.fk(np.tile(np.asarray(tatbot.rest, np.float32), (3, 1)))
    arrays: dict[str, Any] = {
        "target_wxyz": np.asarray(T.rotation().wxyz),
        "target_pos": np.asarray(T.translation()),
    }
    rows = [(1, 0, _rss_mib())]
    for seeds in range(2, 2 + programs):
        header, _ = service.handle(ServiceCall("tatbot", "solve", {"ik": {"seeds": seeds}}, arrays))
        rows.append((seeds, int(header["compiles_since_ready"]), _rss_mib()))
        print(f"  seeds {seeds}: RSS {rows[-1][2]:,.0f} MiB", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.program_bound")
    parser.add_argument("--programs", type=int, default=12, help="distinct programs asked for")
    parser.add_argument("--bound", type=int, default=3, help="max_extra_compiles of the worker")
    parser.add_argument("--no-unbounded", action="store_true", help="skip the unbounded run")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/zmq-ik/jax"))
    args = parser.parse_args(argv)
    if args.no_unbounded:
        bounds = [args.bound]
    else:  # each run in a fresh process, so neither inherits the other's heap
        import subprocess

        for flag in (str(args.bound), str(10**9)):
            cmd = [sys.executable, "-m", "benchmarks.program_bound", "--no-unbounded"]
            cmd += ["--programs", str(args.programs), "--bound", flag]
            subprocess.run([*cmd, "--cache-dir", args.cache_dir], check=True)
        return 0
    rows = run(args.programs, bounds[0], args.cache_dir)
    label = "unbounded" if bounds[0] >= 10**9 else f"max_extra_compiles={bounds[0]}"
    print(f"\n| {label}: seeds | compiles since READY | RSS MiB |\n|---:|---:|---:|")
    for seeds, compiles, rss in rows:
        print(f"| {seeds} | {compiles} | {rss:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
