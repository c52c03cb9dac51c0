"""tatbot's strokebatch (its ``gen/batch.py``): stroke pairs → IK targets → joints.

For ``b`` stroke pairs of ``l`` points and ``o`` depth offsets, per arm:

1. a normal stroke's ``meter_coords`` (design frame) go through the design-origin pose into
   the world; an ink dip's ``ee_pos`` is already in the world;
2. the arm's ``ee_offset`` (world frame) is added to every pose, ``hover_offset`` to the first
   and the last pose of every stroke;
3. offset k adds ``linspace(*offset_range, o)[k]`` times the design frame's +z axis;
4. the orientation is the arm's fixed ``ee_rot``;
5. IK on all ``b·l·o`` (left, right) targets with rest = the full ready pose;
6. an arm whose stroke ``is_rest`` holds its ready pose (its errors are NaN: no IK target),
   and with ``first_last_rest`` the right arm rests during the first pair, the left during
   the last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from zmq_ik.errors import InputError
from zmq_ik.model import Scene, StrokeBatch

from ._robot import Robot
from ._solve import (
    IKConfig,
    _check_targets,
    _solve_planes,
    bucket_for,
    check_buckets,
    check_deadline,
    solve_ik,
)

logger = logging.getLogger(__name__)


def _quat_matrix(wxyz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def stroke_targets(
    scene: Scene, coords: npt.NDArray[Any], is_inkdip: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """World targets of a stroke batch: positions (b, 2, l, o, 3), orientations (2, 4)."""
    R_world_design = _quat_matrix(scene.design_wxyz)
    design = np.asarray(scene.design_pos, np.float64)
    c = np.asarray(coords, np.float64)
    world = np.where(is_inkdip[:, :, None, None], c, c @ R_world_design.T + design)
    world = world + np.stack([scene.ee_offset_l, scene.ee_offset_r])[None, :, None, :]
    hover = np.asarray(scene.hover_offset, np.float64)
    world[:, :, 0] += hover
    world[:, :, -1] += hover
    depths = np.linspace(scene.offset_range[0], scene.offset_range[1], scene.offset_num)
    normal = R_world_design[:, 2]
    pos = world[:, :, :, None, :] + depths[None, None, None, :, None] * normal
    wxyz = np.stack([scene.ee_rot_l, scene.ee_rot_r]).astype(np.float64)
    wxyz /= np.linalg.norm(wxyz, axis=-1, keepdims=True)
    return pos, wxyz


def strokebatch_from_arrays(
    scene: Scene,
    coords: Any,
    is_inkdip: Any,
    is_rest: Any,
    robot: Robot,
    config: IKConfig | None = None,
    first_last_rest: bool = True,
    *,
    buckets: Sequence[int] | None = None,
    deadline: float | None = None,
) -> StrokeBatch:
    """The strokebatch of packed strokes: ``coords`` (b, 2, l, 3) (design-frame
    ``meter_coords``, or world ``ee_pos`` where ``is_inkdip``), ``is_inkdip`` and ``is_rest``
    (b, 2) bool. ``config`` defaults to ``scene.ik``. ``first_last_rest`` (tatbot's, on by
    default) is an argument because a fan-out client applies it once before splitting a job.
    ``buckets`` and ``deadline``: as for :func:`solve_ik`.
    """
    config = config or IKConfig.from_settings(scene.ik)
    c = np.asarray(coords, np.float32)
    if c.ndim != 4 or c.shape[1] != 2 or c.shape[3] != 3:
        raise InputError(f"coords must have shape (b, 2, l, 3), got {c.shape}", field="coords")
    b, _, length, _ = c.shape
    if length != scene.stroke_length:
        raise InputError(
            f"coords have {length} points per stroke, scene.stroke_length is {scene.stroke_length}",
            field="coords",
        )
    if not np.isfinite(c).all():
        raise InputError("coords contain NaN or inf", field="coords")
    flags = {}
    for name, value in (("is_inkdip", is_inkdip), ("is_rest", is_rest)):
        arr = np.asarray(value)
        if arr.shape != (b, 2):
            raise InputError(f"{name} must have shape ({b}, 2), got {arr.shape}", field=name)
        flags[name] = arr.astype(np.bool_)
    if robot.n_ee != 2:
        raise InputError(f"strokebatch needs a robot with 2 end effectors, got {robot.n_ee}")
    sizes = [len(info.joint_index) for info in robot.chains]
    if sizes != [len(scene.ready_l), len(scene.ready_r)]:
        raise InputError(
            f"scene ready poses have {len(scene.ready_l)} + {len(scene.ready_r)} joints, the "
            f"robot's chains {sizes[0]} + {sizes[1]}",
            field="ready_l",
        )
    o = scene.offset_num
    pos, wxyz = stroke_targets(scene, c, flags["is_inkdip"])  # (b, 2, l, o, 3), (2, 4)
    rest = np.asarray(scene.ready, np.float32)
    shape = (b, length, o)
    if b == 0:
        joints = np.zeros((*shape, robot.n_joints), np.float32)
        pos_err = np.zeros((*shape, 2), np.float32)
        ori_err = np.zeros((*shape, 2), np.float32)
    elif config.continuous:
        joints, pos_err, ori_err = _solve_continuous(
            robot, pos, wxyz, rest, config, buckets, deadline
        )
    else:
        target_pos = pos.transpose(0, 2, 3, 1, 4).reshape(-1, 2, 3)
        target_wxyz = np.broadcast_to(wxyz, (*target_pos.shape[:1], 2, 4))
        sol = solve_ik(
            robot, target_wxyz, target_pos, rest, config, buckets=buckets, deadline=deadline
        )
        joints = sol.joints.reshape(*shape, robot.n_joints)
        pos_err = sol.pos_err.reshape(*shape, 2)
        ori_err = sol.ori_err.reshape(*shape, 2)
    resting = flags["is_rest"].copy()
    if first_last_rest and b > 0:
        resting[0, 1] = True
        resting[-1, 0] = True
    joints = joints.copy()
    pos_err = pos_err.copy()
    ori_err = ori_err.copy()
    for arm, info in enumerate(robot.chains):
        idx = np.asarray(info.joint_index)
        rows = resting[:, arm]
        joints[np.ix_(rows, np.arange(length), np.arange(o), idx)] = rest[idx]
        pos_err[rows, :, :, arm] = np.nan
        ori_err[rows, :, :, arm] = np.nan
    ee_rot = np.broadcast_to(wxyz[:, None, None, None, :], (2, *shape, 4)).astype(np.float32)
    return StrokeBatch(
        ee_pos_l=pos[:, 0].astype(np.float32),
        ee_pos_r=pos[:, 1].astype(np.float32),
        ee_rot_l=np.ascontiguousarray(ee_rot[0]),
        ee_rot_r=np.ascontiguousarray(ee_rot[1]),
        joints=joints,
        pos_err=pos_err,
        ori_err=ori_err,
    )


def strokebatch_from_strokes(
    scene: Scene,
    strokes: Any,
    robot: Robot | None = None,
    config: IKConfig | None = None,
) -> StrokeBatch:
    """tatbot's ``strokebatch_from_strokes``: ``strokes`` a :class:`~zmq_ik.model.StrokeList`
    (or already :class:`~zmq_ik.model.PackedStrokes`); ``robot`` defaults to the bundled
    robot named by ``scene.robot`` with ``scene.ee_links``; first/last rest per
    ``scene.first_last_rest``."""
    if robot is None:
        robot = Robot.bundled(scene.robot, tuple(scene.ee_links))
    packed = strokes.pack(scene.stroke_length) if hasattr(strokes, "pack") else strokes
    return strokebatch_from_arrays(
        scene,
        packed.coords,
        packed.is_inkdip,
        packed.is_rest,
        robot,
        config=config,
        first_last_rest=scene.first_last_rest,
    )


# --------------------------------------------------------------------------- continuous


def _continuous_program(robot: Robot, precise: bool) -> Any:
    key = ("continuous", precise)
    fn = robot._cache.get(key)
    if fn is None:

        def run(tw: Any, tp: Any, rest: Any, params: Any) -> Any:
            """tw (n_ee, 4, l, M), tp (n_ee, 3, l, M): scan along l, warm-started."""
            m = tw.shape[-1]
            q0 = jnp.broadcast_to(rest[:, None], (robot.n_joints, m))

            def step(q: Any, target: Any) -> Any:
                w, p = target
                out = _solve_planes(robot, precise, 1, w, p, rest, params, q_init=q)
                return out[0], out

            xs = (jnp.moveaxis(tw, 2, 0), jnp.moveaxis(tp, 2, 0))
            _, (q, pe, oe) = jax.lax.scan(step, q0, xs)
            return q, pe, oe  # (l, n, M), (l, n_ee, M), (l, n_ee, M)

        fn = jax.jit(run)
        robot._cache[key] = fn
    return fn


def _solve_continuous(
    robot: Robot,
    pos: npt.NDArray[np.float64],
    wxyz: npt.NDArray[np.float64],
    rest: npt.NDArray[np.float32],
    config: IKConfig,
    buckets: Sequence[int] | None,
    deadline: float | None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Each (stroke, offset) sequence solved pose after pose, each from the previous answer
    (``seeds`` is not used here: the previous pose is the seed)."""
    b, _, length, o, _ = pos.shape
    flat_pos = pos.transpose(0, 3, 2, 1, 4).reshape(b * o * length, 2, 3)
    flat_wxyz = np.broadcast_to(wxyz, (flat_pos.shape[0], 2, 4))
    checked_wxyz, checked_pos, rest32 = _check_targets(robot, flat_wxyz, flat_pos, rest)
    # (M, l, n_ee, k) with M = b·o sequences.
    seq_pos = checked_pos.reshape(b * o, length, 2, 3)
    seq_wxyz = checked_wxyz.reshape(b * o, length, 2, 4)
    n_seq = b * o
    fn = _continuous_program(robot, config.precise)
    params = config.params()
    q_out = np.empty((n_seq, length, robot.n_joints), np.float32)
    pe_out = np.empty((n_seq, length, 2), np.float32)
    oe_out = np.empty((n_seq, length, 2), np.float32)
    sizes = check_buckets(buckets)
    for start in range(0, n_seq, sizes[-1]):
        check_deadline(deadline, start * length, n_seq * length)
        stop = min(start + sizes[-1], n_seq)
        m = stop - start
        bucket = bucket_for(m, sizes)
        idx = np.concatenate([np.arange(start, stop), np.full(bucket - m, start)])
        tw = np.ascontiguousarray(seq_wxyz[idx].transpose(2, 3, 1, 0))
        tp = np.ascontiguousarray(seq_pos[idx].transpose(2, 3, 1, 0))
        q, pe, oe = fn(tw, tp, rest32, params)
        q_out[start:stop] = np.asarray(q).transpose(2, 0, 1)[:m]
        pe_out[start:stop] = np.asarray(pe).transpose(2, 0, 1)[:m]
        oe_out[start:stop] = np.asarray(oe).transpose(2, 0, 1)[:m]

    def back(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # (b·o, l, k) → (b, l, o, k)
        return a.reshape(b, o, length, -1).transpose(0, 2, 1, 3)

    return back(q_out), back(pe_out), back(oe_out)
