"""The scene (numpy only): the robot, its end effectors, the design frame and the IK
settings a stroke file is solved with (IK settings live in :mod:`zmq_ik.settings.ik`, shared
helpers in :mod:`zmq_ik.model.common`, input checks in :mod:`zmq_ik.base.checks`).

Import these names from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from zmq_ik.base.checks import as_array, as_bool, as_float, as_int, as_quat, as_str, prefixed
from zmq_ik.base.docs import documented
from zmq_ik.base.yaml_files import load_yaml_text, read_yaml_file
from zmq_ik.errors import InputError
from zmq_ik.model.common import ValueEq, init_with
from zmq_ik.model.spellings import (
    POSE_KEYS,
    SCENE_ALIASES,
    TATBOT_IGNORED,
    TWO_ARM_KEYS,
    unwrap,
)
from zmq_ik.robots import BUNDLED, TATBOT_EE_LINKS, TATBOT_READY_L, TATBOT_READY_R
from zmq_ik.settings.ik import ORI_TOL, POS_TOL, IKSettings, check_tolerance

logger = logging.getLogger(__name__)


def _freeze(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------

_DEFAULT_EE_ROT = ((0.7071, 0.0, 0.0, -0.7071), (0.7071, 0.0, 0.0, 0.7071))
_DEFAULT_EE_OFFSET = (
    (-0.0032011130459314863, -0.006146244846220735, 0.0),
    (0.0003607626669337727, 0.011764407112841976, 0.00529831437515331),
)
_DEFAULT_DESIGN_POS = (0.25045, 0.0, 0.102)  # tatbot URDF: lasercross, fixed to root

TWO_ARMS: tuple[str, str] = ("left", "right")
"""The names of a two-end-effector scene's arms, in ``ee_links`` order (tatbot's)."""


def _const(values: Any) -> npt.NDArray[np.float64]:
    return _freeze(np.array(values, dtype=np.float64))


# Fixed-size array fields of Scene and their shapes; quaternions are normalised.
_SCENE_ARRAYS: dict[str, int] = {"hover_offset": 3, "design_pos": 3, "design_wxyz": 4}
# Per-end-effector array fields: one row of this size per end effector.
_ARM_ARRAYS: dict[str, int] = {"ee_rot": 4, "ee_offset": 3}
TOLERANCES = ("pos_tol", "ori_tol")
"""Scene fields that judge an answer rather than compute it: not sent to workers."""


def _two_arm_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (constructor arguments) with the two-arm spellings (``ready_l``, ``ee_rot_r``
    ...: `TWO_ARM_KEYS`) folded into ``ready``, ``ee_rot`` and ``ee_offset``; each checked
    under its own name. A spelling beside its field (``ready_l`` and ``ready``) is refused."""
    given = [k for k in TWO_ARM_KEYS if k in values]
    if not given:
        return values
    out = {k: v for k, v in values.items() if k not in TWO_ARM_KEYS}
    for target in ("ready", "ee_rot", "ee_offset"):
        halves = [k for k in given if TWO_ARM_KEYS[k][0] == target]
        if not halves:
            continue
        if target in values:
            raise InputError(f"{halves[0]}: given with {target}; give one of them", field=halves[0])
        base = _two_arm_defaults()[target]
        rows: list[Any] = []
        for suffix, k in (("_l", 0), ("_r", 1)):
            key = target + suffix
            if key not in values:
                rows.append(base[k])
            elif target == "ee_rot":
                rows.append(as_quat(values[key], key))
            else:
                rows.append(as_array(values[key], key, (3,) if target == "ee_offset" else (None,)))
        out[target] = np.concatenate(rows) if target == "ready" else np.stack(rows)
    return out


def _two_arm_defaults() -> dict[str, Any]:
    """tatbot's per-arm values, as the two halves (``ready``) or rows (the others)."""
    return {
        "ready": (TATBOT_READY_L, TATBOT_READY_R),
        "ee_rot": _DEFAULT_EE_ROT,
        "ee_offset": _DEFAULT_EE_OFFSET,
    }


@documented
@dataclass(frozen=True, eq=False)
class Scene(ValueEq):
    """Everything a stroke-batch solve needs besides the strokes; defaults = bundled tatbot.

    Any number of end effectors (``ee_links``): a Panda drawing with one, tatbot with two.
    Per-end-effector values (``ee_rot``, ``ee_offset``) have one row per end effector, in
    ``ee_links`` order; a two-arm scene may spell them as tatbot does (``ready_l``,
    ``ee_rot_r``...: `from_dict`, `replace`, and read-only properties of those names).

    Arrays are float64, copied and read-only. Quaternions are wxyz and normalised on
    construction. Compared by value (``==`` uses ``np.array_equal`` on arrays).
    """

    robot: str = "tatbot"
    """Robot (service) name the broker routes on."""
    ee_links: tuple[str, ...] = TATBOT_EE_LINKS
    """End-effector link names in the URDF, one or more (tatbot: left, right)."""
    stroke_length: int = 16
    """Poses per stroke (every stroke must have exactly this many points)."""
    offset_num: int = 6
    """Number of depth offsets solved per pose (the ``o`` axis of a StrokeBatch)."""
    offset_range: tuple[float, float] = (-0.002, 0.002)
    """(min, max) depth offset in metres, min <= max."""
    ready: npt.NDArray[Any] | None = None
    """Ready (rest) pose, (n_joints,) in the robot's joint order (``solve``'s ``rest``; rad,
    m for prismatic joints): every pose is solved from it, and an arm that rests holds it.
    Default: tatbot's ready pose for tatbot's ``ee_links``, else None: the robot's default
    rest pose (its worker's ``--rest``, or mid-range). Two-arm spelling: ``ready_l`` and
    ``ready_r``, its halves."""
    ee_rot: npt.NDArray[Any] | None = None
    """(n_ee, 4) each end effector's orientation while drawing, wxyz, world frame
    (normalised). Default: tatbot's two needles' for two end effectors; otherwise required.
    Two-arm spelling: ``ee_rot_l``, ``ee_rot_r``."""
    ee_offset: npt.NDArray[Any] | None = None
    """(n_ee, 3) each end effector's offset added to every target, metres, world frame.
    Default: tatbot's two for two end effectors, else zeros. Two-arm spelling:
    ``ee_offset_l``, ``ee_offset_r``."""
    hover_offset: npt.NDArray[Any] = field(default_factory=lambda: _const((0.0, 0.0, 0.005)))
    """Offset of the first and last (hover) pose of each stroke, (3,) metres."""
    design_pos: npt.NDArray[Any] = field(default_factory=lambda: _const(_DEFAULT_DESIGN_POS))
    """Design-origin position, (3,) metres, world frame (tatbot: the lasercross link)."""
    design_wxyz: npt.NDArray[Any] = field(default_factory=lambda: _const((1.0, 0.0, 0.0, 0.0)))
    """Design-origin orientation, (4,) wxyz, world frame (normalised)."""
    first_last_rest: bool | None = None
    """tatbot's hand-over: the right arm rests during the first stroke pair, the left during
    the last. Default: True with two end effectors; only a two-arm scene may set it."""
    name: str = "default"
    """Free-form scene name (logs, file names)."""
    pos_tol: float = POS_TOL
    """Position tolerance, metres (default `POS_TOL`, 0.1 mm): a pose whose achieved position
    error is above it misses (summaries, ``compute --strict``). Judges answers; workers
    never see it."""
    ori_tol: float = ORI_TOL
    """Orientation tolerance, radians (default `ORI_TOL`, 0.05): as ``pos_tol``, for the
    achieved orientation error."""
    ik: IKSettings = field(default_factory=IKSettings)
    """Solver settings."""

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "robot", as_str(self.robot, "robot", empty=False))
        links = self.ee_links
        if isinstance(links, str) or not isinstance(links, (tuple, list)) or not links:
            raise InputError(
                f"ee_links: must be a list of one or more link names, got {links!r}",
                field="ee_links",
            )
        links = tuple(as_str(v, f"ee_links[{i}]", empty=False) for i, v in enumerate(links))
        if len(set(links)) != len(links):
            raise InputError(f"ee_links: a link is named twice in {list(links)}", "ee_links")
        setattr_(self, "ee_links", links)
        n_ee = len(links)
        setattr_(self, "stroke_length", as_int(self.stroke_length, "stroke_length", 1))
        setattr_(self, "offset_num", as_int(self.offset_num, "offset_num", 1))
        rng = self.offset_range
        if isinstance(rng, (str, bytes)) or not hasattr(rng, "__len__") or len(rng) != 2:
            raise InputError(
                f"offset_range: must be (min, max) in metres, got {rng!r}", field="offset_range"
            )
        lo = as_float(rng[0], "offset_range")
        hi = as_float(rng[1], "offset_range")
        if lo > hi:
            raise InputError(
                f"offset_range: min {lo} is greater than max {hi}", field="offset_range"
            )
        setattr_(self, "offset_range", (lo, hi))
        defaults = _two_arm_defaults()
        if self.ready is None:
            if links == TATBOT_EE_LINKS:
                setattr_(self, "ready", _const(np.concatenate(defaults["ready"])))
        else:
            setattr_(self, "ready", as_array(self.ready, "ready", (None,)))
            bundled = BUNDLED.get(self.robot)
            if bundled is not None and links == bundled.ee_links:
                want = len(bundled.rest)  # early, for the usual case: a bundled robot's chains
                if len(self.ready) != want:
                    raise InputError(
                        f"ready: {len(self.ready)} joint values for {self.robot}'s chains to "
                        f"{', '.join(links)}, which have {want}"
                        + (" (ready_l, then ready_r)" if n_ee == 2 else ""),
                        field="ready",
                    )
        for name, size in _ARM_ARRAYS.items():
            value = getattr(self, name)
            if value is None:
                if n_ee == 2:
                    value = defaults[name]
                elif name == "ee_offset":
                    value = np.zeros((n_ee, 3))
                else:
                    raise InputError(
                        f"ee_rot: give each end effector's orientation while drawing, "
                        f"{n_ee} wxyz row(s) in ee_links order (only two-arm scenes default "
                        "to tatbot's)",
                        field="ee_rot",
                    )
            arr = np.array(as_array(value, name, (None, size)))
            if arr.shape[0] != n_ee:
                raise InputError(
                    f"{name}: has {arr.shape[0]} row(s) for {n_ee} end effector(s) (ee_links "
                    f"{list(links)}): one per end effector",
                    field=name,
                )
            if name == "ee_rot":
                arr = np.stack([as_quat(row, f"ee_rot[{k}]") for k, row in enumerate(arr)])
            setattr_(self, name, _freeze(arr))
        for name, n in _SCENE_ARRAYS.items():
            value = getattr(self, name)
            arr = as_quat(value, name) if name == "design_wxyz" else as_array(value, name, (n,))
            setattr_(self, name, arr)
        flr = self.first_last_rest
        flr = n_ee == 2 if flr is None else as_bool(flr, "first_last_rest")
        if flr and n_ee != 2:
            raise InputError(
                f"first_last_rest: tatbot's hand-over needs two end effectors, the scene has "
                f"{n_ee}",
                field="first_last_rest",
            )
        setattr_(self, "first_last_rest", flr)
        setattr_(self, "name", as_str(self.name, "name"))
        for name in TOLERANCES:
            setattr_(self, name, check_tolerance(getattr(self, name), name))
        ik = self.ik
        if isinstance(ik, Mapping):
            try:
                ik = IKSettings.from_dict(ik)
            except InputError as exc:
                raise prefixed(exc, "ik") from None
        if not isinstance(ik, IKSettings):
            raise InputError(f"ik: must be IKSettings, got {type(ik).__name__}", field="ik")
        setattr_(self, "ik", ik)

    # -- derived ------------------------------------------------------------------------------

    @property
    def n_ee(self) -> int:
        """Number of end effectors (arms)."""
        return len(self.ee_links)

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms' names, in ``ee_links`` order: ``("left", "right")`` for two (tatbot's),
        else the end-effector links (a stroke's ``arm``, the report's labels)."""
        return TWO_ARMS if self.n_ee == 2 else self.ee_links

    def _two_arm(self, name: str, k: int) -> npt.NDArray[np.float64]:
        """Row ``k`` of ``name`` (of ``ready``: half ``k``) of a two-arm scene."""
        if self.n_ee != 2:
            raise AttributeError(f"{name}_{'lr'[k]}: a scene with {self.n_ee} end effector(s)")
        if name != "ready":
            return getattr(self, name)[k]  # type: ignore[no-any-return]
        if self.ready is None or len(self.ready) % 2:
            raise AttributeError(f"ready_{'lr'[k]}: ready is not two equal halves")
        half = len(self.ready) // 2
        return self.ready[k * half : (k + 1) * half]

    ready_l = property(lambda self: self._two_arm("ready", 0), doc="``ready``'s first half.")
    ready_r = property(lambda self: self._two_arm("ready", 1), doc="``ready``'s second half.")
    ee_rot_l = property(lambda self: self._two_arm("ee_rot", 0), doc="``ee_rot[0]``.")
    ee_rot_r = property(lambda self: self._two_arm("ee_rot", 1), doc="``ee_rot[1]``.")
    ee_offset_l = property(lambda self: self._two_arm("ee_offset", 0), doc="``ee_offset[0]``.")
    ee_offset_r = property(lambda self: self._two_arm("ee_offset", 1), doc="``ee_offset[1]``.")

    # -- hash (equality: `ValueEq`) ---------------------------------------------------------------

    def __hash__(self) -> int:
        return hash(
            (self.robot, self.ee_links, self.stroke_length, self.offset_num, self.name, self.ik)
        )

    def replace(self, **changes: Any) -> Scene:
        """A copy with ``changes`` applied (validated like the constructor; the two-arm
        spellings ``ready_l``... too). Per-arm values that no longer fit new ``ee_links``
        are refused: give them too."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for target in ("ready", "ee_rot", "ee_offset"):
            if any(TWO_ARM_KEYS.get(k, ("",))[0] == target for k in changes):
                keep = [k for k, (t, _) in TWO_ARM_KEYS.items() if t == target]
                values.pop(target)
                for k in keep:
                    if k not in changes:
                        changes[k] = getattr(self, k)
        values.update(changes)
        return Scene(**_two_arm_values(values))

    # -- dict / YAML ----------------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """:meth:`to_dict` as a ``strokebatch`` request carries it: without `TOLERANCES` (they
        judge answers, on the client) and with ``ik`` as `IKSettings.to_wire` writes it."""
        return {**self.to_dict(tolerances=False), "ik": self.ik.to_wire()}

    def to_dict(self, *, tolerances: bool = True) -> dict[str, Any]:
        """Plain nested dict of lists, floats, ints, bools and strings (JSON/msgpack/YAML).
        ``tolerances=False`` leaves out `TOLERANCES` (the wire: a worker does not judge). A
        two-arm scene's per-arm values are spelt ``ready_l``, ``ee_rot_r``...: the files
        and requests tatbot and older workers read."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if not tolerances and f.name in TOLERANCES:
                continue
            value = getattr(self, f.name)
            two_arm = self.n_ee == 2 and (
                f.name in _ARM_ARRAYS
                or (f.name == "ready" and value is not None and len(value) % 2 == 0)
            )
            if two_arm:  # as tatbot (and older workers) spell it
                for suffix in ("_l", "_r"):
                    out[f.name + suffix] = getattr(self, f.name + suffix).tolist()
            elif isinstance(value, np.ndarray):
                out[f.name] = value.tolist()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif isinstance(value, IKSettings):
                out[f.name] = value.to_dict()
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Scene:
        """Inverse of :meth:`to_dict`. Missing keys take tatbot defaults; unknown keys are refused.
        Per-arm values: ``ready``, ``ee_rot``, ``ee_offset`` (one row per end effector), or
        for two arms ``ready_l``/``ready_r``, ``ee_rot_l``... (rows 0 and 1).

        Also accepts tatbot-style spellings: ``ready_pos_l``/``ready_pos_r`` (optionally
        ``{joints: [...]}``), ``{xyz: [...]}`` / ``{wxyz: [...]}`` wrappers, ``lasercross_pos``,
        ``lasercross_wxyz``, ``lasercross_pose: {pos: {xyz}, rot: {wxyz}}``; tatbot keys that
        name other config files (``arms_config_name``, ``pen_names_l``...) are ignored.
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InputError(f"scene: must be a mapping, got {type(data).__name__}", field="scene")
        known = {f.name for f in fields(cls)} | set(TWO_ARM_KEYS)
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key)
            if key in TATBOT_IGNORED:
                logger.debug("scene: ignoring tatbot key %r", key)
                continue
            if key in POSE_KEYS:
                if not isinstance(value, Mapping) or set(value) - {"pos", "rot"}:
                    raise InputError(f"{key}: must be a mapping with 'pos' and 'rot'", field=key)
                if "pos" in value:
                    kwargs["design_pos"] = unwrap(value["pos"])
                if "rot" in value:
                    kwargs["design_wxyz"] = unwrap(value["rot"])
                continue
            key = SCENE_ALIASES.get(key, key)
            if key not in known:
                raise InputError(f"{key}: unknown scene field {key!r}", field=key)
            if key in kwargs:
                raise InputError(f"{key}: given twice (directly and by an alias)", field=key)
            if key == "ik":
                try:
                    value = IKSettings.from_dict(value if value is not None else {})
                except InputError as exc:
                    raise prefixed(exc, "ik") from None
            elif key in _SCENE_ARRAYS or key in TWO_ARM_KEYS or key in _ARM_ARRAYS:
                value = unwrap(value)
            elif key == "ready":
                value = unwrap(value)
            elif key in ("ee_links", "offset_range") and isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**_two_arm_values(kwargs))

    @classmethod
    def from_yaml(cls, path_or_text: str | os.PathLike[str]) -> Scene:
        """Read a scene from a YAML file or from YAML text. Errors name the file.

        A ``Path`` is a file; a string is a file when it is one line naming an existing file,
        or one line without ``": "`` ending in ``.yaml``/``.yml``; otherwise it is YAML text.
        Keys missing from the document take the tatbot defaults."""
        source: str
        if isinstance(path_or_text, os.PathLike) or (
            isinstance(path_or_text, str)
            and "\n" not in path_or_text
            and (
                Path(path_or_text).is_file()
                or (": " not in path_or_text and path_or_text.strip().endswith((".yaml", ".yml")))
            )
        ):
            source = str(path_or_text)
            data = read_yaml_file(path_or_text)
        elif isinstance(path_or_text, str):
            source = "<scene yaml>"
            data = load_yaml_text(path_or_text, source)
        else:
            raise InputError(f"scene: expected a path or YAML text, got {path_or_text!r}")
        if isinstance(data, Mapping) and set(data) == {"scene"}:
            data = data["scene"]
        try:
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(f"{source}: {exc.message}", field=exc.field) from None

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The scene as YAML text (exact float round trip); also written to ``path`` if given."""
        data = self.to_dict()
        ik = data.pop("ik")
        text = (
            "# zmq-ik scene (zmq_ik.model.Scene): metres and radians (pos_tol, ori_tol too), "
            "quaternions wxyz\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
            + yaml.safe_dump({"ik": ik}, sort_keys=False, default_flow_style=False)
        )
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


init_with(Scene, _two_arm_values)

SCENE_KEYS = frozenset(
    {f.name for f in fields(Scene)}
    | set(TWO_ARM_KEYS)
    | set(SCENE_ALIASES)
    | TATBOT_IGNORED
    | set(POSE_KEYS)
)
"""Every top-level key `Scene.from_dict` takes (fields, tatbot's spellings and ignored keys):
a worker tells a key outside it, a newer client's field, apart (`zmq_ik.model.ops`)."""
