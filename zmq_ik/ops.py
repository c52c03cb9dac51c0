"""The operations' wire schemas (`solve`, `strokebatch`), both directions, in one place.

Clients build requests and read replies with these functions; workers read requests and
build replies with them. Only numpy here, so the robot side needs no JAX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from zmq_ik.errors import InputError
from zmq_ik.model import IKSettings, IKSolution, PackedStrokes, Scene, StrokeBatch

SOLVE = "solve"
STROKEBATCH = "strokebatch"
DESCRIBE = "describe"
MAX_POSES_PER_REQUEST = 1 << 20
"""Poses (solve) or stroke pairs × length × offsets (strokebatch) accepted in one request;
bigger jobs are split by the client (`IKClient.compute` does it for you)."""

_IK_FIELDS = {f.name for f in fields(IKSettings)}


MAX_COORDINATE = 1e4
"""Largest |target_pos| coordinate accepted (metres): past it float32 squares of the
residual overflow, and no arm reaches 10 km anyway."""


def check_coordinates(pos: np.ndarray) -> None:
    """Refuse target positions beyond ``MAX_COORDINATE`` (wire input and library input)."""
    if pos.size and np.abs(pos).max() > MAX_COORDINATE:
        raise InputError(
            f"target_pos has coordinates beyond ±{MAX_COORDINATE:g} m (metres expected)",
            "target_pos",
        )


def _array(
    arrays: Mapping[str, np.ndarray],
    name: str,
    shape: Sequence[int | None],
    dims: Sequence[str] = (),
) -> np.ndarray:
    """Fetch ``arrays[name]``, check its rank, sizes and finiteness; float32 out. ``dims``
    names the free sizes in messages (default N)."""
    if name not in arrays:
        raise InputError(f"missing array {name!r}", name)
    arr = np.asarray(arrays[name])
    if arr.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, arr.shape, strict=True)
    ):
        names = iter(dims)
        want = "(" + ", ".join(next(names, "N") if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{name} must have shape {want}, got {arr.shape}", name)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric, got {arr.dtype}", name)
    out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise InputError(f"{name} contains NaN or inf", name)
    return out


def _as_float32(value: Any, name: str) -> np.ndarray:
    """A caller's array-like as float32, or an `InputError` naming it."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: not a numeric array ({e})", name) from e


def ik_settings_from_header(value: Any) -> IKSettings | None:
    """IK settings sent as a map (unknown keys refused, so typos do not pass silently)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("ik must be a map of IK settings", "ik")
    unknown = set(value) - _IK_FIELDS
    if unknown:
        raise InputError(
            f"unknown IK settings {sorted(unknown)}; known: {sorted(_IK_FIELDS)}", "ik"
        )
    try:
        return IKSettings(**value)
    except TypeError as e:
        raise InputError(f"bad IK settings: {e}", "ik") from e


def ik_settings_to_header(settings: IKSettings | None) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {f.name: getattr(settings, f.name) for f in fields(IKSettings)}


# --------------------------------------------------------------------------- solve


def solve_request(
    target_wxyz: Any,
    target_pos: Any,
    rest: Any = None,
    ee_links: Sequence[str] | None = None,
    ik: IKSettings | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a `solve` request. Single poses (n_ee, 4)/(n_ee, 3) are batched."""
    wxyz = _as_float32(target_wxyz, "target_wxyz")
    pos = _as_float32(target_pos, "target_pos")
    if wxyz.ndim == 2:
        wxyz = wxyz[None]
    if pos.ndim == 2:
        pos = pos[None]
    header: dict[str, Any] = {}
    if ee_links is not None:
        header["ee_links"] = [ee_links] if isinstance(ee_links, str) else list(ee_links)
    if ik is not None:
        header["ik"] = ik_settings_to_header(ik)
    arrays = {"target_wxyz": wxyz, "target_pos": pos}
    if rest is not None:
        arrays["rest"] = _as_float32(rest, "rest")
    # Check here too, so a robot sees its own mistake without a round trip.
    read_solve_request(header, arrays)
    return header, arrays


def read_solve_request(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[str, ...] | None, IKSettings | None]:
    """Validate a `solve` request: (target_wxyz, target_pos, rest, ee_links, settings)."""
    wxyz = _array(arrays, "target_wxyz", (None, None, 4), ("N", "n_ee"))
    pos = _array(arrays, "target_pos", (None, None, 3), ("N", "n_ee"))
    check_coordinates(pos)
    if wxyz.shape[:2] != pos.shape[:2]:
        raise InputError(
            f"target_wxyz {wxyz.shape} and target_pos {pos.shape} disagree on (N, n_ee)",
            "target_pos",
        )
    if wxyz.shape[0] * max(1, wxyz.shape[1]) > MAX_POSES_PER_REQUEST:
        raise InputError(
            f"{wxyz.shape[0]} poses × {wxyz.shape[1]} end effectors = "
            f"{wxyz.shape[0] * wxyz.shape[1]} targets in one request, limit {MAX_POSES_PER_REQUEST}",
            "target_pos",
        )
    norms = np.linalg.norm(wxyz, axis=-1)
    if (norms < 1e-6).any():
        raise InputError("target_wxyz holds a zero quaternion", "target_wxyz")
    rest = _array(arrays, "rest", (None,)) if "rest" in arrays else None
    ee_links = read_ee_links(header)
    if ee_links is not None and len(ee_links) != wxyz.shape[1]:
        raise InputError(
            f"{len(ee_links)} ee_links for {wxyz.shape[1]} targets per pose", "ee_links"
        )
    return wxyz, pos, rest, ee_links, ik_settings_from_header(header.get("ik"))


def read_ee_links(header: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The request's ``ee_links`` (None: the robot's defaults)."""
    ee_links = header.get("ee_links")
    if ee_links is None:
        return None
    if not isinstance(ee_links, list) or not all(isinstance(x, str) and x for x in ee_links):
        raise InputError("ee_links must be a list of link names", "ee_links")
    return tuple(ee_links)


def solve_reply(solution: IKSolution) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return {}, {"joints": solution.joints, "pos_err": solution.pos_err, "ori_err": solution.ori_err}


def read_solve_reply(arrays: Mapping[str, np.ndarray]) -> IKSolution:
    try:
        return IKSolution(
            joints=arrays["joints"], pos_err=arrays["pos_err"], ori_err=arrays["ori_err"]
        )
    except KeyError as e:
        raise InputError(f"solve reply lacks array {e}", str(e)) from e


# --------------------------------------------------------------------------- describe


def describe_request(ee_links: Sequence[str] | str | None = None) -> dict[str, Any]:
    """Header of a `describe` request (no arrays)."""
    if ee_links is None:
        return {}
    return {"ee_links": [ee_links] if isinstance(ee_links, str) else list(ee_links)}


def describe_reply(
    ee_links: Sequence[str],
    joint_names: Sequence[str],
    lower: np.ndarray,
    upper: np.ndarray,
    limited: np.ndarray,
    rest: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header = {"ee_links": list(ee_links), "joint_names": list(joint_names)}
    arrays = {
        "lower": np.asarray(lower, np.float32),
        "upper": np.asarray(upper, np.float32),
        "limited": np.asarray(limited, np.bool_),
        "rest": np.asarray(rest, np.float32),
    }
    return header, arrays


def read_describe_reply(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """``{ee_links, joint_names, lower, upper, limited, rest}`` (numpy arrays per joint)."""
    try:
        info: dict[str, Any] = {
            "ee_links": list(header["ee_links"]),
            "joint_names": list(header["joint_names"]),
        }
        for name in ("lower", "upper", "limited", "rest"):
            info[name] = np.asarray(arrays[name])
    except KeyError as e:
        raise InputError(f"describe reply lacks {e}", str(e)) from e
    return info


# --------------------------------------------------------------------------- strokebatch

STROKEBATCH_ARRAYS = (
    "ee_pos_l",
    "ee_pos_r",
    "ee_rot_l",
    "ee_rot_r",
    "joints",
    "pos_err",
    "ori_err",
)


def apply_first_last_rest(packed: PackedStrokes, scene: Scene) -> PackedStrokes:
    """tatbot's first_last_rest as per-stroke flags: the right arm rests during the first
    pair, the left during the last. Done before a job is split, so chunks are independent."""
    if not scene.first_last_rest or len(packed) == 0:
        return packed
    is_rest = packed.is_rest.copy()
    is_rest[0, 1] = True
    is_rest[-1, 0] = True
    return PackedStrokes(coords=packed.coords, is_inkdip=packed.is_inkdip, is_rest=is_rest)


def slice_packed(packed: PackedStrokes, start: int, stop: int) -> PackedStrokes:
    """Stroke pairs ``start:stop`` of a packed job (views, no copy)."""
    return PackedStrokes(
        coords=packed.coords[start:stop],
        is_inkdip=packed.is_inkdip[start:stop],
        is_rest=packed.is_rest[start:stop],
    )


def strokebatch_request(
    scene: Scene, packed: PackedStrokes
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a `strokebatch` request (first/last rest already applied)."""
    return (
        {"scene": scene.to_dict()},
        {"coords": packed.coords, "is_inkdip": packed.is_inkdip, "is_rest": packed.is_rest},
    )


def read_strokebatch_request(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[Scene, PackedStrokes]:
    raw_scene = header.get("scene")
    if not isinstance(raw_scene, dict):
        raise InputError("strokebatch needs a 'scene' map in the header", "scene")
    scene = Scene.from_dict(raw_scene)
    coords = _array(arrays, "coords", (None, 2, scene.stroke_length, 3))
    b = coords.shape[0]
    flags = {}
    for name in ("is_inkdip", "is_rest"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}", name)
        arr = np.asarray(arrays[name])
        if arr.shape != (b, 2) or arr.dtype != np.bool_:
            raise InputError(f"{name} must be bool ({b}, 2), got {arr.dtype} {arr.shape}", name)
        flags[name] = arr
    if b * scene.stroke_length * scene.offset_num > MAX_POSES_PER_REQUEST:
        raise InputError(
            f"{b} stroke pairs × {scene.stroke_length} × {scene.offset_num} offsets exceeds "
            f"{MAX_POSES_PER_REQUEST} poses per request; split the job",
            "coords",
        )
    return scene, PackedStrokes(
        coords=coords, is_inkdip=flags["is_inkdip"], is_rest=flags["is_rest"]
    )


def strokebatch_reply(batch: StrokeBatch) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return {}, {name: getattr(batch, name) for name in STROKEBATCH_ARRAYS}


def read_strokebatch_reply(arrays: Mapping[str, np.ndarray]) -> StrokeBatch:
    missing = [n for n in STROKEBATCH_ARRAYS if n not in arrays]
    if missing:
        raise InputError(f"strokebatch reply lacks arrays {missing}", missing[0])
    return StrokeBatch(**{n: arrays[n] for n in STROKEBATCH_ARRAYS})
