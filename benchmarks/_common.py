"""What every benchmark section shares: run settings, statistics, result tables."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Config:
    """How big and how often. ``tiny`` is for the smoke test (seconds, not numbers)."""

    runs: int = 5
    """Measured runs per cell (after a warm-up); tables show the median over runs."""
    quick: bool = False
    """Small sizes and counts; skips the 10,000-pair end-to-end job."""
    tiny: bool = False
    """Smallest sizes that still exercise every code path (smoke test)."""
    verbose: bool = True
    """Print progress lines to stderr."""

    def pick(self, full: Any, quick: Any, tiny: Any) -> Any:
        return tiny if self.tiny else quick if self.quick else full


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append(
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"
        )
        for row in self.rows:
            lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
        return "\n".join(lines) + "\n"


@dataclass
class Section:
    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """Raw numbers, for targets and plots."""
    skipped: str | None = None
    """Why this section (or part of it) did not run."""
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        if self.skipped:
            out += [f"> **Skipped:** {self.skipped}", ""]
        out += [n + "\n" for n in self.notes]
        out += [t.markdown() for t in self.tables]
        return "\n".join(out)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "–"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def pct(samples: Sequence[float], q: float) -> float:
    return (
        float(np.percentile(np.asarray(samples, dtype=float), q)) if len(samples) else float("nan")
    )


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v == v]
    return float(statistics.median(vals)) if vals else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def size_label(n: int) -> str:
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    if n >= 1 << 10:
        return f"{n >> 10} KiB"
    return f"{n} B"


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Latencies (ms) of ``n`` sequential calls."""
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1000)
    return out


def say(verbose: bool, *parts: Any) -> None:
    """Progress, to stderr (stdout has the tables)."""
    if verbose:
        print(*parts, file=sys.stderr, flush=True)


def log(cfg: Config, *parts: Any) -> None:
    say(cfg.verbose, *parts)


def nvidia_smi() -> str:
    """What ``nvidia-smi`` calls this machine's GPUs (name, memory), or why it cannot say."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no nvidia-smi"
    query = [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi failed: {e}"
    return out.stdout.strip().replace("\n", "; ") or out.stderr.strip()
