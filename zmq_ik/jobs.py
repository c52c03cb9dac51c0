"""Whole jobs for the CLI: compute a strokebatch through a broker, with progress and a summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from zmq_ik.client import IKClient
from zmq_ik.model import Scene, StrokeBatch, StrokeList
from zmq_ik.report import table


class ProgressBar:
    """Poses done / total, rate and ETA on one terminal line; silent when not a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        eta_text = f"{eta:5.1f}s" if eta != float("inf") else "  ?  "
        self.stream.write(f"\r[{bar}] {done}/{total} poses  {rate:,.0f}/s  ETA {eta_text}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


@dataclass(frozen=True)
class JobResult:
    """A computed strokebatch and how it went."""

    batch: StrokeBatch
    """The result, in stroke order."""
    wall_s: float
    """Seconds from sending the first chunk to assembling the last."""

    def summary(self, pos_tol: float = 1e-4, ori_tol: float = 1e-3) -> dict[str, Any]:
        s = self.batch.summary(pos_tol=pos_tol, ori_tol=ori_tol)
        s["stroke_pairs"] = self.batch.b
        s["wall_s"] = round(self.wall_s, 4)
        s["poses_per_s"] = round(self.batch.n_poses / self.wall_s, 1) if self.wall_s > 0 else None
        return s


def compute_job(
    endpoint: str,
    scene: Scene,
    strokes: StrokeList,
    *,
    timeout: float = 30.0,
    chunk_pairs: int = 64,
    max_in_flight: int = 8,
    progress: ProgressBar | None = None,
    curve: Any = None,
) -> JobResult:
    """Send a job through the broker at ``endpoint`` (split into concurrent chunks)."""
    t0 = time.monotonic()
    with IKClient(endpoint, timeout=timeout, curve=curve) as client:
        batch = client.compute(
            scene, strokes, chunk_pairs=chunk_pairs, max_in_flight=max_in_flight, progress=progress
        )
    return JobResult(batch, time.monotonic() - t0)


def summary_table(summary: dict[str, Any], output: Path | None = None) -> str:
    """The demo/compute summary as a two-column table."""
    rows: list[list[Any]] = [
        ["stroke pairs", summary.get("stroke_pairs")],
        ["poses (pairs × length × offsets)", summary.get("n_poses")],
        ["wall time", f"{summary['wall_s']:.3f} s"],
        ["poses / s", f"{summary['poses_per_s']:,.0f}" if summary.get("poses_per_s") else "-"],
        [
            "position error median / worst",
            f"{summary['pos_err_median'] * 1e3:.4f} / {summary['pos_err_max'] * 1e3:.4f} mm",
        ],
        [
            "orientation error median / worst",
            f"{summary['ori_err_median']:.2e} / {summary['ori_err_max']:.2e} rad",
        ],
        [
            f"poses over tolerance ({summary['pos_tol'] * 1e3:g} mm, {summary['ori_tol']:g} rad)",
            f"{summary.get('n_over')} (position {summary.get('n_pos_over')}, "
            f"orientation {summary.get('n_ori_over')})",
        ],
    ]
    if output is not None:
        rows.append(["written to", str(output)])
    text = table(["", "value"], rows)
    if summary.get("n_ori_over") and not summary.get("n_pos_over"):
        text += (
            "\nnote: only orientations miss: with tatbot's weights the rest-pose term "
            "(rest_weight) pulls each pose ~0.01 rad off its target; set `ik: {precise: true}` "
            "in the scene to meet targets to 0.01 mm / 1e-4 rad."
        )
    return text
