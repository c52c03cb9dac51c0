"""tatbot's strokebatch (its ``gen/batch.py``): stroke groups → IK targets → joints, for any
number of end effectors (tatbot: (left, right) pairs; a one-arm robot: one stroke a group).

For ``b`` stroke groups of ``l`` points and ``o`` depth offsets, per arm:

1. a normal stroke's ``meter_coords`` (design frame) go through the design-origin pose into
   the world; an ink dip's ``ee_pos`` is already in the world;
2. the arm's ``ee_offset`` (world frame) is added to every pose, ``hover_offset`` to the first
   and the last pose of every stroke;
3. offset k adds ``linspace(*offset_range, o)[k]`` times the design frame's +z axis;
4. the orientation is the arm's fixed ``ee_rot``;
5. IK on all ``b·l·o`` targets (every arm at once) with rest = the scene's ready pose (None:
   the robot's default rest pose);
6. an arm whose stroke ``is_rest`` has no IK target (``active`` false in the solve): it holds
   its ready pose and its errors are NaN; a joint it shares with an arm that draws, a
   torso's, moves as that arm needs, as if the resting arm were not there;
   with ``first_last_rest`` the right arm rests during the first pair, the left during the
   last (:func:`~zmq_ik.model.apply_first_last_rest`, applied to the whole job's flags).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import check_packed
from zmq_ik.errors import InputError
from zmq_ik.model import (
    IKSettings,
    PackedStrokes,
    Scene,
    StrokeBatch,
    StrokeList,
    apply_first_last_rest,
)

from ._joints import default_rest
from ._kin import quat_to_mat
from ._lm import solver_params, takes_mask
from ._programs import check_buckets, continuous_program
from ._reach import hold_idle
from ._robot import Robot
from ._solve import deadline_after, in_buckets, solve_until, solver_inputs

logger = logging.getLogger(__name__)


def stroke_targets(
    scene: Scene, coords: npt.NDArray[Any], is_inkdip: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """World targets of a stroke batch: positions (b, n_ee, l, o, 3), orientations (n_ee, 4)."""
    design_wxyz = np.asarray(scene.design_wxyz, np.float64)
    R_world_design = np.array(quat_to_mat(*(design_wxyz / np.linalg.norm(design_wxyz))))
    design = np.asarray(scene.design_pos, np.float64)
    c = np.asarray(coords, np.float64)
    world = np.where(is_inkdip[:, :, None, None], c, c @ R_world_design.T + design)
    world = world + np.asarray(scene.ee_offset, np.float64)[None, :, None, :]
    hover = np.asarray(scene.hover_offset, np.float64)
    world[:, :, 0] += hover
    world[:, :, -1] += hover
    depths = np.linspace(scene.offset_range[0], scene.offset_range[1], scene.offset_num)
    normal = R_world_design[:, 2]
    pos = world[:, :, :, None, :] + depths[None, None, None, :, None] * normal
    wxyz = np.array(scene.ee_rot, np.float64)
    wxyz /= np.linalg.norm(wxyz, axis=-1, keepdims=True)
    return pos, wxyz


def strokebatch_from_strokes(
    scene: Scene,
    strokes: StrokeList | PackedStrokes,
    robot: Robot | None = None,
    *,
    ik: IKSettings | None = None,
    buckets: Sequence[int] | None = None,
    timeout: float | None = None,
) -> StrokeBatch:
    """tatbot's ``strokebatch_from_strokes``, in process: ``IKClient.compute`` without the
    network. ``strokes`` a :class:`~zmq_ik.model.StrokeList` (or already
    :class:`~zmq_ik.model.PackedStrokes`); ``robot`` defaults to the bundled robot named by
    ``scene.robot`` with ``scene.ee_links``; ``ik`` to ``scene.ik``; ``buckets``: as for
    :func:`solve_ik` (a worker's, to run its programs); first/last rest per
    ``scene.first_last_rest``. ``timeout`` (seconds): past it, `IKTimeout`."""
    if robot is None:
        robot = Robot.bundled(scene.robot, tuple(scene.ee_links))
    if isinstance(strokes, StrokeList):
        strokes.check_arms(scene.arms)
        packed = strokes.pack(scene.stroke_length)
    else:
        packed = strokes
    return strokebatch_from_packed(
        scene,
        apply_first_last_rest(packed, scene),
        robot,
        ik=ik,
        buckets=buckets,
        deadline=deadline_after(timeout),
    )


def strokebatch_from_packed(
    scene: Scene,
    packed: PackedStrokes,
    robot: Robot,
    *,
    ik: IKSettings | None = None,
    buckets: Sequence[int] | None = None,
    deadline: float | None = None,
) -> StrokeBatch:
    """The strokebatch of packed stroke pairs whose ``is_rest`` flags already hold first/last
    rest (what a worker receives: a client applies it before splitting a job). ``ik``
    defaults to ``scene.ik``; ``buckets``: as for :func:`solve_ik`; ``deadline``
    (``time.monotonic()`` seconds): past it, `IKTimeout`."""
    settings = ik or scene.ik
    n_ee = scene.n_ee
    coords, is_inkdip, is_rest = check_packed(
        packed.coords, packed.is_inkdip, packed.is_rest, scene.stroke_length, n_ee
    )
    b, _, length, _ = coords.shape
    if robot.ee_links != scene.ee_links:
        raise InputError(
            f"ee_links: the scene's {list(scene.ee_links)}, the robot's {list(robot.ee_links)}",
            field="ee_links",
        )
    if scene.ready is None:
        rest = default_rest(robot)
    elif len(scene.ready) != robot.n_joints:
        hint = " (ready_l + ready_r)" if n_ee == 2 else ""
        raise InputError(
            f"ready: the scene's ready pose{hint} has {len(scene.ready)} joints, the robot's "
            f"chains to {', '.join(scene.ee_links)} have {robot.n_joints} "
            f"({', '.join(robot.joint_names)})",
            field="ready",
        )
    else:
        rest = np.asarray(scene.ready, np.float32)
    o = scene.offset_num
    pos, wxyz = stroke_targets(scene, coords, is_inkdip)  # (b, n_ee, l, o, 3), (n_ee, 4)
    shape = (b, length, o)
    if b == 0:
        joints = np.zeros((*shape, robot.n_joints), np.float32)
        pos_err = np.zeros((*shape, n_ee), np.float32)
        ori_err = np.zeros((*shape, n_ee), np.float32)
    elif settings.continuous:
        joints, pos_err, ori_err = _solve_continuous(
            robot, pos, wxyz, ~is_rest, rest, settings, buckets, deadline
        )
    else:
        target_pos = pos.transpose(0, 2, 3, 1, 4).reshape(-1, n_ee, 3)
        target_wxyz = np.broadcast_to(wxyz, (*target_pos.shape[:1], n_ee, 4))
        active = np.broadcast_to(~is_rest[:, None, None, :], (*shape, n_ee)).reshape(-1, n_ee)
        sol = solve_until(
            robot,
            target_wxyz,
            target_pos,
            rest,
            settings,
            deadline=deadline,
            buckets=buckets,
            active=active,
        )
        joints = sol.joints.reshape(*shape, robot.n_joints)
        pos_err = sol.pos_err.reshape(*shape, n_ee)
        ori_err = sol.ori_err.reshape(*shape, n_ee)
    ee_rot = np.broadcast_to(wxyz, (*shape, n_ee, 4)).astype(np.float32)
    return StrokeBatch(
        ee_pos=pos.transpose(0, 2, 3, 1, 4).astype(np.float32),
        ee_rot=ee_rot,
        joints=joints,
        pos_err=pos_err,
        ori_err=ori_err,
    )


def _solve_continuous(
    robot: Robot,
    pos: npt.NDArray[np.float64],
    wxyz: npt.NDArray[np.float64],
    active: npt.NDArray[np.bool_],
    rest: npt.NDArray[np.float32],
    settings: IKSettings,
    buckets: Sequence[int] | None,
    deadline: float | None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Each (stroke, offset) sequence solved pose after pose, each from the previous answer
    (``seeds`` is not used here: the previous pose is the seed); ``active`` (b, n_ee): which
    arms have targets (`ik._reach.hold_idle` for the others)."""
    b, n_ee, length, o, _ = pos.shape
    flat_pos = pos.transpose(0, 3, 2, 1, 4).reshape(b * o * length, n_ee, 3)
    flat_wxyz = np.broadcast_to(wxyz, (flat_pos.shape[0], n_ee, 4))
    checked_wxyz, checked_pos, rest32 = solver_inputs(robot, flat_wxyz, flat_pos, rest)
    # (M, l, n_ee, k) with M = b·o sequences.
    seq_pos = checked_pos.reshape(b * o, length, n_ee, 3)
    seq_wxyz = checked_wxyz.reshape(b * o, length, n_ee, 4)
    # (n_ee, l, M): which arm has a target, per pose.
    seq_active = np.broadcast_to(np.repeat(active, o, axis=0).T[:, None, :], (n_ee, length, b * o))
    fn = continuous_program(robot, settings.precise)
    params = solver_params(settings)
    sizes = check_buckets(buckets)
    # Batch (sequences) last: (n_ee, k, l, M) in, (l, k, M) out.
    batched: tuple[npt.NDArray[Any], ...] = (
        np.ascontiguousarray(seq_wxyz.transpose(2, 3, 1, 0)),
        np.ascontiguousarray(seq_pos.transpose(2, 3, 1, 0)),
    )
    if takes_mask(robot):
        batched = (*batched, np.ascontiguousarray(seq_active))
    q, pe, oe = in_buckets(fn, batched, (rest32, params), sizes, sizes[-1], deadline)
    if not active.all():
        # (l, k, M) → (k, l·M) and back.
        flat = [a.transpose(1, 0, 2).reshape(a.shape[1], -1) for a in (q, pe, oe)]
        on = seq_active.reshape(n_ee, -1)
        q_h, pe_h, oe_h = hold_idle(robot, on, rest32[:, None], *flat)
        nan = np.float32(np.nan)
        pe_h, oe_h = np.where(on, pe_h, nan), np.where(on, oe_h, nan)
        q, pe, oe = (a.reshape(-1, length, b * o).transpose(1, 0, 2) for a in (q_h, pe_h, oe_h))
    q_out, pe_out, oe_out = (a.transpose(2, 0, 1) for a in (q, pe, oe))  # (M, l, k)

    def back(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # (b·o, l, k) → (b, l, o, k)
        return a.reshape(b, o, length, -1).transpose(0, 2, 1, 3)

    return back(q_out), back(pe_out), back(oe_out)
