"""The Levenberg–Marquardt kernel: tatbot's cost, solved per end-effector chain on planes.

Cost (pyroki/tatbot's, so answers are comparable), per end effector and problem:

- pose: the SE(3) log of ``T_target⁻¹ · T_actual``; translation part × ``pos_weight``,
  rotation part × ``ori_weight``;
- soft joint limits: ``(max(0, q - upper) + max(0, lower - q)) × limit_weight``;
- rest: ``(q - rest) × rest_weight``.

Each joint group (`Robot.groups`: end effectors whose chains share joints) is its own
problem, since every cost term belongs to one group: tatbot's bimanual problem is exactly
two independent 7-joint problems, a torso lift carrying two arms one 15-joint problem with
both hands' pose terms. Each is solved with LM on the exact Jacobian of that residual: the geometric Jacobian (joint axes, ``z × (p_ee - p_joint)``)
mapped through the derivative of the SE(3) log (``Jl⁻¹`` and the rotation's effect on the
translation part). Taking that derivative as the identity is only right near the target: far
from it (rotation errors of a radian or more) the step points the wrong way and is rejected
until the damping freezes the problem short of the target.

Dense normal equations and an unrolled Cholesky, with per-problem damping (accept/reject per
problem) and a per-problem freeze once converged. Nothing in the loop reduces over the batch
except "is any problem still active", and frozen problems never change, so a target's answer
does not depend on its batch (to float32 rounding: 1e-5 rad between the vectorised buckets of
16 and more; bucket 1 compiles to scalar code, and its answers differ by up to ~2e-4 rad
along the redundant directions, with the same pose errors).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from zmq_ik.model import IKSettings

from ._joints import seed_points
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
from ._planes import barrier, cholesky_solve, dot3
from ._robot import ChainInfo, JointGroup, Robot

_REST_DECAY = 0.5
"""``precise=True``: the rest weight is multiplied by this every iteration (tie-break only)."""
_STEP_TOL = 1e-6
"""A problem freezes after an accepted step smaller than this (rad / m, max norm)..."""
_COST_RTOL = 1e-6
"""...or (``precise=False``) after a rejected step that changed its cost by less than this
fraction (float32 tells costs apart to ~1e-7: no step will gain anything measurable)..."""
_LAMBDA_MAX = 1e7
"""...or when its damping exceeds this (no step improves the cost any more)."""
REACH_POS_TOL = 1e-5
"""The reaching mode's goal: a target is reached once every end effector is within this many
metres (0.01 mm) ...
"""
REACH_ORI_TOL = 1e-4
"""... and this many radians of its target (misses are solved again: ``_reach``)."""
_MET_POS = REACH_POS_TOL / 10
_MET_ORI = REACH_ORI_TOL / 10
"""``precise``: a problem freezes once this close to its target (10x inside the goal)."""
_LAMBDA_MIN = 1e-7
_LAMBDA_DOWN = 1.0 / 3.0
_LAMBDA_UP = 4.0


def solver_params(settings: IKSettings) -> npt.NDArray[np.float32]:
    """The traced (non-static) parameters of a solve program: changing them never recompiles.
    ``precise`` and ``seeds`` are static: they pick the program."""
    return np.array(
        [
            settings.pos_weight,
            settings.ori_weight,
            settings.rest_weight,
            settings.limit_weight,
            settings.lambda_initial,
            settings.max_iterations,
        ],
        np.float32,
    )


N_PARAMS = len(solver_params(IKSettings()))
"""Length of :func:`solver_params`' vector."""


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


def _lm(
    probs: list[GroupProblem],
    q0: list[list[Any]],
    params: Any,
    precise: bool,
) -> list[dict[str, Any]]:
    """LM on every group at once (one loop); returns per group q, errors, final cost."""
    weights = {"pos": params[0], "ori": params[1], "rest": params[2], "limit": params[3]}
    damping0, max_iters = params[4], params[5].astype(jnp.int32)

    def rest_weight_at(k: Any) -> Any:
        if precise:
            return weights["rest"] * jnp.power(jnp.float32(_REST_DECAY), k.astype(jnp.float32))
        return weights["rest"]

    def init_chain(prob: GroupProblem, q: list[Any]) -> dict[str, Any]:
        if precise:
            q = [_clamp(prob, i, qi) for i, qi in enumerate(q)]
        at_q = evaluate(prob, q, weights, precise, damping0 > 0)
        batch = q[0].shape
        state = {
            "q": q,
            "damping": jnp.full(batch, damping0, jnp.float32),
            "active": jnp.ones(batch, jnp.bool_),
            **at_q,
        }
        if not precise:
            # The joint a rejected step took across a limit (-1: none), and that limit.
            state["crossed"] = (jnp.full(batch, -1, jnp.int32), jnp.zeros(batch, jnp.float32))
        return state

    def step_chain(prob: GroupProblem, state: dict[str, Any], k: Any) -> dict[str, Any]:
        rest_weight = rest_weight_at(k)
        rest_w2 = rest_weight * rest_weight
        n = prob.n
        damping = state["damping"]
        # The damped normal equations lhs · delta = -grad, with the rest term added.
        lhs = dict(state["H"])
        grad = [state["g"][i] + rest_w2 * (state["q"][i] - prob.rest[i]) for i in range(n)]
        if not precise:
            _model_limits(prob, state["q"], state["crossed"], grad, lhs, weights)
        for i in range(n):
            lhs[i, i] = lhs[i, i] + rest_w2 + damping * (1.0 + lhs[i, i])
        if precise:
            # Projected Newton: a joint on a limit whose descent direction points out of the
            # limits is held there (its row and column leave the system), so the clamped
            # step stays a descent step instead of being rejected over and over.
            free: list[Any] = []
            for i in range(n):
                if not prob.limited[i]:
                    free.append(None)
                    continue
                qi = state["q"][i]
                tol = 1e-6 * max(1.0, prob.upper[i] - prob.lower[i])
                held = ((qi >= prob.upper[i] - tol) & (grad[i] < 0)) | (
                    (qi <= prob.lower[i] + tol) & (grad[i] > 0)
                )
                free.append(jnp.where(held, 0.0, 1.0))
            for (i, j), a in list(lhs.items()):
                if i == j:
                    if free[i] is not None:
                        lhs[i, i] = free[i] * a + (1.0 - free[i])
                    continue
                for f in (free[i], free[j]):
                    if f is not None:
                        a = f * a
                lhs[i, j] = a
            grad = [gi if free[i] is None else free[i] * gi for i, gi in enumerate(grad)]
        delta = barrier(cholesky_solve(lhs, [-gi for gi in grad]), k >= 0)
        q_new = [state["q"][i] + delta[i] for i in range(n)]
        if precise:
            q_new = [_clamp(prob, i, qi) for i, qi in enumerate(q_new)]
        at_new = evaluate(prob, q_new, weights, precise, k >= 0)
        cost_old = state["task"] + rest_w2 * state["rest_sq"]
        cost_new = at_new["task"] + rest_w2 * at_new["rest_sq"]
        active = state["active"]
        accept = active & (cost_new < cost_old) & jnp.isfinite(cost_new)
        step = jnp.max(jnp.stack([jnp.abs(q_new[i] - state["q"][i]) for i in range(n)]), axis=0)
        damping_new = jnp.where(
            accept,
            jnp.maximum(damping * _LAMBDA_DOWN, _LAMBDA_MIN),
            jnp.where(active, damping * _LAMBDA_UP, damping),
        )
        converged = (accept & (step < _STEP_TOL)) | (damping_new > _LAMBDA_MAX)
        if not precise:
            # A rejected step that changed the cost by less than float32 resolves: stop now
            # rather than after raising the damping past _LAMBDA_MAX by a dozen more
            # rejections (each a whole iteration of the batch).
            converged = converged | (~accept & (cost_new - cost_old <= _COST_RTOL * cost_old))
        out: dict[str, Any] = {
            "q": [jnp.where(accept, q_new[i], state["q"][i]) for i in range(n)],
            "damping": damping_new,
        }
        for key in ("task", "rest_sq", "pos_err", "ori_err", "H", "g"):
            out[key] = jax.tree_util.tree_map(
                lambda new, old: jnp.where(accept, new, old), at_new[key], state[key]
            )
        if not precise:
            out["crossed"] = _crossed_limits(prob, state["q"], q_new, ~accept)
        if precise:
            # Met with room to spare: stop here. Further steps would only follow the fading
            # rest pull (a tie-break) while the batch waits for this problem.
            met = active
            for pos_err, ori_err in zip(out["pos_err"], out["ori_err"], strict=True):
                met = met & (pos_err <= _MET_POS) & (ori_err <= _MET_ORI)
            converged = converged | met
        out["active"] = active & ~converged
        return out

    state0 = (jnp.int32(0), [init_chain(p, q) for p, q in zip(probs, q0, strict=True)])

    def cond(state: Any) -> Any:
        k, chains = state
        any_active = jnp.any(jnp.stack([jnp.any(c["active"]) for c in chains]))
        return (k < max_iters) & any_active

    def body(state: Any) -> Any:
        k, chains = state
        return k + 1, [step_chain(p, c, k) for p, c in zip(probs, chains, strict=True)]

    k_final, chains = jax.lax.while_loop(cond, body, state0)
    rest_weight_final = rest_weight_at(k_final)
    results = []
    for c in chains:
        results.append(
            {
                "q": c["q"],
                "pos_err": c["pos_err"],
                "ori_err": c["ori_err"],
                "cost": c["task"] + rest_weight_final * rest_weight_final * c["rest_sq"],
                "task": c["task"],
            }
        )
    return results


def _model_limits(
    prob: GroupProblem,
    q: list[Any],
    crossed: tuple[Any, Any],
    grad: list[Any],
    lhs: dict[tuple[int, int], Any],
    weights: dict[str, Any],
) -> None:
    """Soft limits: after a rejected step that took a joint across a limit
    (`_crossed_limits`), model that limit's penalty, ``limit_w2 · (q + δ - limit)²``
    (`evaluate` models the penalty only once a joint is past a limit).

    Without it, the next, more damped, step still ignores the limit: it overshoots again, or
    moves the joint part of the way there. On targets whose optimum sits on a limit
    (tatbot's needle carriage, pulled to one end of its travel by the rest pose and to the
    other by the pose) LM crept towards the limit, every other step rejected, and 32
    iterations fell short of the optimum (orientation p99 0.0173 rad on stroke-like targets
    where the optimum's is 0.0165; tatbot's solver reaches 0.0168). With it the step after
    a rejected crossing lands where the penalty lets the joint go."""
    limit_w2 = weights["limit"] * weights["limit"]
    joint, limit = crossed
    for i in range(prob.n):
        if prob.limited[i]:
            anchored = joint == i
            lhs[i, i] = lhs[i, i] + jnp.where(anchored, limit_w2, 0.0)
            grad[i] = grad[i] + jnp.where(anchored, limit_w2 * (q[i] - limit), 0.0)


def _crossed_limits(
    prob: GroupProblem, q: list[Any], q_new: list[Any], rejected: Any
) -> tuple[Any, Any]:
    """The joint a rejected step took across a limit from inside (the last one, if several;
    -1: none; it is still inside, since the step was rejected), and that limit."""
    joint = jnp.full(rejected.shape, -1, jnp.int32)
    limit = jnp.zeros(rejected.shape, jnp.float32)
    for i in range(prob.n):
        if not prob.limited[i]:
            continue
        lower, upper = prob.lower[i], prob.upper[i]
        up = q_new[i] > upper
        hit = rejected & (q[i] >= lower) & (q[i] <= upper) & (up | (q_new[i] < lower))
        joint = jnp.where(hit, i, joint)
        limit = jnp.where(hit, jnp.where(up, upper, lower), limit)
    return joint, limit


def _clamp(prob: GroupProblem, i: int, q: Any) -> Any:
    if not prob.limited[i]:
        return q
    return jnp.clip(q, prob.lower[i], prob.upper[i])


def target_planes(wxyz: Any, pos: Any) -> tuple[Any, Any]:
    """(4, B), (3, B) → rotation-matrix planes and position planes."""
    R = quat_to_mat(wxyz[0], wxyz[1], wxyz[2], wxyz[3])
    return R, [pos[0], pos[1], pos[2]]


def takes_mask(robot: Robot) -> bool:
    """Whether ``robot``'s solve programs take an ``active`` mask (n_ee, B): when a group
    has several end effectors (a torso carrying two arms), a hand without a target must
    weigh nothing in its group's problem. Groups of one end effector (tatbot's arms) need
    no mask in the program: a group with no target keeps its start, on the host
    (`ik._solve.hold_idle`), so their programs stay what they were."""
    return any(len(group.ee_index) > 1 for group in robot.groups)


def solve_planes(
    robot: Robot,
    precise: bool,
    seeds: int,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    params: Any,
    q_init: Any | None = None,
    active: Any | None = None,
) -> tuple[Any, Any, Any]:
    """The whole solve on planes (traced): targets (n_ee, 4|3, B), rest (n,), ``params`` from
    :func:`solver_params`, optional starting points ``q_init`` (n, B) instead of ``rest``,
    optional ``active`` (n_ee, B) bool: which end effectors have a target (see `ChainTerm`;
    a joint only inactive ones move keeps its start, every seed of it).

    Returns joints (n, B), pos_err (n_ee, B), ori_err (n_ee, B) (zero where inactive)."""
    batch = target_wxyz.shape[-1]
    extra = seed_points(robot, seeds)  # (seeds-1, n)
    probs = []
    q0s = []
    for group in robot.groups:
        targets = []
        actives: list[Any] | None = None if active is None else []
        for e in group.ee_index:
            ee_wxyz, ee_pos = target_wxyz[e], target_pos[e]
            ee_active = None if active is None else active[e]
            if seeds > 1:
                ee_wxyz, ee_pos = jnp.tile(ee_wxyz, (1, seeds)), jnp.tile(ee_pos, (1, seeds))
                ee_active = None if active is None else jnp.tile(active[e], seeds)
            targets.append(target_planes(ee_wxyz, ee_pos))
            if actives is not None:
                actives.append(ee_active)
        prob = GroupProblem(group, robot, targets, rest, actives)
        probs.append(prob)
        q0 = []
        for i in prob.joints:
            base = (
                q_init[i]
                if q_init is not None
                else jnp.broadcast_to(rest[i], (batch,)).astype(jnp.float32)
            )
            if seeds > 1:
                seeded = jnp.repeat(jnp.asarray(extra[:, i]), batch)
                if active is not None:
                    moved = jnp.zeros((batch,), jnp.bool_)
                    for e in group.ee_index:
                        if i in robot.chains[e].joint_index:
                            moved = moved | active[e]
                    seeded = jnp.where(
                        jnp.tile(moved, seeds - 1), seeded, jnp.tile(base, seeds - 1)
                    )
                base = jnp.concatenate([base, seeded], axis=0)
            q0.append(base)
        q0s.append(q0)
    results = _lm(probs, q0s, params, precise)
    joints: list[Any] = [None] * robot.n_joints
    pos_err: list[Any] = [None] * robot.n_ee
    ori_err: list[Any] = [None] * robot.n_ee
    for group, prob, res in zip(robot.groups, probs, results, strict=True):
        pes, oes, qs = res["pos_err"], res["ori_err"], res["q"]
        if seeds > 1:
            best = jnp.argmin(res["cost"].reshape(seeds, batch), axis=0)[None]

            def pick(x: Any, best: Any = best) -> Any:
                return jnp.take_along_axis(x.reshape(seeds, batch), best, axis=0)[0]

            pes, oes, qs = [pick(x) for x in pes], [pick(x) for x in oes], [pick(x) for x in qs]
        for i, qi in zip(prob.joints, qs, strict=True):
            joints[i] = qi
        for e, pe, oe in zip(group.ee_index, pes, oes, strict=True):
            pos_err[e], ori_err[e] = pe, oe
    return jnp.stack(joints), jnp.stack(pos_err), jnp.stack(ori_err)
