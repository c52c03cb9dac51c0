"""IK solver settings and the answer tolerances (numpy free): `IKSettings`, its limits, and
the default `POS_TOL` / `ORI_TOL` with `check_tolerance`.

Import these names from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from zmq_ik.base.checks import as_bool, as_float, as_int
from zmq_ik.base.docs import documented
from zmq_ik.errors import InputError

MAX_IK_WEIGHT = 1e6
"""Largest cost weight accepted: the solver squares weights in float32, and past ~1e19 the
cost overflows to inf, every step is rejected and the answer silently stays at rest."""
MAX_IK_LAMBDA = 1e7
"""Largest initial damping: the solver gives a problem up once its damping passes this."""


POS_TOL = 1e-4
"""Default position tolerance, metres (0.1 mm): a pose whose achieved needle-tip position is
further than this from its target misses: well under a fine tattoo line (0.3-0.5 mm), so the
IK's share of the error budget stays small next to the arm's own repeatability. The
bundled example: worst 0.0003 mm in the default mode, 0.054 mm in tatbot's (its rest pull)."""
ORI_TOL = 0.05
"""Default orientation tolerance, radians (~2.9°): a needle tilted this much shifts its point
by ~0.1 mm (`POS_TOL`) at a 2 mm depth. The bundled example: worst 5e-6 rad in the default
mode, 0.018 rad in tatbot's (its rest pull costs mostly orientation: see IKSettings)."""

MAX_POS_TOL = 0.01
"""Largest ``pos_tol`` accepted, metres (1 cm, 100x the default): 0.1 typed for "0.1 mm"
would otherwise pass every answer."""
MAX_ORI_TOL = 0.5
"""Largest ``ori_tol`` accepted, radians (~29°, 10x the default): 1, 3 or 5 typed for degrees
would otherwise pass every answer."""

_TOLERANCE_RANGES = {
    # name: (largest, unit hint, the likely mistaken unit in SI units, its symbol, SI symbol,
    # the default: taken as it is, unchecked, on every default solve call)
    "pos_tol": (MAX_POS_TOL, "metres: 0.0001 is 0.1 mm", 1e-3, " mm", "m", POS_TOL),
    "ori_tol": (MAX_ORI_TOL, "radians: 0.05 is 2.9°", math.pi / 180, "°", "rad", ORI_TOL),
}


def check_tolerance(value: Any, name: str) -> float:
    """``value`` as tolerance ``name`` (``"pos_tol"``, metres, <= `MAX_POS_TOL`; ``"ori_tol"``,
    radians, <= `MAX_ORI_TOL`): a tolerance typed in millimetres or degrees is refused with
    what it would be in metres or radians, not taken as such."""
    hi, unit, scale, symbol, si, default = _TOLERANCE_RANGES[name]
    if value is default:  # the default itself (every default solve call): good as it is
        return default
    try:
        return as_float(value, name, 0.0, hi=hi)
    except InputError as exc:
        hint = unit
        real = isinstance(value, (int, float)) and not isinstance(value, bool)
        if real and math.isfinite(value) and value > hi:
            hint += f"; {value:g}{symbol} is {value * scale:.4g} {si}"
        raise InputError(f"{exc.message} ({hint})", field=name) from None


MAX_IK_ITERATIONS = 1000
"""Largest ``max_iterations`` accepted. A deadline is only checked between the solver's
program calls, so this bounds how long one call can run past it: 1000 iterations of a CPU
chunk of 1,024 unreachable targets take ~0.5 s (32, the default: ~0.05 s)."""

BUCKETS: tuple[int, ...] = (1, *(2**k for k in range(4, 15)))
"""Batch sizes programs are compiled for (1, then 16 … 16,384). Smaller batches are padded up
to the next bucket; larger ones are solved in chunks of the largest. Bucket 1 is for control
loops: one pose solves in about half the time of a padded batch of 16 on a CPU. Here, not in
the engine, so that a worker checks ``--buckets`` before it imports JAX."""


def check_buckets(buckets: Sequence[int] | None) -> tuple[int, ...]:
    """``buckets`` sorted and checked against ``BUCKETS`` (None: all of them)."""
    if not buckets:
        return BUCKETS
    for b in buckets:
        if b not in BUCKETS:
            raise InputError(f"buckets: {b} is not one of {BUCKETS}", field="buckets")
    return tuple(sorted(set(buckets)))


@documented
@dataclass(frozen=True)
class IKSettings:
    """IK solver settings, for the client, the wire, the worker and the in-process engine.
    The defaults are the reaching mode (``precise``): every reachable target met within
    0.01 mm and 1e-4 rad, joints inside their limits, for any arm. ``IKSettings.preset(
    "tatbot")`` is tatbot's own solver (pyroki's weights: a rest pull and soft limits).
    Frozen, hashable, compared by value; every field is checked on construction."""

    pos_weight: float = 10.0
    """Weight of the translation part of the pose residual (per metre; 0..1e6). In the
    reaching mode it only shapes the path (10: 1 mm weighs as 0.01 rad); in tatbot's (32) it
    also sets what gives way to the rest pull."""
    ori_weight: float = 1.0
    """Weight of the rotation part of the pose residual (per radian; 0..1e6)."""
    rest_weight: float = 0.1
    """Weight of ``q - rest``: pulls the redundant degree of freedom (and everything else, a
    little) toward the rest pose (0..1e6). With ``precise`` it only breaks ties (it decays to
    0 within each solve). In tatbot's mode it stays, and as position weighs 32x orientation,
    a pose gives way to this pull mostly in orientation (README: "Is the answer good
    enough?")."""
    limit_weight: float = 32.0
    """Weight of the soft joint-limit residual (0..1e6; ignored with ``precise``: limits are
    hard)."""
    lambda_initial: float = 0.3
    """Initial Levenberg–Marquardt damping (> 0, <= 1e7), then adapted per problem."""
    max_iterations: int = 16
    """LM iterations (1..``MAX_IK_ITERATIONS``) from the start (the rest pose); each problem
    stops earlier once converged. With ``precise``, the targets missed after them are solved
    again from more starting points (``zmq_ik.ik.RESOLVE_ROUNDS``)."""
    precise: bool = True
    """The reaching mode: hard joint limits (each step is clamped), the rest term decaying to
    0 (it only breaks ties), and every target missed after ``max_iterations`` solved again
    from its best answer and from more starting points, in rounds, until it is reached (to
    ``zmq_ik.ik.REACH_POS_TOL`` / ``REACH_ORI_TOL``) or the rounds run out. False: tatbot's
    mode (soft limits, a constant rest pull, ``max_iterations`` and no more)."""
    seeds: int = 1
    """Starting points per target before any miss is solved again (1..256): the rest pose
    plus ``seeds - 1`` deterministic Halton points inside the joint limits; the best answer
    per target is kept. Rarely needed with ``precise`` (misses get more starts anyway)."""
    continuous: bool = False
    """Stroke batches only: each pose of a stroke starts from the previous pose's answer (the
    first from the rest pose), for smoother joint paths (no re-solve rounds)."""

    def __post_init__(self) -> None:
        for name in ("pos_weight", "ori_weight", "rest_weight", "limit_weight"):
            object.__setattr__(
                self, name, as_float(getattr(self, name), name, 0.0, hi=MAX_IK_WEIGHT)
            )
        object.__setattr__(
            self,
            "lambda_initial",
            as_float(self.lambda_initial, "lambda_initial", 0.0, strict_lo=True, hi=MAX_IK_LAMBDA),
        )
        object.__setattr__(
            self,
            "max_iterations",
            as_int(self.max_iterations, "max_iterations", 1, MAX_IK_ITERATIONS),
        )
        object.__setattr__(self, "seeds", as_int(self.seeds, "seeds", 1, 256))
        object.__setattr__(self, "precise", as_bool(self.precise, "precise"))
        object.__setattr__(self, "continuous", as_bool(self.continuous, "continuous"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/msgpack/YAML friendly)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_wire(self) -> dict[str, Any]:
        """:meth:`to_dict` as requests carry it: a field of `ADDED_SETTINGS` is left out while
        it holds its default, so a worker that predates it (and refuses unknown keys) still
        serves every request that does not use it."""
        out = self.to_dict()
        for name in ADDED_SETTINGS:
            if out[name] == _DEFAULTS[name]:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IKSettings:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys are refused.
        A ``preset`` key (a name of :data:`PRESETS`) starts from that preset instead of the
        defaults (``{preset: tatbot, max_iterations: 64}``); :meth:`to_dict` never writes
        one, so the wire carries plain fields that older workers know."""
        if not isinstance(data, Mapping):
            raise InputError(f"ik: must be a mapping, got {type(data).__name__}", field="ik")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in SETTING_KEYS:
                raise InputError(
                    f"{key}: unknown IK setting {key!r}; known: {sorted(known)}", field=str(key)
                )
        values = {k: v for k, v in data.items() if k != "preset"}
        if "preset" in data:
            return cls.preset(data["preset"], **values)
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> IKSettings:
        """The settings of preset ``name`` (:data:`PRESETS`), with ``changes``."""
        base = PRESETS.get(name) if isinstance(name, str) else None
        if base is None:
            raise InputError(
                f"preset: unknown IK preset {name!r}; known: {sorted(PRESETS)}", field="preset"
            )
        return dataclasses.replace(base, **changes)


PRESETS: dict[str, IKSettings] = {
    "reach": IKSettings(),
    "tatbot": IKSettings(
        pos_weight=32.0,
        ori_weight=1.0,
        rest_weight=0.1,
        limit_weight=32.0,
        lambda_initial=1.0,
        max_iterations=32,
        precise=False,
    ),
}
"""Named settings. ``reach``: the defaults. ``tatbot``: tatbot's own solver (pyroki's
weights, a rest pull, soft limits, 32 iterations): answers comparable to tatbot's, close to
its ready pose, within ~0.06 mm and ~0.02 rad of the bundled example's targets rather than
on them."""

SETTING_KEYS = frozenset({f.name for f in fields(IKSettings)} | {"preset"})
"""Every key `IKSettings.from_dict` takes: the fields and ``preset``."""
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(IKSettings)}

ADDED_SETTINGS: dict[str, str] = {}
"""IKSettings fields added after ZIK/1's first release, each with the zmq-ik version that
added it: ``{"name": "0.2.0"}``. `IKSettings.to_wire` leaves such a field out of a request
while it holds its default, so a client upgraded first still works with the older workers of
a rolling upgrade; set to anything else, an older worker refuses the request with a message
naming its version (`zmq_ik.model.ops.ik_settings_from_header`) rather than compute something
else. So a new field goes here, and its default must compute what the workers without it
compute (today's behaviour), or the old and new workers of one fleet answer differently.
Every field here is also read with its default when a request leaves it out (`from_dict`).
Empty: every field so far shipped with the first release."""
