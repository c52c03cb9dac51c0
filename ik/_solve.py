"""The public solve: checked targets in, an :class:`~zmq_ik.model.IKSolution` out, shaped
like ``IKClient.solve`` so code moves between the two unchanged."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import SMALL, as_float, check_active, check_rest_shape, check_targets
from zmq_ik.errors import IKTimeout, InputError
from zmq_ik.model import ORI_TOL, POS_TOL, IKSettings, IKSolution
from zmq_ik.model.solution import check_judging

from ._joints import check_rest, default_rest
from ._lm import solver_params, takes_mask
from ._programs import bucket_for, check_buckets, chunk_size, solve_program
from ._reach import hold_idle, solve_reaching
from ._robot import Robot

Targets = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]
_DEFAULT_SETTINGS = IKSettings()


def solver_inputs(
    robot: Robot,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    *,
    checked: bool = False,
    active: Any = None,
) -> Targets:
    """Checked solver input: (N, n_ee, 4) unit quaternions and (N, n_ee, 3) positions, and
    the rest pose (``None``: :func:`default_rest`), all float32. One pose, (n_ee, 4) and
    (n_ee, 3), is N = 1. Quaternions are normalised in float64.

    ``checked``: the targets and the rest pose come from `zmq_ik.base.checks.check_targets` and
    `check_rest_shape` already (a worker's `ops.read_solve_request`), so only what needs the
    robot is checked here (~30 µs less per single-pose request). ``active``: see
    `check_targets` (the placeholders of end effectors without a target)."""
    if checked:
        wxyz, pos = np.asarray(target_wxyz), np.asarray(target_pos)
        if wxyz.shape[1:] != (robot.n_ee, 4) or pos.shape != (*wxyz.shape[:2], 3):
            raise InputError(
                f"target_pos: targets {wxyz.shape} / {pos.shape} do not fit the robot's "
                f"{robot.n_ee} end effectors",
                "target_pos",
            )
    else:
        wxyz, pos = check_targets(
            target_wxyz,
            target_pos,
            n_ee=robot.n_ee,
            dtype=np.float64,
            one_pose=True,
            active=active,
        )
    robot.check_reach(pos)  # a target in millimetres is refused, not solved as a miss
    if rest is None:
        rest32 = default_rest(robot)
    elif checked:  # float32 and finite already (`check_rest_shape`): its length and bounds
        rest32 = check_rest_shape(rest, robot.n_joints)
        check_rest(robot, rest32)
    else:
        rest64 = check_rest_shape(rest, robot.n_joints, np.float64)
        check_rest(robot, rest64)
        rest32 = rest64.astype(np.float32)
    return unit_quaternions(wxyz), pos.astype(np.float32, copy=False), rest32


def unit_quaternions(wxyz: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """(..., 4) quaternions divided by their norms, computed in float64, as float32. A few
    (`zmq_ik.base.checks.SMALL`: a control loop's pose) in Python, the same operations in the
    same order, so the same bits."""
    if wxyz.size <= SMALL:
        v = wxyz.ravel().tolist()
        out: list[float] = []
        for i in range(0, len(v), 4):
            w, x, y, z = v[i : i + 4]
            n = math.sqrt(w * w + x * x + y * y + z * z)
            out += (w / n, x / n, y / n, z / n)
        return np.array(out, np.float32).reshape(wxyz.shape)
    w64 = wxyz.astype(np.float64)
    unit = w64 / np.sqrt(np.sum(w64 * w64, axis=-1, keepdims=True))
    return unit.astype(np.float32)


@functools.lru_cache(maxsize=256)
def round_params(settings: IKSettings, iterations: int) -> jax.Array:
    """`device_params` of ``settings`` with ``iterations`` instead of its own: one re-solve
    round's (`_reach.RESOLVE_ROUNDS`)."""
    params = solver_params(settings)
    params[-1] = iterations
    return jax.device_put(params)


@functools.lru_cache(maxsize=64)
def device_params(settings: IKSettings) -> jax.Array:
    """:func:`solver_params` of ``settings`` on the device, made once per settings (a few
    dozen kept): a program called with a host array copies it in on every call."""
    return jax.device_put(solver_params(settings))


def check_deadline(deadline: float | None, done: int, total: int) -> None:
    """Raise `IKTimeout` once ``deadline`` (``time.monotonic()`` seconds) has passed: a
    worker must not keep computing an answer nobody waits for."""
    if deadline is not None and time.monotonic() > deadline:
        raise IKTimeout(f"deadline passed with {done} of {total} targets solved")


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now (None: no deadline)."""
    if timeout is None:
        return None
    return time.monotonic() + as_float(timeout, "timeout", 0.0)


def solve_ik(
    robot: Robot,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any = None,
    *,
    ik: IKSettings | None = None,
    timeout: float | None = None,
    buckets: Sequence[int] | None = None,
    pos_tol: float = POS_TOL,
    ori_tol: float = ORI_TOL,
    strict: bool = False,
    active: Any = None,
) -> IKSolution:
    """Solve IK for ``N`` target poses, in process: ``IKClient.solve`` without the network.

    ``target_wxyz`` (N, n_ee, 4) and ``target_pos`` (N, n_ee, 3) metres, world frame, end
    effectors in ``robot.ee_links`` order; one pose may be given as (n_ee, 4) and (n_ee, 3).
    ``rest`` (n_joints,) is the starting point and the pose the redundancy is pulled to;
    None: the robot's default (:func:`default_rest`). ``ik``: solver settings (default
    tatbot's). ``timeout`` (seconds): past it, `IKTimeout` (checked between chunks).
    ``pos_tol``/``ori_tol`` (metres, radians; defaults ``POS_TOL``/``ORI_TOL``) judge
    ``reached``; ``strict``: raise `IKError` unless every pose reached (as the client's).
    ``active`` (N, n_ee) bool, or (n_ee,) for every pose: which end effectors have a target
    (None: all). One without weighs nothing: its target (any pose, NaN included) is
    ignored, its errors are NaN, ``reached`` judges the others, and a joint that no end effector with a
    target moves keeps ``rest`` (a resting arm; a torso it shares moves with the other arm).

    Returns joints (N, n_joints), the achieved ``pos_err`` (m) and ``ori_err`` (rad),
    (N, n_ee): FK of the answer against the target, and per pose ``reached`` (``n_over``:
    how many did not). Batches are padded to a bucket (or split into chunks, see
    :func:`chunk_size`), so only ``buckets`` (default ``BUCKETS``: pass the list given to
    :func:`warmup`) ever compile.
    """
    pos_tol, ori_tol, strict = check_judging(pos_tol, ori_tol, strict)
    solution = solve_until(
        robot,
        target_wxyz,
        target_pos,
        rest,
        ik,
        deadline=deadline_after(timeout),
        buckets=buckets,
        active=active,
    )
    judged = IKSolution.trusted(
        solution.joints, solution.pos_err, solution.ori_err, pos_tol, ori_tol, solution.active
    )
    if strict:
        judged.require_reached()
    return judged


def solve_until(
    robot: Robot,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    ik: IKSettings | None,
    *,
    deadline: float | None,
    buckets: Sequence[int] | None = None,
    checked: bool = False,
    active: Any = None,
) -> IKSolution:
    """:func:`solve_ik` with a ``time.monotonic()`` ``deadline`` instead of a timeout: what a
    worker calls with the deadline its request carries. ``checked``: see
    :func:`solver_inputs`; ``active``: see :func:`solve_ik`."""
    settings = ik or _DEFAULT_SETTINGS
    sizes = check_buckets(buckets)
    wxyz, pos, rest32 = solver_inputs(
        robot, target_wxyz, target_pos, rest, checked=checked, active=active
    )
    n_targets = wxyz.shape[0]
    on = None if active is None else check_active(active, n_targets, robot.n_ee)
    if n_targets == 0:
        empty = np.empty((0, robot.n_joints), np.float32), np.empty((0, robot.n_ee), np.float32)
        return IKSolution.trusted(empty[0], empty[1], empty[1].copy())
    # Batch last from here on: the programs' layout. ``mask``: which end effectors have a
    # target, None when all have one (then nothing below differs from a solve without).
    target_wxyz = np.ascontiguousarray(wxyz.transpose(1, 2, 0))
    target_pos = np.ascontiguousarray(pos.transpose(1, 2, 0))
    mask = None if on is None or on.all() else np.ascontiguousarray(on.T)
    if settings.precise:
        fn = solve_program(robot, True, 1)

        def run(w: Any, p: Any, starts: Any, iterations: int, act: Any) -> Any:
            params = round_params(settings, iterations)
            batched = (w, p, starts, *_program_mask(robot, act, w.shape[-1]))
            out = in_buckets(fn, batched, (rest32, params), sizes, sizes[-1], deadline)
            return out if act is None else hold_idle(robot, act, starts, *out)

        starts = np.repeat(rest32[:, None], n_targets, axis=1)
        q, pos_err, ori_err = solve_reaching(
            robot, run, target_wxyz, target_pos, starts, rest32, settings, mask
        )
    else:
        fn = solve_program(robot, False, settings.seeds)
        chunk = chunk_size(sizes, settings.seeds)
        batched = (target_wxyz, target_pos, *_program_mask(robot, mask, n_targets))
        fixed = (rest32, device_params(settings))
        q, pos_err, ori_err = in_buckets(fn, batched, fixed, sizes, chunk, deadline)
        if mask is not None:
            q, pos_err, ori_err = hold_idle(robot, mask, rest32[:, None], q, pos_err, ori_err)
    if mask is not None:  # no target, no error
        pos_err = np.where(mask, pos_err, np.float32(np.nan))
        ori_err = np.where(mask, ori_err, np.float32(np.nan))
    return IKSolution.trusted(  # made here: no checks needed
        np.ascontiguousarray(q.T),
        np.ascontiguousarray(pos_err.T),
        np.ascontiguousarray(ori_err.T),
        active=None if mask is None else on,
    )


def _program_mask(robot: Robot, mask: Any, n: int) -> tuple[npt.NDArray[np.bool_], ...]:
    """The ``active`` argument of ``robot``'s solve programs for ``n`` problems: none for a
    robot whose programs take none (`takes_mask`), else ``mask`` (None: all active)."""
    if not takes_mask(robot):
        return ()
    return (np.ones((robot.n_ee, n), np.bool_) if mask is None else mask,)


def in_buckets(
    fn: Any,
    batched: tuple[npt.NDArray[Any], ...],
    fixed: tuple[Any, ...],
    sizes: tuple[int, ...],
    chunk: int,
    deadline: float | None,
) -> tuple[npt.NDArray[np.float32], ...]:
    """``fn(*batched, *fixed)`` on problems batched on the last axis, in chunks of at most
    ``chunk``, each padded to a bucket of ``sizes`` (with copies of its first problem, whose
    answers are dropped), so only those buckets ever compile; the deadline is checked before
    every call. One call without copies when the problems fill a bucket (a control loop)."""
    n = batched[0].shape[-1]
    if n <= chunk and bucket_for(n, sizes) == n:
        check_deadline(deadline, 0, n)
        return tuple(np.asarray(a) for a in fn(*batched, *fixed))
    outs: list[npt.NDArray[np.float32]] = []
    for start in range(0, n, chunk):
        check_deadline(deadline, start, n)
        stop = min(start + chunk, n)
        m = stop - start
        bucket = bucket_for(m, sizes)
        idx: Any = slice(start, stop)
        if m != bucket:
            idx = np.concatenate([np.arange(start, stop), np.full(bucket - m, start)])
        results = fn(*(np.ascontiguousarray(a[..., idx]) for a in batched), *fixed)
        if not outs:
            outs = [np.empty((*r.shape[:-1], n), np.float32) for r in results]
        for out, r in zip(outs, results, strict=True):
            out[..., start:stop] = np.asarray(r)[..., :m]
    return tuple(outs)
