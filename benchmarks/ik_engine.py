"""IK engine: throughput vs batch size (for the plot), compile times, accuracy, continuity:
every table of `benchmarks.bench_ik.run()` (the IK engine's own benchmark)."""

from __future__ import annotations

from typing import Any

from benchmarks import _data, bench_ik
from benchmarks._common import Config, Section, Table


def run(cfg: Config) -> Section:
    section = _data.ik_section(
        "ik", "IK engine (in-process, CPU): throughput, accuracy, continuity"
    )
    if section.skipped:
        return section
    result = bench_ik.run(quick=cfg.quick or cfg.tiny, tiny=cfg.tiny, verbose=cfg.verbose)
    section.tables.extend(
        Table(t["title"], list(t["headers"]), [list(r) for r in t["rows"]], t["note"])
        for t in result["tables"]
    )
    section.tables[0].note += " Source: `benchmarks.bench_ik.run()`."
    section.data["rows"] = [[r["batch"], float(r["poses_per_s"])] for r in result["rows"]]
    return section


def describe(data: dict[str, Any]) -> str:
    return ", ".join(f"{b}: {r:,.0f}/s" for b, r in data.get("rows", []))
