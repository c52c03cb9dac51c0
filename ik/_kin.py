"""Chain kinematics on structure-of-arrays planes, with the robot's constants folded in.

Why this layout: a 7-joint chain's FK + Jacobian is a few hundred scalar flops per problem.
Written as one scalar program per problem, with the batch as the last (contiguous) axis of
every array and each matrix entry its own ``(B,)`` plane, XLA fuses the whole iteration into
a handful of elementwise loops that vectorise across problems. 4×4 matrix products batched
with vmap instead spend most of their time on tiny-matrix overheads.

Constants: every fixed joint, joint origin and joint axis is a Python ``float`` at trace
time. The helpers below (``add``, ``mul``...) simplify products with 0 and ±1, so e.g. a
rotation about the z axis costs two products per entry, and chains of fixed joints vanish
into a single constant transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zmq_ik.errors import InputError
from zmq_ik.robots.urdf import Joint, URDFModel, rpy_matrix

S = float | Any
"""A scalar plane: a Python float (trace-time constant) or a jax array of shape (B,)."""
Vec = list[S]
Mat = list[list[S]]


def _is_const(x: S) -> bool:
    return isinstance(x, float)


def add(a: S, b: S) -> S:
    if _is_const(a) and a == 0.0:
        return b
    if _is_const(b) and b == 0.0:
        return a
    return a + b


def sub(a: S, b: S) -> S:
    if _is_const(b) and b == 0.0:
        return a
    if _is_const(a) and a == 0.0:
        return neg(b)
    return a - b


def neg(a: S) -> S:
    return -a


def mul(a: S, b: S) -> S:
    for x, y in ((a, b), (b, a)):
        if _is_const(x):
            if x == 0.0:
                return 0.0
            if x == 1.0:
                return y
            if x == -1.0:
                return neg(y)
    return a * b


def total(terms: Sequence[S]) -> S:
    out: S = 0.0
    for t in terms:
        out = add(out, t)
    return out


def dot(a: Sequence[S], b: Sequence[S]) -> S:
    return total([mul(x, y) for x, y in zip(a, b, strict=True)])


def matmul(a: Mat, b: Mat) -> Mat:
    return [[dot(a[i], [b[k][j] for k in range(3)]) for j in range(3)] for i in range(3)]


def matvec(a: Mat, v: Sequence[S]) -> Vec:
    return [dot(a[i], v) for i in range(3)]


def cross(a: Sequence[S], b: Sequence[S]) -> Vec:
    return [
        sub(mul(a[1], b[2]), mul(a[2], b[1])),
        sub(mul(a[2], b[0]), mul(a[0], b[2])),
        sub(mul(a[0], b[1]), mul(a[1], b[0])),
    ]


def _snap(x: float) -> float:
    """Exact 0 and ±1 for values within rounding of them (cos(π/2) = 6e-17...)."""
    for v in (0.0, 1.0, -1.0):
        if abs(x - v) < 1e-12:
            return v
    return float(x)


def const_mat(m: Any) -> Mat:
    return [[_snap(float(m[i][j])) for j in range(3)] for i in range(3)]


def const_vec(v: Any) -> Vec:
    return [_snap(float(x)) for x in v]


def axis_rotation(axis: Sequence[float], c: S, s: S) -> Mat:
    """Rotation by angle θ (c = cos θ, s = sin θ) about a constant unit ``axis``.

    Axis-aligned axes give the elementary rotation exactly; others use Rodrigues."""
    for k in range(3):
        if abs(abs(axis[k]) - 1.0) < 1e-12:
            sign = 1.0 if axis[k] > 0 else -1.0
            i, j = (k + 1) % 3, (k + 2) % 3
            ss = mul(sign, s)
            m: Mat = [[0.0] * 3 for _ in range(3)]
            m[k][k] = 1.0
            m[i][i] = c
            m[j][j] = c
            m[i][j] = neg(ss)
            m[j][i] = ss
            return m
    x, y, z = axis
    t = 1.0 - c
    skew = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]
    return [
        [
            add(add(mul(c, 1.0 if i == j else 0.0), mul(s, skew[i][j])), mul(t, axis[i] * axis[j]))
            for j in range(3)
        ]
        for i in range(3)
    ]


IDENTITY: Mat = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


# --------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class ChainJoint:
    """An actuated joint of a chain, with the fixed transforms before it folded in."""

    name: str
    prismatic: bool
    R_prev_joint: tuple[tuple[float, ...], ...]
    """Rotation of this joint's frame in the previous actuated joint's (moved) frame."""
    p_prev_joint: tuple[float, ...]
    axis: tuple[float, float, float]
    lower: float
    upper: float
    limited: bool
    driver: str
    """The joint whose value moves this one: itself, or for a mimic joint the joint it
    follows, at ``multiplier · q[driver] + offset``."""
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Chain:
    """The kinematic chain from the URDF root to one link, fixed joints folded away."""

    link: str
    joints: tuple[ChainJoint, ...]
    R_last_link: tuple[tuple[float, ...], ...]
    """Rotation of the link in the last actuated joint's frame (or the root's, if none)."""
    p_last_link: tuple[float, ...]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def drivers(self) -> tuple[str, ...]:
        """The joints that move the chain's joints (`ChainJoint.driver`), one per joint."""
        return tuple(j.driver for j in self.joints)


def _as_tuple(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(_snap(float(x)) for x in row) for row in m)


MAX_CHAIN_JOINTS = 64
"""Most actuated joints on one chain: programs are unrolled per joint, so compile time grows
with it (a 7-joint arm's solve takes seconds to compile on a CPU); real arms have 5-8."""


def build_chain(model: URDFModel, link: str) -> Chain:
    """Fold the root→``link`` path into actuated joints with constant transforms between."""
    path = model.path_to(link)
    actuated = sum(j.type != "fixed" for j in path)
    if actuated > MAX_CHAIN_JOINTS:
        raise InputError(
            f"ee_links: the chain to link {link!r} has {actuated} actuated joints, more than "
            f"the {MAX_CHAIN_JOINTS} the IK engine compiles (its programs grow with each)",
            field="ee_links",
        )
    acc = np.eye(4)
    joints: list[ChainJoint] = []
    for joint in path:
        local = np.eye(4)
        local[:3, :3] = rpy_matrix(joint.rpy)
        local[:3, 3] = joint.xyz
        acc = acc @ local
        if joint.type == "fixed":
            continue
        _check_supported(joint, link)
        driver, multiplier, offset = joint, 1.0, 0.0
        if joint.mimic is not None:  # its range: the image of the followed joint's
            driver = model.joints[joint.mimic.joint]
            multiplier, offset = joint.mimic.multiplier, joint.mimic.offset
        ends = sorted((multiplier * driver.lower + offset, multiplier * driver.upper + offset))
        joints.append(
            ChainJoint(
                name=joint.name,
                prismatic=joint.type == "prismatic",
                R_prev_joint=_as_tuple(acc[:3, :3]),
                p_prev_joint=tuple(_snap(float(x)) for x in acc[:3, 3]),
                axis=joint.axis,
                lower=ends[0],
                upper=ends[1],
                limited=driver.limited,
                driver=driver.name,
                multiplier=multiplier,
                offset=offset,
            )
        )
        acc = np.eye(4)
    return Chain(
        link=link,
        joints=tuple(joints),
        R_last_link=_as_tuple(acc[:3, :3]),
        p_last_link=tuple(_snap(float(x)) for x in acc[:3, 3]),
    )


def chain_reach(chain: Chain) -> float:
    """An upper bound on how far ``chain.link`` can be from the root link (metres): the sum
    of the chain's link offsets (fixed transforms folded in) and of its prismatic joints'
    travel. No configuration puts the link further away (triangle inequality)."""
    offsets = [j.p_prev_joint for j in chain.joints] + [chain.p_last_link]
    reach = sum(float(np.linalg.norm(p)) for p in offsets)
    return reach + sum(max(abs(j.lower), abs(j.upper)) for j in chain.joints if j.prismatic)


def _check_supported(joint: Joint, link: str) -> None:
    if joint.type in ("floating", "planar"):
        raise InputError(
            f"joint {joint.name!r} (on the chain to link {link!r}) is {joint.type}, which the "
            "IK engine does not support (revolute, continuous, prismatic and fixed only); for "
            f"a floating base, remove the joint: its child link {joint.child!r} becomes the "
            "root, and targets are given in its frame",
            field="urdf",
        )


@dataclass
class ChainFK:
    """FK of a chain on planes: the link pose and, per joint, its world axis and origin."""

    R: Mat
    p: Vec
    axes: list[Vec]
    points: list[Vec]


jax.tree_util.register_pytree_node(
    ChainFK,
    lambda fk: ((fk.R, fk.p, fk.axes, fk.points), None),
    lambda _, children: ChainFK(*children),
)


def chain_fk(chain: Chain, q: Sequence[S], with_jacobian: bool = True) -> ChainFK:
    """World pose of ``chain.link`` for joint planes ``q`` (one per chain joint)."""
    R: Mat = [row[:] for row in IDENTITY]
    p: Vec = [0.0, 0.0, 0.0]
    axes: list[Vec] = []
    points: list[Vec] = []
    for joint, qj in zip(chain.joints, q, strict=True):
        p = [add(p[i], v) for i, v in enumerate(matvec(R, const_vec(joint.p_prev_joint)))]
        R = matmul(R, const_mat(joint.R_prev_joint))
        axis_world = matvec(R, const_vec(joint.axis))
        if with_jacobian:
            axes.append(axis_world)
            points.append(p)
        if joint.prismatic:
            p = [add(p[i], mul(axis_world[i], qj)) for i in range(3)]
        else:
            R = matmul(R, axis_rotation(joint.axis, jnp.cos(qj), jnp.sin(qj)))
    p = [add(p[i], v) for i, v in enumerate(matvec(R, const_vec(chain.p_last_link)))]
    R = matmul(R, const_mat(chain.R_last_link))
    return ChainFK(R=R, p=p, axes=axes, points=points)


def chain_joint_planes(chain: Chain, index: Sequence[int], q: Any) -> list[S]:
    """The values of ``chain``'s joints from the variables ``q``, ``index[k]`` being the
    variable that moves joint k (`ChainJoint.driver`): a mimic joint follows its variable."""
    return [
        add(mul(j.multiplier, q[i]), j.offset) for j, i in zip(chain.joints, index, strict=True)
    ]


def geometric_jacobian(chain: Chain, fk: ChainFK) -> tuple[list[Vec], list[Vec]]:
    """World-frame geometric Jacobian columns (linear, angular) of the link origin."""
    jv: list[Vec] = []
    jw: list[Vec] = []
    for joint, z, pj in zip(chain.joints, fk.axes, fk.points, strict=True):
        if joint.prismatic:
            jv.append(z)
            jw.append([0.0, 0.0, 0.0])
        else:
            jv.append(cross(z, [sub(fk.p[i], pj[i]) for i in range(3)]))
            jw.append(z)
    return jv, jw


# --------------------------------------------------------------------------- rotations


def quat_to_mat(w: S, x: S, y: S, z: S) -> Mat:
    """Unit quaternion planes → rotation matrix planes."""
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]


def mat_to_quat(m: Mat) -> tuple[Any, Any, Any, Any]:
    """Rotation matrix planes → unit quaternion planes (w, x, y, z), w ≥ 0 (Shepperd's method,
    all four branches computed and selected, so it vectorises)."""
    m00, m11, m22 = m[0][0], m[1][1], m[2][2]
    tr = m00 + m11 + m22
    cands = [
        (1.0 + tr, m[2][1] - m[1][2], m[0][2] - m[2][0], m[1][0] - m[0][1], 0),
        (m[2][1] - m[1][2], 1.0 + m00 - m11 - m22, m[0][1] + m[1][0], m[0][2] + m[2][0], 1),
        (m[0][2] - m[2][0], m[0][1] + m[1][0], 1.0 - m00 + m11 - m22, m[1][2] + m[2][1], 2),
        (m[1][0] - m[0][1], m[0][2] + m[2][0], m[1][2] + m[2][1], 1.0 - m00 - m11 + m22, 3),
    ]
    diag = [1.0 + tr, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22]
    best = jnp.argmax(jnp.stack(diag), axis=0)
    out = []
    for comp in range(4):
        v = cands[0][comp]
        for k in (1, 2, 3):
            v = jnp.where(best == k, cands[k][comp], v)
        out.append(v)
    big: Any = diag[0]
    for k in (1, 2, 3):
        big = jnp.where(best == k, diag[k], big)
    scale = 0.5 * jnp.reciprocal(jnp.sqrt(jnp.maximum(big, 1e-30)))
    w, x, y, z = (c * scale for c in out)
    sign = jnp.where(w < 0, -1.0, 1.0)
    return w * sign, x * sign, y * sign, z * sign


def rotation_log(m: Mat) -> tuple[Vec, Any]:
    """SO(3) log of rotation planes: (ω vector, angle θ = |ω| in [0, π])."""
    w, x, y, z = mat_to_quat(m)
    n2 = x * x + y * y + z * z
    n = jnp.sqrt(n2)
    theta = 2.0 * jnp.arctan2(n, w)
    # θ/n → 2/w (1 - n²/(3w²)) as n → 0 (w ≥ 0 here, and w ≈ 1 when n is small).
    safe_n = jnp.where(n < 1e-6, 1.0, n)
    scale = jnp.where(n < 1e-6, 2.0 / w * (1.0 - n2 / (3.0 * w * w)), theta / safe_n)
    return [x * scale, y * scale, z * scale], theta


def jl_inv_coefs(theta: Any) -> tuple[Any, Any]:
    """``c(θ)`` and ``c'(θ)/θ`` of the inverse left Jacobian of SO(3),
    ``Jl⁻¹(ω) = I - ½[ω]× + c(θ)[ω]×²`` with ``c = (1 - (θ/2)·cot(θ/2)) / θ²``.

    Below 0.5 rad the closed forms cancel badly in float32, so the Taylor series is used
    there (truncation error < 1e-8 relative)."""
    t2 = theta * theta
    small = theta < 0.5
    s = jnp.where(small, 1.0, theta)
    s2 = s * s
    cot = jnp.cos(0.5 * s) / jnp.sin(0.5 * s)
    h = 0.5 * s * cot  # (θ/2)·cot(θ/2)
    dh = 0.5 * cot - 0.25 * s * (1.0 + cot * cot)  # dh/dθ
    c_big = (1.0 - h) / s2
    e_big = -dh / (s2 * s) - 2.0 * (1.0 - h) / (s2 * s2)
    c_small = 1.0 / 12.0 + t2 * (1.0 / 720.0 + t2 * (1.0 / 30240.0 + t2 / 1209600.0))
    e_small = 1.0 / 360.0 + t2 * (1.0 / 7560.0 + t2 * (1.0 / 201600.0 + t2 / 5987520.0))
    return jnp.where(small, c_small, c_big), jnp.where(small, e_small, e_big)


def jl_inv_matrix(omega: Vec, theta: Any, c: Any) -> Mat:
    """``Jl⁻¹(ω) = I - ½[ω]× + c·(ωωᵀ - θ²I)`` as matrix planes (``c`` from
    :func:`jl_inv_coefs`). It is both ``V⁻¹`` of the SE(3) log and ``d log(exp(a)·R)/da``."""
    diag = 1.0 - c * theta * theta
    m: Mat = [[c * omega[i] * omega[j] for j in range(3)] for i in range(3)]
    for i in range(3):
        m[i][i] = m[i][i] + diag
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        m[i][j] = m[i][j] + 0.5 * omega[k]  # -½[ω]×: [ω]×[i][j] = -ω[k] for cyclic (i, j, k)
        m[j][i] = m[j][i] - 0.5 * omega[k]
    return m


def jl_inv_derivative(omega: Vec, c: Any, e: Any, t: Vec) -> Mat:
    """``∂(Jl⁻¹(ω)·t)/∂ω`` (3×3 planes): the SE(3) log's translation part moves with the
    rotation error too. ``c``, ``e = c'(θ)/θ`` from :func:`jl_inv_coefs`.

    ``Jl⁻¹(ω)t = t - ½ω×t + c·(ω(ω·t) - tθ²)``, so the derivative is
    ``½[t]× + c·((ω·t)I + ωtᵀ - 2tωᵀ) + e·(ω(ω·t) - tθ²)ωᵀ``."""
    wt = dot(omega, t)
    wwt = cross(omega, cross(omega, t))  # ω(ω·t) - tθ²
    m: Mat = [
        [c * (omega[i] * t[j] - 2.0 * t[i] * omega[j]) + e * wwt[i] * omega[j] for j in range(3)]
        for i in range(3)
    ]
    for i in range(3):
        m[i][i] = m[i][i] + c * wt
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        m[i][j] = m[i][j] - 0.5 * t[k]  # ½[t]×
        m[j][i] = m[j][i] + 0.5 * t[k]
    return m
