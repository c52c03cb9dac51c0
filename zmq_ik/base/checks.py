"""Input checks shared by the wire (:mod:`zmq_ik.model.ops`), the data model and the IK engine.

numpy only (no JAX), so a robot checks its own input before a round trip with the same code
a worker uses. Every failure is an :class:`~zmq_ik.errors.InputError` whose ``field`` names
the culprit, worded ``"<field>: <problem>"``.

- scalars and arrays: :func:`as_array`, :func:`as_bool_array`, :func:`as_int`,
  :func:`as_float`, :func:`as_bool`, :func:`as_str`, :func:`as_quat`, :func:`prefixed`;
- IK input: :func:`check_targets` (target poses), :func:`check_rest_shape`,
  :func:`check_coordinates`; :func:`check_packed` (packed stroke pairs);
- FK input: :func:`check_joints` (joint vectors).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.errors import InputError

_NUMERIC_KINDS = "iuf"

Shape = tuple[int | str | None, ...]
"""Expected shape: an int is a fixed size; a string (a size's name, shown in messages) or
None (shown as N) is any size."""


SMALL = 64
"""Arrays of at most this many elements are checked in Python, on one ``tolist()``: a numpy
call on a tiny array (a control loop's single pose) costs ~20 µs once the program that ran
in between has pushed numpy's code out of the CPU caches, a loop over a few floats ~5 µs
(measured on the 2-CPU VM after each solve; hot, both cost ~1 µs)."""


def all_finite(arr: npt.NDArray[Any]) -> bool:
    """Whether every element of a numeric array is finite."""
    if arr.size <= SMALL:
        return all(map(math.isfinite, arr.ravel().tolist()))
    return bool(np.isfinite(arr).all())


def _shape_text(shape: Shape) -> str:
    parts = ["N" if d is None else str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _check_shape(arr: npt.NDArray[Any], name: str, shape: Shape) -> None:
    actual = arr.shape
    if len(actual) == len(shape):
        for d, a in zip(shape, actual, strict=True):  # a loop, not any(genexpr): on every request
            if type(d) is int and d != a:
                break
        else:
            return
    raise InputError(
        f"{name}: must have shape {_shape_text(shape)}, got {tuple(actual)}", field=name
    )


def as_array(
    value: Any,
    name: str,
    shape: Shape,
    dtype: type[np.floating[Any]] | np.dtype[Any] = np.float64,
    *,
    copy: bool = True,
    finite: bool = True,
) -> npt.NDArray[Any]:
    """Convert ``value`` to a read-only array of ``dtype`` and check its shape and finiteness.

    Booleans, strings and objects are refused (only integer and floating inputs are
    converted). Finiteness is checked after the conversion, so a float64 value that overflows
    float32 is refused too. With ``copy=False`` an input that is already of ``dtype`` is not
    copied: a read-only view of it is kept instead.
    """
    if type(value) is np.ndarray and not copy and value.dtype == dtype:
        # The common case (a decoded frame, an engine's or a caller's float32 array): the
        # same checks without the conversions.
        _check_shape(value, name, shape)
        if finite and not all_finite(value):
            raise InputError(f"{name}: contains NaN or inf", field=name)
        if value.flags.writeable:
            value = value.view()
            value.flags.writeable = False
        return value
    want = np.dtype(dtype)
    if value is None:
        raise InputError(f"{name}: is required (got None)", field=name)
    try:
        src = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{name}: not a numeric array ({exc})", field=name) from None
    if src.dtype.kind not in _NUMERIC_KINDS and src.size > 0:
        raise InputError(
            f"{name}: must hold numbers (a numeric array), got dtype {src.dtype}", field=name
        )
    if src.dtype == want:
        arr = src.copy() if copy else src
    elif src.dtype.itemsize > want.itemsize:  # may overflow to inf: refused below, not warned
        with np.errstate(over="ignore", invalid="ignore"):
            arr = src.astype(want)
    else:
        arr = src.astype(want)
    _check_shape(arr, name, shape)
    if finite and not all_finite(arr):
        raise InputError(f"{name}: contains NaN or inf", field=name)
    if arr is value:
        arr = arr.view()
    arr.setflags(write=False)
    return arr


def as_bool_array(
    value: Any, name: str, shape: Shape, *, copy: bool = True
) -> npt.NDArray[np.bool_]:
    """Convert ``value`` to a read-only bool array; only bool input (not 0/1 numbers) is accepted."""
    if value is None:
        raise InputError(f"{name}: is required (got None)", field=name)
    try:
        src = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not a bool array ({exc})", field=name) from None
    if src.dtype != np.bool_ and not (src.size == 0 and src.dtype.kind in _NUMERIC_KINDS):
        raise InputError(f"{name}: must have dtype bool, got {src.dtype}", field=name)
    arr = np.array(src, dtype=np.bool_, copy=True) if copy else np.asarray(src, dtype=np.bool_)
    _check_shape(arr, name, shape)
    if not copy:
        arr = arr.view()
    arr.setflags(write=False)
    return arr


def as_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``[lo, hi]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: must be an integer, got {value!r}", field=name)
    out = int(value)
    if out < lo or (hi is not None and out > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InputError(f"{name}: must be {rng}, got {out}", field=name)
    return out


def as_float(
    value: Any,
    name: str,
    lo: float | None = None,
    *,
    strict_lo: bool = False,
    hi: float | None = None,
) -> float:
    """A finite real number (not a bool), optionally ``>= lo`` (``> lo`` with ``strict_lo``)
    and ``<= hi``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InputError(f"{name}: must be a number, got {value!r}", field=name)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: must be a real number, got {value!r}", field=name) from None
    if not math.isfinite(out):
        raise InputError(f"{name}: must be finite, got {out}", field=name)
    if lo is not None and (out <= lo if strict_lo else out < lo):
        raise InputError(
            f"{name}: must be {'>' if strict_lo else '>='} {lo}, got {out}", field=name
        )
    if hi is not None and out > hi:
        raise InputError(f"{name}: must be <= {hi:g}, got {out:g}", field=name)
    return out


def as_bool(value: Any, name: str) -> bool:
    """A real bool (YAML ``true``/``false``), not a number or a string."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: must be true or false, got {value!r}", field=name)
    return bool(value)


def as_str(value: Any, name: str, *, empty: bool = True, optional: bool = False) -> Any:
    """A string (``None`` too when ``optional``); ``empty=False`` refuses ``""``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name}: must be a string, got {value!r}", field=name)
    if not empty and not value:
        raise InputError(f"{name}: must not be empty", field=name)
    return value


def as_quat(value: Any, name: str) -> npt.NDArray[np.float64]:
    """A (4,) wxyz quaternion, normalised (a norm within 1e-12 of 1 is kept bit for bit)."""
    q = as_array(value, name, (4,))
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise InputError(f"{name}: quaternion has zero norm", field=name)
    if abs(norm - 1.0) > 1e-12:
        q = q / norm
        q.setflags(write=False)
    return q


def prefixed(
    err: InputError, prefix: str, source: str | os.PathLike[str] | None = None
) -> InputError:
    """Re-home ``err`` under ``prefix`` (``"ik"`` + ``"pos_weight"`` -> ``"ik.pos_weight"``),
    and name ``source`` (a file) at the start of the message."""
    old = err.field
    new = f"{prefix}.{old}" if old else prefix
    msg = err.message
    if old and msg.startswith(old):
        msg = new + msg[len(old) :]
    elif not msg.startswith(new):
        msg = f"{new}: {msg}"
    if source is not None:
        msg = f"{source}: {msg}"
    return InputError(msg, field=new)


# --------------------------------------------------------------------------- IK input

MAX_COORDINATE = 1e4
"""Largest |target_pos| coordinate accepted (metres): past it float32 squares of the
residual overflow, and no arm reaches 10 km anyway."""


def check_coordinates(pos: npt.NDArray[Any]) -> None:
    """Refuse target positions beyond ``MAX_COORDINATE``."""
    if pos.size <= SMALL:
        far = any(abs(v) > MAX_COORDINATE for v in pos.ravel().tolist())
    else:
        far = bool(np.abs(pos).max() > MAX_COORDINATE)
    if far:
        raise InputError(
            f"target_pos: has coordinates beyond ±{MAX_COORDINATE:g} m (metres expected)",
            "target_pos",
        )


def _ndim(value: Any) -> int:
    """``np.ndim(value)``, or -1 for what has none (the array check then names the
    problem): how a check tells one pose (or vector) from a batch."""
    try:
        return int(np.ndim(value))
    except (TypeError, ValueError):
        return -1


def _poses(
    value: Any,
    name: str,
    width: int,
    n_ee: int | None,
    dtype: Any,
    one_pose: bool,
    finite: bool = True,
) -> npt.NDArray[Any]:
    if one_pose and _ndim(value) == 2:
        value = np.asarray(value)[None]
    shape = ("N", "n_ee" if n_ee is None else n_ee, width)
    return as_array(value, name, shape, dtype, copy=False, finite=finite)


def check_targets(
    target_wxyz: Any,
    target_pos: Any,
    *,
    n_ee: int | None = None,
    dtype: type[np.floating[Any]] = np.float32,
    one_pose: bool = False,
    active: Any = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Target poses as read-only ``dtype`` arrays: ``target_wxyz`` (N, n_ee, 4) quaternions
    (any non-zero norm) and ``target_pos`` (N, n_ee, 3) metres, finite, within
    ``MAX_COORDINATE``. ``n_ee``: the end effectors the robot has (None: any, but the same in
    both). ``one_pose``: also accept one pose, (n_ee, 4) and (n_ee, 3), returned as N = 1.
    ``active`` (`check_active`): an end effector without a target may have any pose there,
    NaN included, returned as `PLACEHOLDER_WXYZ` at the origin."""
    finite = active is None
    wxyz = _poses(target_wxyz, "target_wxyz", 4, n_ee, dtype, one_pose, finite)
    pos = _poses(target_pos, "target_pos", 3, n_ee, dtype, one_pose, finite)
    if wxyz.shape[:2] != pos.shape[:2]:
        raise InputError(
            f"target_pos: target_wxyz {wxyz.shape} and target_pos {pos.shape} disagree on "
            "(N, n_ee)",
            "target_pos",
        )
    if active is not None:
        on = check_active(active, *wxyz.shape[:2])[..., None]
        if not on.all():
            wxyz = np.where(on, wxyz, np.asarray(PLACEHOLDER_WXYZ, wxyz.dtype))
            pos = np.where(on, pos, pos.dtype.type(0.0))
            wxyz.flags.writeable = pos.flags.writeable = False
        for arr, name in ((wxyz, "target_wxyz"), (pos, "target_pos")):
            if not all_finite(arr):
                raise InputError(f"{name}: contains NaN or inf", field=name)
    check_coordinates(pos)
    if _zero_quaternion(wxyz):
        raise InputError("target_wxyz: holds a zero quaternion", "target_wxyz")
    return wxyz, pos


PLACEHOLDER_WXYZ = (1.0, 0.0, 0.0, 0.0)
"""The orientation an end effector without a target gets (`check_targets`): any valid pose
would do, since it is ignored."""


def check_active(active: Any, n_poses: int, n_ee: int) -> npt.NDArray[np.bool_]:
    """Which end effectors of each of ``n_poses`` targets have one (``solve``'s
    ``active``): (N, n_ee) bool, or (n_ee,) for every pose; returned (N, n_ee), read-only."""
    if _ndim(active) == 1:
        row = as_bool_array(active, "active", (n_ee,), copy=False)
        out = np.broadcast_to(row, (n_poses, n_ee))
        out.setflags(write=False)
        return out
    return as_bool_array(active, "active", (n_poses, n_ee), copy=False)


def _zero_quaternion(wxyz: npt.NDArray[Any]) -> bool:
    """Whether a (..., 4) array holds a quaternion of norm < 1e-6."""
    if wxyz.size <= SMALL:
        v = wxyz.ravel().tolist()
        return any(
            v[i] * v[i] + v[i + 1] * v[i + 1] + v[i + 2] * v[i + 2] + v[i + 3] * v[i + 3] < 1e-12
            for i in range(0, len(v), 4)
        )
    return bool((np.einsum("...i,...i->...", wxyz, wxyz) < 1e-12).any())


def check_rest_shape(
    rest: Any, n_joints: int | None = None, dtype: type[np.floating[Any]] = np.float32
) -> npt.NDArray[Any]:
    """A rest pose as a read-only ``dtype`` array of ``n_joints`` (None: any number) finite
    values. How far it may sit outside the joint limits is the IK engine's check
    (``zmq_ik.ik.check_rest``): it needs the robot."""
    return as_array(
        rest, "rest", ("n_joints" if n_joints is None else n_joints,), dtype, copy=False
    )


MAX_JOINT_VALUE = 1e4
"""Largest |joint value| accepted (radians or metres): far beyond any joint's range, and
small enough that FK stays finite in float32."""


def check_joints(
    joints: Any, n_joints: int | None = None, *, one_pose: bool = False
) -> npt.NDArray[np.float32]:
    """Joint vectors as a read-only float32 (N, n_joints) array, finite and within
    ``MAX_JOINT_VALUE`` (None: any number of joints). ``one_pose``: also accept one vector,
    (n_joints,), returned as N = 1. Limits are not checked: FK of any configuration is
    defined (a continuous joint has none)."""
    if one_pose and _ndim(joints) == 1:
        joints = np.asarray(joints)[None]
    q = as_array(
        joints,
        "joints",
        ("N", "n_joints" if n_joints is None else n_joints),
        np.float32,
        copy=False,
    )
    if q.shape[1] < 1:
        raise InputError("joints: needs at least one joint per vector", "joints")
    big = (
        any(abs(v) > MAX_JOINT_VALUE for v in q.ravel().tolist())
        if q.size <= SMALL
        else bool(q.size and np.abs(q).max() > MAX_JOINT_VALUE)
    )
    if big:
        raise InputError(
            f"joints: has values beyond ±{MAX_JOINT_VALUE:g} (radians or metres expected)",
            "joints",
        )
    return q


def check_packed(
    coords: Any,
    is_inkdip: Any,
    is_rest: Any,
    stroke_length: int | None = None,
    n_ee: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Packed stroke groups as read-only arrays (not copied when already of the right dtype):
    ``coords`` (b, n_ee, l, 3) float32 finite, ``is_inkdip`` and ``is_rest`` (b, n_ee) bool,
    with ``l == stroke_length`` and ``n_ee`` (a scene's end effectors) when given."""
    length: int | str = "l" if stroke_length is None else stroke_length
    arms: int | str = "n_ee" if n_ee is None else n_ee
    c = as_array(coords, "coords", ("b", arms, length, 3), np.float32, copy=False)
    b, k = c.shape[:2]
    inkdip = as_bool_array(is_inkdip, "is_inkdip", (b, k), copy=False)
    rest = as_bool_array(is_rest, "is_rest", (b, k), copy=False)
    return c, inkdip, rest


def check_output(
    output: str | os.PathLike[str], field: str = "output", example: str | None = None
) -> Path:
    """``output`` if a file can be written there, else `InputError` (field ``field``; a
    directory is told a file name in it, ``example``): checked before any work, so a typo
    does not cost the whole computation."""
    p = Path(output).expanduser()
    if p.is_dir():
        name = example or ("report.png" if field == "plot" else "strokebatch.safetensors")
        raise InputError(f"{p} is a directory; give a file name, e.g. {p / name}", field)
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"{p}: directory {parent} does not exist", field)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise InputError(f"{p}: cannot write in {parent}: {e.strerror or e}", field) from e
    return p
