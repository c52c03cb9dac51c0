"""A StrokeBatch report for the operator: which strokes are marginal, before the robot runs them.

One PNG (`plot_strokebatch`, `zmq-ik report`, `zmq-ik compute --plot`): per stroke pair, the
worst achieved position and orientation error against the tolerances, each joint's margin to
its limits, and the joint paths against the limits. `stroke_stats` computes the same numbers
without matplotlib, and `stats_text` says them in a few lines. matplotlib is optional (the
``plot`` extra) and imported only when a figure is drawn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik._docs import documented
from zmq_ik._scene import ORI_TOL, POS_TOL, Scene, check_tolerance
from zmq_ik._settings import setting
from zmq_ik._strokebatch import StrokeBatch
from zmq_ik.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

PLOT_INSTALL = 'pip install matplotlib (in a checkout: pip install -e ".[plot]")'
"""How to get matplotlib, the one optional dependency of plots."""
MARGINAL = 0.8
"""A stroke whose worst error is above this fraction of its tolerance (but within it) is
marginal: a small change of scene or calibration can push it over."""
NEAR_LIMIT = 0.02
"""A joint within this fraction of its range from a limit is near it (tatbot: ~0.06 rad on
the shoulder, 0.8 mm on the needle carriage)."""


@documented
@dataclass(frozen=True, eq=False)
class JointLimits:
    """Joint names and limits, in the order of a StrokeBatch's ``joints``."""

    names: tuple[str, ...]
    """Joint names (left arm's, then right arm's)."""
    lower: npt.NDArray[np.float64]
    """(n_joints,) lower limits, rad (m for prismatic joints)."""
    upper: npt.NDArray[np.float64]
    """(n_joints,) upper limits; a continuous joint reports one turn (-pi..pi)."""

    @classmethod
    def bundled(cls, robot: str = "tatbot", ee_links: tuple[str, ...] | None = None) -> JointLimits:
        """From a bundled robot's URDF (no JAX): the actuated joints of the chains to
        ``ee_links`` (default: the robot's), in the order a worker solves them."""
        from zmq_ik._urdf import parse_urdf
        from zmq_ik.robots import BUNDLED, bundled_robot_path

        model = parse_urdf(bundled_robot_path(robot))
        joints = [
            j
            for link in (ee_links or BUNDLED[robot].ee_links)
            for j in model.path_to(link)
            if j.type != "fixed"
        ]
        return cls(
            tuple(j.name for j in joints),
            np.array([j.lower for j in joints]),
            np.array([j.upper for j in joints]),
        )

    @classmethod
    def from_describe(cls, info: Mapping[str, Any]) -> JointLimits:
        """From ``IKClient.describe``'s answer (what the worker itself solves with)."""
        return cls(
            tuple(info["joint_names"]),
            np.asarray(info["lower"], np.float64),
            np.asarray(info["upper"], np.float64),
        )

    def check(self, batch: StrokeBatch) -> None:
        """`InputError` unless ``batch`` has one joint per limit."""
        if batch.n_joints != len(self.names):
            raise InputError(
                f"joints: the file has {batch.n_joints} joints per pose but the robot's limits "
                f"name {len(self.names)}; give the robot it was computed for",
                "robot",
            )


@dataclass(frozen=True)
class StrokeStats:
    """Per stroke pair: the worst error over its poses, offsets and arms, and joint margins."""

    pos_worst: npt.NDArray[np.float64]
    """(b,) worst position error, metres (NaN: none known)."""
    ori_worst: npt.NDArray[np.float64]
    """(b,) worst orientation error, radians (NaN: none known)."""
    margin: npt.NDArray[np.float64]
    """(b, n_joints) smallest distance to a limit over the stroke, as a fraction of the
    joint's range (< 0: beyond the limit)."""


def stroke_stats(batch: StrokeBatch, limits: JointLimits) -> StrokeStats:
    """The numbers `plot_strokebatch` draws (numpy only)."""
    limits.check(batch)

    def worst(err: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        flat = err.reshape(batch.b, -1).astype(np.float64)
        known = ~np.isnan(flat)
        out = np.where(known, flat, -np.inf).max(axis=1, initial=-np.inf)
        return np.where(known.any(axis=1), out, np.nan)

    span = np.maximum(limits.upper - limits.lower, 1e-12)
    q = batch.joints.reshape(batch.b, -1, batch.n_joints).astype(np.float64)
    margin = np.minimum(q - limits.lower, limits.upper - q).min(axis=1, initial=np.inf) / span
    return StrokeStats(worst(batch.pos_err), worst(batch.ori_err), margin)


def stats_text(
    stats: StrokeStats, pos_tol: float, ori_tol: float, limits: JointLimits, top: int = 5
) -> str:
    """A few lines: strokes over tolerance, marginal, and near or beyond a joint limit."""

    def strokes(mask: Any) -> str:
        idx = np.flatnonzero(mask)
        more = f", ... ({len(idx)} in all)" if len(idx) > top else ""
        return ", ".join(map(str, idx[:top])) + more if len(idx) else "none"

    lines = []
    for what, worst, tol, unit, scale in (
        ("position", stats.pos_worst, pos_tol, "mm", 1e3),
        ("orientation", stats.ori_worst, ori_tol, "rad", 1.0),
    ):
        if np.isnan(worst).all():
            lines.append(f"{what} error: unknown (the file has no pos_err/ori_err tensors)")
            continue
        lines.append(
            f"{what} error: worst {np.nanmax(worst) * scale:.3g} {unit} (tolerance "
            f"{tol * scale:g} {unit}); over: {strokes(worst > tol)}; marginal (> "
            f"{MARGINAL:.0%}): {strokes((worst > MARGINAL * tol) & (worst <= tol))}"
        )
    span = limits.upper - limits.lower
    for label, below in (("beyond", 0.0), (f"within {NEAR_LIMIT:.0%} of", NEAR_LIMIT)):
        close = stats.margin < below  # (b, n_joints)
        names = [
            limits.names[j]
            + (f" by <= {-stats.margin[:, j].min() * span[j]:.2g}" if not below else "")
            for j in np.flatnonzero(close.any(axis=0))
        ]
        lines.append(
            f"strokes {label} a joint limit: {strokes(close.any(axis=1))}"
            + (f" ({', '.join(names)})" if names else "")
        )
    return "\n".join(lines)


def require_matplotlib() -> Any:
    """``matplotlib.figure.Figure``, or `ConfigError` saying how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError(f"plots need matplotlib, which is not installed: {PLOT_INSTALL}") from e
    return Figure


def plot_strokebatch(
    batch: StrokeBatch,
    path: str | os.PathLike[str],
    limits: JointLimits,
    *,
    pos_tol: float = POS_TOL,
    ori_tol: float = ORI_TOL,
    title: str = "",
) -> StrokeStats:
    """Write the report PNG to ``path``; returns its numbers. Needs matplotlib."""
    Figure = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    pos_tol, ori_tol = check_tolerance(pos_tol, "pos_tol"), check_tolerance(ori_tol, "ori_tol")
    stats = stroke_stats(batch, limits)
    fig = Figure(figsize=(13, 15), layout="constrained")
    axes = fig.subplots(5, 1, height_ratios=[1, 1, 1.3, 1.4, 1.4])
    x = np.arange(batch.b)
    for ax, worst, tol, unit, scale, what in (
        (axes[0], stats.pos_worst, pos_tol, "mm", 1e3, "position"),
        (axes[1], stats.ori_worst, ori_tol, "rad", 1.0, "orientation"),
    ):
        _error_bars(ax, x, worst * scale, tol * scale, unit, what)
    _margin_map(fig, axes[2], stats.margin, limits)
    half = batch.n_joints // 2
    for ax, arm, cols in ((axes[3], "left", slice(0, half)), (axes[4], "right", slice(half, None))):
        _joint_paths(ax, batch, limits, cols, arm)
    for ax in axes:  # stroke pairs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(
        f"{title or 'StrokeBatch'}: {batch.b} stroke pairs x {batch.l} poses x {batch.o} "
        f"offsets; tolerances {pos_tol * 1e3:g} mm, {ori_tol:g} rad",
        fontsize=13,
    )
    fig.savefig(Path(path), dpi=90)
    logger.debug("wrote %s", path)
    return stats


def _error_bars(ax: Any, x: Any, worst: Any, tol: float, unit: str, what: str) -> None:
    ax.set_title(f"worst {what} error per stroke pair (poses, offsets, arms)", loc="left")
    ax.set_ylabel(unit)
    if np.isnan(worst).all():
        ax.text(
            0.5,
            0.5,
            "unknown: the file has no error tensors (write it with --errors)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return
    colors = np.where(
        worst > tol, "tab:red", np.where(worst > MARGINAL * tol, "tab:orange", "tab:green")
    )
    if len(x) <= 200:
        ax.bar(x, np.nan_to_num(worst), width=0.8, color=colors)
    else:  # thousands of bars take seconds to draw; lines look the same at this density
        ax.vlines(x, 0.0, np.nan_to_num(worst), colors=colors, lw=0.5)
    ax.axhline(tol, color="tab:red", ls="--", lw=1, label=f"tolerance {tol:g} {unit}")
    ax.axhline(MARGINAL * tol, color="tab:orange", ls=":", lw=1, label=f"marginal ({MARGINAL:.0%})")
    ax.set_ylim(0, max(np.nanmax(worst), tol) * 1.15)
    ax.set_xlim(-0.5, len(x) - 0.5)
    ax.legend(loc="upper right", fontsize=8)


def _margin_map(fig: Any, ax: Any, margin: Any, limits: JointLimits) -> None:
    ax.set_title(
        "joint-limit margin per stroke pair (closest approach, fraction of the joint's range; "
        "x: beyond the limit)",
        loc="left",
    )
    image = ax.imshow(
        margin.T, aspect="auto", cmap="RdYlGn", vmin=0.0, vmax=0.25, interpolation="nearest"
    )
    ys, xs = np.nonzero(margin.T < 0)
    ax.scatter(xs, ys, marker="x", color="black", s=12, lw=1)
    ax.set_yticks(range(len(limits.names)), list(limits.names), fontsize=7)
    fig.colorbar(image, cax=ax.inset_axes((1.005, 0.0, 0.01, 1.0)), label="margin")


def _joint_paths(ax: Any, batch: StrokeBatch, limits: JointLimits, cols: slice, arm: str) -> None:
    """Each joint of one arm over the whole program, as a fraction of its range (0 and 1 are
    its limits): the middle depth offset as a line, all offsets as a band."""
    span = np.maximum(limits.upper - limits.lower, 1e-12)
    q = (batch.joints[..., cols] - limits.lower[cols]) / span[cols]  # (b, l, o, k)
    t = (np.arange(batch.b)[:, None] + (np.arange(batch.l)[None, :] + 0.5) / batch.l - 0.5).ravel()
    for k, name in enumerate(limits.names[cols]):
        line = q[:, :, batch.o // 2, k].ravel()
        (drawn,) = ax.plot(t, line, lw=1, label=name)
        ax.fill_between(
            t,
            q[..., k].min(axis=2).ravel(),
            q[..., k].max(axis=2).ravel(),
            color=drawn.get_color(),
            alpha=0.25,
            lw=0,
        )
    for y in (0.0, 1.0):
        ax.axhline(y, color="0.3", lw=0.8, ls="--")
    ax.axhspan(-0.1, NEAR_LIMIT, color="tab:red", alpha=0.08)
    ax.axhspan(1 - NEAR_LIMIT, 1.1, color="tab:red", alpha=0.08)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.5, batch.b - 0.5)
    ax.set_title(
        f"{arm} arm joints over the program (0 = lower limit, 1 = upper limit)", loc="left"
    )
    ax.set_xlabel("stroke pair")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=7, fontsize=8, frameon=False)


# --------------------------------------------------------------------------- zmq-ik report


@dataclass(frozen=True)
class ReportSettings:
    """Everything `zmq-ik report` takes besides the file; each default is here once."""

    output: str = setting("report.png", doc="Where to write the PNG report.")
    scene: str | None = setting(
        None, doc="The scene the file was computed for: its robot and tolerances.", metavar="YAML"
    )
    robot: str | None = setting(
        None, doc="Bundled robot whose URDF gives the joint limits (default: the scene's, tatbot)."
    )
    pos_tol: float | None = setting(
        None, doc=f"Position tolerance, metres (default: the scene's; {POS_TOL:g} = 0.1 mm)."
    )
    ori_tol: float | None = setting(
        None, doc=f"Orientation tolerance, radians (default: the scene's; {ORI_TOL:g})."
    )

    def __post_init__(self) -> None:
        from zmq_ik.compute import check_output

        for name in ("pos_tol", "ori_tol"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_tolerance(getattr(self, name), name))
        check_output(self.output, example="report.png")  # before any work: a typo costs none


def report(path: str | os.PathLike[str], settings: ReportSettings) -> str:
    """`zmq-ik report`: read a StrokeBatch file, write its PNG report, return the text."""
    require_matplotlib()  # before reading anything (``settings`` checked its output)
    scene = Scene.from_yaml(Path(settings.scene)) if settings.scene else Scene()
    batch = StrokeBatch.load(path)
    limits = JointLimits.bundled(
        settings.robot or scene.robot, None if settings.robot else scene.ee_links
    )
    pos_tol = scene.pos_tol if settings.pos_tol is None else settings.pos_tol
    ori_tol = scene.ori_tol if settings.ori_tol is None else settings.ori_tol
    stats = plot_strokebatch(
        batch, settings.output, limits, pos_tol=pos_tol, ori_tol=ori_tol, title=Path(path).name
    )
    return f"{stats_text(stats, pos_tol, ori_tol, limits)}\nwritten to {settings.output}"
