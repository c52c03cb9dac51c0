"""IK engine: throughput vs batch size (for the plot), compile times, accuracy, continuity.

Taken from `benchmarks.bench_ik.run()` (the IK engine's own benchmark; all its tables are
shown); without it only throughput, measured here:
in-process `zmq_ik.ik.solve_ik` on the bundled tatbot robot, stroke-like targets (the
design origin ± 2 cm, the scene's needle orientations), first call (compile) excluded.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _data
from benchmarks._common import Config, Section, Table, log, median


def _from_bench_ik(cfg: Config) -> tuple[list[tuple[int, float]], list[Table]] | None:
    """Throughput rows and every table of `benchmarks.bench_ik.run()`, or None without it."""
    try:
        mod = importlib.import_module("benchmarks.bench_ik")
    except ImportError:
        return None
    fn = getattr(mod, "run", None)
    if fn is None:
        return None
    try:
        result = fn(quick=cfg.quick or cfg.tiny, tiny=cfg.tiny, verbose=cfg.verbose)
    except TypeError:
        result = fn(quick=cfg.quick or cfg.tiny)
    rows = result.get("rows", result.get("throughput")) if isinstance(result, dict) else result
    out = []
    for row in rows or []:
        if not isinstance(row, dict):
            continue
        batch = row.get("batch")
        rate = next(
            (row[k] for k in ("poses_per_s", "poses/s", "poses_s", "rate") if k in row), None
        )
        if isinstance(batch, int) and isinstance(rate, int | float):
            out.append((batch, float(rate)))
    tables = [
        Table(t["title"], list(t["headers"]), [list(r) for r in t["rows"]], t.get("note", ""))
        for t in (result.get("tables", []) if isinstance(result, dict) else [])
    ]
    return (out, tables) if out else None


def _measure(cfg: Config) -> list[tuple[int, float]]:
    from benchmarks._harness import JAX_CACHE
    from zmq_ik import ik
    from zmq_ik.model import IKSettings
    from zmq_ik.robots import BUNDLED

    tatbot = BUNDLED["tatbot"]
    ik.run_inline_on_cpu()  # as a worker runs it
    ik.enable_compilation_cache(JAX_CACHE)
    robot = ik.Robot.from_urdf(Path(tatbot.urdf_path).read_text(), tuple(tatbot.ee_links))
    rest = np.asarray(tatbot.rest, np.float32)
    config = IKSettings()
    wxyz1, pos1 = _data.single_pose()
    rng = np.random.default_rng(0)
    out = []
    for batch in cfg.pick([1, 16, 96, 1024, 16384], [1, 16, 96, 1024], [1, 16]):
        wxyz = np.repeat(wxyz1, batch, axis=0)
        pos = np.repeat(pos1, batch, axis=0) + rng.uniform(-0.02, 0.02, (batch, 1, 3)).astype(
            np.float32
        ) * np.array([1, 1, 0.1], np.float32)
        ik.solve_ik(robot, wxyz, pos, rest, ik=config)  # compile / warm
        reps = cfg.pick(max(3, cfg.runs), 3, 1)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            ik.solve_ik(robot, wxyz, pos, rest, ik=config)
            times.append(time.perf_counter() - t0)
        out.append((batch, batch / median(times)))
        log(cfg, f"  solve_ik batch {batch}: {batch / median(times):,.0f} poses/s")
    return out


def run(cfg: Config) -> Section:
    section = _data.ik_section(
        "ik", "IK engine (in-process, CPU): throughput, accuracy, continuity"
    )
    if section.skipped:
        return section
    from_bench = _from_bench_ik(cfg)
    if from_bench is not None and from_bench[1]:
        rows, tables = from_bench
        tables[0].note += " Source: `benchmarks.bench_ik.run()`."
        section.tables.extend(tables)
    else:
        if from_bench is None:
            rows = _measure(cfg)
            source = "measured here with `zmq_ik.ik.solve_ik` (tatbot, stroke-like targets)"
        else:
            rows, source = from_bench[0], "benchmarks.bench_ik.run()"
        section.tables.append(
            Table(
                "IK throughput vs batch size",
                ["batch (bimanual poses)", "poses/s"],
                [[b, r] for b, r in rows],
                note=f"Source: {source}.",
            )
        )
    section.data["rows"] = [list(r) for r in rows]
    return section


def describe(data: dict[str, Any]) -> str:
    return ", ".join(f"{b}: {r:,.0f}/s" for b, r in data.get("rows", []))
