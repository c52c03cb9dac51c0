"""`zmq-ik compute` / `demo`: a scene and its strokes into a strokebatch file, through a broker.

One *computation* is a whole `StrokeList` sent as many concurrent chunk requests
(`IKClient.compute`); the broker's and the worker's *job* is one of those requests. Here:
the output path is checked before any work, inputs are loaded with errors that say what to
do on the command line, and the file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from zmq_ik.apps.plot import plot_strokebatch, require_matplotlib
from zmq_ik.apps.report import table
from zmq_ik.base.checks import check_output
from zmq_ik.base.docs import documented
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError, InputError
from zmq_ik.model import Scene, StrokeBatch, StrokeList
from zmq_ik.model.verdict import JointLimits, Verdict, judge
from zmq_ik.settings.apps import ComputeSettings

DEMO_TIMEOUT = 60.0
"""Seconds per chunk attempt in `zmq-ik demo` with its embedded worker (its first chunk may
still compile the strokebatch program)."""


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


def check_outputs(output: str | os.PathLike[str], plot: str | os.PathLike[str] | None) -> None:
    """`check_output` for the file and the plot, and that plots can be drawn (matplotlib)."""
    check_output(output)
    if plot is not None:
        check_output(plot, "plot")
        require_matplotlib()


def write_atomic(batch: StrokeBatch, path: str | os.PathLike[str], *, errors: bool) -> None:
    """Write ``batch`` to ``path`` via a temporary file in the same directory and a rename:
    readers see the old file or the whole new one, never a partial one. Mode 0644, as a
    plain file (`mkstemp` makes it 0600: another user, a web server, could not read it)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(batch.to_bytes(errors=errors))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _looks_like_strokes(path: str | os.PathLike[str]) -> bool:
    from zmq_ik.base.yaml_files import read_yaml_file

    try:
        data = read_yaml_file(path)
    except InputError:
        return False
    return isinstance(data, list) or (isinstance(data, Mapping) and "strokes" in data)


def load_inputs(
    scene_path: str | os.PathLike[str] | None,
    strokes_path: str | os.PathLike[str] | None,
    resample: bool = False,
) -> tuple[Scene, StrokeList]:
    """The scene and strokes (default: the bundled example). Errors say what to do on the
    command line: arguments that look swapped, ``--resample`` for strokes of another length."""
    from zmq_ik.robots import example_paths

    default_scene, default_strokes = example_paths()
    scene_path, strokes_path = scene_path or default_scene, strokes_path or default_strokes
    try:
        scene = Scene.from_yaml(Path(scene_path))
    except InputError as e:
        if _looks_like_strokes(scene_path) and not _looks_like_strokes(strokes_path):
            raise InputError(
                f"{scene_path} looks like a strokes file and {strokes_path} like a scene: "
                "give SCENE_FILE first, then STROKES_FILE",
                "scene",
            ) from e
        raise
    try:
        strokes = StrokeList.from_yaml(
            strokes_path, stroke_length=scene.stroke_length, resample=resample
        )
    except InputError as e:
        # The engine words it for Python callers (resample=True).
        message = e.message.replace("pass resample=True", "add --resample")
        raise InputError(message, e.field) from e
    return scene, strokes


REST_PULL_NOTE = (
    "tatbot's mode (ik.precise false) pulls every pose toward the rest pose (ik.rest_weight) "
    "for joint paths near rest, and its joint limits are soft; as position weighs 32x "
    "orientation, it gives way mostly in orientation. Without `ik:` in the scene (the default) "
    "reachable targets are met (~1e-4 mm, ~1e-5 rad) inside the limits."
)
"""tatbot's mode's trade-off, as the summary says it (README: the same)."""


@documented
@dataclass(frozen=True)
class ComputeResult:
    """A computed strokebatch, its scene and how long it took."""

    batch: StrokeBatch
    """The result, in stroke order."""
    wall_s: float
    """Seconds from sending the first chunk to assembling the last."""
    scene: Scene = field(default_factory=Scene)
    """The scene it was computed for (its tolerances judge it)."""
    limits: JointLimits | None = None
    """The robot's joint limits as its worker describes them, or None (not judged)."""

    def verdict(self, pos_tol: float | None = None, ori_tol: float | None = None) -> Verdict:
        """`zmq_ik.model.verdict.judge` against the scene's tolerances (or these: metres, radians)
        and the worker's limits, in the scene's solve mode."""
        return judge(
            self.batch,
            self.scene.pos_tol if pos_tol is None else pos_tol,
            self.scene.ori_tol if ori_tol is None else ori_tol,
            self.limits,
            soft=not self.scene.ik.precise,
        )

    def summary(self, pos_tol: float | None = None, ori_tol: float | None = None) -> dict[str, Any]:
        """The verdict's `Verdict.to_dict` (errors, joints past their limits, ``ok``,
        ``verdict``), plus pairs, wall time, rate and ``precise`` (the scene's solve mode)."""
        s = self.verdict(pos_tol, ori_tol).to_dict()
        s["stroke_pairs"] = self.batch.b
        s["wall_s"] = round(self.wall_s, 4)
        s["poses_per_s"] = round(self.batch.n_poses / self.wall_s, 1) if self.wall_s > 0 else None
        s["precise"] = self.scene.ik.precise
        return s


SliceSink = Callable[[dict[str, Any]], None]
"""Called with each slice's index entry (``start``, ``pairs``, ``file``...) once it is written."""


class SliceWriter:
    """Writes a stream's slices into a directory a robot process can watch.

    Each slice goes to ``slice-START.safetensors`` (START: its first pair, zero-padded) by
    write-then-rename, so a reader never sees half a file; then one JSON line is appended to
    ``slices.jsonl`` (``start``, ``pairs``, ``poses``, ``file``, ``pos_err_max``...), which a
    reader may tail: a line is only written once its file is complete, in job order.
    """

    INDEX = "slices.jsonl"

    def __init__(self, directory: str | os.PathLike[str], total_pairs: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.width = max(6, len(str(total_pairs)))
        self.index = self.directory / self.INDEX
        self.index.write_text("")  # a new job: readers start from an empty index

    def write(self, start: int, part: StrokeBatch) -> dict[str, Any]:
        name = f"slice-{start:0{self.width}d}.safetensors"
        write_atomic(part, self.directory / name, errors=False)
        entry = {
            "start": start,
            "pairs": part.b,
            "poses": part.n_poses,
            "file": name,
            "pos_err_max": _finite_max(part.pos_err),
            "ori_err_max": _finite_max(part.ori_err),
        }
        with open(self.index, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return entry


def _finite_max(values: Any) -> float | None:
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.max()) if arr.size else None


def compute_strokebatch(
    endpoint: str,
    scene: Scene,
    strokes: StrokeList,
    settings: ComputeSettings | None = None,
    *,
    progress: ProgressBar | None = None,
    curve: Any = None,
    on_slice: SliceSink | None = None,
) -> ComputeResult:
    """Send ``strokes`` through the broker at ``endpoint`` in concurrent chunks. The client
    is closed at once on any exception (Ctrl-C included): its chunks still queued or running
    are then dropped by the broker and workers at their deadline (``settings.timeout``).
    The robot's joint limits are asked of its worker too (`describe`: the verdict judges the
    joints against them). With
    ``settings.stream``, slices are written as they come (`SliceWriter`) and each index entry
    is handed to ``on_slice``."""
    settings = settings or ComputeSettings()
    t0 = time.monotonic()
    with IKClient(endpoint, timeout=settings.timeout, curve=curve) as client:
        if settings.stream is None:
            batch = client.compute(
                scene,
                strokes,
                chunk_pairs=settings.chunk_pairs,
                max_in_flight=settings.max_in_flight,
                progress=progress,
            )
        else:
            batch = _stream_to(client, scene, strokes, settings, progress, on_slice)
        wall_s = time.monotonic() - t0
        info = client.describe(scene.robot, scene.ee_links)
        limits = JointLimits.from_describe(info, scene.robot)
    return ComputeResult(batch, wall_s, scene, limits)


def _stream_to(
    client: IKClient,
    scene: Scene,
    strokes: StrokeList,
    settings: ComputeSettings,
    progress: ProgressBar | None,
    on_slice: SliceSink | None,
) -> StrokeBatch:
    """`IKClient.stream` into a `SliceWriter` (``settings.stream``); the joined result."""
    assert settings.stream is not None
    writer = SliceWriter(settings.stream, len(strokes))
    per_pair = scene.stroke_length * scene.offset_num
    total = len(strokes) * per_pair
    parts = []
    for start, part in client.stream(scene, strokes, max_in_flight=settings.max_in_flight):
        entry = writer.write(start, part)
        parts.append(part)
        if progress is not None:
            progress((start + part.b) * per_pair, total)
        if on_slice is not None:
            on_slice(entry)
    return StrokeBatch.concat(parts)


REJECTED_SUFFIX = ".rejected"
"""What ``--strict`` appends to the output's name when the verdict is NOT OK: the file is
kept for a look, where no pipeline picks it up as the output."""


def save_result(result: ComputeResult, settings: ComputeSettings) -> dict[str, Any]:
    """Judge the result (`ComputeResult.verdict`), write the strokebatch (atomically: to
    ``settings.output``, or with ``--strict`` and a NOT OK verdict to the output's name +
    `REJECTED_SUFFIX`) and the plot; return the summary (``output`` or ``rejected``: where
    the file went; with a plot, ``report``: its lines, as `zmq-ik report` prints them)."""
    verdict = result.verdict(settings.pos_tol, settings.ori_tol)
    output = Path(settings.output)
    rejected = settings.strict and not verdict.ok
    if rejected:
        output = output.with_name(output.name + REJECTED_SUFFIX)
    try:
        write_atomic(result.batch, output, errors=settings.errors)
    except OSError as e:  # e.g. the disk filled up: the old file, if any, is left as it was
        raise InputError(f"cannot write {output}: {e}", "output") from e
    summary = result.summary(pos_tol=settings.pos_tol, ori_tol=settings.ori_tol)
    summary["rejected" if rejected else "output"] = str(output)
    if settings.plot:
        title = f"{output.name} (scene {result.scene.name!r})"
        plot_strokebatch(result.batch, settings.plot, verdict, arms=result.scene.arms, title=title)
        summary["plot"] = str(settings.plot)
        summary["report"] = verdict.lines()[:-1]
    return summary


def run(
    endpoint: str,
    settings: ComputeSettings,
    scene_path: str | os.PathLike[str] | None = None,
    strokes_path: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressBar | None = None,
    curve: Any = None,
    on_slice: SliceSink | None = None,
) -> dict[str, Any]:
    """The whole of `zmq-ik compute`: load the inputs (default: the bundled example), compute
    through the broker at ``endpoint``, write the file atomically; returns the summary.
    (The output paths are checked by `check_outputs` first, before anything else.)"""
    scene, strokes = load_inputs(scene_path, strokes_path, settings.resample)
    result = compute_strokebatch(
        endpoint, scene, strokes, settings, progress=progress, curve=curve, on_slice=on_slice
    )
    return save_result(result, settings)


def check_strict(summary: dict[str, Any]) -> None:
    """`IKError` unless the summary's verdict is OK (``compute --strict``), saying where the
    file went instead of the output."""
    if not summary["ok"]:
        rejected = summary.get("rejected")
        where = f"; not written to the output: kept as {rejected}" if rejected else ""
        raise IKError(f"{summary['verdict']} (--strict){where}")


def _past_text(summary: dict[str, Any]) -> str:
    """The summary's joints past a limit: ``0``, or ``12 (left/j7 up to 2.4e-05 m past its
    lower limit, ...)``; ``not checked`` without the robot's limits."""
    if not summary.get("limits_checked"):
        return "not checked"
    past = summary.get("past_limit", [])
    worst = ", ".join(
        f"{p['joint']} up to {p['worst']:.3g} {p['unit']} past its {p['side']} limit"
        for p in past[:2]
    )
    return f"{summary['n_past_limit']}" + (
        f" ({worst}{', ...' if len(past) > 2 else ''})" if past else ""
    )


def summary_table(summary: dict[str, Any]) -> str:
    """The demo/compute summary as a two-column table, its verdict and, for a default-mode
    solve, the trade-off it made."""
    pos_tol, ori_tol = summary["pos_tol"], summary["ori_tol"]
    rows: list[list[Any]] = [
        ["stroke groups (pairs: one stroke per arm)", summary.get("stroke_pairs")],
        ["poses (groups × length × offsets)", summary.get("n_poses")],
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
            "tolerances (pos_tol m, ori_tol rad)",
            f"{pos_tol:g} m (= {pos_tol * 1e3:g} mm), {ori_tol:g} rad",
        ],
        [
            "poses over tolerance",
            f"{summary.get('n_over')} (position {summary.get('n_pos_over')}, "
            f"orientation {summary.get('n_ori_over')})",
        ],
        ["poses with unknown error", summary.get("n_unknown")],
        ["poses with a joint past its limit", _past_text(summary)],
    ]
    for key, label in (
        ("output", "written to"),
        ("rejected", "rejected, kept as"),
        ("plot", "report"),
    ):
        if summary.get(key):
            rows.append([label, summary[key]])
    text = "\n".join([table(["", "value"], rows), *summary.get("report", []), summary["verdict"]])
    if summary.get("precise") is False:
        text += "\n" + textwrap.fill(f"note: {REST_PULL_NOTE}", 100, subsequent_indent="      ")
    return text


def run_reported(
    where: AbstractContextManager[str],
    settings: ComputeSettings,
    *inputs: Any,
    as_json: bool,
    echo: Callable[[str], Any],
    **kw: Any,
) -> None:
    """`zmq-ik compute` / `demo` once its settings and outputs are checked: `run` with a
    progress bar at the endpoint ``where`` (a context: a running broker's, or a local
    cluster's) gives, ``echo`` of the summary (JSON with ``as_json``, and with
    ``settings.stream`` a JSON line per slice first); ``strict``: `check_strict`."""

    def slice_line(entry: dict[str, Any]) -> None:  # --json --stream: one line per slice
        echo(json.dumps({"slice": entry}))

    on_slice = slice_line if as_json and settings.stream else None
    with where as endpoint:
        summary = run(endpoint, settings, *inputs, progress=ProgressBar(), on_slice=on_slice, **kw)
    echo(json.dumps(summary, default=float) if as_json else summary_table(summary))
    if settings.strict:
        check_strict(summary)  # IKError: exit 1
