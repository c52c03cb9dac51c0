"""Reaching mode: every target from the given start, and the misses again from more starts.

Most reachable targets converge from the rest pose within a few iterations; the others sit
in another basin (an elbow the other way, a wrist past a limit) or converge slowly. Rather
than starting every target from many points (``seeds`` × the work on every target), the
misses alone are solved again, in smaller batches, alternating two kinds of rounds
(`RESOLVE_ROUNDS`): a *spread* round starts each miss from its best answer so far and from
fresh points spread over the joint ranges, with few iterations; a *continue* round runs
the best of those further. The cost of many starting points thus falls on the few targets
that need them, and an unreachable target costs ~1,400 iterations instead of at most 16.

Every choice here depends only on the target's own results (the starting points are fixed
per round, not per batch), so a pose's answer does not depend on the rest of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.model import IKSettings

from ._joints import joint_reach, seed_points, working_range
from ._lm import REACH_ORI_TOL, REACH_POS_TOL
from ._robot import Robot

logger = logging.getLogger(__name__)

RESOLVE_ROUNDS: tuple[tuple[int, int], ...] = (
    (8, 8),
    (1, 24),
    (16, 12),
    (1, 32),
    (64, 16),
    (1, 64),
)
"""``(starts, iterations)`` of each round after the first, for the targets still missed:
the best answer so far plus ``starts - 1`` new points, each run for ``iterations`` (a
round of one start continues the best answer). Measured (FK of random joints, 1,024
targets, from mid-range; `benchmarks/robots.py`): Panda, UR5 and SO-ARM100 reach 75-90% in
the first round and all by the fourth; tatbot, both arms at once, ~30% and 99.8% after the
sixth."""
NEAR_ROUNDS: tuple[tuple[int, int], ...] = ((128, 16), (1, 64))
"""Rounds after `RESOLVE_ROUNDS` for the targets still missed but near (`NEAR_POS`,
`NEAR_ORI`): most are reachable, their solutions in a corner of the joint box (several
joints near their limits) that few starting points fall near, so these start near the
limits more often (`round_points`). Targets far off, mostly unreachable, skip them, so an
unreachable target costs no more; the targets reached before are answered as before.
Measured with 30 % of the joints drawn within 3 % of a limit (``python -m benchmarks.robots
--near-limits 0.3``)."""
NEAR_POS = 0.01
"""Metres: a miss at most this far from its target (every end effector) is near."""
NEAR_ORI = 0.1
"""Radians: a miss at most this far from its target's orientation is near."""
_ROUND_SEED = 23
"""Seeds the generator of the rounds' starting points (any constant: answers must only be
the same from run to run)."""

Solutions = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]
Run = Callable[[Any, Any, Any, Any, Any], Solutions]
"""``run(target_wxyz (n_ee, 4, M), target_pos (n_ee, 3, M), starts (n, M), iterations,
active (n_ee, M) | None)`` → joints (n, M), pos_err and ori_err (n_ee, M): M problems, any M
(the caller chunks them), with `hold_idle`'s rule for end effectors without a target."""


def moved_joints(robot: Robot, active: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """(n_ee, M) which end effectors have a target → (n_joints, M) which joints one of them
    moves (a torso's with either arm's)."""
    member = np.zeros((robot.n_ee, robot.n_joints), np.bool_)
    for e, info in enumerate(robot.chains):
        member[e, list(info.joint_index)] = True
    return np.any(member[:, :, None] & active[:, None, :], axis=0)


def hold_idle(
    robot: Robot,
    active: npt.NDArray[np.bool_],
    starts: npt.NDArray[np.float32],
    q: npt.NDArray[np.float32],
    pos_err: npt.NDArray[np.float32],
    ori_err: npt.NDArray[np.float32],
) -> Solutions:
    """The one rule for end effectors without a target (``active`` (n_ee, M) false): a joint
    no end effector with a target moves keeps its start (``starts``, (n, M) or (n, 1)), and
    their errors count as met (zero; the caller reports NaN). In a group of several end
    effectors the program already weighs such a hand at nothing (`ik._cost.ChainTerm`); a group
    of one (tatbot's arm) is solved towards its placeholder target, and put back here."""
    q = np.where(moved_joints(robot, active), q, starts).astype(np.float32, copy=False)
    zero = np.float32(0.0)
    return q, np.where(active, pos_err, zero), np.where(active, ori_err, zero)


def round_points(robot: Robot, index: int, count: int) -> npt.NDArray[np.float32]:
    """(count, n_joints) new starting points of re-solve round ``index`` (0-based), from a
    generator seeded by the round, so the same for every target and every run. In
    `RESOLVE_ROUNDS` uniform in the joints' working ranges, a little inside the limits; in
    `NEAR_ROUNDS` by the arcsine law (Beta(1/2, 1/2)), denser towards the limits and a hair
    inside them: a near miss's solution mostly has joints near their limits, where uniform
    draws rarely start (drawn so in every round, they cost the others more rounds). (Not
    Halton points: beyond a few dimensions their first points lie along a diagonal, and the
    second arm of a bimanual robot, its joints the 8th to 14th dimensions, would start from
    a line.)"""
    rng = np.random.default_rng([_ROUND_SEED, index, robot.n_joints])
    lo, hi = working_range(robot)
    if index < len(RESOLVE_ROUNDS):
        margin, u = 0.02 * (hi - lo), rng.random((count, robot.n_joints))
    else:
        margin, u = 0.005 * (hi - lo), rng.beta(0.5, 0.5, (count, robot.n_joints))
    return (lo + margin + u * (hi - lo - 2 * margin)).astype(np.float32)


def reached(pos_err: npt.NDArray[Any], ori_err: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Errors with the end effectors on axis 0 → per problem, every end effector reached."""
    return np.all((pos_err <= REACH_POS_TOL) & (ori_err <= REACH_ORI_TOL), axis=0)


def solve_reaching(
    robot: Robot,
    run: Run,
    target_wxyz: npt.NDArray[np.float32],
    target_pos: npt.NDArray[np.float32],
    start: npt.NDArray[np.float32],
    rest: npt.NDArray[np.float32],
    settings: IKSettings,
    active: npt.NDArray[np.bool_] | None = None,
) -> Solutions:
    """Targets (n_ee, 4|3, N) from ``start`` (n, N) (and ``settings.seeds - 1`` more points
    each), then `RESOLVE_ROUNDS` for the misses; returns the best answers (n, N) and their
    errors (n_ee, N). ``run`` solves problems (see `Run`). ``active`` (n_ee, N): which end
    effectors have a target (None: all); only those are judged (`hold_idle`)."""
    first = seed_points(robot, settings.seeds)
    q, pos_err, ori_err = _best_of(
        robot,
        run,
        target_wxyz,
        target_pos,
        start,
        first,
        settings.max_iterations,
        rest,
        settings,
        active=active,
    )
    for index, (starts, iterations) in enumerate(RESOLVE_ROUNDS + NEAR_ROUNDS):
        missed = ~reached(pos_err, ori_err)
        if index >= len(RESOLVE_ROUNDS):  # only the near misses go on
            missed &= np.all((pos_err <= NEAR_POS) & (ori_err <= NEAR_ORI), axis=0)
        miss = np.flatnonzero(missed)
        if index == 0 and miss.size:  # answers are written over from here on
            q, pos_err, ori_err = q.copy(), pos_err.copy(), ori_err.copy()
        logger.debug("round %d: %d of %d targets to solve again", index + 1, miss.size, q.shape[1])
        if miss.size == 0:
            break
        q_miss, pe_miss, oe_miss = _best_of(
            robot,
            run,
            target_wxyz[..., miss],
            target_pos[..., miss],
            q[:, miss],
            round_points(robot, index, starts - 1),
            iterations,
            rest,
            settings,
            (pos_err[:, miss] <= REACH_POS_TOL) & (ori_err[:, miss] <= REACH_ORI_TOL),
            None if active is None else active[:, miss],
        )
        # A round keeps a target's earlier answer unless it does better (its cost is not
        # monotone across rounds: each one starts with the rest pull at full weight).
        old = _pose_cost(settings, pos_err[:, miss], ori_err[:, miss])
        better = reached(pe_miss, oe_miss) | (_pose_cost(settings, pe_miss, oe_miss) < old)
        take = miss[better]
        q[:, take] = q_miss[:, better]
        pos_err[:, take], ori_err[:, take] = pe_miss[:, better], oe_miss[:, better]
    return _wrap_continuous(robot, q, rest), pos_err, ori_err


def _best_of(
    robot: Robot,
    run: Run,
    target_wxyz: npt.NDArray[np.float32],
    target_pos: npt.NDArray[np.float32],
    start: npt.NDArray[np.float32],
    points: npt.NDArray[np.float32],
    iterations: int,
    rest: npt.NDArray[np.float32],
    settings: IKSettings,
    done: npt.NDArray[np.bool_] | None = None,
    active: npt.NDArray[np.bool_] | None = None,
) -> Solutions:
    """Each target from its ``start`` (n, M) and from every one of ``points`` (P, n), joint
    group by group (`Robot.groups`: one per arm unless arms share joints): a group whose end
    effectors ``start`` already reaches (``done``, (n_ee, M)) keeps it (it stays put), the
    others try each point. The best answer per target and group: of those that reach all
    its end effectors, the nearest the rest pose (an arm keeps its elbow where the rest pose
    has it); else the one with the lowest pose cost. A joint no end effector with a target
    moves (``active``, (n_ee, M); None: all have one) keeps its start in every try."""
    m = start.shape[1]
    if len(points) == 0:
        return run(target_wxyz, target_pos, start, iterations, active)
    tries = 1 + len(points)
    starts = np.repeat(start[:, None, :], tries, axis=1)  # (n, tries, m)
    moved = moved_joints(robot, active) if active is not None else None
    for group in robot.groups:
        joints = np.asarray(group.joint_index)
        fresh = np.broadcast_to(points[:, joints].T[:, :, None], (len(joints), tries - 1, m))
        keep = done[list(group.ee_index)].all(axis=0) if done is not None else np.zeros(m, bool)
        if moved is not None:
            keep = keep | ~moved[joints, None, :]
        starts[joints, 1:] = np.where(keep, starts[joints, 1:], fresh)
    q, pos_err, ori_err = run(
        np.tile(target_wxyz, tries),
        np.tile(target_pos, tries),
        starts.reshape(-1, tries * m),
        iterations,
        None if active is None else np.tile(active, tries),
    )
    q = np.asarray(q).reshape(robot.n_joints, tries, m)
    pos_err = np.asarray(pos_err).reshape(-1, tries, m)
    ori_err = np.asarray(ori_err).reshape(-1, tries, m)
    cols = np.arange(m)
    best_q = np.empty((robot.n_joints, m), np.float32)
    best_pe = np.empty((robot.n_ee, m), np.float32)
    best_oe = np.empty((robot.n_ee, m), np.float32)
    scale = joint_reach(robot).astype(np.float32)
    for group in robot.groups:
        joints, ees = np.asarray(group.joint_index), np.asarray(group.ee_index)
        pe, oe, qc = pos_err[ees], ori_err[ees], q[joints]
        ok = reached(pe, oe)  # (tries, m): every end effector of the group
        from_rest = np.sum(((qc - rest[joints, None, None]) / scale[joints, None, None]) ** 2, 0)
        score = np.where(ok, from_rest, np.inf)
        cost = _pose_cost(settings, pe, oe)
        pick = np.where(ok.any(axis=0), np.argmin(score, axis=0), np.argmin(cost, axis=0))
        best_q[joints] = qc[:, pick, cols]
        best_pe[ees], best_oe[ees] = pe[:, pick, cols], oe[:, pick, cols]
    return best_q, best_pe, best_oe


def _pose_cost(
    settings: IKSettings, pos_err: npt.NDArray[Any], ori_err: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """The solver's pose cost from the errors (end effectors on axis 0), to rank misses."""
    pos = settings.pos_weight**2 * np.sum(pos_err.astype(np.float64) ** 2, axis=0)
    return pos + settings.ori_weight**2 * np.sum(ori_err.astype(np.float64) ** 2, axis=0)


def _wrap_continuous(
    robot: Robot, q: npt.NDArray[np.float32], rest: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Continuous joints (no limits) within half a turn of the rest pose: the same pose, and
    no full turns a start far from the rest pose may have added."""
    if robot.limited.all():
        return q
    free = ~robot.limited
    r = rest[free, None]
    q = q.copy()
    q[free] = r + np.mod(q[free] - r + np.pi, 2 * np.pi) - np.pi
    return q
