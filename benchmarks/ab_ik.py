"""A/B of the IK engine between two source trees, interleaved in one run.

    git archive 728e5b0 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python -m benchmarks.ab_ik --base /tmp/base             # this tree against /tmp/base
    python -m benchmarks.ab_ik --base /tmp/base --rounds 4  # shorter

Each tree runs in its own process (``PYTHONPATH`` = the tree, so its ``zmq_ik`` is imported);
the parent sends both the same targets and asks them for one round at a time, alternating
who goes first, so load from the rest of the machine falls on both alike. Per round and tree:

- batch 1,024, stroke-like and FK-of-random-joints targets (bench_ik's sets), default
  settings: the call's median time, orientation p99 and median, position median;
- single-pose loops along the control-loop path (benchmarks/control_loop.py), rest = the
  previous answer and rest = the ready pose: p50;
- the overhead around the compiled program: `solve_ik` (one pose, a rest pose given) and
  `IKService.handle` (a decoded single-pose request), with the program replaced by its
  precomputed result (best of 7 × 2,000 calls).

The table gives each tree's median over rounds and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import JAX_CACHE, ROOT

MEASURES = (
    ("stroke-like, batch 1,024: ms per call", "stroke_ms"),
    ("stroke-like, batch 1,024: ori p99 (rad)", "stroke_ori_p99"),
    ("stroke-like, batch 1,024: ori median (rad)", "stroke_ori_median"),
    ("stroke-like, batch 1,024: pos median (mm)", "stroke_pos_median"),
    ("stroke-like, batch 1,024: pos p99 (mm)", "stroke_pos_p99"),
    ("FK of random joints, batch 1,024: ms per call", "fk_ms"),
    ("FK of random joints, batch 1,024: ori median (rad)", "fk_ori_median"),
    ("FK of random joints, batch 1,024: pos median (mm)", "fk_pos_median"),
    ("single-pose loop p50, warm rest (ms)", "loop_warm_ms"),
    ("single-pose loop p50, ready-pose rest (ms)", "loop_ready_ms"),
    ("single-pose loop, warm rest: largest joint step (rad)", "loop_warm_step"),
    ("single-pose loop, warm rest: worst ori err (rad)", "loop_warm_ori_max"),
    ("overhead around the program, solve_ik (µs)", "solve_overhead_us"),
    ("overhead around the program, IKService.handle (µs)", "handle_overhead_us"),
)


def _child(targets: str, cache: str) -> None:
    """One tree's side: load, compile (``cache``: the JAX cache), then one round per line
    on stdin."""
    import timeit

    from zmq_ik import ik, ops
    from zmq_ik.ik import _solve
    from zmq_ik.protocol import decode_payload, encode_payload
    from zmq_ik.worker import ServiceCall
    from zmq_ik.worker.ik_service import IKService

    data = np.load(targets)
    svc = IKService(buckets=(1, 16, 1024), cache_dir=cache)
    svc.warmup()
    robot = svc._robot("tatbot", svc.entries["tatbot"].ee_links)
    buckets = (1, 16, 1024)
    sets = {k: (data[f"{k}_wxyz"], data[f"{k}_pos"]) for k in ("stroke", "fk")}
    loop_wxyz, loop_pos = data["loop_wxyz"], data["loop_pos"]
    for wxyz, pos in sets.values():
        ik.solve_ik(robot, wxyz, pos, buckets=buckets)
    ik.solve_ik(robot, loop_wxyz[0], loop_pos[0], buckets=buckets)

    def batch(kind: str) -> dict[str, float]:
        wxyz, pos = sets[kind]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            sol = ik.solve_ik(robot, wxyz, pos, buckets=buckets)
            times.append(time.perf_counter() - t0)
        out = {
            f"{kind}_ms": 1000 * float(np.median(times)),
            f"{kind}_ori_median": float(np.median(sol.ori_err)),
            f"{kind}_pos_median": 1000 * float(np.median(sol.pos_err)),
        }
        if kind == "stroke":
            out["stroke_ori_p99"] = float(np.percentile(sol.ori_err, 99))
            out["stroke_pos_p99"] = 1000 * float(np.percentile(sol.pos_err, 99))
        return out

    def loop(warm: bool) -> dict[str, float]:
        """p50 (ms); with ``warm``, also the largest joint step between consecutive answers
        (continuity: no elbow flips) and the worst orientation error."""
        rest, lat, joints, ori = None, [], [], []
        for i in range(len(loop_wxyz)):
            t0 = time.perf_counter()
            sol = ik.solve_ik(robot, loop_wxyz[i], loop_pos[i], rest, buckets=buckets)
            lat.append(time.perf_counter() - t0)
            joints.append(sol.joints[0])
            ori.append(float(np.max(sol.ori_err)))
            if warm:
                rest = sol.joints[0]
        if not warm:
            return {"loop_ready_ms": 1000 * float(np.median(lat))}
        step = float(np.max(np.abs(np.diff(np.asarray(joints), axis=0))))
        return {
            "loop_warm_ms": 1000 * float(np.median(lat)),
            "loop_warm_step": step,
            "loop_warm_ori_max": max(ori),
        }

    # The overhead: the program replaced by its answer (what is left is everything else).
    w1, p1 = loop_wxyz[0], loop_pos[0]
    rest1 = np.asarray(ik.default_rest(robot)) + np.float32(0.001)
    # Whatever program the default settings run, answered with this pose's answer (made per
    # call in the shape of its batch, so every mode's bookkeeping sees a reached target).
    done = ik.solve_ik(robot, w1, p1, rest1, buckets=buckets)

    def answer(*args: Any) -> tuple[np.ndarray, ...]:
        b = args[0].shape[-1]
        return tuple(np.repeat(a.T, b, axis=1) for a in (done.joints, done.pos_err, done.ori_err))

    header, arrays = ops.solve_request(w1, p1, rest1)
    frames = [
        f if isinstance(f, bytes) else bytes(memoryview(f)) for f in encode_payload(header, arrays)
    ]
    request = decode_payload(frames)
    real_program = _solve.solve_program

    def overhead() -> dict[str, float]:
        _solve.solve_program = lambda *args: answer  # type: ignore[assignment]
        try:
            env = {
                "ik": ik,
                "svc": svc,
                "request": request,
                "robot": robot,
                "ServiceCall": ServiceCall,
            }
            env.update(w1=w1, p1=p1, rest1=rest1, buckets=buckets)
            stmts = {
                "solve_overhead_us": "ik.solve_ik(robot, w1, p1, rest1, buckets=buckets)",
                "handle_overhead_us": "svc.handle(ServiceCall('tatbot', 'solve', "
                "request.header, request.arrays))",
            }
            return {
                key: 1e6 * min(timeit.repeat(stmt, number=2000, repeat=7, globals=env)) / 2000
                for key, stmt in stmts.items()
            }
        finally:
            _solve.solve_program = real_program

    print("ready", flush=True)
    for _ in sys.stdin:
        row = {**batch("stroke"), **batch("fk")}
        row.update(loop(True))
        row.update(loop(False))
        row.update(overhead())
        print(" ".join(f"{row[key]:.6g}" for _, key in MEASURES), flush=True)


def _targets(path: Path, loop_poses: int) -> None:
    from benchmarks.bench_ik import fk_targets, stroke_targets
    from benchmarks.control_loop import path as loop_path
    from zmq_ik import ik

    robot = ik.Robot.bundled("tatbot")
    sw, sp = stroke_targets(1024)
    fw, fp = fk_targets(robot, 1024, seed=1)
    lw, lp = loop_path(loop_poses)
    np.savez(path, stroke_wxyz=sw, stroke_pos=sp, fk_wxyz=fw, fk_pos=fp, loop_wxyz=lw, loop_pos=lp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_ik", description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="the other source tree")
    parser.add_argument("--new", type=Path, default=ROOT, help="default: this tree")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--loop-poses", type=int, default=300)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=str(JAX_CACHE), help="JAX compilation cache")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.cache)
        return 0
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.npz"
        _targets(targets, args.loop_poses)
        children: dict[str, Any] = {}
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
            children[name] = subprocess.Popen(
                [
                    *(sys.executable, str(Path(__file__).resolve()), "--base", "."),
                    *("--child", str(targets), "--cache", args.cache),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=tree,
                env=env,
            )
        try:
            for name, child in children.items():
                if child.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{name} ({trees[name]}) did not start")
            rows: dict[str, list[list[float]]] = {name: [] for name in children}
            for r in range(args.rounds):
                order = list(children) if r % 2 == 0 else list(children)[::-1]
                for name in order:
                    children[name].stdin.write("go\n")
                    children[name].stdin.flush()
                    rows[name].append([float(x) for x in children[name].stdout.readline().split()])
                print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        finally:
            for child in children.values():
                child.stdin.close()
                child.wait(60)
    base, new = np.array(rows["base"]), np.array(rows["new"])
    print(f"### IK engine A/B: {trees['new']} vs {trees['base']}\n")
    print(
        f"Median over {args.rounds} interleaved rounds; ratio: median of the per-round "
        "new ÷ base.\n"
    )
    print("| measure | base | new | new ÷ base |\n|---|---:|---:|---:|")
    for j, (label, _) in enumerate(MEASURES):
        b, n = float(np.median(base[:, j])), float(np.median(new[:, j]))
        print(f"| {label} | {b:.4g} | {n:.4g} | {float(np.median(new[:, j] / base[:, j])):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
