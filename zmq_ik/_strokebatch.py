"""IK results: :class:`StrokeBatch` (safetensors I/O compatible with tatbot),
:class:`IKSolution` and :class:`EEPoses` (FK).

Import these names from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.numpy

from zmq_ik._checks import SMALL, as_array, as_bool, as_bool_array
from zmq_ik._docs import documented
from zmq_ik._scene import ORI_TOL, POS_TOL, Dim, ValueEq, check_tolerance, init_with
from zmq_ik.errors import IKError, InputError

logger = logging.getLogger(__name__)

TATBOT_TENSORS: tuple[str, ...] = ("ee_pos_l", "ee_pos_r", "ee_rot_l", "ee_rot_r", "joints")
"""Tensor names of tatbot's ``StrokeBatch`` safetensors files, exactly what a file of two end
effectors written by default holds: tatbot's ``StrokeBatch.load`` passes every tensor to its
constructor."""
ARM_TENSORS: tuple[str, ...] = ("ee_pos", "ee_rot", "joints")
"""Tensor names of a file of another number of end effectors than two: ``ee_pos`` (b, l, o,
n_ee, 3) and ``ee_rot`` (b, l, o, n_ee, 4), stacked in ``ee_links`` order."""
ERROR_TENSORS: tuple[str, ...] = ("pos_err", "ori_err")
"""Tensors written on request (``save(path, errors=True)``, ``compute --errors``): achieved IK
error per pose and arm. tatbot's loader refuses a file that has them."""

_TWO_ARM = {"ee_pos_l": ("ee_pos", 0), "ee_pos_r": ("ee_pos", 1)} | {
    "ee_rot_l": ("ee_rot", 0),
    "ee_rot_r": ("ee_rot", 1),
}
"""tatbot's per-arm tensors: row 0 / 1 of the stacked ``ee_pos`` / ``ee_rot``."""


def _fold_arms(values: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with tatbot's per-arm arrays (``ee_pos_l``...: `_TWO_ARM`)
    stacked into ``ee_pos`` and ``ee_rot``, each checked under its own name; errors NaN
    (unknown) when not given."""
    if not any(k in values for k in _TWO_ARM):
        return values
    out = {k: v for k, v in values.items() if k not in _TWO_ARM}
    for name, size in (("ee_pos", 3), ("ee_rot", 4)):
        if name in values:
            raise InputError(f"{name}: given with {name}_l/_r; give one of them", field=name)
        rows = []
        for s in "lr":
            key = f"{name}_{s}"
            if key not in values:
                raise InputError(f"{key}: missing (given {name}_{'lr'[s == 'l']})", field=key)
            shape = (None, None, None, size)
            rows.append(as_array(values[key], key, shape, np.float32, copy=False))
        if rows[0].shape != rows[1].shape:
            raise InputError(
                f"{name}_r: shape {rows[1].shape} differs from {name}_l's {rows[0].shape}",
                field=f"{name}_r",
            )
        out[name] = np.stack(rows, axis=3)
    for name in ERROR_TENSORS:
        if out.get(name) is None:
            out[name] = np.full((*out["ee_pos"].shape[:3], 2), np.nan, np.float32)
    return out


def _check_errors(arr: npt.NDArray[np.float32], name: str) -> None:
    """IK errors are >= 0, or NaN where unknown (never inf)."""
    if arr.size <= SMALL:  # NaN compares False: allowed
        bad = any(v < 0 or v == math.inf for v in arr.ravel().tolist())
    else:
        bad = bool(np.isinf(arr).any() or (arr < 0).any())
    if bad:
        raise InputError(f"{name}: must be >= 0 or NaN (unknown), never inf", field=name)


@documented
@dataclass(frozen=True, eq=False)
class StrokeBatch(ValueEq):
    """IK results for a batch of stroke groups: ``b`` groups (pairs, for two arms), ``l``
    poses, ``o`` depth offsets, ``n_ee`` end effectors.

    All arrays are float32 with matching leading dims (checked). Arrays already float32
    are not copied; they are stored as read-only views. ``save`` writes tatbot's tensors
    (``TATBOT_TENSORS``) for two end effectors, ``ARM_TENSORS`` otherwise, and
    ``pos_err``/``ori_err`` too with ``errors=True``; ``load`` reads both, files without
    the error tensors (tatbot's own) with errors NaN (= unknown).

    Two end effectors may be given as tatbot's per-arm arrays instead of ``ee_pos`` and
    ``ee_rot``: ``StrokeBatch(ee_pos_l=, ee_pos_r=, ee_rot_l=, ee_rot_r=, joints=, ...)``,
    (b, l, o, 3) / (b, l, o, 4) each, errors then optional (NaN: unknown); properties of
    those names read them back.
    """

    ee_pos: npt.NDArray[Any]
    """(b, l, o, n_ee, 3) end-effector target positions, metres, world frame."""
    ee_rot: npt.NDArray[Any]
    """(b, l, o, n_ee, 4) end-effector target orientations, wxyz, world frame."""
    joints: npt.NDArray[Any]
    """(b, l, o, n_joints) joint solution in URDF units (14 for tatbot: left 7, right 7)."""
    pos_err: npt.NDArray[Any]
    """(b, l, o, n_ee) achieved position error per end effector (tatbot: left, right),
    metres; NaN: none (the arm rests, or the file has no error tensors)."""
    ori_err: npt.NDArray[Any]
    """(b, l, o, n_ee) achieved orientation error per end effector, radians; NaN as
    ``pos_err``."""

    def __post_init__(self) -> None:
        first = as_array(self.ee_pos, "ee_pos", (None, None, None, None, 3), np.float32, copy=False)
        b, n, o, n_ee = first.shape[:4]
        if n_ee < 1:
            raise InputError("ee_pos: needs at least one end effector", field="ee_pos")
        object.__setattr__(self, "ee_pos", first)
        rot = as_array(self.ee_rot, "ee_rot", (b, n, o, n_ee, 4), np.float32, copy=False)
        object.__setattr__(self, "ee_rot", rot)
        for name in ERROR_TENSORS:
            arr = as_array(
                getattr(self, name), name, (b, n, o, n_ee), np.float32, copy=False, finite=False
            )
            _check_errors(arr, name)
            object.__setattr__(self, name, arr)
        joints = as_array(self.joints, "joints", (b, n, o, None), np.float32, copy=False)
        if joints.shape[3] < 1:
            raise InputError("joints: needs at least one joint (last dim >= 1)", field="joints")
        object.__setattr__(self, "joints", joints)

    def _arm(self, name: str) -> npt.NDArray[np.float32]:
        """tatbot's per-arm tensor ``name`` (``ee_pos_l``...) of a two-arm batch."""
        stacked, k = _TWO_ARM[name]
        if self.n_ee != 2:
            raise AttributeError(f"{name}: a batch of {self.n_ee} end effector(s); use {stacked}")
        return getattr(self, stacked)[..., k, :]  # type: ignore[no-any-return]

    ee_pos_l = property(lambda self: self._arm("ee_pos_l"), doc="``ee_pos[..., 0, :]``.")
    ee_pos_r = property(lambda self: self._arm("ee_pos_r"), doc="``ee_pos[..., 1, :]``.")
    ee_rot_l = property(lambda self: self._arm("ee_rot_l"), doc="``ee_rot[..., 0, :]``.")
    ee_rot_r = property(lambda self: self._arm("ee_rot_r"), doc="``ee_rot[..., 1, :]``.")

    # -- shape ----------------------------------------------------------------------------------

    b = Dim("joints", 0, "Number of stroke groups (pairs, for two arms).")
    l = Dim("joints", 1, "Poses per stroke.")  # noqa: E741
    o = Dim("joints", 2, "Depth offsets per pose.")
    n_joints = Dim("joints", 3, "Joints per configuration (14 for tatbot).")
    n_ee = Dim("ee_pos", 3, "End effectors (arms) per pose.")

    @property
    def n_poses(self) -> int:
        """``b * l * o``: configurations solved."""
        return self.b * self.l * self.o

    def __len__(self) -> int:
        return self.b

    def judged(self) -> npt.NDArray[np.bool_]:
        """(b, l, o, n_ee): both errors known for that pose and arm (NaN: the arm rests, or the
        file has no error tensors)."""
        return ~np.isnan(self.pos_err) & ~np.isnan(self.ori_err)

    def __repr__(self) -> str:
        judged = int(self.judged().any(axis=-1).sum())
        errors = "known" if judged == self.n_poses else "unknown" if not judged else "partly known"
        return (
            f"StrokeBatch(b={self.b}, l={self.l}, o={self.o}, n_ee={self.n_ee}, "
            f"n_joints={self.n_joints}, "
            f"joints {tuple(self.joints.shape)} float32, errors {errors})"
        )

    def __getitem__(self, index: slice) -> StrokeBatch:
        """Stroke pairs ``index`` (a slice) as a new StrokeBatch (views, no copy)."""
        if not isinstance(index, slice):
            raise TypeError("StrokeBatch indices must be slices (batch[i:j])")
        return StrokeBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def offset_joints(
        self, stroke_idx: int, pose_idx: int, offset_idx_l: int, offset_idx_r: int
    ) -> npt.NDArray[np.float32]:
        """Like tatbot's: left joints from one offset, right joints from another, (n_joints,)
        (two arms of as many joints each)."""
        half = self.n_joints // 2
        left = self.joints[stroke_idx, pose_idx, offset_idx_l][:half]
        right = self.joints[stroke_idx, pose_idx, offset_idx_r][half:]
        return np.concatenate([left, right])

    # -- combine --------------------------------------------------------------------------------

    @classmethod
    def concat(cls, batches: Iterable[StrokeBatch]) -> StrokeBatch:
        """Join batches along ``b`` (e.g. fan-out chunks, in order). ``l``, ``o`` and
        ``n_joints`` must match; at least one batch is needed."""
        items = list(batches)
        if not items:
            raise InputError(
                "batches: need at least one StrokeBatch to concatenate", field="batches"
            )
        first = items[0]
        for i, item in enumerate(items):
            if not isinstance(item, StrokeBatch):
                raise InputError(
                    f"batches[{i}]: not a StrokeBatch ({type(item).__name__})",
                    field=f"batches[{i}]",
                )
            if (item.joints.shape[1:], item.n_ee) != (first.joints.shape[1:], first.n_ee):
                raise InputError(
                    f"batches[{i}]: (l, o, n_joints) = {item.joints.shape[1:]}, n_ee = "
                    f"{item.n_ee} differ from batches[0]'s {first.joints.shape[1:]}, {first.n_ee}",
                    field=f"batches[{i}]",
                )
        if len(items) == 1:
            return first
        return cls(
            **{
                f.name: np.concatenate([getattr(it, f.name) for it in items], axis=0)
                for f in fields(cls)
            }
        )

    # -- summary ----------------------------------------------------------------------------------

    def summary(self, pos_tol: float = POS_TOL, ori_tol: float = ORI_TOL) -> dict[str, Any]:
        """Error statistics over every pose and arm (NaN errors ignored); tolerances in metres
        and radians (defaults: `POS_TOL`, `ORI_TOL`, as a default `Scene`'s).

        Keys: ``n_poses``; ``pos_err_median``, ``pos_err_max`` (m); ``ori_err_median``,
        ``ori_err_max`` (rad) — NaN when no error is known; ``n_pos_over`` / ``n_ori_over``
        / ``n_over``: poses (b*l*o) where either arm's position / orientation / either error
        exceeds its tolerance; ``n_unknown``: poses where no arm has both errors known (a file
        without error tensors; an arm with NaN errors beside a judged one rests: it has no
        target); ``pos_tol``, ``ori_tol``.
        """
        pos_tol = check_tolerance(pos_tol, "pos_tol")
        ori_tol = check_tolerance(ori_tol, "ori_tol")

        def stats(arr: npt.NDArray[np.float32]) -> tuple[float, float]:
            known = arr[~np.isnan(arr)]
            if known.size == 0:
                return math.nan, math.nan
            return float(np.median(known)), float(known.max())

        pos_med, pos_max = stats(self.pos_err)
        ori_med, ori_max = stats(self.ori_err)
        pos_over = (self.pos_err > pos_tol).any(axis=-1)
        ori_over = (self.ori_err > ori_tol).any(axis=-1)
        unknown = ~self.judged().any(axis=-1)
        return {
            "n_poses": self.n_poses,
            "pos_err_median": pos_med,
            "pos_err_max": pos_max,
            "ori_err_median": ori_med,
            "ori_err_max": ori_max,
            "n_pos_over": int(pos_over.sum()),
            "n_ori_over": int(ori_over.sum()),
            "n_over": int((pos_over | ori_over).sum()),
            "n_unknown": int(unknown.sum()),
            "pos_tol": pos_tol,
            "ori_tol": ori_tol,
        }

    # -- safetensors ----------------------------------------------------------------------------

    def tensors(self, *, errors: bool) -> dict[str, npt.NDArray[np.float32]]:
        """The tensors `save` writes (and a ``strokebatch`` reply carries, errors included)."""
        return self._tensors(errors)

    def _tensors(self, errors: bool) -> dict[str, npt.NDArray[np.float32]]:
        names = (TATBOT_TENSORS if self.n_ee == 2 else ARM_TENSORS) + (
            ERROR_TENSORS if errors else ()
        )
        return {
            n: np.ascontiguousarray(self._arm(n) if n in _TWO_ARM else getattr(self, n))
            for n in names
        }

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, npt.NDArray[Any]], source: str) -> StrokeBatch:
        """A batch from a file's (or a reply's) tensors: `ARM_TENSORS` when it has
        ``ee_pos``, else tatbot's; errors NaN when absent."""
        wanted = ARM_TENSORS if "ee_pos" in tensors else TATBOT_TENSORS
        missing = [n for n in wanted if n not in tensors]
        if missing:
            raise InputError(
                f"{source}: missing tensor(s) {', '.join(missing)} (a StrokeBatch file needs "
                f"{', '.join(TATBOT_TENSORS)}, or {', '.join(ARM_TENSORS)})",
                field=missing[0],
            )
        kwargs: dict[str, Any] = {n: tensors[n] for n in wanted}
        for name in kwargs:
            if np.asarray(kwargs[name]).dtype.kind != "f":
                raise InputError(
                    f"{source}: tensor {name} must be floating point, got {kwargs[name].dtype}",
                    field=name,
                )
        for name in ERROR_TENSORS:
            if name in tensors:
                kwargs[name] = tensors[name]
        ignored = sorted(set(tensors) - set(wanted) - set(ERROR_TENSORS))
        if ignored:
            logger.debug("%s: ignoring extra tensors %s", source, ignored)
        try:
            if wanted == TATBOT_TENSORS:
                return cls(**kwargs)
            shape = np.asarray(kwargs["ee_pos"]).shape
            for name in ERROR_TENSORS:
                if name not in kwargs and len(shape) == 5:
                    kwargs[name] = np.full(shape[:4], np.nan, dtype=np.float32)
            return cls(**kwargs)
        except InputError as exc:
            raise InputError(f"{source}: {exc.message}", field=exc.field) from None

    def save(self, path: str | os.PathLike[str], *, errors: bool = False) -> None:
        """Write a safetensors file that tatbot's ``StrokeBatch.load`` reads: exactly tatbot's
        tensors (``TATBOT_TENSORS``; `ARM_TENSORS` for another number of end effectors than
        two, which tatbot has not). ``errors=True`` adds ``pos_err``/``ori_err`` (for
        :meth:`load`, ``zmq-ik report``), which tatbot's loader refuses: it passes every
        tensor in the file to its constructor."""
        safetensors.numpy.save_file(self._tensors(errors), str(Path(path)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StrokeBatch:
        """Read a safetensors file written by :meth:`save` or by tatbot (missing error tensors
        become NaN; unknown tensors are ignored; float16/64 tensors are cast to float32)."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"{p}: file not found")
        try:
            tensors = safetensors.numpy.load_file(str(p))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise InputError(f"{p}: not a readable safetensors file: {exc}") from None
        return cls.from_tensors(tensors, str(p))

    def to_bytes(self, *, errors: bool = False) -> bytes:
        """The safetensors file content (see :meth:`save`)."""
        return safetensors.numpy.save(self._tensors(errors))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> StrokeBatch:
        """Inverse of :meth:`to_bytes` (reads tatbot's files' content too)."""
        try:
            tensors = safetensors.numpy.load(bytes(data))
        except Exception as exc:  # safetensors raises several types for corrupt data
            raise InputError(f"<bytes>: not readable safetensors data: {exc}") from None
        return cls.from_tensors(tensors, "<bytes>")


def verdict(summary: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether every pose of a summary (``n_poses``, ``n_over``, ``n_unknown``) is known to be
    within tolerance, and one line saying so (`compute`'s verdict, `IKSolution`'s strict)."""
    n, over, unknown = summary["n_poses"], summary["n_over"], summary["n_unknown"]
    if over:
        return False, f"{over} of {n} poses miss tolerance"
    if unknown:
        return False, f"{unknown} of {n} poses have no known error: cannot tell"
    return True, f"all {n} poses within tolerance"


def check_judging(pos_tol: Any, ori_tol: Any, strict: Any) -> tuple[float, float, bool]:
    """A solve's judging arguments, checked as ``compute`` checks them (`check_tolerance`;
    ``strict`` a real bool), before any work: (pos_tol, ori_tol, strict)."""
    return (
        check_tolerance(pos_tol, "pos_tol"),
        check_tolerance(ori_tol, "ori_tol"),
        as_bool(strict, "strict"),
    )


def _worst(arr: npt.NDArray[np.float32]) -> str:
    """The largest known (not NaN) value of ``arr``, for messages: ``"unknown"`` if none."""
    known = arr[~np.isnan(arr)]
    return f"{known.max():.3g}" if known.size else "unknown"


@documented
@dataclass(frozen=True, eq=False)
class IKSolution(ValueEq):
    """Result of a plain IK solve of ``N`` targets for a robot with ``n_ee`` end effectors.

    float32 arrays, not copied when already float32 (read-only views). ``reached`` says per
    pose whether every end effector is within ``pos_tol`` and ``ori_tol`` of its target (the
    tolerances ``solve`` was given; defaults `zmq_ik.model.POS_TOL`, `ORI_TOL`: a default
    Scene's), ``n_over`` how many poses are not: check it before commanding ``joints``. An
    unreachable target still gets the best answer found; ``solve(strict=True)`` raises
    `IKError` instead (`require_reached`).
    """

    joints: npt.NDArray[Any]
    """(N, n_joints) joint solution in URDF units."""
    pos_err: npt.NDArray[Any]
    """(N, n_ee) achieved position error per end effector, metres; NaN = unknown."""
    ori_err: npt.NDArray[Any]
    """(N, n_ee) achieved orientation error per end effector, radians; NaN = unknown."""
    pos_tol: float = POS_TOL
    """Position tolerance that judges ``reached``, metres (<= `MAX_POS_TOL`; default
    `POS_TOL`)."""
    ori_tol: float = ORI_TOL
    """Orientation tolerance that judges ``reached``, radians (<= `MAX_ORI_TOL`; default
    `ORI_TOL`)."""
    active: npt.NDArray[Any] | None = None
    """(N, n_ee) bool: which end effectors had a target (``solve(..., active=...)``; None:
    all). ``reached`` judges only those; the others' errors are NaN (no target)."""

    def __post_init__(self) -> None:
        joints = as_array(self.joints, "joints", (None, None), np.float32, copy=False)
        n = joints.shape[0]
        object.__setattr__(self, "joints", joints)
        pos = as_array(self.pos_err, "pos_err", (n, None), np.float32, copy=False, finite=False)
        _check_errors(pos, "pos_err")
        ori = as_array(
            self.ori_err, "ori_err", (n, pos.shape[1]), np.float32, copy=False, finite=False
        )
        _check_errors(ori, "ori_err")
        object.__setattr__(self, "pos_err", pos)
        object.__setattr__(self, "ori_err", ori)
        object.__setattr__(self, "pos_tol", check_tolerance(self.pos_tol, "pos_tol"))
        object.__setattr__(self, "ori_tol", check_tolerance(self.ori_tol, "ori_tol"))
        if self.active is not None:
            active = as_bool_array(self.active, "active", pos.shape, copy=False)
            object.__setattr__(self, "active", active)

    @classmethod
    def trusted(
        cls,
        joints: npt.NDArray[np.float32],
        pos_err: npt.NDArray[np.float32],
        ori_err: npt.NDArray[np.float32],
        pos_tol: float = POS_TOL,
        ori_tol: float = ORI_TOL,
        active: npt.NDArray[np.bool_] | None = None,
    ) -> IKSolution:
        """An IKSolution of arrays the IK engine has just made (float32, consistent shapes,
        errors >= 0 or NaN; ``active`` read-only bool) and of tolerances already checked
        (`check_judging`), without the constructor's checks (~15 µs a solve): made
        read-only, not copied. Never for arrays that came from a peer or a caller."""
        sol = object.__new__(cls)
        joints.flags.writeable = pos_err.flags.writeable = ori_err.flags.writeable = False
        sol.__dict__.update(
            joints=joints,
            pos_err=pos_err,
            ori_err=ori_err,
            pos_tol=pos_tol,
            ori_tol=ori_tol,
            active=active,
        )
        return sol

    # -- judged ---------------------------------------------------------------------------------
    # Computed on first use, both at once, and kept in the instance dict (a frozen dataclass
    # has no slots; a cached_property is found there first): a solve nobody asks pays nothing.

    @functools.cached_property
    def reached(self) -> npt.NDArray[np.bool_]:
        """(N,) bool, read-only: every end effector's ``pos_err <= pos_tol`` and ``ori_err <=
        ori_tol`` (of those with a target: ``active``). An unknown (NaN) error is not
        reached."""
        pos, ori, pos_tol, ori_tol = self.pos_err, self.ori_err, self.pos_tol, self.ori_tol
        if self.active is not None:  # no target: nothing to miss
            out = np.asarray((((pos <= pos_tol) & (ori <= ori_tol)) | ~self.active).all(axis=1))
            n_reached = int(np.count_nonzero(out))
        elif pos.size <= SMALL:  # a control loop's pose: a few floats in Python (see SMALL)
            flags = [
                all(p <= pos_tol for p in prow) and all(o <= ori_tol for o in orow)
                for prow, orow in zip(pos.tolist(), ori.tolist(), strict=True)
            ]
            out = np.array(flags, dtype=np.bool_)
            n_reached = sum(flags)
        else:  # NaN compares False: not reached
            out = np.asarray(((pos <= pos_tol) & (ori <= ori_tol)).all(axis=1))
            n_reached = int(np.count_nonzero(out))
        out.flags.writeable = False
        self.__dict__["n_over"] = len(out) - n_reached
        return out

    @functools.cached_property
    def n_over(self) -> int:
        """Poses not ``reached``: an error over its tolerance, or unknown (NaN). The name is
        the ``n_over`` of ``StrokeBatch.summary()`` and ``compute``'s verdict (which counts
        unknown errors apart, as ``n_unknown``: an arm that rests has none)."""
        self.reached  # noqa: B018 (sets n_over too)
        return int(self.__dict__["n_over"])

    def require_reached(self) -> None:
        """Raise `IKError` unless every pose is ``reached`` (``solve(..., strict=True)``), naming
        how many of N missed and the worst errors against the tolerances."""
        if self.n_over:
            _, line = verdict({"n_poses": len(self), "n_over": self.n_over, "n_unknown": 0})
            nan = np.isnan(self.pos_err) | np.isnan(self.ori_err)
            if self.active is not None:
                nan &= self.active
            unknown = int(nan.any(axis=1).sum())
            raise IKError(
                f"{line}: worst pos_err {_worst(self.pos_err)} m (pos_tol {self.pos_tol:g}), "
                f"ori_err {_worst(self.ori_err)} rad (ori_tol {self.ori_tol:g})"
                + (f", {unknown} with an unknown (NaN) error" if unknown else "")
                + " (strict)"
            )

    def __len__(self) -> int:
        return int(self.joints.shape[0])

    def __repr__(self) -> str:
        return (
            f"IKSolution(N={len(self)}, n_joints={self.n_joints}, n_ee={self.n_ee}, "
            f"n_over={self.n_over}, worst pos_err {_worst(self.pos_err)} m, "
            f"ori_err {_worst(self.ori_err)} rad)"
        )

    n_joints = Dim("joints", 1, "Joints per configuration.")
    n_ee = Dim("pos_err", 1, "End effectors per target.")


@documented
@dataclass(frozen=True, eq=False)
class EEPoses(ValueEq):
    """End-effector poses of ``N`` joint vectors: forward kinematics (``IKClient.fk``), the
    numbers the IK engine computes. The fields are in `IKClient.solve`'s order, so
    ``client.solve(robot, fk.wxyz, fk.pos)`` asks for the same poses back.

    float32 arrays, not copied when already float32 (read-only views)."""

    ee_links: tuple[str, ...]
    """End-effector links, in the order of the arrays' second axis."""
    wxyz: npt.NDArray[Any]
    """(N, n_ee, 4) orientation per end effector, unit quaternion w-x-y-z, world frame."""
    pos: npt.NDArray[Any]
    """(N, n_ee, 3) position per end effector, metres, world frame."""

    def __post_init__(self) -> None:
        if isinstance(self.ee_links, str) or not all(
            isinstance(x, str) and x for x in self.ee_links
        ):
            raise InputError("ee_links: must be a list of link names", field="ee_links")
        ee = tuple(self.ee_links)
        wxyz = as_array(self.wxyz, "wxyz", (None, len(ee), 4), np.float32, copy=False)
        pos = as_array(self.pos, "pos", (wxyz.shape[0], len(ee), 3), np.float32, copy=False)
        object.__setattr__(self, "ee_links", ee)
        object.__setattr__(self, "wxyz", wxyz)
        object.__setattr__(self, "pos", pos)

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def __repr__(self) -> str:
        return f"EEPoses(N={len(self)}, ee_links={list(self.ee_links)})"

    n_ee = Dim("pos", 1, "End effectors per pose.")


init_with(StrokeBatch, _fold_arms)
