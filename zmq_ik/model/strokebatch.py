"""IK results of a stroke batch: :class:`StrokeBatch` (safetensors I/O compatible with
tatbot).

Import these names from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

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

from zmq_ik.base.checks import as_array
from zmq_ik.base.docs import documented
from zmq_ik.errors import InputError
from zmq_ik.model.common import Dim, ValueEq, check_errors, init_with
from zmq_ik.settings.ik import ORI_TOL, POS_TOL, check_tolerance

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
            check_errors(arr, name)
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


init_with(StrokeBatch, _fold_arms)
