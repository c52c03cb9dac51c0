"""Forward kinematics as a served operation: `Robot.fk` on batches padded to a fixed set of
shapes, so that FK requests of any size compile nothing once `warmup_fk` has run."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from zmq_ik.base.checks import check_joints
from zmq_ik.errors import InputError
from zmq_ik.model import EEPoses

from ._programs import bucket_for, check_buckets
from ._robot import Robot
from ._solve import check_deadline

logger = logging.getLogger(__name__)


def fk_buckets(buckets: Sequence[int] | None = None) -> tuple[int, int]:
    """The batch sizes FK is compiled for out of ``buckets`` (None: all ``BUCKETS``): the
    smallest and the largest. FK is cheap to run (tatbot, 1,024 vectors: 2-6 ms on the
    2-CPU VM) but each shape costs ~1-2.5 s of compiling there (both: 2.4 s of CPU from an
    empty cache), so a batch is padded to the largest (or cut in chunks of it) rather than
    to the nearest bucket; one vector, a control loop's, keeps its own shape."""
    sizes = check_buckets(buckets)
    return sizes[0], sizes[-1]


def fk_poses(
    robot: Robot,
    joints: Any,
    *,
    buckets: Sequence[int] | None = None,
    deadline: float | None = None,
    checked: bool = False,
) -> EEPoses:
    """Each end effector's pose for joint vectors (N, n_joints) (or one, (n_joints,)):
    `Robot.fk` in batches padded to `fk_buckets` of ``buckets``. ``checked``: ``joints``
    come from `zmq_ik.base.checks.check_joints` already (a worker's `ops.read_fk_request`);
    their count per vector is checked here against the robot's."""
    q = joints if checked else check_joints(joints, one_pose=True)
    if q.shape[1] != robot.n_joints:
        raise InputError(
            f"joints: robot has {robot.n_joints} joints ({', '.join(robot.ee_links)}), "
            f"got vectors of {q.shape[1]}",
            "joints",
        )
    n = q.shape[0]
    small, large = fk_buckets(buckets)
    wxyz = np.empty((n, robot.n_ee, 4), np.float32)
    pos = np.empty((n, robot.n_ee, 3), np.float32)
    for start in range(0, n, large):
        check_deadline(deadline, start, n)
        stop = min(start + large, n)
        m = stop - start
        size = bucket_for(m, (small, large))
        chunk = q[start:stop]
        if m != size:  # pad with copies of the first vector (results discarded)
            chunk = np.concatenate([chunk, np.broadcast_to(chunk[:1], (size - m, q.shape[1]))])
        out = np.asarray(robot.fk(chunk).wxyz_xyz)
        wxyz[start:stop] = out[:m, :, :4]
        pos[start:stop] = out[:m, :, 4:]
    return EEPoses(ee_links=robot.ee_links, wxyz=wxyz, pos=pos)


def warmup_fk(robot: Robot, buckets: Sequence[int] | None = None) -> None:
    """Compile `fk_poses`' programs for ``robot`` (both `fk_buckets` shapes) by running them
    once on the rest pose."""
    t0 = time.monotonic()
    rest = np.asarray(robot.rest if robot.rest is not None else robot.lower, np.float32)
    for size in sorted(set(fk_buckets(buckets))):
        fk_poses(robot, np.broadcast_to(rest, (size, robot.n_joints)), buckets=buckets)
    logger.debug("FK of %s compiled in %.2fs", ", ".join(robot.ee_links), time.monotonic() - t0)
