"""The cost the LM kernel (`ik._lm`) minimises, per joint group, on planes: each end
effector's pose term with its exact Jacobian, the soft joint limits and the rest term, summed
into Gauss–Newton normal equations (`evaluate`).

Cost (pyroki/tatbot's, so answers are comparable), per end effector and problem:

- pose: the SE(3) log of ``T_target⁻¹ · T_actual``; translation part × ``pos_weight``,
  rotation part × ``ori_weight``;
- soft joint limits: ``(max(0, q - upper) + max(0, lower - q)) × limit_weight``;
- rest: ``(q - rest) × rest_weight``.

Each joint group (`Robot.groups`: end effectors whose chains share joints) is its own
problem (`GroupProblem`), since every cost term belongs to one group: tatbot's bimanual
problem is exactly two independent 7-joint problems, a torso lift carrying two arms one
15-joint problem with both hands' pose terms. The Jacobian is exact: the geometric Jacobian
(joint axes, ``z × (p_ee - p_joint)``) mapped through the derivative of the SE(3) log
(``Jl⁻¹`` and the rotation's effect on the translation part). Taking that derivative as the
identity is only right near the target: far from it (rotation errors of a radian or more)
the step points the wrong way and is rejected until the damping freezes the problem short of
the target.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._kin import (
    ChainFK,
    add,
    chain_fk,
    chain_joint_planes,
    geometric_jacobian,
    jl_inv_coefs,
    jl_inv_derivative,
    jl_inv_matrix,
    matmul,
    matvec,
    mul,
    quat_to_mat,
    rotation_log,
)
from ._planes import barrier, dot3
from ._robot import ChainInfo, JointGroup, Robot


class ChainTerm:
    """Trace-time description of one end effector's pose term in a group's problem."""

    def __init__(
        self,
        info: ChainInfo,
        local: dict[int, int],
        R_target: Any,
        p_target: Any,
        active: Any | None = None,
    ):
        self.chain = info.chain
        self.index = [local[i] for i in info.joint_index]
        """Per chain joint, the group variable that moves it."""
        self.R_target = R_target
        self.p_target = p_target
        self.active = active
        """Per problem, whether this end effector has a target (a bool plane; None: always).
        Without one its term weighs nothing: zero residual, zero Jacobian, zero errors."""


class GroupProblem:
    """Trace-time description of one joint group's problem (`JointGroup`): its end
    effectors' targets ((R, p) planes, one per end effector) and its joints' constants."""

    def __init__(
        self,
        group: JointGroup,
        robot: Robot,
        targets: list[tuple[Any, Any]],
        rest: Any,
        active: list[Any] | None = None,
    ) -> None:
        chains = [robot.chains[e] for e in group.ee_index]
        shared = {j for j in group.joint_index if sum(j in c.joint_index for c in chains) > 1}
        self.joints = sorted(group.joint_index, key=lambda j: (j in shared, j))
        """The group's joints (indices into ``Robot.joint_names``) in the order of this
        problem's variables: joints shared by several chains last, so the elimination in
        `cholesky_solve` keeps the arms' blocks apart (no fill-in between two arms)."""
        local = {j: k for k, j in enumerate(self.joints)}
        actives = active if active is not None else [None] * len(chains)
        self.terms = [
            ChainTerm(info, local, R, p, on)
            for info, (R, p), on in zip(chains, targets, actives, strict=True)
        ]
        self.n = len(self.joints)
        self.rest = [rest[i] for i in self.joints]
        self.lower = [float(robot.lower[i]) for i in self.joints]
        self.upper = [float(robot.upper[i]) for i in self.joints]
        self.limited = [bool(robot.limited[i]) for i in self.joints]


def _pose_term(
    term: ChainTerm, q: list[Any], pred: Any
) -> tuple[dict[int, list[Any]], dict[int, list[Any]], list[Any], list[Any], Any, Any]:
    """One end effector's pose residual at the group's variables ``q``: per variable its
    Jacobian columns (translation part, rotation part of the log), the residual (v, ω), the
    rotation error θ and the position error (m)."""
    fk: ChainFK = barrier(chain_fk(term.chain, chain_joint_planes(term.chain, term.index, q)), pred)
    jv, jw = geometric_jacobian(term.chain, fk)
    pos_diff = [fk.p[i] - term.p_target[i] for i in range(3)]
    # Pose residual log(T_t⁻¹·T) = (v, ω) in the target frame.
    R_target_T = [[term.R_target[k][i] for k in range(3)] for i in range(3)]
    omega, theta = rotation_log(matmul(R_target_T, fk.R))
    t_err = matvec(R_target_T, pos_diff)
    coef_c, coef_e = jl_inv_coefs(theta)
    jl_inv = jl_inv_matrix(omega, theta, coef_c)
    v = matvec(jl_inv, t_err)
    # Its exact Jacobian: joint k moves the error by a = R_tᵀ·jw_k (rotation, on the left)
    # and b = R_tᵀ·jv_k (translation), so dω = Jl⁻¹·a and dv = Jl⁻¹·b + ∂v/∂ω·dω. Far from
    # the target (large rotation errors) the identity in its place points the wrong way.
    world_to_log = matmul(jl_inv, R_target_T)
    rot_to_trans = matmul(jl_inv_derivative(omega, coef_c, coef_e, t_err), world_to_log)
    if term.active is not None:
        # No target: every piece of the term is zero (a `where`, not a product: a placeholder
        # target may be anything), so the Jacobian columns below are zero too.
        world_to_log, rot_to_trans, omega, theta, v = _where_active(
            term.active, (world_to_log, rot_to_trans, omega, theta, v)
        )
    world_to_log, rot_to_trans, omega, theta, v = barrier(
        (world_to_log, rot_to_trans, omega, theta, v), pred
    )
    n = len(term.index)
    dv_dq = [
        [
            a + b
            for a, b in zip(matvec(world_to_log, jv[k]), matvec(rot_to_trans, jw[k]), strict=True)
        ]
        for k in range(n)
    ]
    dw_dq = [matvec(world_to_log, jw[k]) for k in range(n)]
    dv_dq, dw_dq, v = barrier((dv_dq, dw_dq, v), pred)
    # Columns per variable: a mimic joint's column, times its multiplier, adds to the column
    # of the joint it follows.
    cols_v: dict[int, list[Any]] = {}
    cols_w: dict[int, list[Any]] = {}
    for k, var in enumerate(term.index):
        scale = term.chain.joints[k].multiplier
        dv = [mul(scale, x) for x in dv_dq[k]]
        dw = [mul(scale, x) for x in dw_dq[k]]
        if var in cols_v:
            dv = [add(a, b) for a, b in zip(cols_v[var], dv, strict=True)]
            dw = [add(a, b) for a, b in zip(cols_w[var], dw, strict=True)]
        cols_v[var], cols_w[var] = dv, dw
    pos_err = jnp.sqrt(sum(x * x for x in pos_diff))
    if term.active is not None:
        pos_err = jnp.where(term.active, pos_err, 0.0)
    return cols_v, cols_w, v, omega, theta, pos_err


def _where_active(active: Any, tree: Any) -> Any:
    """Every plane of ``tree`` where ``active``, else zero."""
    return jax.tree_util.tree_map(lambda x: jnp.where(active, x, 0.0), tree)


def _accumulate(into: dict[Any, Any], key: Any, value: Any) -> None:
    into[key] = value if key not in into else into[key] + value


def evaluate(
    prob: GroupProblem, q: list[Any], weights: dict[str, Any], precise: bool, pred: Any
) -> dict[str, Any]:
    """Residual pieces, normal equations (without the rest term) and errors at ``q``.

    Returns ``task`` (pose + limit cost), ``rest_sq`` (|q - rest|²), ``H`` (Gauss–Newton
    matrix, lower triangle; pairs of joints no end effector moves together are absent),
    ``g`` (gradient / 2), ``pos_err`` (m) and ``ori_err`` (rad), one per end effector."""
    pos_w2, ori_w2 = weights["pos"] * weights["pos"], weights["ori"] * weights["ori"]
    H: dict[tuple[int, int], Any] = {}
    grad: dict[int, Any] = {}
    pose_cost: Any = 0.0
    pos_errs, ori_errs = [], []
    for term in prob.terms:
        cols_v, cols_w, v, omega, theta, pos_err = _pose_term(term, q, pred)
        variables = list(cols_v)
        for i in variables:
            for j in variables:
                if j <= i:
                    _accumulate(
                        H,
                        (i, j),
                        pos_w2 * dot3(cols_v[i], cols_v[j]) + ori_w2 * dot3(cols_w[i], cols_w[j]),
                    )
            _accumulate(grad, i, pos_w2 * dot3(cols_v[i], v) + ori_w2 * dot3(cols_w[i], omega))
        pose_cost = add(pose_cost, pos_w2 * sum(x * x for x in v) + ori_w2 * (theta * theta))
        pos_errs.append(pos_err)
        ori_errs.append(theta)
    n = prob.n
    g = [grad[i] for i in range(n)]
    limit_cost: Any = 0.0
    if not precise:
        limit_w2 = weights["limit"] * weights["limit"]
        for i in range(n):
            if not prob.limited[i]:
                continue
            over = jnp.maximum(q[i] - prob.upper[i], 0.0)
            under = jnp.maximum(prob.lower[i] - q[i], 0.0)
            viol = over - under  # residual r = over + under, dr/dq = sign
            limit_cost = limit_cost + viol * viol
            outside = jnp.where((over > 0) | (under > 0), limit_w2, 0.0)
            H[i, i] = H[i, i] + outside
            g[i] = g[i] + limit_w2 * viol
        limit_cost = limit_w2 * limit_cost
    rest_sq = sum((q[i] - prob.rest[i]) ** 2 for i in range(n))
    return barrier(
        {
            "task": pose_cost + limit_cost,
            "rest_sq": rest_sq,
            "H": H,
            "g": g,
            "pos_err": pos_errs,
            "ori_err": ori_errs,
        },
        pred,
    )


def target_planes(wxyz: Any, pos: Any) -> tuple[Any, Any]:
    """(4, B), (3, B) → rotation-matrix planes and position planes."""
    R = quat_to_mat(wxyz[0], wxyz[1], wxyz[2], wxyz[3])
    return R, [pos[0], pos[1], pos[2]]
