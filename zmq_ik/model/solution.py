"""Plain IK results: :class:`IKSolution` (each pose judged ``reached`` or not) and
:class:`EEPoses` (FK), with the words every verdict uses (`verdict`) and the check of a solve's
judging arguments (`check_judging`).

Import the classes from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import SMALL, as_array, as_bool, as_bool_array
from zmq_ik.base.docs import documented
from zmq_ik.errors import IKError, InputError
from zmq_ik.model.common import Dim, ValueEq, check_errors
from zmq_ik.settings.ik import ORI_TOL, POS_TOL, check_tolerance


def verdict(summary: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether every pose of a summary (``n_poses``, ``n_over``, ``n_unknown``) is known to be
    within tolerance, and one line saying so (`compute`'s verdict, `IKSolution`'s strict)."""
    n, over, unknown = summary["n_poses"], summary["n_over"], summary["n_unknown"]
    if over:
        return False, f"{over} of {n} poses miss tolerance"
    if unknown:
        return False, f"{unknown} of {n} poses have no known error: cannot tell"
    return True, f"all {n} poses within tolerance"


def check_judging(pos_tol: Any, ori_tol: Any, strict: Any) -> tuple[float, float, bool]:
    """A solve's judging arguments, checked as ``compute`` checks them (`check_tolerance`;
    ``strict`` a real bool), before any work: (pos_tol, ori_tol, strict)."""
    return (
        check_tolerance(pos_tol, "pos_tol"),
        check_tolerance(ori_tol, "ori_tol"),
        as_bool(strict, "strict"),
    )


def _worst(arr: npt.NDArray[np.float32]) -> str:
    """The largest known (not NaN) value of ``arr``, for messages: ``"unknown"`` if none."""
    known = arr[~np.isnan(arr)]
    return f"{known.max():.3g}" if known.size else "unknown"


@documented
@dataclass(frozen=True, eq=False)
class IKSolution(ValueEq):
    """Result of a plain IK solve of ``N`` targets for a robot with ``n_ee`` end effectors.

    float32 arrays, not copied when already float32 (read-only views). ``reached`` says per
    pose whether every end effector is within ``pos_tol`` and ``ori_tol`` of its target (the
    tolerances ``solve`` was given; defaults `zmq_ik.model.POS_TOL`, `ORI_TOL`: a default
    Scene's), ``n_over`` how many poses are not: check it before commanding ``joints``. An
    unreachable target still gets the best answer found; ``solve(strict=True)`` raises
    `IKError` instead (`require_reached`).
    """

    joints: npt.NDArray[Any]
    """(N, n_joints) joint solution in URDF units."""
    pos_err: npt.NDArray[Any]
    """(N, n_ee) achieved position error per end effector, metres; NaN = unknown."""
    ori_err: npt.NDArray[Any]
    """(N, n_ee) achieved orientation error per end effector, radians; NaN = unknown."""
    pos_tol: float = POS_TOL
    """Position tolerance that judges ``reached``, metres (<= `MAX_POS_TOL`; default
    `POS_TOL`)."""
    ori_tol: float = ORI_TOL
    """Orientation tolerance that judges ``reached``, radians (<= `MAX_ORI_TOL`; default
    `ORI_TOL`)."""
    active: npt.NDArray[Any] | None = None
    """(N, n_ee) bool: which end effectors had a target (``solve(..., active=...)``; None:
    all). ``reached`` judges only those; the others' errors are NaN (no target)."""

    def __post_init__(self) -> None:
        joints = as_array(self.joints, "joints", (None, None), np.float32, copy=False)
        n = joints.shape[0]
        object.__setattr__(self, "joints", joints)
        pos = as_array(self.pos_err, "pos_err", (n, None), np.float32, copy=False, finite=False)
        check_errors(pos, "pos_err")
        ori = as_array(
            self.ori_err, "ori_err", (n, pos.shape[1]), np.float32, copy=False, finite=False
        )
        check_errors(ori, "ori_err")
        object.__setattr__(self, "pos_err", pos)
        object.__setattr__(self, "ori_err", ori)
        object.__setattr__(self, "pos_tol", check_tolerance(self.pos_tol, "pos_tol"))
        object.__setattr__(self, "ori_tol", check_tolerance(self.ori_tol, "ori_tol"))
        if self.active is not None:
            active = as_bool_array(self.active, "active", pos.shape, copy=False)
            object.__setattr__(self, "active", active)

    @classmethod
    def trusted(
        cls,
        joints: npt.NDArray[np.float32],
        pos_err: npt.NDArray[np.float32],
        ori_err: npt.NDArray[np.float32],
        pos_tol: float = POS_TOL,
        ori_tol: float = ORI_TOL,
        active: npt.NDArray[np.bool_] | None = None,
    ) -> IKSolution:
        """An IKSolution of arrays the IK engine has just made (float32, consistent shapes,
        errors >= 0 or NaN; ``active`` read-only bool) and of tolerances already checked
        (`check_judging`), without the constructor's checks (~15 µs a solve): made
        read-only, not copied. Never for arrays that came from a peer or a caller."""
        sol = object.__new__(cls)
        joints.flags.writeable = pos_err.flags.writeable = ori_err.flags.writeable = False
        sol.__dict__.update(
            joints=joints,
            pos_err=pos_err,
            ori_err=ori_err,
            pos_tol=pos_tol,
            ori_tol=ori_tol,
            active=active,
        )
        return sol

    # -- judged ---------------------------------------------------------------------------------
    # Computed on first use, both at once, and kept in the instance dict (a frozen dataclass
    # has no slots; a cached_property is found there first): a solve nobody asks pays nothing.

    @functools.cached_property
    def reached(self) -> npt.NDArray[np.bool_]:
        """(N,) bool, read-only: every end effector's ``pos_err <= pos_tol`` and ``ori_err <=
        ori_tol`` (of those with a target: ``active``). An unknown (NaN) error is not
        reached."""
        pos, ori, pos_tol, ori_tol = self.pos_err, self.ori_err, self.pos_tol, self.ori_tol
        if self.active is not None:  # no target: nothing to miss
            out = np.asarray((((pos <= pos_tol) & (ori <= ori_tol)) | ~self.active).all(axis=1))
            n_reached = int(np.count_nonzero(out))
        elif pos.size <= SMALL:  # a control loop's pose: a few floats in Python (see SMALL)
            flags = [
                all(p <= pos_tol for p in prow) and all(o <= ori_tol for o in orow)
                for prow, orow in zip(pos.tolist(), ori.tolist(), strict=True)
            ]
            out = np.array(flags, dtype=np.bool_)
            n_reached = sum(flags)
        else:  # NaN compares False: not reached
            out = np.asarray(((pos <= pos_tol) & (ori <= ori_tol)).all(axis=1))
            n_reached = int(np.count_nonzero(out))
        out.flags.writeable = False
        self.__dict__["n_over"] = len(out) - n_reached
        return out

    @functools.cached_property
    def n_over(self) -> int:
        """Poses not ``reached``: an error over its tolerance, or unknown (NaN). The name is
        the ``n_over`` of ``StrokeBatch.summary()`` and ``compute``'s verdict (which counts
        unknown errors apart, as ``n_unknown``: an arm that rests has none)."""
        self.reached  # noqa: B018 (sets n_over too)
        return int(self.__dict__["n_over"])

    def require_reached(self) -> None:
        """Raise `IKError` unless every pose is ``reached`` (``solve(..., strict=True)``), naming
        how many of N missed and the worst errors against the tolerances."""
        if self.n_over:
            _, line = verdict({"n_poses": len(self), "n_over": self.n_over, "n_unknown": 0})
            nan = np.isnan(self.pos_err) | np.isnan(self.ori_err)
            if self.active is not None:
                nan &= self.active
            unknown = int(nan.any(axis=1).sum())
            raise IKError(
                f"{line}: worst pos_err {_worst(self.pos_err)} m (pos_tol {self.pos_tol:g}), "
                f"ori_err {_worst(self.ori_err)} rad (ori_tol {self.ori_tol:g})"
                + (f", {unknown} with an unknown (NaN) error" if unknown else "")
                + " (strict)"
            )

    def __len__(self) -> int:
        return int(self.joints.shape[0])

    def __repr__(self) -> str:
        return (
            f"IKSolution(N={len(self)}, n_joints={self.n_joints}, n_ee={self.n_ee}, "
            f"n_over={self.n_over}, worst pos_err {_worst(self.pos_err)} m, "
            f"ori_err {_worst(self.ori_err)} rad)"
        )

    n_joints = Dim("joints", 1, "Joints per configuration.")
    n_ee = Dim("pos_err", 1, "End effectors per target.")


@documented
@dataclass(frozen=True, eq=False)
class EEPoses(ValueEq):
    """End-effector poses of ``N`` joint vectors: forward kinematics (``IKClient.fk``), the
    numbers the IK engine computes. The fields are in `IKClient.solve`'s order, so
    ``client.solve(robot, fk.wxyz, fk.pos)`` asks for the same poses back.

    float32 arrays, not copied when already float32 (read-only views)."""

    ee_links: tuple[str, ...]
    """End-effector links, in the order of the arrays' second axis."""
    wxyz: npt.NDArray[Any]
    """(N, n_ee, 4) orientation per end effector, unit quaternion w-x-y-z, world frame."""
    pos: npt.NDArray[Any]
    """(N, n_ee, 3) position per end effector, metres, world frame."""

    def __post_init__(self) -> None:
        if isinstance(self.ee_links, str) or not all(
            isinstance(x, str) and x for x in self.ee_links
        ):
            raise InputError("ee_links: must be a list of link names", field="ee_links")
        ee = tuple(self.ee_links)
        wxyz = as_array(self.wxyz, "wxyz", (None, len(ee), 4), np.float32, copy=False)
        pos = as_array(self.pos, "pos", (wxyz.shape[0], len(ee), 3), np.float32, copy=False)
        object.__setattr__(self, "ee_links", ee)
        object.__setattr__(self, "wxyz", wxyz)
        object.__setattr__(self, "pos", pos)

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def __repr__(self) -> str:
        return f"EEPoses(N={len(self)}, ee_links={list(self.ee_links)})"

    n_ee = Dim("pos", 1, "End effectors per pose.")
