"""The Levenberg–Marquardt kernel: tatbot's cost (`ik._cost`), solved per joint group on planes.

Each group's problem is solved with LM on the exact Jacobian of its residual (`ik._cost`).
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

from ._cost import GroupProblem, evaluate, target_planes
from ._joints import seed_points
from ._planes import barrier, cholesky_solve
from ._robot import Robot

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
