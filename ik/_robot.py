"""The kinematic model the IK engine solves for: end-effector chains from a URDF."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import SMALL, check_rest_shape
from zmq_ik.base.docs import documented
from zmq_ik.errors import InputError
from zmq_ik.robots.urdf import URDFModel, parse_urdf

from ._joints import check_rest
from ._kin import (
    MAX_CHAIN_JOINTS,
    Chain,
    build_chain,
    chain_fk,
    chain_joint_planes,
    chain_reach,
    mat_to_quat,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainInfo:
    """One end effector's chain and where its joints sit in the robot's joint vector."""

    ee_link: str
    chain: Chain
    joint_index: tuple[int, ...]
    """Per joint of the chain (root → tip), the index in ``Robot.joint_names`` of the joint
    that moves it: itself, or for a mimic joint the joint it follows."""


@dataclass(frozen=True)
class JointGroup:
    """End effectors whose chains share joints (a torso carrying two arms), and those joints:
    the IK engine solves each group as one problem. Chains that share no joint are groups of
    their own (tatbot: two groups of one arm each), and solving them apart is exactly the
    same as together, since every cost term belongs to one group."""

    ee_index: tuple[int, ...]
    """The group's end effectors, as indices into ``Robot.ee_links`` (ascending)."""
    joint_index: tuple[int, ...]
    """The group's joints, as indices into ``Robot.joint_names`` (ascending)."""


@documented
@dataclass(frozen=True, eq=False)
class Robot:
    """End-effector chains of a URDF robot, ready for FK and IK.

    Build with :meth:`from_urdf`. The joints are each chain's joints from root to tip,
    chain after chain, in ``ee_links`` order, each joint once: for tatbot left 7 then right 7;
    for a torso lift carrying two arms, the lift, the left arm's 7, the right arm's 7.

    Chains may share joints: end effectors whose chains share any are solved together, as
    one problem (`groups`). A mimic joint (``<mimic>``, e.g. a gripper's second finger) is
    not a joint of its own: it follows the joint it mimics, which is.
    """

    model: URDFModel
    """The parsed URDF (links and joints)."""
    ee_links: tuple[str, ...]
    """End-effector links, in the order of a solution's ``pos_err``/``ori_err`` columns."""
    chains: tuple[ChainInfo, ...]
    """One chain per end effector, in ``ee_links`` order."""
    groups: tuple[JointGroup, ...]
    """End effectors solved together (chains sharing joints), in order of their first."""
    joint_names: tuple[str, ...]
    """Actuated joints, in the order of ``rest`` and a solution's ``joints``."""
    lower: npt.NDArray[np.float32]
    """(n_joints,) lower limits (rad or m); continuous joints report -π."""
    upper: npt.NDArray[np.float32]
    """(n_joints,) upper limits (rad or m); continuous joints report +π."""
    limited: npt.NDArray[np.bool_]
    """(n_joints,) False for continuous joints (no limit cost, never clamped)."""
    prismatic: npt.NDArray[np.bool_]
    """(n_joints,) True for prismatic joints (metres), False for revolute ones (radians)."""
    rest: npt.NDArray[np.float32] | None = None
    """(n_joints,) the rest pose solves use when given none, or None: the middle of the
    joints' working ranges (see ``zmq_ik.ik.default_rest``)."""

    @classmethod
    def from_urdf(
        cls,
        path_or_xml: str | os.PathLike[str],
        ee_links: Sequence[str],
        rest: Any = None,
    ) -> Robot:
        """Parse a URDF (file path or XML text) and build the chains to ``ee_links``.
        ``rest``: the default rest pose, one value per joint in chain order (checked like a
        request's); None: mid-range."""
        if isinstance(ee_links, str):
            ee_links = (ee_links,)
        ee = tuple(str(e) for e in ee_links)
        if not ee:
            raise InputError("ee_links: need at least one end-effector link", field="ee_links")
        if len(set(ee)) != len(ee):
            raise InputError(f"ee_links: repeated link in {list(ee)}", field="ee_links")
        model = parse_urdf(path_or_xml)
        chains: list[ChainInfo] = []
        index: dict[str, int] = {}
        for link in ee:
            chain = build_chain(model, link)
            if not chain.joints:
                raise InputError(
                    f"ee_links: link {link!r} has no actuated joint between it and the root",
                    field="ee_links",
                )
            for driver in chain.drivers:
                index.setdefault(driver, len(index))
            chains.append(ChainInfo(link, chain, tuple(index[d] for d in chain.drivers)))
        groups = _joint_groups(chains)
        for group in groups:
            if len(group.joint_index) > MAX_CHAIN_JOINTS:
                raise InputError(
                    f"ee_links: the chains to {[ee[e] for e in group.ee_index]} share joints and "
                    f"together have {len(group.joint_index)}, more than the {MAX_CHAIN_JOINTS} "
                    "the IK engine solves as one problem",
                    field="ee_links",
                )
        names = list(index)
        joints = [model.joints[name] for name in names]
        robot = cls(
            model=model,
            ee_links=ee,
            chains=tuple(chains),
            groups=groups,
            joint_names=tuple(names),
            lower=np.array([j.lower for j in joints], np.float32),
            upper=np.array([j.upper for j in joints], np.float32),
            limited=np.array([j.limited for j in joints], np.bool_),
            prismatic=np.array([j.type == "prismatic" for j in joints], np.bool_),
        )
        for arr in (robot.lower, robot.upper, robot.limited, robot.prismatic):
            arr.setflags(write=False)
        if rest is not None:
            rest64 = check_rest_shape(rest, robot.n_joints, np.float64)
            check_rest(robot, rest64)
            rest32 = rest64.astype(np.float32)
            rest32.setflags(write=False)
            robot = dataclasses.replace(robot, rest=rest32)
        logger.debug(
            "robot %s: %d joints, chains to %s, solved in groups %s",
            model.name,
            len(names),
            ee,
            [g.ee_index for g in groups],
        )
        return robot

    @classmethod
    def bundled(cls, name: str = "tatbot", ee_links: Sequence[str] | None = None) -> Robot:
        """A bundled robot (``zmq_ik.robots``), built once per (name, ee_links) and shared,
        so its compiled programs are shared too. ``ee_links`` defaults to the robot's, and
        with them the default rest pose is the robot's (tatbot's ready pose), as for a worker
        serving it."""
        from zmq_ik.robots import BUNDLED, bundled_robot_path

        path = bundled_robot_path(name)
        defaults = BUNDLED[name]
        ee = tuple(ee_links) if ee_links is not None else tuple(defaults.ee_links)
        key = (name, ee)
        robot = _BUNDLED_CACHE.get(key)
        if robot is None:
            rest = defaults.rest if ee == tuple(defaults.ee_links) else None
            robot = cls.from_urdf(path, ee, rest)
            _BUNDLED_CACHE[key] = robot
        return robot

    def __repr__(self) -> str:
        rest = "mid-range"
        if self.rest is not None:
            rest = np.array2string(self.rest, precision=3, separator=",", max_line_width=10**4)
        return (
            f"Robot({self.model.name!r}, ee_links={self.ee_links}, n_joints={self.n_joints} "
            f"({int(self.prismatic.sum())} prismatic), rest={rest.replace(' ', '')})"
        )

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def n_ee(self) -> int:
        return len(self.ee_links)

    @functools.cached_property
    def reach(self) -> tuple[float, ...]:
        """Per end effector, an upper bound on its distance from the root link (metres, the
        chain's `chain_reach`): what `check_reach` judges targets against."""
        return tuple(chain_reach(info.chain) for info in self.chains)

    @functools.cached_property
    def _far_squared(self) -> tuple[float, ...]:
        return tuple((2.0 * r) ** 2 for r in self.reach)

    def check_reach(self, target_pos: npt.NDArray[Any]) -> None:
        """Refuse (N, n_ee, 3) targets of which one is further from the root link than twice
        its chain's reach: no configuration gets near it, so it is almost surely in the
        wrong unit (millimetres: a 0.64 m target typed as 640 m), and solving it would only
        return a silent miss. The whole request is refused, naming the first such pose."""
        far2 = self._far_squared
        if target_pos.size <= SMALL:  # a control loop's pose: ~3 µs in Python
            v = target_pos.ravel().tolist()
            n_ee = len(far2)
            if all(
                v[i] * v[i] + v[i + 1] * v[i + 1] + v[i + 2] * v[i + 2] <= far2[(i // 3) % n_ee]
                for i in range(0, len(v), 3)
            ):
                return
        d2 = np.einsum("...i,...i->...", target_pos, target_pos, dtype=np.float64)
        over = d2 > np.asarray(far2)
        if not over.any():
            return
        pose, ee = np.argwhere(over)[0].tolist()
        raise InputError(
            f"target_pos: pose {pose} puts {self.ee_links[ee]!r} "
            f"{math.sqrt(d2[pose, ee]):.4g} m from the root link {self.model.root!r}, more "
            f"than twice its chain's reach ({self.reach[ee]:.3g} m): positions are in metres "
            "(millimetres given?)",
            "target_pos",
        )

    def _check_joints(self, joints: Any) -> jax.Array:
        q = jnp.asarray(joints, jnp.float32)
        if q.ndim < 1 or q.shape[-1] != self.n_joints:
            raise InputError(
                f"joints must have shape (..., {self.n_joints}), got {tuple(q.shape)}",
                field="joints",
            )
        return q

    def fk(self, joints: Any) -> jaxlie.SE3:
        """``T_world_ee`` for joint vectors of shape (..., n_joints): an SE3 of shape
        (..., n_ee), end effectors in ``ee_links`` order."""
        q = self._check_joints(joints)
        fn = _FK.get(self)
        if fn is None:
            fn = _FK[self] = jax.jit(self._fk_planes)
        lead = q.shape[:-1]
        out = fn(q.reshape(-1, self.n_joints))
        return jaxlie.SE3(out.reshape(*lead, self.n_ee, 7))

    def _fk_planes(self, q: jax.Array) -> jax.Array:
        """(B, n_joints) → (B, n_ee, 7) wxyz_xyz, computed on planes."""
        qt = q.T
        poses = []
        for info in self.chains:
            q_chain = chain_joint_planes(info.chain, info.joint_index, qt)
            res = chain_fk(info.chain, q_chain, with_jacobian=False)
            poses.append(_pose_planes(res.R, res.p, qt.shape[1]))
        return jnp.stack(poses, axis=0).transpose(2, 0, 1)

    def link_pose(self, link: str, joints: Any) -> jaxlie.SE3:
        """``T_world_link`` of any link for joint vectors (..., n_joints). The link's chain may
        only move through this robot's joints (e.g. tatbot's ``lasercross``, fixed to the
        root, or an arm's ``link_3``)."""
        q = self._check_joints(joints)
        chain = build_chain(self.model, link)
        index = {n: i for i, n in enumerate(self.joint_names)}
        missing = [j.driver for j in chain.joints if j.driver not in index]
        if missing:
            raise InputError(
                f"link {link!r} moves with joint(s) {missing} that are not among this robot's "
                f"joints (chains to {list(self.ee_links)})",
                field="link",
            )
        lead = q.shape[:-1]
        flat = q.reshape(-1, self.n_joints).T
        q_chain = chain_joint_planes(chain, [index[d] for d in chain.drivers], flat)
        res = chain_fk(chain, q_chain, with_jacobian=False)
        out = _pose_planes(res.R, res.p, flat.shape[1])
        return jaxlie.SE3(out.T.reshape(*lead, 7))


def _joint_groups(chains: Sequence[ChainInfo]) -> tuple[JointGroup, ...]:
    """The end effectors whose chains share joints, directly or through others (a waist
    shared by two arms, a torso by the waist's chains), grouped: connected components."""
    groups: list[tuple[list[int], set[int]]] = []
    for e, info in enumerate(chains):
        ees, joints = [e], set(info.joint_index)
        apart = []
        for g_ees, g_joints in groups:
            if g_joints & joints:
                ees, joints = g_ees + ees, g_joints | joints
            else:
                apart.append((g_ees, g_joints))
        groups = [*apart, (ees, joints)]
    out = [JointGroup(tuple(sorted(e)), tuple(sorted(j))) for e, j in groups]
    return tuple(sorted(out, key=lambda g: g.ee_index[0]))


_BUNDLED_CACHE: dict[tuple[str, tuple[str, ...]], Robot] = {}
_FK: weakref.WeakKeyDictionary[Robot, Any] = weakref.WeakKeyDictionary()
"""Per robot, its jitted FK (compiled once per batch shape; the solver's programs are
``zmq_ik.ik.programs_of(robot)``'s)."""


def _pose_planes(R: Any, p: Any, batch: int) -> jax.Array:
    """(7, B) wxyz_xyz planes from matrix/position planes (constants broadcast)."""
    w, x, y, z = mat_to_quat(
        [[jnp.broadcast_to(jnp.float32(v), (batch,)) for v in row] for row in R]
    )
    planes = [w, x, y, z, *(jnp.broadcast_to(jnp.asarray(v, jnp.float32), (batch,)) for v in p)]
    return jnp.stack(planes, axis=0)
