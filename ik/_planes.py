"""Linear algebra on planes for the LM kernel (`ik._lm`): each problem of a batch is one
lane of every array, so a 7-joint system is a handful of elementwise operations, unrolled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._kin import mul, sub


def barrier(tree: Any, pred: Any) -> Any:
    """Materialise the array planes in ``tree`` (``pred``: a traced True).

    Without this XLA (CPU) duplicates the whole FK into every one of the ~60 consumers of
    the loop state (fused elementwise producers count as cheap to recompute): many times
    slower and slower to compile. ``optimization_barrier`` is dropped before fusion on CPU;
    a conditional on a traced predicate is not, and costs about a microsecond there. On a
    GPU the trade is the other way round: each conditional copies its predicate to the host
    and waits for it (~10 barriers per iteration would mean ~10 device syncs), while
    ``optimization_barrier`` is honoured, so GPUs get the barrier and CPUs the conditional.
    The backend is read at trace time: a program is traced for the device it runs on."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    idx = [i for i, x in enumerate(leaves) if not isinstance(x, float)]
    arrays = [leaves[i] for i in idx]
    if jax.default_backend() == "cpu":
        out = jax.lax.cond(pred, lambda a: a, lambda a: [-x for x in a], arrays)
    else:
        out = jax.lax.optimization_barrier(arrays)
    for i, x in zip(idx, out, strict=True):
        leaves[i] = x
    return jax.tree_util.tree_unflatten(treedef, leaves)


def dot3(a: Sequence[Any], b: Sequence[Any]) -> Any:
    """Dot product of planes, skipping trace-time zeros (prismatic joints' rotation part)."""
    out: Any = 0.0
    for x, y in zip(a, b, strict=True):
        if (isinstance(x, float) and x == 0.0) or (isinstance(y, float) and y == 0.0):
            continue
        out = out + x * y
    return out


def cholesky_solve(A: dict[tuple[int, int], Any], b: list[Any]) -> list[Any]:
    """Solve A x = b for SPD A (lower triangle given), unrolled LDLᵀ on planes.

    An entry absent from ``A`` is a structural zero (two joints no end effector moves
    together: the two arms on a torso), and zeros are carried as constants, so they cost
    nothing where the elimination keeps them zero (joints shared by several chains ordered
    last: `ik._cost.GroupProblem`)."""
    n = len(b)
    L: dict[tuple[int, int], Any] = {}
    D: list[Any] = []
    Dinv: list[Any] = []
    for j in range(n):
        d = A[j, j]
        for k in range(j):
            d = sub(d, mul(mul(L[j, k], L[j, k]), D[k]))
        d = jnp.maximum(d, 1e-12)
        D.append(d)
        Dinv.append(1.0 / d)
        for i in range(j + 1, n):
            s = A.get((i, j), 0.0)
            for k in range(j):
                s = sub(s, mul(mul(L[i, k], L[j, k]), D[k]))
            L[i, j] = mul(s, Dinv[j])
    y: list[Any] = []
    for i in range(n):
        s = b[i]
        for k in range(i):
            s = sub(s, mul(L[i, k], y[k]))
        y.append(s)
    x: list[Any] = [None] * n
    for i in reversed(range(n)):
        s = y[i] * Dinv[i]
        for k in range(i + 1, n):
            s = sub(s, mul(L[k, i], x[k]))
        x[i] = s
    return x
