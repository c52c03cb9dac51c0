"""One arm's stroke (:class:`Stroke`): a polyline of end-effector targets, read from our YAML
or tatbot's (inline arrays or ``.npy`` files).

Import it from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import as_array, as_bool, as_int, as_str
from zmq_ik.base.docs import documented
from zmq_ik.errors import InputError
from zmq_ik.model.common import ValueEq

logger = logging.getLogger(__name__)

ARMS: tuple[str, str] = ("left", "right")
"""Arm names of a pair (two end effectors), in order. With another number of end effectors,
an arm is named by its end-effector link (`Scene.arms`)."""

# Array keys of tatbot's stroke mappings that zmq-ik reads (others, e.g. pixel_coords, are ignored).
USED_ARRAYS = ("meter_coords", "ee_pos")


def _resample(arr: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """Linear resampling of an (N, 3) polyline to (n, 3) points, uniform in the point index."""
    m = arr.shape[0]
    if m == n:
        return arr
    if m == 0:
        raise InputError("cannot resample a stroke with no points")
    if m == 1:
        out = np.repeat(arr, n, axis=0)
    else:
        src_t = np.linspace(0.0, 1.0, m)
        dst_t = np.linspace(0.0, 1.0, n)
        out = np.stack([np.interp(dst_t, src_t, arr[:, k]) for k in range(3)], axis=1)
    out.setflags(write=False)
    return out


@documented
@dataclass(frozen=True, eq=False)
class Stroke(ValueEq):
    """One arm's stroke: a polyline of end-effector targets.

    A normal stroke has ``meter_coords`` (design frame). An ink-dip stroke has ``ee_pos``
    (world frame; it goes to an ink cap, not onto the design). A rest stroke may have
    neither: it is then packed as zeros (the arm holds its ready pose; the coordinates are
    not used). Arrays are (N, 3) float64 with N >= 1, finite, copied and read-only. A stroke cannot be
    both a rest and an ink dip. Compared by value.
    """

    meter_coords: npt.NDArray[Any] | None = None
    """(N, 3) targets in metres in the design frame (origin = ``Scene.design_pos``)."""
    ee_pos: npt.NDArray[Any] | None = None
    """(N, 3) end-effector positions in metres in the world frame (required for ink dips)."""
    is_rest: bool = False
    """The arm rests (holds its ready pose) during this stroke."""
    is_inkdip: bool = False
    """The stroke dips the needle into an ink cap; targets are ``ee_pos`` (world)."""
    description: str = ""
    """Free text (tatbot: a natural-language description)."""
    arm: str | None = None
    """The arm's name, or ``None`` (then implied by the stroke's place in its group): in a
    pair ``"left"`` or ``"right"``, otherwise its end-effector link (`Scene.arms`)."""
    color: str | None = None
    """Ink colour name, if any."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in USED_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arr = as_array(value, name, (None, 3))
                if arr.shape[0] == 0:
                    raise InputError(f"{name}: a stroke needs at least one point", field=name)
                set_(self, name, arr)
        set_(self, "is_rest", as_bool(self.is_rest, "is_rest"))
        set_(self, "is_inkdip", as_bool(self.is_inkdip, "is_inkdip"))
        set_(
            self,
            "description",
            "" if self.description is None else as_str(self.description, "description"),
        )
        set_(self, "arm", as_str(self.arm, "arm", optional=True, empty=False))
        set_(self, "color", as_str(self.color, "color", optional=True))
        if self.is_rest and self.is_inkdip:
            raise InputError(
                "is_inkdip: a stroke cannot be both a rest and an ink-dip stroke", field="is_inkdip"
            )
        if self.is_inkdip and self.ee_pos is None:
            raise InputError("ee_pos: an ink-dip stroke needs ee_pos (world frame)", field="ee_pos")
        if not self.is_inkdip and not self.is_rest and self.meter_coords is None:
            raise InputError(
                "meter_coords: a stroke that is neither rest nor ink dip needs meter_coords",
                field="meter_coords",
            )
        if (
            self.meter_coords is not None
            and self.ee_pos is not None
            and self.meter_coords.shape != self.ee_pos.shape
        ):
            raise InputError(
                f"ee_pos: has {self.ee_pos.shape[0]} points but meter_coords has "
                f"{self.meter_coords.shape[0]}",
                field="ee_pos",
            )

    @property
    def coords_field(self) -> str:
        """Name of the array packed for this stroke: ``"ee_pos"`` for ink dips, else
        ``"meter_coords"``."""
        return "ee_pos" if self.is_inkdip else "meter_coords"

    @property
    def coords(self) -> npt.NDArray[np.float64] | None:
        """The array packed for this stroke (see :attr:`coords_field`); ``None`` for a
        coordinate-less rest stroke."""
        return self.ee_pos if self.is_inkdip else self.meter_coords

    @property
    def num_points(self) -> int | None:
        """Points in the stroke, or ``None`` for a coordinate-less rest stroke."""
        c = self.coords
        return None if c is None else int(c.shape[0])

    def __repr__(self) -> str:
        arrays = [
            f"{n} {tuple(getattr(self, n).shape)}"
            for n in USED_ARRAYS
            if getattr(self, n) is not None
        ]
        flags = [f for f in ("is_rest", "is_inkdip") if getattr(self, f)]
        extra = [
            f"{k}={getattr(self, k)!r}" for k in ("arm", "color", "description") if getattr(self, k)
        ]
        return f"Stroke({', '.join(arrays + flags + extra)})"

    def resampled(self, n: int) -> Stroke:
        """This stroke with every array linearly resampled to ``n`` points."""
        n = as_int(n, "stroke_length", 1)
        kwargs: dict[str, Any] = {}
        for name in USED_ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                try:
                    kwargs[name] = _resample(arr, n)
                except InputError:
                    raise InputError(
                        f"{name}: cannot resample an empty stroke", field=name
                    ) from None
        return self._replace(**kwargs)

    def _replace(self, **changes: Any) -> Stroke:
        values: dict[str, Any] = {
            "meter_coords": self.meter_coords,
            "ee_pos": self.ee_pos,
            "is_rest": self.is_rest,
            "is_inkdip": self.is_inkdip,
            "description": self.description,
            "arm": self.arm,
            "color": self.color,
        }
        values.update(changes)
        return Stroke(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with inline (nested list) arrays; ``None`` arrays and colour are left out."""
        out: dict[str, Any] = {"description": self.description}
        if self.arm is not None:
            out["arm"] = self.arm
        if self.color is not None:
            out["color"] = self.color
        out["is_rest"] = self.is_rest
        out["is_inkdip"] = self.is_inkdip
        for name in USED_ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                out[name] = arr.tolist()
        return out


def load_npy(path: Path, name: str) -> Any:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{name}: missing .npy file {path}", field=name) from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{name}: cannot read .npy file {path}: {exc}", field=name) from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{name}: {path} is not a single .npy array", field=name)
    return arr


def stroke_place(where: str, k: int, n: int) -> str:
    """Where stroke ``k`` of a group of ``n`` is, in messages and fields: ``strokes[3].left``
    in a pair (tatbot's), ``strokes[3][0]`` otherwise."""
    return f"{where}.{ARMS[k]}" if n == len(ARMS) else f"{where}[{k}]"


def stroke_from_mapping(data: Mapping[str, Any], side: str | None, base_dir: Path | None) -> Stroke:
    """One stroke from a tatbot-style or zmq-ik mapping. Errors have fields relative to the
    stroke (``meter_coords``, ``ee_pos_file``...)."""
    kwargs: dict[str, Any] = {}
    for name in USED_ARRAYS:
        inline = data.get(name)
        ref = data.get(f"{name}_file")
        if inline is not None and ref is not None:
            raise InputError(f"{name}: given both inline and as {name}_file; give one", field=name)
        if ref is not None:
            ref_name = f"{name}_file"
            ref = as_str(ref, ref_name, empty=False)
            path = Path(ref).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            kwargs[name] = load_npy(path, ref_name)
        elif inline is not None:
            kwargs[name] = inline
    for key in ("is_rest", "is_inkdip"):
        if key in data and data[key] is not None:
            kwargs[key] = data[key]
    if data.get("description") is not None:
        kwargs["description"] = data["description"]
    if data.get("color") is not None:
        kwargs["color"] = data["color"]
    arm = data.get("arm")
    if arm is not None:
        arm = as_str(arm, "arm")
        if side is not None and arm != side:
            raise InputError(
                f"arm: says {arm!r} but the stroke is in the {side} place of its pair",
                field="arm",
            )
        kwargs["arm"] = arm
    unused = [k for k in data if k not in _KNOWN_STROKE_KEYS]
    if unused:
        logger.debug("ignoring stroke keys %s", unused)
    return Stroke(**kwargs)


_KNOWN_STROKE_KEYS = frozenset(
    {
        *USED_ARRAYS,
        *(f"{n}_file" for n in USED_ARRAYS),
        "is_rest",
        "is_inkdip",
        "description",
        "color",
        "arm",
    }
)
