"""Batched Levenberg–Marquardt IK: tatbot's cost, solved per end-effector chain on planes.

Cost (pyroki/tatbot's, so answers are comparable), per end effector and problem:

- pose: the SE(3) log of ``T_target⁻¹ · T_actual``; translation part × ``pos_weight``,
  rotation part × ``ori_weight``;
- soft joint limits: ``(max(0, q - upper) + max(0, lower - q)) × limit_weight``;
- rest: ``(q - rest) × rest_weight``.

The chains of a robot are disjoint, and every cost term belongs to one chain, so the
bimanual problem is exactly two independent 7-joint problems. Each is solved with LM on the
exact Jacobian of that residual: the geometric Jacobian (joint axes, ``z × (p_ee - p_joint)``)
mapped through the derivative of the SE(3) log (``Jl⁻¹`` and the rotation's effect on the
translation part). Taking that derivative as the identity is only right near the target:
far from it (rotation errors of a radian or more) the step points the wrong way, is
rejected until the damping freezes the problem, and answers to arbitrary reachable targets
stopped ~0.1 m away. Dense normal equations and an unrolled Cholesky, with per-problem
damping (accept/reject per problem) and a per-problem freeze once converged. Nothing in the loop reduces over the batch except "is any problem still active",
and frozen problems never change, so a target's answer does not depend on its batch (to
float32 rounding: 1e-5 rad between the vectorised buckets of 16 and more; bucket 1 compiles
to scalar code, and its answers differ by up to ~2e-4 rad along the redundant directions,
with the same pose errors).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from zmq_ik._checks import check_coordinates
from zmq_ik.errors import IKTimeout, InputError
from zmq_ik.model import MAX_IK_LAMBDA, MAX_IK_WEIGHT, IKSolution

from ._kin import (
    ChainFK,
    chain_fk,
    geometric_jacobian,
    jl_inv_coefs,
    jl_inv_derivative,
    jl_inv_matrix,
    matmul,
    matvec,
    quat_to_mat,
    rotation_log,
)
from ._robot import Robot

logger = logging.getLogger(__name__)

BUCKETS: tuple[int, ...] = (1, *(2**k for k in range(4, 15)))
"""Batch sizes programs are compiled for (1, then 16 … 16,384). Smaller batches are padded up
to the next bucket; larger ones are solved in chunks of the largest. Bucket 1 is for control
loops: one pose solves in about half the time of a padded batch of 16 on a CPU."""

PRECISE_MIN_ITERATIONS = 128
"""``precise=True`` runs at least this many iterations (problems freeze when converged)."""
_REST_DECAY = 0.5
"""``precise=True``: the rest weight is multiplied by this every iteration (tie-break only)."""
_STEP_TOL = 1e-6
"""A problem freezes after an accepted step smaller than this (rad / m, max norm)..."""
_LAMBDA_MAX = 1e7
"""...or when its damping exceeds this (no step improves the cost any more)."""
_LAMBDA_MIN = 1e-7
_LAMBDA_DOWN = 1.0 / 3.0
_LAMBDA_UP = 4.0
_RESTARTS = 8
"""``precise`` with ``seeds > 1``: restarts per seed slot after stalling away from the target."""
_PRECISE_POS_TOL = 1e-5
_PRECISE_ORI_TOL = 1e-4


@dataclass(frozen=True)
class IKConfig:
    """IK settings. Defaults are tatbot's (pyroki) so answers are comparable to its solver."""

    pos_weight: float = 32.0
    """Weight of the translation part of the pose residual (per metre)."""
    ori_weight: float = 1.0
    """Weight of the rotation part of the pose residual (per radian)."""
    rest_weight: float = 0.1
    """Weight of ``q - rest``: pulls the redundant degree of freedom (and everything else, a
    little) toward the rest pose. With ``precise`` it only breaks ties (decays to 0)."""
    limit_weight: float = 32.0
    """Weight of the soft joint-limit residual (ignored with ``precise``: limits are hard)."""
    lambda_initial: float = 1.0
    """Initial Levenberg–Marquardt damping (then adapted per problem)."""
    max_iterations: int = 32
    """LM iterations (each problem stops earlier once converged)."""
    precise: bool = False
    """Meet reachable targets exactly: rest term decays to 0 over the iterations (it only
    breaks ties), joint limits are hard (each step is clamped), at least
    ``PRECISE_MIN_ITERATIONS`` iterations."""
    seeds: int = 1
    """Starting points per target: the rest pose plus ``seeds - 1`` deterministic Halton
    points inside the joint limits; the best answer per target is kept."""
    continuous: bool = False
    """Strokebatch only: each pose of a stroke starts from the previous pose's answer (the
    first from the rest pose), for smoother joint paths."""

    def __post_init__(self) -> None:
        for name in ("pos_weight", "ori_weight", "rest_weight", "limit_weight", "lambda_initial"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}", field=name)
            if value > MAX_IK_WEIGHT and name != "lambda_initial":
                raise InputError(f"{name} must be <= {MAX_IK_WEIGHT:g}, got {value!r}", field=name)
        if not 0 < self.lambda_initial <= MAX_IK_LAMBDA:
            raise InputError(
                f"lambda_initial must be in (0, {MAX_IK_LAMBDA:g}]", field="lambda_initial"
            )
        if not isinstance(self.max_iterations, int) or not 1 <= self.max_iterations <= 10_000:
            raise InputError("max_iterations must be an int in 1..10000", field="max_iterations")
        if not isinstance(self.seeds, int) or not 1 <= self.seeds <= 256:
            raise InputError("seeds must be an int in 1..256", field="seeds")

    @classmethod
    def from_settings(cls, settings: Any) -> IKConfig:
        """From any object with these attribute names (e.g. ``zmq_ik.model.IKSettings``);
        missing attributes keep their defaults."""
        kwargs = {
            f.name: getattr(settings, f.name)
            for f in dataclasses.fields(cls)
            if hasattr(settings, f.name)
        }
        for name in ("max_iterations", "seeds"):
            if name in kwargs:
                kwargs[name] = int(kwargs[name])
        for name in ("precise", "continuous"):
            if name in kwargs:
                kwargs[name] = bool(kwargs[name])
        return cls(**kwargs)

    @property
    def iterations(self) -> int:
        """Iterations actually allowed (``precise`` raises the floor)."""
        if self.precise:
            return max(self.max_iterations, PRECISE_MIN_ITERATIONS)
        return self.max_iterations

    def params(self) -> npt.NDArray[np.float32]:
        """The traced (non-static) parameters: changing them never recompiles."""
        return np.array(
            [
                self.pos_weight,
                self.ori_weight,
                self.rest_weight,
                self.limit_weight,
                self.lambda_initial,
                self.iterations,
            ],
            np.float32,
        )


def enable_compilation_cache(path: str | os.PathLike[str]) -> None:
    """Use JAX's persistent compilation cache in ``path`` for every program (so a restarted
    worker or test run loads compiled programs instead of compiling them)."""
    p = Path(path).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_inline_on_cpu() -> None:
    """Run CPU programs on the calling thread instead of handing them to JAX's dispatch
    thread. A worker waits for every result at once, so asynchronous dispatch only adds a
    thread hand-off per call: measured in-process on the 2-CPU VM, single-pose solves took
    0.66–0.91× the time without it (median 0.80×, 5 interleaved runs). No effect on GPUs."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


# --------------------------------------------------------------------------- the kernel


def _halton(n: int, dim: int) -> npt.NDArray[np.float64]:
    """First ``n`` points (skipping 0) of the Halton sequence in [0, 1)^dim."""
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71]
    out = np.zeros((n, dim))
    for d in range(dim):
        base = primes[d % len(primes)]
        for i in range(n):
            f, r, k = 1.0, 0.0, i + 1
            while k > 0:
                f /= base
                r += f * (k % base)
                k //= base
            out[i, d] = r
    return out


def _reach(robot: Robot) -> npt.NDArray[np.float64]:
    """Per joint: half a turn (rad), or 1 m for prismatic joints (computed once per robot:
    every request's rest check uses it)."""
    reach = robot._cache.get("reach")
    if reach is None:
        prismatic = [j.prismatic for c in robot.chains for j in c.chain.joints]
        reach = robot._cache["reach"] = np.where(np.array(prismatic, np.bool_), 1.0, math.pi)
    return reach


def working_range(robot: Robot) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(lower, upper) per joint, where limits like ±1e10 (meaning "unlimited") are narrowed
    to a window of one turn (or 2 m) inside them, nearest zero: where seeds are drawn and
    the default rest pose sits, instead of 1e10 rad."""
    lo, hi = robot.lower.astype(np.float64), robot.upper.astype(np.float64)
    reach = _reach(robot)
    centre = np.clip(0.0, lo + reach, hi - reach)
    wide = hi - lo > 2 * reach
    return np.where(wide, centre - reach, lo), np.where(wide, centre + reach, hi)


def default_rest(robot: Robot) -> npt.NDArray[np.float32]:
    """The rest pose used when none is given: the middle of each joint's working range."""
    lo, hi = working_range(robot)
    return ((lo + hi) / 2).astype(np.float32)


def seed_points(robot: Robot, seeds: int) -> npt.NDArray[np.float32]:
    """(seeds - 1, n_joints) deterministic extra starting points inside the limits."""
    if seeds <= 1:
        return np.zeros((0, robot.n_joints), np.float32)
    u = _halton(seeds - 1, robot.n_joints)
    lo, hi = working_range(robot)
    # Stay a little inside the limits: a start on a limit has a one-sided Jacobian.
    margin = 0.02 * (hi - lo)
    return (lo + margin + u * (hi - lo - 2 * margin)).astype(np.float32)


class _Problem:
    """Trace-time description of one chain's problem: targets and constants as planes."""

    def __init__(self, info: Any, robot: Robot, R_t: Any, p_t: Any, rest: Any) -> None:
        self.chain = info.chain
        self.idx = info.joint_index
        self.n = len(self.idx)
        self.R_t = R_t
        self.p_t = p_t
        self.rest = [rest[i] for i in self.idx]
        self.lower = [float(robot.lower[i]) for i in self.idx]
        self.upper = [float(robot.upper[i]) for i in self.idx]
        self.limited = [bool(robot.limited[i]) for i in self.idx]


def _evaluate(
    prob: _Problem, q: list[Any], w: dict[str, Any], precise: bool, pred: Any
) -> dict[str, Any]:
    """Residual pieces, normal equations (without the rest term) and errors at ``q``."""
    fk: ChainFK = _barrier(chain_fk(prob.chain, q), pred)
    jv, jw = geometric_jacobian(prob.chain, fk)
    dp = [fk.p[i] - prob.p_t[i] for i in range(3)]
    # Pose residual log(T_t⁻¹·T) = (v, ω) in the target frame.
    R_tT = [[prob.R_t[k][i] for k in range(3)] for i in range(3)]
    omega, theta = rotation_log(matmul(R_tT, fk.R))
    t_err = matvec(R_tT, dp)
    c, e = jl_inv_coefs(theta)
    Jinv = jl_inv_matrix(omega, theta, c)
    v = matvec(Jinv, t_err)
    # Its exact Jacobian: joint k moves the error by a = R_tᵀ·jw_k (rotation, on the left)
    # and b = R_tᵀ·jv_k (translation), so dω = Jl⁻¹·a and dv = Jl⁻¹·b + ∂v/∂ω·dω. Far from
    # the target (large rotation errors) the identity in its place points the wrong way.
    P = matmul(Jinv, R_tT)
    Q = matmul(jl_inv_derivative(omega, c, e, t_err), P)
    P, Q, omega, theta, v = _barrier((P, Q, omega, theta, v), pred)
    dv = [
        [a + b for a, b in zip(matvec(P, jv[k]), matvec(Q, jw[k]), strict=True)]
        for k in range(prob.n)
    ]
    dw = [matvec(P, jw[k]) for k in range(prob.n)]
    dv, dw, v = _barrier((dv, dw, v), pred)
    pw2, ow2 = w["pos"] * w["pos"], w["ori"] * w["ori"]
    pose_cost = pw2 * sum(x * x for x in v) + ow2 * (theta * theta)
    n = prob.n
    H: dict[tuple[int, int], Any] = {}
    for i in range(n):
        for j in range(i + 1):
            H[i, j] = pw2 * _dot3(dv[i], dv[j]) + ow2 * _dot3(dw[i], dw[j])
    g = [pw2 * _dot3(dv[i], v) + ow2 * _dot3(dw[i], omega) for i in range(n)]
    limit_cost: Any = 0.0
    if not precise:
        lw2 = w["limit"] * w["limit"]
        for i in range(n):
            if not prob.limited[i]:
                continue
            over = jnp.maximum(q[i] - prob.upper[i], 0.0)
            under = jnp.maximum(prob.lower[i] - q[i], 0.0)
            viol = over - under  # residual r = over + under, dr/dq = sign
            limit_cost = limit_cost + viol * viol
            outside = jnp.where((over > 0) | (under > 0), lw2, 0.0)
            H[i, i] = H[i, i] + outside
            g[i] = g[i] + lw2 * viol
        limit_cost = lw2 * limit_cost
    rest_sq = sum((q[i] - prob.rest[i]) ** 2 for i in range(n))
    pos_err = jnp.sqrt(sum(x * x for x in dp))
    return _barrier(
        {
            "task": pose_cost + limit_cost,
            "rest_sq": rest_sq,
            "H": H,
            "g": g,
            "pos_err": pos_err,
            "ori_err": theta,
        },
        pred,
    )


def _barrier(tree: Any, pred: Any) -> Any:
    """Materialise the array planes in ``tree`` (``pred``: a traced True).

    Without this XLA (CPU) duplicates the whole FK into every one of the ~60 consumers of
    the loop state (fused elementwise producers count as cheap to recompute): many times
    slower and slower to compile. ``optimization_barrier`` is dropped before fusion on CPU;
    a conditional on a traced predicate is not, and costs about a microsecond."""
    if not BARRIERS:
        return tree
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    idx = [i for i, x in enumerate(leaves) if not isinstance(x, float)]
    arrays = [leaves[i] for i in idx]
    out = jax.lax.cond(pred, lambda a: a, lambda a: [-x for x in a], arrays)
    for i, x in zip(idx, out, strict=True):
        leaves[i] = x
    return jax.tree_util.tree_unflatten(treedef, leaves)


BARRIERS = True


def _dot3(a: Sequence[Any], b: Sequence[Any]) -> Any:
    out: Any = 0.0
    for x, y in zip(a, b, strict=True):
        if (isinstance(x, float) and x == 0.0) or (isinstance(y, float) and y == 0.0):
            continue
        out = out + x * y
    return out


def _cholesky_solve(A: dict[tuple[int, int], Any], b: list[Any]) -> list[Any]:
    """Solve A x = b for SPD A (lower triangle given), unrolled LDLᵀ on planes."""
    n = len(b)
    L: dict[tuple[int, int], Any] = {}
    D: list[Any] = []
    Dinv: list[Any] = []
    for j in range(n):
        d = A[j, j]
        for k in range(j):
            d = d - L[j, k] * L[j, k] * D[k]
        d = jnp.maximum(d, 1e-12)
        D.append(d)
        Dinv.append(1.0 / d)
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s = s - L[i, k] * L[j, k] * D[k]
            L[i, j] = s * Dinv[j]
    y: list[Any] = []
    for i in range(n):
        s = b[i]
        for k in range(i):
            s = s - L[i, k] * y[k]
        y.append(s)
    x: list[Any] = [None] * n
    for i in reversed(range(n)):
        s = y[i] * Dinv[i]
        for k in range(i + 1, n):
            s = s - L[k, i] * x[k]
        x[i] = s
    return x


def _lm(
    probs: list[_Problem],
    q0: list[list[Any]],
    params: Any,
    precise: bool,
    restarts: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """LM on every chain at once (one loop); returns per chain q, errors, final cost.

    ``restarts`` (precise only): per chain ``(table, slot)`` — ``table`` a list per joint of
    constant (R·seeds,) restart points, ``slot`` the (B,) int seed index of each problem. A
    problem that stalls away from its target restarts from its next table point (at most R
    times); the best state seen is returned."""
    w = {"pos": params[0], "ori": params[1], "rest": params[2], "limit": params[3]}
    lam0, iters = params[4], params[5].astype(jnp.int32)

    def rest_w(k: Any) -> Any:
        if precise:
            return w["rest"] * jnp.power(jnp.float32(_REST_DECAY), k.astype(jnp.float32))
        return w["rest"]

    def init_chain(prob: _Problem, q: list[Any]) -> dict[str, Any]:
        if precise:
            q = [_clamp(prob, i, qi) for i, qi in enumerate(q)]
        ev = _evaluate(prob, q, w, precise, lam0 > 0)
        batch = q[0].shape
        st = {
            "q": q,
            "lam": jnp.full(batch, lam0, jnp.float32),
            "active": jnp.ones(batch, jnp.bool_),
            **ev,
        }
        if restarts is not None:
            st["pending"] = jnp.zeros(batch, jnp.bool_)
            st["restarts"] = jnp.zeros(batch, jnp.int32)
            st["best"] = {"q": list(q), **{k: ev[k] for k in ("task", "pos_err", "ori_err")}}
        return st

    def step_chain(
        prob: _Problem, st: dict[str, Any], k: Any, restart: Any | None
    ) -> dict[str, Any]:
        rw = rest_w(k)
        rw2 = rw * rw
        n = prob.n
        lam = st["lam"]
        A = dict(st["H"])
        g = list(st["g"])
        for i in range(n):
            A[i, i] = A[i, i] + rw2 + lam * (1.0 + A[i, i])
            g[i] = g[i] + rw2 * (st["q"][i] - prob.rest[i])
        if precise:
            # Projected Newton: a joint on a limit whose descent direction points out of the
            # limits is held there (its row and column leave the system), so the clamped
            # step stays a descent step instead of being rejected over and over.
            free: list[Any] = []
            for i in range(n):
                if not prob.limited[i]:
                    free.append(None)
                    continue
                qi = st["q"][i]
                tol = 1e-6 * max(1.0, prob.upper[i] - prob.lower[i])
                held = ((qi >= prob.upper[i] - tol) & (g[i] < 0)) | (
                    (qi <= prob.lower[i] + tol) & (g[i] > 0)
                )
                free.append(jnp.where(held, 0.0, 1.0))
            for (i, j), a in list(A.items()):
                if i == j:
                    if free[i] is not None:
                        A[i, i] = free[i] * a + (1.0 - free[i])
                    continue
                for f in (free[i], free[j]):
                    if f is not None:
                        a = f * a
                A[i, j] = a
            g = [gi if free[i] is None else free[i] * gi for i, gi in enumerate(g)]
        delta = _barrier(_cholesky_solve(A, [-gi for gi in g]), k >= 0)
        q_new = [st["q"][i] + delta[i] for i in range(n)]
        pending: Any = st["pending"] if restart is not None else None
        if restart is not None:
            table, slot = restart
            n_slots = table[0].shape[0] // _RESTARTS
            row = jnp.clip(st["restarts"] - 1, 0, _RESTARTS - 1) * n_slots + slot
            q_new = [jnp.where(pending, jnp.take(table[i], row), q_new[i]) for i in range(n)]
        if precise:
            q_new = [_clamp(prob, i, qi) for i, qi in enumerate(q_new)]
        ev = _evaluate(prob, q_new, w, precise, k >= 0)
        cost_old = st["task"] + rw2 * st["rest_sq"]
        cost_new = ev["task"] + rw2 * ev["rest_sq"]
        active = st["active"]
        accept = active & (cost_new < cost_old) & jnp.isfinite(cost_new)
        if pending is not None:
            accept = accept | (active & pending)
        step = jnp.max(jnp.stack([jnp.abs(q_new[i] - st["q"][i]) for i in range(n)]), axis=0)
        lam_new = jnp.where(
            accept,
            jnp.maximum(lam * _LAMBDA_DOWN, _LAMBDA_MIN),
            jnp.where(active, lam * _LAMBDA_UP, lam),
        )
        if pending is not None:
            lam_new = jnp.where(pending, lam0, lam_new)
        conv = (accept & (step < _STEP_TOL)) | (lam_new > _LAMBDA_MAX)
        out: dict[str, Any] = {
            "q": [jnp.where(accept, q_new[i], st["q"][i]) for i in range(n)],
            "lam": lam_new,
        }
        for key in ("task", "rest_sq", "pos_err", "ori_err"):
            out[key] = jnp.where(accept, ev[key], st[key])
        out["H"] = {ij: jnp.where(accept, ev["H"][ij], st["H"][ij]) for ij in st["H"]}
        out["g"] = [jnp.where(accept, ev["g"][i], st["g"][i]) for i in range(n)]
        if restart is None:
            out["active"] = active & ~conv
            return out
        # Restarts: a problem converged or stalled away from its target starts again.
        success = (out["pos_err"] <= _PRECISE_POS_TOL) & (out["ori_err"] <= _PRECISE_ORI_TOL)
        far = (out["pos_err"] > 1e-3) | (out["ori_err"] > 1e-2)
        stall = accept & ~pending & far & (cost_old - cost_new < 1e-3 * cost_old)
        again = active & (conv | stall) & ~success & (st["restarts"] < _RESTARTS)
        out["active"] = active & (~conv | again)
        out["pending"] = again
        out["restarts"] = st["restarts"] + again.astype(jnp.int32)
        best = st["best"]
        better = out["task"] < best["task"]
        out["best"] = {
            "q": [jnp.where(better, out["q"][i], best["q"][i]) for i in range(n)],
            **{
                key: jnp.where(better, out[key], best[key])
                for key in ("task", "pos_err", "ori_err")
            },
        }
        return out

    state0 = (jnp.int32(0), [init_chain(p, q) for p, q in zip(probs, q0, strict=True)])

    def cond(state: Any) -> Any:
        k, chains = state
        any_active = jnp.any(jnp.stack([jnp.any(c["active"]) for c in chains]))
        return (k < iters) & any_active

    def body(state: Any) -> Any:
        k, chains = state
        rs = restarts if restarts is not None else [None] * len(probs)
        return k + 1, [step_chain(p, c, k, r) for p, c, r in zip(probs, chains, rs, strict=True)]

    k_final, chains = jax.lax.while_loop(cond, body, state0)
    rw_final = rest_w(k_final)
    results = []
    for c in chains:
        if restarts is not None:
            c = {**c, **c["best"]}
        results.append(
            {
                "q": c["q"],
                "pos_err": c["pos_err"],
                "ori_err": c["ori_err"],
                "cost": c["task"] + rw_final * rw_final * c["rest_sq"],
                "task": c["task"],
            }
        )
    return results


def _clamp(prob: _Problem, i: int, q: Any) -> Any:
    if not prob.limited[i]:
        return q
    return jnp.clip(q, prob.lower[i], prob.upper[i])


def _target_planes(wxyz: Any, pos: Any) -> tuple[Any, Any]:
    """(4, B), (3, B) → rotation-matrix planes and position planes."""
    R = quat_to_mat(wxyz[0], wxyz[1], wxyz[2], wxyz[3])
    return R, [pos[0], pos[1], pos[2]]


def _solve_planes(
    robot: Robot,
    precise: bool,
    seeds: int,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    params: Any,
    q_init: Any | None = None,
) -> tuple[Any, Any, Any]:
    """Core solve on planes: targets (n_ee, 4|3, B), rest (n,), optional q_init (n, B).

    Returns joints (n, B), pos_err (n_ee, B), ori_err (n_ee, B)."""
    batch = target_wxyz.shape[-1]
    extra = seed_points(robot, seeds)  # (seeds-1, n)
    probs = []
    q0s = []
    for e, info in enumerate(robot.chains):
        tw, tp = target_wxyz[e], target_pos[e]
        if seeds > 1:
            tw = jnp.tile(tw, (1, seeds))
            tp = jnp.tile(tp, (1, seeds))
        R_t, p_t = _target_planes(tw, tp)
        probs.append(_Problem(info, robot, R_t, p_t, rest))
        q0 = []
        for i in info.joint_index:
            base = (
                q_init[i]
                if q_init is not None
                else jnp.broadcast_to(rest[i], (batch,)).astype(jnp.float32)
            )
            if seeds > 1:
                base = jnp.concatenate([base, jnp.repeat(jnp.asarray(extra[:, i]), batch)], axis=0)
            q0.append(base)
        q0s.append(q0)
    restarts = None
    if precise and seeds > 1:
        table = seed_points(robot, seeds * (_RESTARTS + 1))[seeds - 1 :]
        slot = jnp.repeat(jnp.arange(seeds, dtype=jnp.int32), batch)
        restarts = [
            ([jnp.asarray(table[: seeds * _RESTARTS, i]) for i in info.joint_index], slot)
            for info in robot.chains
        ]
    results = _lm(probs, q0s, params, precise, restarts)
    joints: list[Any] = [None] * robot.n_joints
    pos_err, ori_err = [], []
    for info, res in zip(robot.chains, results, strict=True):
        pe, oe = res["pos_err"], res["ori_err"]
        qs = res["q"]
        if seeds > 1:
            pe, oe = pe.reshape(seeds, batch), oe.reshape(seeds, batch)
            score = res["cost"].reshape(seeds, batch)
            if precise:
                score = res["task"].reshape(seeds, batch)
                # Prefer the rest-pose start when it already meets the targets (continuity).
                ok0 = (pe[0] <= _PRECISE_POS_TOL) & (oe[0] <= _PRECISE_ORI_TOL)
                score = score.at[0].set(jnp.where(ok0, -1.0, score[0]))
            best = jnp.argmin(score, axis=0)[None]
            pe = jnp.take_along_axis(pe, best, axis=0)[0]
            oe = jnp.take_along_axis(oe, best, axis=0)[0]
            qs = [jnp.take_along_axis(qi.reshape(seeds, batch), best, axis=0)[0] for qi in qs]
        for i, qi in zip(info.joint_index, qs, strict=True):
            joints[i] = qi
        pos_err.append(pe)
        ori_err.append(oe)
    return jnp.stack(joints), jnp.stack(pos_err), jnp.stack(ori_err)


# --------------------------------------------------------------------------- programs


def _program(robot: Robot, precise: bool, seeds: int) -> Any:
    """The jitted solve for (robot, precise, seeds); one compile per bucket."""
    key = ("solve", precise, seeds)
    fn = robot._cache.get(key)
    if fn is None:

        def solve(tw: Any, tp: Any, rest: Any, params: Any) -> Any:
            return _solve_planes(robot, precise, seeds, tw, tp, rest, params)

        fn = _any_batch(solve, robot, f"solve(precise={precise}, seeds={seeds})")
        robot._cache[key] = fn
    return fn


def _specs(robot: Robot, batch: Any) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Argument shapes of a solve program for ``batch`` targets (an int or a symbol)."""
    f32 = np.float32
    return (
        jax.ShapeDtypeStruct((robot.n_ee, 4, batch), f32),
        jax.ShapeDtypeStruct((robot.n_ee, 3, batch), f32),
        jax.ShapeDtypeStruct((robot.n_joints,), f32),
        jax.ShapeDtypeStruct((len(IKConfig().params()),), f32),
    )


def _any_batch(fun: Any, robot: Robot, name: str) -> Any:
    """``jax.jit(fun)``, but traced and lowered once for a symbolic batch size.

    Tracing the unrolled solver costs ~0.6 s; with ``jax.jit(fun)`` it is paid again for
    every bucket (shapes are part of the trace). The exported module is only specialised
    per bucket (~0.05 s), and compiles to the same program. If the export fails (a shape
    the symbolic batch cannot express), fall back to tracing per bucket."""
    (batch,) = jax.export.symbolic_shape("batch")
    try:
        exported = jax.export.export(jax.jit(fun))(*_specs(robot, batch))
    except Exception as exc:  # any tracing error: the plain jit still works
        logger.warning("%s: no batch-polymorphic export (%s); tracing per bucket", name, exc)
        return jax.jit(fun)
    return jax.jit(exported.call)


def check_buckets(buckets: Sequence[int] | None) -> tuple[int, ...]:
    """``buckets`` sorted and checked against ``BUCKETS`` (None: all of them)."""
    if not buckets:
        return BUCKETS
    for b in buckets:
        if b not in BUCKETS:
            raise InputError(f"buckets: {b} is not one of {BUCKETS}", field="buckets")
    return tuple(sorted(set(buckets)))


def chunk_size(buckets: Sequence[int], seeds: int = 1) -> int:
    """Targets per program call: the largest bucket whose ``bucket × seeds`` problems fit in
    the largest bucket (else the smallest bucket). Bounds the memory and the duration of
    one call (a deadline is only checked between calls) whatever ``seeds`` a client asks."""
    fitting = [b for b in buckets if b * seeds <= buckets[-1]]
    return fitting[-1] if fitting else buckets[0]


def check_deadline(deadline: float | None, done: int, total: int) -> None:
    """Raise `IKTimeout` once ``deadline`` (``time.monotonic()`` seconds) has passed: a
    worker must not keep computing an answer nobody waits for."""
    if deadline is not None and time.monotonic() > deadline:
        raise IKTimeout(f"deadline passed with {done} of {total} targets solved")


def bucket_for(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The bucket a batch of ``n`` (≤ the largest bucket) is padded to."""
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


def _check_targets(
    robot: Robot, target_wxyz: Any, target_pos: Any, rest: Any
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    n_ee, n = robot.n_ee, robot.n_joints
    try:
        wxyz = np.asarray(target_wxyz, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("target_wxyz: not a numeric array", field="target_wxyz") from None
    try:
        pos = np.asarray(target_pos, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("target_pos: not a numeric array", field="target_pos") from None
    try:
        rest_arr = np.asarray(rest, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("rest: not a numeric array", field="rest") from None
    if pos.ndim != 3 or pos.shape[1:] != (n_ee, 3):
        raise InputError(
            f"target_pos must have shape (N, {n_ee}, 3), got {pos.shape}", field="target_pos"
        )
    if wxyz.ndim != 3 or wxyz.shape[1:] != (n_ee, 4):
        raise InputError(
            f"target_wxyz must have shape (N, {n_ee}, 4), got {wxyz.shape}", field="target_wxyz"
        )
    if wxyz.shape[0] != pos.shape[0]:
        raise InputError(
            f"target_wxyz has {wxyz.shape[0]} targets but target_pos has {pos.shape[0]}",
            field="target_wxyz",
        )
    if rest_arr.shape != (n,):
        raise InputError(f"rest must have shape ({n},), got {rest_arr.shape}", field="rest")
    for arr, name in ((wxyz, "target_wxyz"), (pos, "target_pos"), (rest_arr, "rest")):
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contains NaN or inf", field=name)
    check_coordinates(pos)
    check_rest(robot, rest_arr)
    norm = np.linalg.norm(wxyz, axis=-1, keepdims=True)
    if (norm < 1e-6).any():
        raise InputError("target_wxyz contains a zero-norm quaternion", field="target_wxyz")
    wxyz = wxyz / norm
    return wxyz.astype(np.float32), pos.astype(np.float32), rest_arr.astype(np.float32)


def check_rest(robot: Robot, rest: Any) -> None:
    """Refuse a rest pose far outside the joint limits (more than a whole range, and at least
    half a turn or 1 m, beyond them) or beyond ±1e3: it is the starting point too, so such a
    value is a caller's mistake (degrees for radians, a wrong joint order). A previous answer
    fed back (soft limits let it sit outside them) passes."""
    rest = np.asarray(rest, np.float64)
    lower, upper = robot.lower.astype(np.float64), robot.upper.astype(np.float64)
    slack = np.where(robot.limited, np.maximum(upper - lower, _reach(robot)), np.inf)
    bad = (rest < lower - slack) | (rest > upper + slack) | (np.abs(rest) > 1e3)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"rest[{i}] = {rest[i]:g} for joint {robot.joint_names[i]!r} is far outside its "
            f"limits [{lower[i]:g}, {upper[i]:g}]",
            field="rest",
        )


def solve_ik(
    robot: Robot,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    config: IKConfig | None = None,
    *,
    buckets: Sequence[int] | None = None,
    deadline: float | None = None,
) -> IKSolution:
    """Solve IK for ``N`` targets: ``target_wxyz`` (N, n_ee, 4), ``target_pos`` (N, n_ee, 3)
    metres, world frame; ``rest`` (n_joints,), also the starting point.

    Returns numpy ``joints`` (N, n_joints) and the achieved ``pos_err`` (m) and ``ori_err``
    (rad), (N, n_ee): FK of the answer against the target. Batches are padded to a bucket
    (or split into chunks, see :func:`chunk_size`), so only ``buckets`` (default
    ``BUCKETS``: pass the list given to :func:`warmup`) ever compile. ``deadline``
    (``time.monotonic()`` seconds) is checked before each chunk: past it, `IKTimeout`.
    """
    config = config or IKConfig()
    buckets = check_buckets(buckets)
    wxyz, pos, rest32 = _check_targets(robot, target_wxyz, target_pos, rest)
    n_targets = wxyz.shape[0]
    joints = np.empty((n_targets, robot.n_joints), np.float32)
    pos_err = np.empty((n_targets, robot.n_ee), np.float32)
    ori_err = np.empty((n_targets, robot.n_ee), np.float32)
    if n_targets == 0:
        return IKSolution(joints=joints, pos_err=pos_err, ori_err=ori_err)
    fn = _program(robot, config.precise, config.seeds)
    params = config.params()
    chunk = chunk_size(buckets, config.seeds)
    for start in range(0, n_targets, chunk):
        check_deadline(deadline, start, n_targets)
        stop = min(start + chunk, n_targets)
        m = stop - start
        b = bucket_for(m, buckets)
        # Pad with copies of the first target (a valid problem; results are discarded).
        idx = np.concatenate([np.arange(start, stop), np.full(b - m, start)])
        tw = np.ascontiguousarray(wxyz[idx].transpose(1, 2, 0))
        tp = np.ascontiguousarray(pos[idx].transpose(1, 2, 0))
        q, pe, oe = fn(tw, tp, rest32, params)
        joints[start:stop] = np.asarray(q).T[:m]
        pos_err[start:stop] = np.asarray(pe).T[:m]
        ori_err[start:stop] = np.asarray(oe).T[:m]
    return IKSolution(joints=joints, pos_err=pos_err, ori_err=ori_err)


def _cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def warmup(
    robot: Robot,
    config: IKConfig | None = None,
    buckets: Sequence[int] | None = None,
    *,
    threads: int | None = None,
) -> None:
    """Compile the solve program of ``config`` (default: tatbot settings) for every bucket,
    so that later :func:`solve_ik` calls with any batch size and any weights compile nothing.

    Buckets are lowered here and compiled (or loaded from the persistent cache) by
    ``threads`` threads (default: one per CPU, at most 4): XLA releases the GIL, so they
    overlap. Nothing is run: compiling fills the same cache a call would."""
    config = config or IKConfig()
    sizes = check_buckets(buckets)
    chunk = chunk_size(sizes, config.seeds)
    sizes = tuple(b for b in sizes if b <= chunk)  # larger ones are never called (chunks)
    fn = _program(robot, config.precise, config.seeds)
    if threads is None:
        threads = min(len(sizes), _cpus(), 4)
    name = f"precise={config.precise}, seeds={config.seeds}"

    def compile_one(lowered: Any, bucket: int) -> None:
        t0 = time.monotonic()
        lowered.compile()
        logger.debug("bucket %d (%s) ready in %.2fs", bucket, name, time.monotonic() - t0)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="zmq-ik-warmup") as pool:
        # Lowering holds the GIL, so it stays on this thread, overlapping earlier compiles.
        futures = [pool.submit(compile_one, fn.lower(*_specs(robot, b)), b) for b in sizes]
        for future in futures:
            future.result()
