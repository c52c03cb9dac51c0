"""One verdict on a StrokeBatch, computed here once: its achieved errors against the
tolerances and its joints against the robot's limits. `zmq-ik compute`'s summary, `zmq-ik
report` and the PNG report (`zmq_ik.apps.plot`) all say what `judge` finds, in the same words and
units (numpy only; no matplotlib, no JAX).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.base.docs import documented
from zmq_ik.errors import InputError
from zmq_ik.model.solution import verdict
from zmq_ik.model.strokebatch import StrokeBatch
from zmq_ik.settings.ik import check_tolerance

JOINT_TOL = 1e-5
"""How far past a limit (rad, or m for a prismatic joint) a joint may be and still count as
within it: a joint clamped at its limit in float32 lands within ~1e-7 of it; anything
further is past the limit, and said with its amount."""
MARGINAL = 0.8
"""A stroke whose worst error is above this fraction of its tolerance (but within it) is
marginal: a small change of scene or calibration can push it over."""
NEAR_LIMIT = 0.02
"""A joint within this fraction of its range from a limit is near it (tatbot: ~0.06 rad on
the shoulder, 0.8 mm on the needle carriage)."""
SOFT_NOTE = "soft limits: ik.precise false lets a joint past its limit"
"""Why a joint may be past its limit (tatbot's mode), said with the overshoot."""


@documented
@dataclass(frozen=True, eq=False)
class JointLimits:
    """Joint names and limits, in the order of a StrokeBatch's ``joints``."""

    names: tuple[str, ...]
    """Joint names (tatbot: the left arm's, then the right arm's)."""
    lower: npt.NDArray[np.float64]
    """(n_joints,) lower limits, rad (m for prismatic joints)."""
    upper: npt.NDArray[np.float64]
    """(n_joints,) upper limits; a continuous joint reports one turn (-pi..pi)."""
    prismatic: npt.NDArray[np.bool_] | None = None
    """(n_joints,) True for prismatic joints (limits in m), or None: unknown (a worker older
    than this field), then amounts are said in "rad or m"."""
    limited: npt.NDArray[np.bool_] | None = None
    """(n_joints,) False for continuous joints (never past a limit); None: all limited."""
    source: str = ""
    """Where the limits come from (a URDF, a worker's ``describe``), for messages."""

    @classmethod
    def from_urdf(
        cls, urdf: str | Any, ee_links: Sequence[str], source: str | None = None
    ) -> JointLimits:
        """From a URDF file (no JAX): the actuated joints of the chains to ``ee_links``, in
        the order a worker solves them (chain after chain; a joint two chains share, once; a
        mimic joint is the joint it follows)."""
        from zmq_ik.robots.urdf import parse_urdf

        model = parse_urdf(urdf)
        for link in ee_links:
            if link not in model.links:
                raise InputError(f"{urdf}: no link named {link!r} (ee_links)", "ee_links")
        seen: dict[str, Any] = {}
        for link in ee_links:
            for j in model.path_to(link):
                driver = j if j.mimic is None else model.joints[j.mimic.joint]
                if j.type != "fixed" and driver.name not in seen:
                    seen[driver.name] = driver
        joints = list(seen.values())
        return cls(
            tuple(j.name for j in joints),
            np.array([j.lower for j in joints], np.float64),
            np.array([j.upper for j in joints], np.float64),
            np.array([j.type == "prismatic" for j in joints], np.bool_),
            np.array([j.type != "continuous" for j in joints], np.bool_),
            source=source or str(urdf),
        )

    @classmethod
    def bundled(cls, robot: str = "tatbot", ee_links: Sequence[str] | None = None) -> JointLimits:
        """From a bundled robot's URDF: the chains to ``ee_links`` (default: the robot's)."""
        from zmq_ik.robots import BUNDLED, bundled_robot_path

        path = bundled_robot_path(robot)
        links = tuple(ee_links or BUNDLED[robot].ee_links)
        return cls.from_urdf(path, links, source=f"the bundled {robot} URDF")

    @classmethod
    def from_describe(cls, info: Mapping[str, Any], robot: str = "") -> JointLimits:
        """From ``IKClient.describe``'s answer (what the worker itself solves with)."""
        prismatic = info.get("prismatic")
        return cls(
            tuple(info["joint_names"]),
            np.asarray(info["lower"], np.float64),
            np.asarray(info["upper"], np.float64),
            None if prismatic is None else np.asarray(prismatic, np.bool_),
            np.asarray(info["limited"], np.bool_) if "limited" in info else None,
            source=f"the {robot} worker" if robot else "the worker",
        )

    def check(self, batch: StrokeBatch) -> None:
        """`InputError` unless ``batch`` has one joint per limit."""
        if batch.n_joints != len(self.names):
            raise InputError(
                f"joints: the file has {batch.n_joints} joints per pose but {self.source or 'the robot'} "
                f"names {len(self.names)}; give the robot it was computed for",
                "robot",
            )

    def unit(self, j: int) -> str:
        """Joint ``j``'s unit: ``"m"``, ``"rad"``, or ``"rad or m"`` when unknown."""
        if self.prismatic is None:
            return "rad or m"
        return "m" if self.prismatic[j] else "rad"

    def overshoot(self, joints: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """How far past its limit each joint value is (rad or m; 0 inside), same shape."""
        q = np.asarray(joints, np.float64)
        past = np.maximum(np.maximum(self.lower - q, q - self.upper), 0.0)
        if self.limited is not None:
            past = np.where(self.limited, past, 0.0)
        return past


@dataclass(frozen=True)
class PastLimit:
    """One joint that is past its limit somewhere in a batch."""

    name: str
    unit: str
    """``"rad"``, ``"m"`` or ``"rad or m"``."""
    worst: float
    """Largest amount past the limit, in ``unit``."""
    side: str
    """``"lower"``, ``"upper"`` or ``"lower and upper"``: which limit."""
    poses: int
    """Poses (b * l * o) where it is past."""
    groups: tuple[int, ...]
    """Stroke groups (pairs) where it is past."""

    def text(self) -> str:
        return f"{self.name} up to {self.worst:.3g} {self.unit} past its {self.side} limit"


def _strokes(idx: Sequence[int], top: int = 5) -> str:
    """``3, 7, 9, ... (12 in all)``, or ``none``."""
    more = f", ... ({len(idx)} in all)" if len(idx) > top else ""
    return ", ".join(map(str, idx[:top])) + more if len(idx) else "none"


@documented
@dataclass(frozen=True)
class Verdict:
    """What a StrokeBatch's numbers say, once: errors against ``pos_tol``/``ori_tol`` and
    joints against the robot's limits (with `JOINT_TOL` for float32 rounding)."""

    summary: dict[str, Any]
    """`StrokeBatch.summary` against the tolerances (``n_over``, ``n_unknown``, worst errors)."""
    limits: JointLimits | None
    """The limits the joints were judged against; None: not judged (unknown)."""
    past: tuple[PastLimit, ...] = ()
    """The joints past a limit, worst first."""
    n_past: int = 0
    """Poses with a joint past its limit."""
    groups_past: tuple[int, ...] = ()
    """Stroke groups with a joint past its limit."""
    soft: bool = False
    """The batch was solved with soft limits (``ik.precise`` false: tatbot's mode)."""
    margin: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    """(b, n_joints) closest approach to a limit per stroke group, as a fraction of the
    joint's range (< 0: past it by more than `JOINT_TOL`; the plot's margin map)."""
    pos_worst: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    """(b,) worst position error per stroke group, metres (NaN: none known)."""
    ori_worst: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    """(b,) worst orientation error per stroke group, radians (NaN: none known)."""

    @property
    def ok(self) -> bool:
        """Every pose known to be within tolerance, and no joint past its limit."""
        return verdict(self.summary)[0] and not self.n_past

    def line(self) -> str:
        """``OK: ...`` or ``NOT OK: ...``: the verdict in one line, as every output says it
        (the errors' part in `zmq_ik.model.solution.verdict`'s words, as a solve's)."""
        errors_ok, errors = verdict(self.summary)
        n = self.summary["n_poses"]
        if self.n_past:
            soft = f" ({SOFT_NOTE})" if self.soft else ""
            past = (
                f"{self.n_past} of {n} poses have a joint past its limit{soft}: "
                + "; ".join(p.text() for p in self.past[:3])
                + (f"; {len(self.past) - 3} more joints" if len(self.past) > 3 else "")
            )
            return f"NOT OK: {past}" if errors_ok else f"NOT OK: {errors}; {past}"
        if not errors_ok:
            return f"NOT OK: {errors}"
        if self.limits is None:
            return f"OK: {errors} (joint limits not checked)"
        return f"OK: {errors} and joint limits"

    def to_dict(self) -> dict[str, Any]:
        """The summary with the joint verdict (JSON: ``compute --json``)."""
        out = dict(self.summary)
        out["ok"] = self.ok
        out["verdict"] = self.line()
        out["limits_checked"] = self.limits is not None
        out["n_past_limit"] = self.n_past
        out["past_limit"] = [
            {"joint": p.name, "worst": p.worst, "unit": p.unit, "side": p.side, "poses": p.poses}
            for p in self.past
        ]
        return out

    def lines(self, top: int = 5) -> list[str]:
        """Per stroke group: over tolerance, marginal, near or past a joint limit (`report`,
        ``compute --plot``), then the verdict line."""
        out = []
        for what, worst, tol, unit, scale in (
            ("position", self.pos_worst, self.summary["pos_tol"], "mm", 1e3),
            ("orientation", self.ori_worst, self.summary["ori_tol"], "rad", 1.0),
        ):
            if np.isnan(worst).all():
                out.append(f"{what} error: unknown (the file has no pos_err/ori_err tensors)")
                continue
            over = np.flatnonzero(worst > tol).tolist()
            marginal = np.flatnonzero((worst > MARGINAL * tol) & (worst <= tol)).tolist()
            out.append(
                f"{what} error: worst {np.nanmax(worst) * scale:.3g} {unit} (tolerance "
                f"{tol * scale:g} {unit}); over: {_strokes(over, top)}; marginal (> "
                f"{MARGINAL:.0%}): {_strokes(marginal, top)}"
            )
        if self.margin is not None and self.limits is not None:
            near = (self.margin < NEAR_LIMIT) & (self.margin >= 0)
            names = [self.limits.names[j] for j in np.flatnonzero(near.any(axis=0))]
            out.append(
                f"strokes within {NEAR_LIMIT:.0%} of a joint limit: "
                f"{_strokes(np.flatnonzero(near.any(axis=1)).tolist(), top)}"
                + (f" ({', '.join(names)})" if names else "")
            )
            past = "; ".join(p.text() for p in self.past)
            out.append(
                f"strokes past a joint limit (by more than {JOINT_TOL:g} rad or m): "
                f"{_strokes(list(self.groups_past), top)}" + (f" ({past})" if past else "")
            )
        out.append(self.line())
        return out


def _worst_per_group(err: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """(b,) the worst known error of each stroke group of ``err`` (b, ...); NaN: none known."""
    flat = err.reshape(err.shape[0], -1).astype(np.float64)
    known = ~np.isnan(flat)
    out = np.where(known, flat, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(known.any(axis=1), out, np.nan)


def judge(
    batch: StrokeBatch,
    pos_tol: float,
    ori_tol: float,
    limits: JointLimits | None,
    *,
    soft: bool = False,
) -> Verdict:
    """The verdict on ``batch``: errors against the tolerances (metres, radians), joints
    against ``limits`` (None: not judged; said so). ``soft``: it was solved with soft limits
    (``ik.precise`` false), said beside any overshoot."""
    pos_tol = check_tolerance(pos_tol, "pos_tol")
    ori_tol = check_tolerance(ori_tol, "ori_tol")
    summary = batch.summary(pos_tol, ori_tol)
    pos_worst, ori_worst = _worst_per_group(batch.pos_err), _worst_per_group(batch.ori_err)
    if limits is None:
        return Verdict(summary, None, soft=soft, pos_worst=pos_worst, ori_worst=ori_worst)
    limits.check(batch)
    q = batch.joints.reshape(batch.b, -1, batch.n_joints).astype(np.float64)  # (b, l*o, j)
    over = limits.overshoot(q)
    is_past = over > JOINT_TOL
    span = np.maximum(limits.upper - limits.lower, 1e-12)
    inside = np.minimum(q - limits.lower, limits.upper - q)
    if limits.limited is not None:
        inside = np.where(limits.limited, inside, np.inf)
    inside = np.where(is_past | (inside >= 0), inside, 0.0)  # within JOINT_TOL: at the limit
    margin = inside.min(axis=1, initial=np.inf) / span
    past = []
    for j in np.flatnonzero(is_past.any(axis=(0, 1))).tolist():
        low = bool((is_past[..., j] & (q[..., j] < limits.lower[j])).any())
        high = bool((is_past[..., j] & (q[..., j] > limits.upper[j])).any())
        side = "lower and upper" if low and high else "lower" if low else "upper"
        past.append(
            PastLimit(
                limits.names[j],
                limits.unit(j),
                float(over[..., j].max()),
                side,
                int(is_past[..., j].sum()),
                tuple(np.flatnonzero(is_past[..., j].any(axis=1)).tolist()),
            )
        )
    past.sort(key=lambda p: -p.worst)
    any_past: npt.NDArray[np.bool_] = np.any(is_past, axis=2)  # (b, l*o)
    return Verdict(
        summary,
        limits,
        tuple(past),
        int(any_past.sum()),
        tuple(np.flatnonzero(np.any(any_past, axis=1)).tolist()),
        soft,
        margin,
        pos_worst,
        ori_worst,
    )
