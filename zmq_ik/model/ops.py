"""The operations' wire schemas (`solve`, `fk`, `describe`, `strokebatch`), both directions,
in one place.

Clients build requests and read replies with these functions; workers read requests and
build replies with them. Only numpy here, so the robot side needs no JAX. Input checks are
`zmq_ik.base.checks`' (the IK engine uses the same ones); what is checked here is only what the
wire limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from zmq_ik._version import __version__
from zmq_ik.base.checks import (
    SMALL,
    check_active,
    check_joints,
    check_packed,
    check_rest_shape,
    check_targets,
)
from zmq_ik.errors import InputError, ProtocolError
from zmq_ik.model import (
    ERROR_TENSORS,
    ORI_TOL,
    POS_TOL,
    EEPoses,
    IKSettings,
    IKSolution,
    PackedStrokes,
    Scene,
    StrokeBatch,
    apply_first_last_rest,
)
from zmq_ik.model.joint_bounds import JointBounds as JointBounds
from zmq_ik.model.scene import SCENE_KEYS
from zmq_ik.settings.ik import SETTING_KEYS

__all__ = [
    "DESCRIBE",
    "FK",
    "MAX_POSES_PER_REQUEST",
    "SOLVE",
    "STROKEBATCH",
    "JointBounds",
    "apply_first_last_rest",
    "check_solve_reply",
    "describe_reply",
    "describe_request",
    "fk_reply",
    "fk_request",
    "ik_settings_from_header",
    "read_describe_reply",
    "read_ee_links",
    "read_fk_reply",
    "read_fk_request",
    "read_solve_reply",
    "read_solve_request",
    "read_strokebatch_reply",
    "read_strokebatch_request",
    "slice_packed",
    "solve_reply",
    "solve_request",
    "strokebatch_reply",
    "strokebatch_request",
]

SOLVE = "solve"
STROKEBATCH = "strokebatch"
DESCRIBE = "describe"
FK = "fk"
MAX_POSES_PER_REQUEST = 1 << 20
"""Poses (solve), joint vectors (fk) or stroke pairs × length × offsets (strokebatch) accepted
in one request;
bigger jobs are split by the client (`IKClient.compute` does it for you)."""

_IK_SETTINGS = frozenset(f.name for f in fields(IKSettings))


def _required(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in arrays:
        raise InputError(f"missing array {name!r}", name)
    return arrays[name]


def _refuse_unknown(data: Any, known: frozenset[str], what: str, field: str | None) -> None:
    """`InputError` for the first key of the map ``data`` not in ``known`` (``what``: "IK
    setting", "scene field"), named ``field`` (else the key); anything but a map is left to
    the parser. Such a key is a typo or, in a rolling upgrade, a newer client's field: the
    message says the latter with this worker's version (docs/protocol.md 4.8)."""
    if not isinstance(data, Mapping):
        return
    for key in data:
        if key not in known:
            text = (
                f"unknown {what} {key!r} for this worker (zmq-ik {__version__}): the client may "
                "be newer than the worker; upgrade the worker, or leave that setting at its "
                "default"
            )
            raise InputError(f"{field}: {text}" if field else text, field or str(key))


def ik_settings_from_header(value: Any) -> IKSettings | None:
    """IK settings sent as a map (`IKSettings.from_dict`: unknown keys refused, so typos do
    not pass silently, nor settings this worker cannot honour: see
    `zmq_ik.model.ADDED_SETTINGS`). A bad value is named by its setting; a map that is not
    one, or an unknown key (`_refuse_unknown`), by the header's ``ik``."""
    if value is None:
        return None
    _refuse_unknown(value, SETTING_KEYS, "IK setting", "ik")
    try:
        return IKSettings.from_dict(value)
    except InputError as e:
        if e.field in _IK_SETTINGS:
            raise
        raise InputError(e.message, "ik") from None


# --------------------------------------------------------------------------- solve


def solve_request(
    target_wxyz: Any,
    target_pos: Any,
    rest: Any = None,
    ee_links: Sequence[str] | None = None,
    ik: IKSettings | None = None,
    active: Any = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a `solve` request. Single poses (n_ee, 4)/(n_ee, 3) are batched.
    Checked as a worker checks them, so a robot sees its own mistake without a round trip.
    ``active`` (`check_active`): an end effector without a target is sent as NaN, with the
    ``active`` array (a worker older than it refuses the NaN rather than solve it)."""
    wxyz, pos = check_targets(target_wxyz, target_pos, one_pose=True, active=active)
    header: dict[str, Any] = {}
    if ee_links is not None:
        header["ee_links"] = [ee_links] if isinstance(ee_links, str) else list(ee_links)
    if ik is not None:
        header["ik"] = ik.to_wire()
    arrays = {"target_wxyz": wxyz, "target_pos": pos}
    if active is not None:
        on = check_active(active, *wxyz.shape[:2])
        if not on.all():
            nan = np.float32(np.nan)
            arrays["target_wxyz"] = np.where(on[..., None], wxyz, nan)
            arrays["target_pos"] = np.where(on[..., None], pos, nan)
            arrays["active"] = np.ascontiguousarray(on)
    if rest is not None:
        arrays["rest"] = check_rest_shape(rest)
    _check_solve_size(wxyz, read_ee_links(header))
    return header, arrays


def read_solve_request(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray | None,
    tuple[str, ...] | None,
    IKSettings | None,
    np.ndarray | None,
]:
    """Validate a `solve` request: (target_wxyz, target_pos, rest, ee_links, settings,
    active); ``active`` (N, n_ee) bool or None (every end effector has a target), the
    targets of those without one replaced by a placeholder (`check_targets`)."""
    active = arrays.get("active")
    wxyz, pos = check_targets(
        _required(arrays, "target_wxyz"), _required(arrays, "target_pos"), active=active
    )
    on = None if active is None else check_active(active, *wxyz.shape[:2])
    rest = check_rest_shape(arrays["rest"]) if "rest" in arrays else None
    ee_links = read_ee_links(header)
    _check_solve_size(wxyz, ee_links)
    return wxyz, pos, rest, ee_links, ik_settings_from_header(header.get("ik")), on


def _check_solve_size(wxyz: np.ndarray, ee_links: tuple[str, ...] | None) -> None:
    """What only the wire limits: poses per request, and ``ee_links`` against the targets."""
    if wxyz.shape[0] * max(1, wxyz.shape[1]) > MAX_POSES_PER_REQUEST:
        raise InputError(
            f"{wxyz.shape[0]} poses × {wxyz.shape[1]} end effectors = "
            f"{wxyz.shape[0] * wxyz.shape[1]} targets in one request, limit {MAX_POSES_PER_REQUEST}",
            "target_pos",
        )
    if ee_links is not None and len(ee_links) != wxyz.shape[1]:
        raise InputError(
            f"{len(ee_links)} ee_links for {wxyz.shape[1]} targets per pose", "ee_links"
        )


def read_ee_links(header: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The request's ``ee_links`` (None: the robot's defaults)."""
    ee_links = header.get("ee_links")
    if ee_links is None:
        return None
    if not isinstance(ee_links, list) or not all(isinstance(x, str) and x for x in ee_links):
        raise InputError("ee_links must be a list of link names", "ee_links")
    return tuple(ee_links)


def solve_reply(solution: IKSolution) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A solve's reply: its arrays only. The tolerances stay with the client, which judges
    ``reached`` from the errors itself (so any worker serves any client's tolerances)."""
    return {}, {"joints": solution.joints, "pos_err": solution.pos_err, "ori_err": solution.ori_err}


def read_solve_reply(
    arrays: Mapping[str, np.ndarray],
    pos_tol: float = POS_TOL,
    ori_tol: float = ORI_TOL,
    active: np.ndarray | None = None,
) -> IKSolution:
    """The `IKSolution` of a solve reply, judged by ``pos_tol``/``ori_tol`` (of the end
    effectors ``active`` in the request: its ``active`` array). Arrays this version does not
    know (a newer worker's) are ignored."""
    try:
        return IKSolution(
            joints=arrays["joints"],
            pos_err=arrays["pos_err"],
            ori_err=arrays["ori_err"],
            pos_tol=pos_tol,
            ori_tol=ori_tol,
            active=active,
        )
    except KeyError as e:
        raise InputError(f"solve reply lacks array {e}", str(e)) from e


def check_solve_reply(
    arrays: Mapping[str, np.ndarray],
    n_poses: int,
    n_ee: int,
    bounds: JointBounds,
    precise: bool,
    pos_tol: float = POS_TOL,
    ori_tol: float = ORI_TOL,
    active: np.ndarray | None = None,
) -> IKSolution:
    """A worker's `solve` answer to ``n_poses`` targets of ``n_ee`` end effectors, checked
    before a robot is commanded with it: ``joints`` (n_poses, n_joints) finite, within the
    robot's limits (``bounds``: ``hard`` for ``precise``, else ``soft``); ``pos_err`` and
    ``ori_err`` (n_poses, n_ee), >= 0 or NaN (unknown). A bad answer is the worker's fault:
    `ProtocolError` naming what is wrong. A few µs on top of reading it (`IKSolution` checks
    finiteness and the errors' signs). ``pos_tol``/``ori_tol`` judge its ``reached``, of the
    end effectors ``active`` in the request (its ``active`` array; None: all)."""
    try:
        sol = read_solve_reply(arrays, pos_tol, ori_tol, active)
    except InputError as e:
        raise ProtocolError(f"bad solve reply from the worker: {e.message}", field=e.field) from e
    joints, err = sol.joints, sol.pos_err
    want = (n_poses, len(bounds.names))
    if joints.shape != want or err.shape != (n_poses, n_ee):
        raise ProtocolError(
            f"bad solve reply from the worker: joints {joints.shape}, errors {err.shape}; "
            f"expected {want} and {(n_poses, n_ee)} for {n_poses} poses of {n_ee} end "
            f"effectors of a robot of {want[1]} joints",
            field="joints",
        )
    lo, hi = bounds.hard if precise else bounds.soft
    bad: tuple[int, int] | None = None
    if joints.size <= SMALL:  # in Python: see `SMALL` (a control loop's one pose)
        lo_list, hi_list = bounds.lists[precise]
        rows = enumerate(joints.tolist())
        bad = next(
            (
                (i, k)
                for i, row in rows
                for k, v in enumerate(row)
                if not lo_list[k] <= v <= hi_list[k]
            ),
            None,
        )
    else:
        outside = (joints < lo) | (joints > hi)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            bad = int(row), int(col)
    if bad is not None:
        i, k = bad
        raise ProtocolError(
            f"bad solve reply from the worker: joints[{i}, {k}] = {joints[i, k]:g} for joint "
            f"{bounds.names[k]!r} is outside its limits [{bounds.lower[k]:g}, "
            f"{bounds.upper[k]:g}] by more than {'precise' if precise else 'soft'} limits "
            f"allow",
            field="joints",
        )
    return sol


# --------------------------------------------------------------------------- fk


def fk_request(
    joints: Any, ee_links: Sequence[str] | str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of an `fk` request: ``joints`` (N, n_joints), or one (n_joints,)
    vector (N = 1), checked as a worker checks them."""
    q = check_joints(joints, one_pose=True)
    _check_fk_size(q)
    return describe_request(ee_links), {"joints": q}


def read_fk_request(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Validate an `fk` request: (joints (N, n_joints) float32, ee_links or None). Whether
    ``n_joints`` fits the robot is the worker's check (it needs the robot)."""
    q = check_joints(_required(arrays, "joints"))
    _check_fk_size(q)
    return q, read_ee_links(header)


def _check_fk_size(q: np.ndarray) -> None:
    if q.shape[0] > MAX_POSES_PER_REQUEST:
        raise InputError(
            f"{q.shape[0]} joint vectors in one request, limit {MAX_POSES_PER_REQUEST}", "joints"
        )


def fk_reply(poses: EEPoses) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return {"ee_links": list(poses.ee_links)}, {"wxyz": poses.wxyz, "pos": poses.pos}


def read_fk_reply(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], n: int | None = None
) -> EEPoses:
    """The `EEPoses` of an `fk` reply (checked: shapes, finite), of ``n`` joint vectors when
    given (a reply for another number of them is refused)."""
    try:
        poses = EEPoses(
            ee_links=read_ee_links(header) or (), wxyz=arrays["wxyz"], pos=arrays["pos"]
        )
    except KeyError as e:
        raise InputError(f"fk reply lacks array {e}", str(e)) from e
    if n is not None and len(poses) != n:
        raise InputError(f"fk reply has {len(poses)} poses for {n} joint vectors", "pos")
    return poses


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
    prismatic: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``prismatic`` (per joint: limits in metres, not radians) lets a client say units."""
    header = {"ee_links": list(ee_links), "joint_names": list(joint_names)}
    arrays = {
        "lower": np.asarray(lower, np.float32),
        "upper": np.asarray(upper, np.float32),
        "limited": np.asarray(limited, np.bool_),
        "rest": np.asarray(rest, np.float32),
    }
    if prismatic is not None:
        arrays["prismatic"] = np.asarray(prismatic, np.bool_)
    return header, arrays


def read_describe_reply(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """``{ee_links, joint_names, lower, upper, limited, rest}`` (numpy arrays per joint), and
    ``prismatic`` when the worker says it (older ones do not)."""
    try:
        info: dict[str, Any] = {
            "ee_links": list(header["ee_links"]),
            "joint_names": list(header["joint_names"]),
        }
        for name in ("lower", "upper", "limited", "rest"):
            info[name] = np.asarray(arrays[name])
        if "prismatic" in arrays:
            info["prismatic"] = np.asarray(arrays["prismatic"])
    except KeyError as e:
        raise InputError(f"describe reply lacks {e}", str(e)) from e
    return info


# --------------------------------------------------------------------------- strokebatch


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
        {"scene": scene.to_wire()},
        {"coords": packed.coords, "is_inkdip": packed.is_inkdip, "is_rest": packed.is_rest},
    )


def read_strokebatch_request(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[Scene, PackedStrokes]:
    raw_scene = header.get("scene")
    if not isinstance(raw_scene, dict):
        raise InputError("strokebatch needs a 'scene' map in the header", "scene")
    _refuse_unknown(raw_scene, SCENE_KEYS, "scene field", None)
    _refuse_unknown(raw_scene.get("ik"), SETTING_KEYS, "IK setting", "ik")
    scene = Scene.from_dict(raw_scene)
    coords, is_inkdip, is_rest = check_packed(
        _required(arrays, "coords"),
        _required(arrays, "is_inkdip"),
        _required(arrays, "is_rest"),
        scene.stroke_length,
        scene.n_ee,
    )
    b = coords.shape[0]
    if b * scene.stroke_length * scene.offset_num > MAX_POSES_PER_REQUEST:
        raise InputError(
            f"{b} stroke groups × {scene.stroke_length} × {scene.offset_num} offsets exceeds "
            f"{MAX_POSES_PER_REQUEST} poses per request; split the job",
            "coords",
        )
    return scene, PackedStrokes(coords=coords, is_inkdip=is_inkdip, is_rest=is_rest)


def strokebatch_reply(batch: StrokeBatch) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The batch's tensors with its errors, named as in a file (`StrokeBatch.tensors`:
    tatbot's for two end effectors, which clients before any number of them read)."""
    return {}, batch.tensors(errors=True)


def read_strokebatch_reply(arrays: Mapping[str, np.ndarray]) -> StrokeBatch:
    missing = [n for n in ERROR_TENSORS if n not in arrays]
    if missing:
        raise InputError(f"strokebatch reply lacks arrays {missing}", missing[0])
    return StrokeBatch.from_tensors(arrays, "strokebatch reply")
