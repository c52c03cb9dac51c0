"""Joint-space helpers: working ranges, the default rest pose, seeds, the rest-pose check.

numpy only; the robot's limits are plain arrays (``Robot.lower``, ``upper``, ``limited``,
``prismatic``).
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import SMALL
from zmq_ik.errors import InputError


class Robot(Protocol):
    """What these helpers read of a robot (``zmq_ik.ik.Robot`` has it): joint-space facts
    only, so this module sits below the robot, which uses it to check its rest pose."""

    @property
    def joint_names(self) -> tuple[str, ...]: ...
    @property
    def lower(self) -> npt.NDArray[np.float32]: ...
    @property
    def upper(self) -> npt.NDArray[np.float32]: ...
    @property
    def limited(self) -> npt.NDArray[np.bool_]: ...
    @property
    def prismatic(self) -> npt.NDArray[np.bool_]: ...
    @property
    def rest(self) -> npt.NDArray[np.float32] | None: ...
    @property
    def n_joints(self) -> int: ...


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


@functools.lru_cache(maxsize=64)
def _halton(n: int, dim: int) -> npt.NDArray[np.float64]:
    """First ``n`` points (skipping 0) of the Halton sequence in [0, 1)^dim (read-only; kept:
    every solve's re-solve rounds use the same ones)."""
    out = np.zeros((n, dim))
    for d in range(dim):
        base = _PRIMES[d % len(_PRIMES)]
        for i in range(n):
            f, r, k = 1.0, 0.0, i + 1
            while k > 0:
                f /= base
                r += f * (k % base)
                k //= base
            out[i, d] = r
    out.setflags(write=False)
    return out


def joint_reach(robot: Robot) -> npt.NDArray[np.float64]:
    """Per joint, the scale of its motion: half a turn (rad), or 1 m for a prismatic joint."""
    return np.where(robot.prismatic, 1.0, math.pi)


def working_range(robot: Robot) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(lower, upper) per joint, where limits like ±1e10 (meaning "unlimited") are narrowed
    to a window of one turn (or 2 m) inside them, nearest zero: where seeds are drawn and
    the default rest pose sits, instead of 1e10 rad."""
    lo, hi = robot.lower.astype(np.float64), robot.upper.astype(np.float64)
    reach = joint_reach(robot)
    centre = np.clip(0.0, lo + reach, hi - reach)
    wide = hi - lo > 2 * reach
    return np.where(wide, centre - reach, lo), np.where(wide, centre + reach, hi)


def default_rest(robot: Robot) -> npt.NDArray[np.float32]:
    """The rest pose used when none is given: the robot's own (``Robot.rest``: tatbot's
    ready pose for ``Robot.bundled("tatbot")``, as a worker serving it uses), else the middle
    of each joint's working range."""
    if robot.rest is not None:
        return robot.rest
    lo, hi = working_range(robot)
    return ((lo + hi) / 2).astype(np.float32)


def seed_points(robot: Robot, seeds: int) -> npt.NDArray[np.float32]:
    """(seeds - 1, n_joints) deterministic extra starting points inside the limits."""
    if seeds <= 1:
        return np.zeros((0, robot.n_joints), np.float32)
    u = _halton(seeds - 1, robot.n_joints)
    lo, hi = working_range(robot)
    # Stay a little inside the limits: a start on a limit has a one-sided Jacobian.
    margin = 0.02 * (hi - lo)
    return (lo + margin + u * (hi - lo - 2 * margin)).astype(np.float32)


RestBounds = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[float], list[float]]
_REST_BOUNDS: weakref.WeakKeyDictionary[Robot, RestBounds] = weakref.WeakKeyDictionary()
"""Per robot, the (lowest, highest) rest pose `check_rest` accepts, as arrays and as lists:
computed once, not per solve (a control loop sends a rest pose with every pose)."""


def _rest_bounds(robot: Robot) -> RestBounds:
    bounds = _REST_BOUNDS.get(robot)
    if bounds is None:
        lower, upper = robot.lower.astype(np.float64), robot.upper.astype(np.float64)
        slack = np.where(robot.limited, np.maximum(upper - lower, joint_reach(robot)), np.inf)
        lo, hi = np.maximum(lower - slack, -1e3), np.minimum(upper + slack, 1e3)
        bounds = _REST_BOUNDS[robot] = (lo, hi, lo.tolist(), hi.tolist())
    return bounds


def check_rest(robot: Robot, rest: Any) -> None:
    """Refuse a rest pose far outside the joint limits (more than a whole range, and at least
    half a turn or 1 m, beyond them) or beyond ±1e3: it is the starting point too, so such a
    value is a caller's mistake (degrees for radians, a wrong joint order). A previous answer
    fed back (soft limits let it sit outside them) passes."""
    if type(rest) is not np.ndarray or rest.dtype.kind != "f":
        rest = np.asarray(rest, np.float64)
    lo, hi, lo_list, hi_list = _rest_bounds(robot)
    if rest.size <= SMALL:  # in Python: see `SMALL` (a control loop sends one rest pose a call)
        values = enumerate(zip(rest.tolist(), lo_list, hi_list, strict=True))
        i = next((i for i, (r, a, b) in values if r < a or r > b), -1)
    else:
        bad = (rest < lo) | (rest > hi)
        i = int(np.flatnonzero(bad)[0]) if bad.any() else -1
    if i >= 0:
        raise InputError(
            f"rest[{i}] = {rest[i]:g} for joint {robot.joint_names[i]!r} is far outside its "
            f"limits [{robot.lower[i]:g}, {robot.upper[i]:g}]",
            field="rest",
        )
