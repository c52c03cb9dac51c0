"""Strokes: :class:`StrokeList` (pairs of :class:`~zmq_ik.model.stroke.Stroke`, YAML in our format
and tatbot's) and :class:`PackedStrokes` (the dense arrays sent to workers).

Import these names from :mod:`zmq_ik.model`; this module is an implementation detail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import yaml

from zmq_ik.base.checks import as_bool, as_int, check_packed, prefixed
from zmq_ik.base.docs import documented
from zmq_ik.base.yaml_files import read_yaml_file
from zmq_ik.errors import InputError
from zmq_ik.model.common import Dim, ValueEq
from zmq_ik.model.scene import Scene
from zmq_ik.model.stroke import ARMS, USED_ARRAYS, Stroke, stroke_from_mapping, stroke_place

logger = logging.getLogger(__name__)

STROKES_FORMAT = "zmq-ik/strokes"
"""Value of the ``format`` key written by :meth:`StrokeList.to_yaml`."""


@documented
@dataclass(frozen=True, eq=False)
class StrokeList:
    """A sequence of stroke groups, one stroke per end effector, executed in order, all arms
    together: (left, right) pairs for tatbot, one stroke for a one-arm robot.

    Indexing with an int gives a group, with a slice a StrokeList. Compared by value. Every
    group has as many strokes. In a pair, a stroke whose ``arm`` is set must sit in the
    matching place (left, right); a scene's arms are checked by `check_arms`.
    """

    pairs: tuple[tuple[Stroke, ...], ...] = ()
    """The stroke groups, in ``Scene.ee_links`` order ((left, right) pairs for two arms)."""

    def __post_init__(self) -> None:
        pairs = self.pairs
        if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Sequence):
            raise InputError(
                "strokes: must be a sequence of stroke groups (pairs: (left, right))",
                field="strokes",
            )
        out: list[tuple[Stroke, ...]] = []
        size = None
        for i, pair in enumerate(pairs):
            where = f"strokes[{i}]"
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or not pair:
                raise InputError(
                    f"{where}: must be a group of strokes, one per arm ((left, right) pairs)",
                    field=where,
                )
            if size is not None and len(pair) != size:
                raise InputError(
                    f"{where}: has strokes for {len(pair)} arm(s), the groups before it for "
                    f"{size}: one stroke per arm in every group",
                    field=where,
                )
            size = len(pair)
            for k, stroke in enumerate(pair):
                place = stroke_place(where, k, size)
                if not isinstance(stroke, Stroke):
                    raise InputError(
                        f"{place}: must be a Stroke, got {type(stroke).__name__}", field=place
                    )
                if size == len(ARMS) and stroke.arm is not None and stroke.arm != ARMS[k]:
                    raise InputError(
                        f"{place}.arm: says {stroke.arm!r} but the stroke is in the "
                        f"{ARMS[k]} place of its pair",
                        field=f"{place}.arm",
                    )
            out.append(tuple(pair))
        object.__setattr__(self, "pairs", tuple(out))

    @property
    def n_ee(self) -> int | None:
        """Strokes per group (arms), or None for an empty list."""
        return len(self.pairs[0]) if self.pairs else None

    def check_arms(self, arms: Sequence[str]) -> None:
        """`InputError` unless every group has one stroke per arm of ``arms`` (`Scene.arms`)
        and every stroke's ``arm``, where set, names its place's arm."""
        n = len(arms)
        if self.pairs and len(self.pairs[0]) != n:
            raise InputError(
                f"strokes: groups of {len(self.pairs[0])} stroke(s) for a scene of {n} end "
                f"effector(s) ({', '.join(arms)}): one stroke per end effector",
                field="strokes",
            )
        if n == len(ARMS):
            return  # checked on construction
        for i, pair in enumerate(self.pairs):
            for k, stroke in enumerate(pair):
                if stroke.arm is not None and stroke.arm != arms[k]:
                    place = stroke_place(f"strokes[{i}]", k, n)
                    raise InputError(
                        f"{place}.arm: says {stroke.arm!r} but the stroke is in the place of "
                        f"{arms[k]!r}",
                        field=f"{place}.arm",
                    )

    # -- sequence protocol --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        strokes = [s for pair in self.pairs for s in pair]
        n = self.stroke_length
        return (
            f"StrokeList({len(self)} pairs, "
            + (f"{n} points per stroke" if n is not None else "mixed lengths")
            + f", {sum(s.is_inkdip for s in strokes)} ink dips, "
            f"{sum(s.is_rest for s in strokes)} rest strokes)"
        )

    def __iter__(self) -> Iterator[tuple[Stroke, ...]]:
        return iter(self.pairs)

    @overload
    def __getitem__(self, index: int) -> tuple[Stroke, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> StrokeList: ...

    def __getitem__(self, index: int | slice) -> tuple[Stroke, ...] | StrokeList:
        if isinstance(index, slice):
            return StrokeList(self.pairs[index])
        return self.pairs[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StrokeList):
            return NotImplemented
        return self.pairs == other.pairs

    __hash__ = None  # type: ignore[assignment]

    # -- lengths --------------------------------------------------------------------------------

    @property
    def stroke_length(self) -> int | None:
        """The common number of points of all strokes that have coordinates; ``None`` when
        there are none or they differ."""
        lengths = {s.num_points for pair in self.pairs for s in pair} - {None}
        return lengths.pop() if len(lengths) == 1 else None  # type: ignore[return-value]

    def resampled(self, stroke_length: int) -> StrokeList:
        """Every stroke linearly resampled to ``stroke_length`` points."""
        out = []
        for i, pair in enumerate(self.pairs):
            new = []
            for k, stroke in enumerate(pair):
                try:
                    new.append(stroke.resampled(stroke_length))
                except InputError as exc:
                    raise prefixed(exc, stroke_place(f"strokes[{i}]", k, len(pair))) from None
            out.append(tuple(new))
        return StrokeList(tuple(out))

    # -- packing --------------------------------------------------------------------------------

    def pack(self, stroke_length: int | None = None) -> PackedStrokes:
        """Dense arrays for the wire (see :class:`PackedStrokes`).

        ``stroke_length`` defaults to the common length of the strokes. A stroke of another
        length raises :class:`InputError` naming it (resample with :meth:`resampled` first).
        Coordinate-less rest strokes are packed as zeros. Values are cast to float32.
        """
        if stroke_length is None:
            stroke_length = self.stroke_length
            if stroke_length is None:
                raise InputError(
                    "stroke_length: cannot infer it (no strokes with coordinates, or strokes "
                    "of different lengths); pass stroke_length",
                    field="stroke_length",
                )
        n = as_int(stroke_length, "stroke_length", 1)
        b = len(self.pairs)
        n_ee = self.n_ee or len(ARMS)  # an empty list: tatbot's two
        coords = np.zeros((b, n_ee, n, 3), dtype=np.float32)
        is_inkdip = np.zeros((b, n_ee), dtype=np.bool_)
        is_rest = np.zeros((b, n_ee), dtype=np.bool_)
        for i, pair in enumerate(self.pairs):
            for k, stroke in enumerate(pair):
                is_inkdip[i, k] = stroke.is_inkdip
                is_rest[i, k] = stroke.is_rest
                arr = stroke.coords
                if arr is None:
                    continue
                if arr.shape[0] != n:
                    name = f"{stroke_place(f'strokes[{i}]', k, n_ee)}.{stroke.coords_field}"
                    raise InputError(
                        f"{name}: has {arr.shape[0]} points but stroke_length is {n} "
                        "(resample first: StrokeList.resampled or from_yaml(resample=True))",
                        field=name,
                    )
                coords[i, k] = arr
        return PackedStrokes(coords=coords, is_inkdip=is_inkdip, is_rest=is_rest)

    # -- dict / YAML ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Our YAML/JSON layout with inline arrays: ``{format, version, strokes: [[l, r]...]}``
        (a list per group: one stroke per arm)."""
        return {
            "format": STROKES_FORMAT,
            "version": 1,
            "strokes": [[s.to_dict() for s in pair] for pair in self.pairs],
        }

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        stroke_length: int | None = None,
        resample: bool = False,
        source: str | None = None,
    ) -> StrokeList:
        """Strokes from a parsed YAML document in our format or tatbot's.

        ``data`` is a mapping with a ``strokes`` list (other top-level keys ignored) or the
        list itself. Each entry is a group, one stroke per arm in ``Scene.ee_links`` order:
        ``[left, right]`` (or ``{left: .., right: ..}``) for two arms, ``[stroke]`` for one;
        each
        stroke a mapping with inline arrays (``meter_coords``, ``ee_pos``) or ``.npy`` file
        references (``meter_coords_file``, ``ee_pos_file``) relative to ``base_dir``. Other
        keys (``pixel_coords_file``, ``ee_rot_file``, ``normals_file``, ``gcode_text``,
        ``inkcap``, ``frame_path``, ``dt``...) are accepted and ignored; their files are not
        opened. With ``stroke_length``, strokes of another length raise :class:`InputError`
        unless ``resample`` (linear). ``source`` (a file name) starts every error message.
        """
        base = Path(base_dir) if base_dir is not None else None
        label = source if source is not None else "strokes"

        def fail(message: str, fld: str | None) -> InputError:
            return InputError(f"{label}: {message}", field=fld)

        if data is None:
            raise fail("empty document; expected a mapping with a 'strokes' list", "strokes")
        if isinstance(data, Mapping):
            if "strokes" not in data:
                raise fail("no 'strokes' key at the top level", "strokes")
            version = data.get("version", 1)
            if version != 1:
                raise fail(f"unsupported strokes file version {version!r}", "version")
            data = data["strokes"]
        if data is None:
            data = []
        if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Sequence):
            raise fail("'strokes' must be a list of stroke groups ([left, right] pairs)", "strokes")
        n = None if stroke_length is None else as_int(stroke_length, "stroke_length", 1)
        resample = as_bool(resample, "resample")
        pairs: list[tuple[Stroke, ...]] = []
        size = None
        for i, raw in enumerate(data):
            where = f"strokes[{i}]"
            if isinstance(raw, Mapping):
                if set(raw) != set(ARMS):
                    raise fail(
                        f"{where}: a pair mapping needs exactly the keys 'left' and 'right', "
                        f"got {sorted(map(str, raw))}",
                        where,
                    )
                raw = [raw["left"], raw["right"]]
            if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
                raise fail(
                    f"{where}: must be a list of strokes, one per arm ([left, right] pairs)", where
                )
            if size is not None and len(raw) != size:
                raise fail(
                    f"{where}: has strokes for {len(raw)} arm(s), the groups before it for "
                    f"{size}: one stroke per arm in every group",
                    where,
                )
            size = len(raw)
            pair = []
            for k, item in enumerate(raw):
                prefix = stroke_place(where, k, size)
                side = ARMS[k] if size == len(ARMS) else None
                if not isinstance(item, Mapping):
                    raise fail(
                        f"{prefix}: a stroke must be a mapping, got {type(item).__name__}", prefix
                    )
                try:
                    stroke = stroke_from_mapping(item, side, base)
                except InputError as exc:
                    raise prefixed(exc, prefix, label) from None
                got = stroke.num_points
                if n is not None and got is not None and got != n:
                    if not resample:
                        name = f"{prefix}.{stroke.coords_field}"
                        raise fail(
                            f"{name}: has {got} points but stroke_length is {n} "
                            "(pass resample=True to resample linearly)",
                            name,
                        )
                    try:
                        stroke = stroke.resampled(n)
                    except InputError as exc:
                        raise prefixed(exc, prefix, label) from None
                pair.append(stroke)
            pairs.append(tuple(pair))
        return cls(tuple(pairs))

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        *,
        stroke_length: int | None = None,
        resample: bool = False,
    ) -> StrokeList:
        """Read strokes from a YAML file in our format or tatbot's (``.npy`` references are
        relative to the file). See :meth:`from_dict` for the layout and options."""
        p = Path(path)
        data = read_yaml_file(p)
        return cls.from_dict(
            data,
            base_dir=p.parent,
            stroke_length=stroke_length,
            resample=resample,
            source=str(p),
        )

    def to_yaml(self, path: str | os.PathLike[str], *, npy: bool = False) -> str:
        """Write our YAML format to ``path`` and return the text.

        Arrays are inline (exact float64 round trip) unless ``npy``: then each array goes to
        ``arrays/stroke_{i}_{side}_{name}.npy`` beside the file and the YAML references it
        with ``{name}_file``, as tatbot does (tatbot's loader reads such files too).
        """
        p = Path(path)
        doc = self.to_dict()
        if npy:
            arrays_dir = p.parent / "arrays"
            arrays_dir.mkdir(parents=True, exist_ok=True)
            for i, (pair, raw_pair) in enumerate(zip(self.pairs, doc["strokes"], strict=True)):
                for k, (stroke, raw) in enumerate(zip(pair, raw_pair, strict=True)):
                    side = ARMS[k] if len(pair) == len(ARMS) else str(k)
                    if len(pair) == len(ARMS):
                        raw.setdefault("arm", side)
                    for name in USED_ARRAYS:
                        arr = getattr(stroke, name)
                        if arr is None:
                            continue
                        rel = f"arrays/stroke_{i}_{side}_{name}.npy"
                        np.save(p.parent / rel, np.ascontiguousarray(arr))
                        del raw[name]
                        raw[f"{name}_file"] = rel
        text = (
            "# zmq-ik strokes: [left, right] pairs; see zmq_ik.model.StrokeList\n"
            if self.n_ee in (None, len(ARMS))
            else "# zmq-ik strokes: one stroke per arm in each group; see zmq_ik.model.StrokeList\n"
        )
        text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return text


@documented
@dataclass(frozen=True, eq=False)
class PackedStrokes(ValueEq):
    """A StrokeList as dense arrays (what travels to workers; ``b`` groups of ``n_ee``
    strokes of ``l`` points).

    Arrays are not copied when already of the right dtype (they may be read-only network
    buffers); they are stored as read-only views. ``unpack`` is lossy: descriptions and
    colours are dropped, values are float32, and every non-ink-dip stroke (rest strokes
    included) comes back with ``meter_coords``.
    """

    coords: npt.NDArray[Any]
    """(b, n_ee, l, 3) float32: ``meter_coords`` (design frame) for normal strokes, ``ee_pos``
    (world frame) for ink dips, zeros for coordinate-less rest strokes."""
    is_inkdip: npt.NDArray[Any]
    """(b, n_ee) bool: stroke is an ink dip."""
    is_rest: npt.NDArray[Any]
    """(b, n_ee) bool: arm rests during the stroke."""

    def __post_init__(self) -> None:
        coords, is_inkdip, is_rest = check_packed(self.coords, self.is_inkdip, self.is_rest)
        object.__setattr__(self, "coords", coords)
        object.__setattr__(self, "is_inkdip", is_inkdip)
        object.__setattr__(self, "is_rest", is_rest)

    def validate(self) -> None:
        """Check shapes, dtypes and finiteness; :class:`InputError` naming the field otherwise.
        (Construction already does this.) A packed stroke may be both an ink dip and a rest:
        ``is_inkdip`` says which frame its coords are in, ``is_rest`` that its arm holds the
        ready pose (tatbot's first_last_rest on an ink-dip pair)."""
        for name, dtype in (("coords", np.float32), ("is_inkdip", np.bool_), ("is_rest", np.bool_)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                raise InputError(f"{name}: must be a {np.dtype(dtype).name} array", field=name)
        check_packed(self.coords, self.is_inkdip, self.is_rest)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def __repr__(self) -> str:
        return (
            f"PackedStrokes(b={self.b}, l={self.l}, coords {tuple(self.coords.shape)} float32, "
            f"{int(self.is_inkdip.sum())} ink dips, {int(self.is_rest.sum())} rest strokes)"
        )

    b = Dim("coords", 0, "Number of stroke groups (pairs, for two arms).")
    n_ee = Dim("coords", 1, "Strokes per group: end effectors.")
    l = Dim("coords", 2, "Points per stroke.")  # noqa: E741

    def unpack(self) -> StrokeList:
        """Back to a StrokeList (lossy; see the class docstring). ``arm`` is set by place in
        a pair."""
        pairs = []
        coords = self.coords.astype(np.float64)
        n_ee = self.n_ee
        for i in range(self.b):
            pair = []
            for k in range(n_ee):
                side = ARMS[k] if n_ee == len(ARMS) else None
                if self.is_inkdip[i, k]:
                    stroke = Stroke(ee_pos=coords[i, k], is_inkdip=True, arm=side)
                else:
                    stroke = Stroke(
                        meter_coords=coords[i, k], is_rest=bool(self.is_rest[i, k]), arm=side
                    )
                pair.append(stroke)
            pairs.append(tuple(pair))
        return StrokeList(tuple(pairs))


def apply_first_last_rest(packed: PackedStrokes, scene: Scene) -> PackedStrokes:
    """tatbot's ``first_last_rest`` as per-stroke flags, when ``scene.first_last_rest``: the
    right arm rests during the first pair, the left during the last (a two-arm scene's:
    `Scene` refuses it for others). Applied to a whole job
    before it is split (a client's fan-out, or in process), so its chunks are independent."""
    if not scene.first_last_rest or len(packed) == 0 or packed.n_ee != len(ARMS):
        return packed  # (a job of another size is refused with the scene: `check_packed`)
    is_rest = packed.is_rest.copy()
    is_rest[0, 1] = True
    is_rest[-1, 0] = True
    return PackedStrokes(coords=packed.coords, is_inkdip=packed.is_inkdip, is_rest=is_rest)
