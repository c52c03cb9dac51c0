"""A StrokeBatch report for the operator: which strokes are marginal, before the robot runs them.

One PNG (`plot_strokebatch`, `zmq-ik report`, `zmq-ik compute --plot`): per stroke group, the
worst achieved position and orientation error against the tolerances, each joint's margin to
its limits, and the joint paths against the limits, under the verdict's line. The numbers
and the verdict are `zmq_ik.model.verdict`'s (numpy only), which `compute`'s summary says too.
matplotlib is optional (the ``plot`` extra) and imported only when a figure is drawn.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zmq_ik.errors import ConfigError, InputError
from zmq_ik.model.scene import Scene
from zmq_ik.model.strokebatch import StrokeBatch
from zmq_ik.model.verdict import MARGINAL, NEAR_LIMIT, JointLimits, Verdict, judge
from zmq_ik.robots import BUNDLED
from zmq_ik.settings.apps import PLOT_INSTALL, ReportSettings

logger = logging.getLogger(__name__)


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
    verdict: Verdict,
    *,
    arms: Sequence[str] = ("left", "right"),
    title: str = "",
) -> None:
    """Write the report PNG of ``batch`` and its ``verdict`` (`zmq_ik.model.verdict.judge`) to
    ``path``; ``arms``: the end effectors' names (`Scene.arms`), one joint panel each.
    Needs matplotlib."""
    Figure = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    pos_tol, ori_tol = verdict.summary["pos_tol"], verdict.summary["ori_tol"]
    limits = verdict.limits
    panels = _arm_columns(batch.n_joints, arms) if limits is not None else []
    fig = Figure(figsize=(13, 8 + 3.5 * len(panels)), layout="constrained")
    axes = fig.subplots(3 + len(panels), 1, height_ratios=[1, 1, 1.3] + [1.4] * len(panels))
    x = np.arange(batch.b)
    for ax, worst, tol, unit, scale, what in (
        (axes[0], verdict.pos_worst, pos_tol, "mm", 1e3, "position"),
        (axes[1], verdict.ori_worst, ori_tol, "rad", 1.0, "orientation"),
    ):
        _error_bars(ax, x, worst * scale, tol * scale, unit, what)
    if limits is None or verdict.margin is None:
        axes[2].text(0.5, 0.5, "joint limits unknown", ha="center", va="center")
    else:
        _margin_map(fig, axes[2], verdict.margin, limits)
        for ax, (arm, cols) in zip(axes[3:], panels, strict=True):
            _joint_paths(ax, batch, limits, cols, arm)
    for ax in axes:  # stroke groups are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(
        f"{title or 'StrokeBatch'}: {batch.b} stroke groups x {batch.l} poses x {batch.o} "
        f"offsets; tolerances {pos_tol * 1e3:g} mm, {ori_tol:g} rad\n"
        + textwrap.fill(verdict.line(), 150),
        fontsize=12,
        color="black" if verdict.ok else "tab:red",
    )
    fig.savefig(Path(path), dpi=90)
    logger.debug("wrote %s", path)


def _arm_columns(n_joints: int, arms: Sequence[str]) -> list[tuple[str, slice]]:
    """One joint panel per arm when the joints split evenly among them (tatbot: 7 + 7),
    else one panel of all joints."""
    n = len(arms)
    if n > 1 and n_joints % n == 0:
        k = n_joints // n
        return [(arm, slice(i * k, (i + 1) * k)) for i, arm in enumerate(arms)]
    return [(", ".join(arms), slice(0, n_joints))]


def _error_bars(ax: Any, x: Any, worst: Any, tol: float, unit: str, what: str) -> None:
    ax.set_title(f"worst {what} error per stroke group (poses, offsets, arms)", loc="left")
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
        "joint-limit margin per stroke group (closest approach, fraction of the joint's range; "
        "x: past the limit)",
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
    """Each joint of one arm (``cols``) over the whole program, as a fraction of its range (0 and 1 are
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
    ax.set_title(f"{arm}: joints over the program (0 = lower limit, 1 = upper limit)", loc="left")
    ax.set_xlabel("stroke group")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=7, fontsize=8, frameon=False)


# --------------------------------------------------------------------------- zmq-ik report


def report_limits(scene: Scene, robot: str | None, scene_given: bool) -> JointLimits:
    """The joint limits `report` judges against: ``robot`` (a bundled name or a URDF file;
    default: the scene's robot) with the scene's end effectors, or the bundled robot's own
    when no scene was given."""
    name = robot or scene.robot
    links = scene.ee_links if scene_given or name == scene.robot else None
    if name in BUNDLED and not Path(name).is_file():
        return JointLimits.bundled(name, links)
    if Path(name).is_file():
        if links is None:
            raise InputError(
                f"--robot {name}: a URDF needs --scene too (its ee_links pick the chains)",
                "scene",
            )
        return JointLimits.from_urdf(name, links)
    raise InputError(
        f"robot {name!r} is not bundled ({', '.join(sorted(BUNDLED))}) and no such file: give "
        "its URDF with --robot PATH",
        "robot",
    )


def report(path: str | os.PathLike[str], settings: ReportSettings) -> str:
    """`zmq-ik report`: read a StrokeBatch file, write its PNG report, return the text (the
    strokes to look at, then the verdict: `zmq_ik.model.verdict`'s, as `compute` says it)."""
    require_matplotlib()  # before reading anything (``settings`` checked its output)
    scene = Scene.from_yaml(Path(settings.scene)) if settings.scene else Scene()
    batch = StrokeBatch.load(path)
    limits = report_limits(scene, settings.robot, settings.scene is not None)
    pos_tol = scene.pos_tol if settings.pos_tol is None else settings.pos_tol
    ori_tol = scene.ori_tol if settings.ori_tol is None else settings.ori_tol
    verdict = judge(batch, pos_tol, ori_tol, limits, soft=not scene.ik.precise)
    arms = scene.arms if scene.n_ee == batch.n_ee else tuple(map(str, range(batch.n_ee)))
    plot_strokebatch(batch, settings.output, verdict, arms=arms, title=Path(path).name)
    return "\n".join([*verdict.lines(), f"written to {settings.output}"])
