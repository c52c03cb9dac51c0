"""The IK engine's own benchmark: throughput, compile time, accuracy, continuity (CPU, tatbot),
the report's ``ik`` section (`run`: ``python -m benchmarks --only ik``).

Everything runs in-process on the bundled tatbot robot with tatbot's weights (the
``IKSettings`` defaults), rest = the ready pose. Tables:

- throughput: bimanual poses/s by batch size (median of the measured runs after a warm-up
  call), stroke-like targets, and the compile time of the batch's bucket (a fresh compile:
  the persistent compilation cache is switched off while timing it);
- accuracy on FK-of-random-joints targets (joints uniform within the limits) and on
  stroke-like targets, for the default config, ``precise=True`` and ``precise=True,
  seeds=16``, with joint-limit violations;
- continuity: the largest joint jump between consecutive poses of a stroke of the bundled
  example job, ``continuous=False`` vs ``continuous=True``.

Progress goes to stderr; :func:`measure` returns the numbers (``rows``: the throughput table).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Config, Section, Table, say

BATCHES = (1, 16, 96, 1024, 16384)
GPU_BATCHES = (*BATCHES, 32768, 65536, 131072)
"""On a GPU the batch grows to 131,072 (solved in chunks of the largest bucket, 16,384)."""
TATBOT_REFERENCE = (
    "tatbot's own solver (pyroki/jaxls LM, same weights): stroke-like targets median "
    "0.050 mm, p99 0.055 mm, median 0.014 rad, p99 0.0168 rad; FK-of-random-joints targets "
    "median 2.9 mm, 0.54 rad, half its answers outside the (soft) joint limits."
)


def _robot() -> tuple[Any, np.ndarray]:
    from zmq_ik import ik
    from zmq_ik.robots import BUNDLED

    tatbot = BUNDLED["tatbot"]
    robot = ik.Robot.from_urdf(Path(tatbot.urdf_path).read_text(), tuple(tatbot.ee_links))
    return robot, np.asarray(tatbot.rest, np.float32)


def device_name() -> str:
    """The device JAX computes on here, named (e.g. ``cpu`` or ``gpu: NVIDIA H100 80GB HBM3``)."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "cpu"
    return f"{dev.platform}: {getattr(dev, 'device_kind', '?')} ({len(jax.devices())} visible)"


def stroke_targets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bimanual stroke-like targets: needle points in a 4 × 4 cm patch of the example
    scene's design plane, ±2 mm depth, the scene's needle orientations and ee offsets."""
    from benchmarks import _data

    scene, _ = _data.example()
    rng = np.random.default_rng(seed)
    design = np.asarray(scene.design_pos, np.float64)
    offsets = np.stack([scene.ee_offset_l, scene.ee_offset_r]).astype(np.float64)
    xy = rng.uniform(-0.02, 0.02, (n, 2, 2))
    depth = rng.uniform(-0.002, 0.002, (n, 2, 1))
    pos = design + np.concatenate([xy, depth], -1) + offsets
    wxyz = np.stack([scene.ee_rot_l, scene.ee_rot_r]).astype(np.float64)
    return np.broadcast_to(wxyz, (n, 2, 4)).astype(np.float32), pos.astype(np.float32)


def fk_targets(robot: Any, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """FK of ``n`` joint vectors drawn uniformly within the joint limits."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(robot.lower, robot.upper, (n, robot.n_joints)).astype(np.float32)
    T = robot.fk(q)
    return np.asarray(T.rotation().wxyz), np.asarray(T.translation())


def _compile_seconds(robot: Any, batch: int, rest: np.ndarray) -> tuple[int, float]:
    """(bucket, seconds) of a fresh lower + compile of the default solve program for the
    bucket ``batch`` pads to, with the persistent compilation cache off."""
    import jax

    from zmq_ik import ik
    from zmq_ik.ik import _programs

    bucket = _programs.bucket_for(batch)
    fn = _programs.solve_program(robot, False, 1)
    wxyz, pos = stroke_targets(bucket)
    tw = np.ascontiguousarray(wxyz.transpose(1, 2, 0))
    tp = np.ascontiguousarray(pos.transpose(1, 2, 0))
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        t0 = time.perf_counter()
        fn.lower(tw, tp, rest, ik.solver_params(ik.IKSettings())).compile()
        return bucket, time.perf_counter() - t0
    finally:
        jax.config.update("jax_enable_compilation_cache", before)


def throughput(
    robot: Any,
    rest: np.ndarray,
    batches: tuple[int, ...],
    runs: int,
    big_runs: int,
    *,
    fresh_compile: bool,
    verbose: bool,
) -> list[dict[str, Any]]:
    from zmq_ik import ik
    from zmq_ik.ik._programs import bucket_for

    config = ik.IKSettings()
    compiled: dict[int, float] = {}
    rows = []
    for batch in batches:
        if fresh_compile and bucket_for(batch) not in compiled:
            bucket, seconds = _compile_seconds(robot, batch, rest)
            compiled[bucket] = seconds
        wxyz, pos = stroke_targets(batch, seed=batch)
        t0 = time.perf_counter()
        ik.solve_ik(robot, wxyz, pos, rest, ik=config)  # warm-up (compiles or loads)
        first = time.perf_counter() - t0
        bucket = bucket_for(batch)
        times = []
        for _ in range(big_runs if batch > 4096 else runs):
            t0 = time.perf_counter()
            ik.solve_ik(robot, wxyz, pos, rest, ik=config)
            times.append(time.perf_counter() - t0)
        rate = batch / float(np.median(times))
        compile_s = compiled.get(bucket, first)
        rows.append(
            {
                "batch": batch,
                "bucket": bucket,
                "poses_per_s": rate,
                "ms_per_call": 1000 * float(np.median(times)),
                "compile_s": compile_s,
                "runs": len(times),
            }
        )
        say(
            verbose,
            f"  batch {batch:>6}: {rate:>9,.0f} poses/s  ({len(times)} runs; "
            f"bucket {bucket} compile {compile_s:.1f}s)",
        )
    return rows


def _errors(sol: Any, robot: Any) -> dict[str, float]:
    pe = sol.pos_err.ravel() * 1e3
    oe = sol.ori_err.ravel()
    outside = (sol.joints < robot.lower) | (sol.joints > robot.upper)
    return {
        "pos_median_mm": float(np.median(pe)),
        "pos_p99_mm": float(np.percentile(pe, 99)),
        "pos_max_mm": float(pe.max()),
        "ori_median_rad": float(np.median(oe)),
        "ori_p99_rad": float(np.percentile(oe, 99)),
        "ori_max_rad": float(oe.max()),
        "within": float(np.mean((pe <= 0.1) & (oe <= 1e-3))),
        "limit_violations": int(outside.any(axis=1).sum()),
        "n": int(sol.joints.shape[0]),
    }


def accuracy(
    robot: Any, rest: Any, n: int, n_seeds: int, seeds16: bool, verbose: bool, buckets: Any = None
) -> list[dict[str, Any]]:
    from zmq_ik import ik

    configs: list[tuple[str, Any, int]] = [
        ("default", ik.IKSettings(), n),
        ("precise=True", ik.IKSettings(precise=True), n),
    ]
    if seeds16:
        configs.append(("precise=True, seeds=16", ik.IKSettings(precise=True, seeds=16), n_seeds))
    sets = {"FK of random joints": fk_targets(robot, n, seed=1), "stroke-like": stroke_targets(n)}
    rows = []
    for name, config, m in configs:
        for kind, (wxyz, pos) in sets.items():
            t0 = time.perf_counter()
            sol = ik.solve_ik(robot, wxyz[:m], pos[:m], rest, ik=config, buckets=buckets)
            row = {"config": name, "targets": kind, **_errors(sol, robot)}
            rows.append(row)
            say(
                verbose,
                f"  {name} / {kind} ({m}): median {row['pos_median_mm']:.4f} mm "
                f"{row['ori_median_rad']:.4f} rad, within {row['within']:.1%} "
                f"({time.perf_counter() - t0:.1f}s)",
            )
    return rows


def continuity(robot: Any, pairs: int, verbose: bool, buckets: Any = None) -> list[dict[str, Any]]:
    """Joint jumps along the strokes of the example job (its pairs, repeated to ``pairs``)."""
    from benchmarks import _data
    from zmq_ik import ik

    scene, _ = _data.example()
    strokes = _data.strokes(pairs)
    rows = []
    for continuous in (False, True):
        config = ik.IKSettings(continuous=continuous)
        t0 = time.perf_counter()
        sb = ik.strokebatch_from_strokes(scene, strokes, robot, ik=config, buckets=buckets)
        jump = np.abs(np.diff(sb.joints, axis=1)).max(axis=-1)  # (b, l-1, o)
        pe = sb.pos_err[np.isfinite(sb.pos_err)] * 1e3
        oe = sb.ori_err[np.isfinite(sb.ori_err)]
        rows.append(
            {
                "continuous": continuous,
                "poses": int(np.prod(sb.joints.shape[:3])),
                "jump_max": float(jump.max()),
                "jump_p99": float(np.percentile(jump, 99)),
                "jump_median": float(np.median(jump)),
                "pos_p99_mm": float(np.percentile(pe, 99)),
                "ori_p99_rad": float(np.percentile(oe, 99)),
            }
        )
        say(
            verbose,
            f"  continuous={continuous}: largest jump {jump.max():.3f} "
            f"({time.perf_counter() - t0:.1f}s)",
        )
    return rows


ACCURACY = (
    "config|targets|n|pos median (mm)|pos p99 (mm)|pos max (mm)|ori median (rad)|ori p99 (rad)|"
    "ori max (rad)|within 0.1 mm & 1e-3 rad|limit violations",
    "config targets n pos_median_mm:.4f pos_p99_mm:.4f pos_max_mm:.4f ori_median_rad:.5f "
    "ori_p99_rad:.5f ori_max_rad:.5f within:.2% limit_violations",
)
CONTINUITY = (
    "continuous|poses|largest joint jump|p99 jump|median jump|pos p99 (mm)|ori p99 (rad)",
    "continuous poses jump_max:.4f jump_p99:.4f jump_median:.5f pos_p99_mm:.4f ori_p99_rad:.5f",
)
"""A table's headers (``|``-separated), and per column the result row's key with its format
spec (``key:spec``; a bare key: the value as is)."""


def _table(title: str, columns: tuple[str, str], rows: list[dict[str, Any]], note: str) -> Table:
    headers, spec = columns
    keys = [item.partition(":") for item in spec.split()]
    cells = [[format(r[k], f) if f else r[k] for k, _, f in keys] for r in rows]
    return Table(title, headers.split("|"), cells, note)


def run(cfg: Config) -> Section:
    """The report's ``ik`` section (``python -m benchmarks --only ik``): every table of
    `measure`, the IK engine's own benchmark."""
    from benchmarks import _data

    section = _data.ik_section(
        "ik", "IK engine (in-process, CPU): throughput, accuracy, continuity"
    )
    if section.skipped:
        return section
    result = measure(quick=cfg.quick or cfg.tiny, tiny=cfg.tiny, verbose=cfg.verbose)
    compile_note = (
        "a fresh compile of the batch's bucket (persistent cache off)."
        if result["fresh_compile"]
        else "the warm-up call (may load from the persistent cache)."
    )
    throughput_note = (
        f"tatbot robot and weights, stroke-like targets, device {result['device']}; median of "
        f"{result['runs']} runs after a warm-up call ({result['big_runs']} above batch 4,096). "
        f"Compile: {compile_note} Source: `benchmarks.bench_ik.run()`."
    )
    accuracy_note = (
        "Errors of each end effector (FK of the answer vs the target); limit violations: "
        "answers with any joint outside its limits (the default config's limits are soft). "
        + TATBOT_REFERENCE
    )
    continuity_note = (
        "The bundled example job (examples/scene.yaml, strokes.yaml) through "
        "strokebatch_from_strokes; jump: max over joints of |q[t+1] - q[t]| "
        "between consecutive poses of a stroke (rad; m for the carriage)."
    )
    rows = result["rows"]
    section.tables = [
        Table(
            "IK throughput vs batch size",
            ["batch (bimanual poses)", "bucket", "poses/s", "ms/call", "compile (s)"],
            [
                [r["batch"], r["bucket"], r["poses_per_s"], r["ms_per_call"], r["compile_s"]]
                for r in rows
            ],
            throughput_note,
        ),
        _table("IK accuracy", ACCURACY, result["accuracy"], accuracy_note),
        _table("IK continuity along strokes", CONTINUITY, result["continuity"], continuity_note),
    ]
    section.data["rows"] = [[r["batch"], float(r["poses_per_s"])] for r in rows]
    return section


def measure(quick: bool = False, tiny: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Run the benchmark. ``quick``: fewer runs, smaller accuracy sets; ``tiny`` (smoke
    tests): batches 1 and 16, one run, no fresh compiles, no seeds=16, seconds in all."""
    from benchmarks._harness import JAX_CACHE
    from zmq_ik import ik

    ik.run_inline_on_cpu()  # as a worker runs it

    ik.enable_compilation_cache(JAX_CACHE)
    robot, rest = _robot()
    device = device_name()
    say(verbose, f"IK device: {device}")
    batches = BATCHES[:2] if tiny else BATCHES if device == "cpu" else GPU_BATCHES
    runs = 1 if tiny else 5
    big_runs = 2 if quick else 5
    fresh = not tiny
    say(verbose, "IK throughput (tatbot, stroke-like targets):")
    rows = throughput(robot, rest, batches, runs, big_runs, fresh_compile=fresh, verbose=verbose)
    n = 16 if tiny else 1024
    n_seeds = 256 if quick or tiny else 1024
    say(verbose, "IK accuracy:")
    buckets = (16, 64) if tiny else None  # tiny: tests/conftest.py's, whose programs CI has
    acc = accuracy(robot, rest, n, n_seeds, seeds16=not tiny, verbose=verbose, buckets=buckets)
    say(verbose, "IK continuity (example job):")
    cont = continuity(robot, 2 if tiny else 36, verbose, buckets)
    return {
        "rows": rows,
        "accuracy": acc,
        "continuity": cont,
        "runs": runs,
        "big_runs": big_runs,
        "fresh_compile": fresh,
        "device": device,
    }
