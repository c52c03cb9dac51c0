"""Data model: Stroke, StrokeList (our YAML and tatbot's .npy layout, every bad-file case)
and PackedStrokes (pack/unpack/validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zmq_ik.errors import InputError
from zmq_ik.model import ARMS, PackedStrokes, Scene, Stroke, StrokeList

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def pts(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.02, 0.02, (n, 3))


def normal(n: int = 16, seed: int = 0, **kw: Any) -> Stroke:
    return Stroke(meter_coords=pts(n, seed), **kw)


def sample_list(n_pairs: int = 3, n: int = 16) -> StrokeList:
    pairs = [
        (
            Stroke(
                ee_pos=pts(n, 1) + np.array([0.1, 0.05, 0.08]),
                is_inkdip=True,
                arm="left",
                color="red",
            ),
            Stroke(is_rest=True, description="rest"),
        )
    ]
    for i in range(1, n_pairs):
        pairs.append((normal(n, 2 * i, description=f"l{i}"), normal(n, 2 * i + 1, arm="right")))
    return StrokeList(tuple(pairs))


# ---------------------------------------------------------------------------------------------
# Stroke
# ---------------------------------------------------------------------------------------------


def test_stroke_basics() -> None:
    s = normal(5)
    assert s.num_points == 5 and s.coords_field == "meter_coords"
    assert s.meter_coords is not None and not s.meter_coords.flags.writeable
    assert s.coords is s.meter_coords
    dip = Stroke(ee_pos=pts(4), is_inkdip=True)
    assert dip.coords_field == "ee_pos" and dip.num_points == 4
    rest = Stroke(is_rest=True)
    assert rest.coords is None and rest.num_points is None
    assert Stroke(meter_coords=pts(3), description=None) == Stroke(meter_coords=pts(3))  # type: ignore[arg-type]
    assert normal(5) != normal(5, seed=1) and normal(5) != "x"
    r = normal(4).resampled(7)
    assert r.num_points == 7
    src = normal(4).meter_coords
    assert r.meter_coords is not None and src is not None
    np.testing.assert_allclose(r.meter_coords[[0, -1]], src[[0, -1]])
    one = Stroke(meter_coords=pts(1)).resampled(3)
    assert one.meter_coords is not None and one.meter_coords.shape == (3, 3)


BAD_STROKES: list[tuple[dict[str, Any], str]] = [
    ({}, "meter_coords"),
    ({"ee_pos": pts()}, "meter_coords"),
    ({"is_inkdip": True, "meter_coords": pts()}, "ee_pos"),
    ({"is_inkdip": True, "is_rest": True, "ee_pos": pts()}, "is_inkdip"),
    ({"meter_coords": pts()[:, :2]}, "meter_coords"),
    ({"meter_coords": pts()[0]}, "meter_coords"),
    ({"meter_coords": np.zeros((0, 3))}, "meter_coords"),
    ({"meter_coords": []}, "meter_coords"),
    ({"meter_coords": [[0, 0, float("nan")]]}, "meter_coords"),
    ({"meter_coords": pts(), "ee_pos": [[0, 0, float("inf")]] * 16}, "ee_pos"),
    ({"meter_coords": pts(4), "ee_pos": pts(5)}, "ee_pos"),
    ({"meter_coords": [["a", "b", "c"]]}, "meter_coords"),
    ({"meter_coords": pts(), "is_rest": "no"}, "is_rest"),
    ({"meter_coords": pts(), "is_inkdip": 0}, "is_inkdip"),
    ({"meter_coords": pts(), "arm": ""}, "arm"),
    ({"meter_coords": pts(), "color": 3}, "color"),
    ({"meter_coords": pts(), "description": 3}, "description"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_STROKES)
def test_stroke_validation_names_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        Stroke(**kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(field)


# ---------------------------------------------------------------------------------------------
# StrokeList
# ---------------------------------------------------------------------------------------------


def test_strokelist_sequence() -> None:
    sl = sample_list(4)
    assert len(sl) == 4
    assert [p for p in sl] == list(sl.pairs)
    assert sl[1] == sl.pairs[1]
    sub = sl[1:3]
    assert isinstance(sub, StrokeList) and len(sub) == 2 and sub[0] == sl[1]
    assert sl.stroke_length == 16
    assert StrokeList().stroke_length is None and len(StrokeList()) == 0
    assert StrokeList([[normal(), normal()]]) == StrokeList(((normal(), normal()),))  # type: ignore[arg-type]
    mixed = StrokeList(((normal(4), normal(5)),))
    assert mixed.stroke_length is None
    assert mixed.resampled(6).stroke_length == 6


@pytest.mark.parametrize(
    ("pairs", "field"),
    [
        (((),), "strokes[0]"),
        (((normal(), normal()), (normal(),)), "strokes[1]"),  # one stroke per arm in every group
        (((normal(), normal()), (normal(), "x")), "strokes[1].right"),
        (((normal(arm="right"), normal()),), "strokes[0].left.arm"),
        (((normal(), normal(arm="left")),), "strokes[0].right.arm"),
        ("ab", "strokes"),
    ],
)
def test_strokelist_validation(pairs: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        StrokeList(pairs)
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# pack / unpack
# ---------------------------------------------------------------------------------------------


def test_pack_layout() -> None:
    sl = sample_list(3)
    p = sl.pack(16)
    assert p.coords.shape == (3, 2, 16, 3) and p.coords.dtype == np.float32
    assert p.is_inkdip.dtype == np.bool_ and p.is_rest.dtype == np.bool_
    assert len(p) == 3 and p.b == 3 and p.l == 16
    left0, _ = sl[0]
    assert left0.ee_pos is not None
    np.testing.assert_array_equal(p.coords[0, 0], left0.ee_pos.astype(np.float32))
    np.testing.assert_array_equal(p.coords[0, 1], 0.0)  # coordless rest
    np.testing.assert_array_equal(p.is_inkdip, [[True, False], [False, False], [False, False]])
    np.testing.assert_array_equal(p.is_rest, [[False, True], [False, False], [False, False]])
    left1, _ = sl[1]
    assert left1.meter_coords is not None
    np.testing.assert_array_equal(p.coords[1, 0], left1.meter_coords.astype(np.float32))
    assert sl.pack() == p  # inferred stroke_length
    assert StrokeList().pack(16).coords.shape == (0, 2, 16, 3)


def test_pack_wrong_length_names_stroke() -> None:
    sl = StrokeList(((normal(), normal()), (normal(), normal(15))))
    with pytest.raises(InputError) as err:
        sl.pack(16)
    assert err.value.field == "strokes[1].right.meter_coords"
    assert "15 points" in str(err.value) and "16" in str(err.value)
    dip = StrokeList(((Stroke(ee_pos=pts(3), is_inkdip=True), normal()),))
    with pytest.raises(InputError) as err:
        dip.pack(16)
    assert err.value.field == "strokes[0].left.ee_pos"
    with pytest.raises(InputError) as err:
        sl.pack()  # mixed lengths: cannot infer
    assert err.value.field == "stroke_length"
    with pytest.raises(InputError):
        StrokeList(((Stroke(is_rest=True), Stroke(is_rest=True)),)).pack()


def test_unpack_roundtrip() -> None:
    sl = sample_list(5)
    p = sl.pack(16)
    back = p.unpack()
    assert back.pack(16) == p
    assert len(back) == 5
    left, right = back[0]
    assert left.is_inkdip and left.ee_pos is not None and left.arm == "left"
    assert right.is_rest and right.meter_coords is not None and right.arm == "right"
    assert back[1][0].description == ""  # lossy by design


def test_packed_accepts_network_buffers_without_copy() -> None:
    coords = np.zeros((2, 2, 4, 3), dtype=np.float32)
    buf = np.frombuffer(coords.tobytes(), dtype=np.float32).reshape(coords.shape)
    flags = np.frombuffer(np.zeros((2, 2), dtype=np.bool_).tobytes(), dtype=np.bool_).reshape(2, 2)
    p = PackedStrokes(coords=buf, is_inkdip=flags, is_rest=flags)
    assert np.shares_memory(p.coords, buf)
    p.validate()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"coords": np.zeros((2, 3, 4, 3), np.float32)}, "is_inkdip"),  # 3 arms, flags for 2
        ({"coords": np.zeros((2, 2, 4, 2), np.float32)}, "coords"),
        ({"coords": np.zeros((2, 2, 4), np.float32)}, "coords"),
        ({"coords": np.full((2, 2, 4, 3), np.nan, np.float32)}, "coords"),
        ({"coords": np.full((2, 2, 4, 3), 1e300)}, "coords"),  # overflows float32
        ({"coords": np.zeros((2, 2, 4, 3), object)}, "coords"),
        ({"is_inkdip": np.zeros((2, 2), np.int8)}, "is_inkdip"),
        ({"is_inkdip": np.zeros((3, 2), bool)}, "is_inkdip"),
        ({"is_rest": np.zeros((2,), bool)}, "is_rest"),
    ],
)
def test_packed_validation(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "coords": np.zeros((2, 2, 4, 3), np.float32),
        "is_inkdip": np.zeros((2, 2), bool),
        "is_rest": np.zeros((2, 2), bool),
    }
    base.update(kwargs)
    with pytest.raises(InputError) as err:
        PackedStrokes(**base)
    assert err.value.field == field


def test_packed_validate_catches_tampering() -> None:
    p = sample_list(2).pack(16)
    object.__setattr__(p, "coords", p.coords.astype(np.float64))
    with pytest.raises(InputError) as err:
        p.validate()
    assert err.value.field == "coords"


# ---------------------------------------------------------------------------------------------
# YAML round trips
# ---------------------------------------------------------------------------------------------

coord = st.floats(-1.0, 1.0, allow_nan=False, width=64)
maybe_text = st.none() | st.text(max_size=8)


@st.composite
def strokes(draw: st.DrawFn, side: str) -> Stroke:
    n = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["normal", "inkdip", "rest", "rest_coords"]))
    arr = hnp.arrays(np.float64, (n, 3), elements=coord)
    kw: dict[str, Any] = {
        "description": draw(st.text(max_size=10)),
        "arm": draw(st.sampled_from([None, side])),
        "color": draw(maybe_text),
    }
    if kind == "normal":
        return Stroke(meter_coords=draw(arr), ee_pos=draw(st.none() | arr), **kw)
    if kind == "inkdip":
        return Stroke(ee_pos=draw(arr), is_inkdip=True, **kw)
    if kind == "rest":
        return Stroke(is_rest=True, **kw)
    return Stroke(meter_coords=draw(arr), is_rest=True, **kw)


stroke_lists = st.lists(st.tuples(strokes("left"), strokes("right")), max_size=5).map(
    lambda pairs: StrokeList(tuple(pairs))
)


@FAST
@given(stroke_lists)
def test_strokelist_yaml_roundtrip_inline(tmp_path: Path, sl: StrokeList) -> None:
    path = tmp_path / "inline.yaml"
    sl.to_yaml(path)
    assert StrokeList.from_yaml(path) == sl
    assert StrokeList.from_dict(sl.to_dict()) == sl


@FAST
@given(stroke_lists)
def test_strokelist_yaml_roundtrip_npy(tmp_path: Path, sl: StrokeList) -> None:
    path = tmp_path / "sub" / "npy.yaml"
    text = sl.to_yaml(path, npy=True)
    assert "meter_coords:" not in text and "ee_pos:" not in text
    back = StrokeList.from_yaml(path)
    # to_yaml(npy=True) fills in `arm` (tatbot requires it)
    assert back == StrokeList(
        tuple(
            tuple(s._replace(arm=side) for side, s in zip(ARMS, pair, strict=True))  # type: ignore[misc]
            for pair in sl
        )
    )


def test_examples_strokes() -> None:
    scene = Scene.from_yaml(EXAMPLES / "scene.yaml")
    sl = StrokeList.from_yaml(EXAMPLES / "strokes.yaml", stroke_length=scene.stroke_length)
    assert len(sl) >= 24
    flat = [s for pair in sl for s in pair]
    assert sum(s.is_inkdip for s in flat) == 1 and sum(s.is_rest for s in flat) == 1
    assert sl.stroke_length == 16
    for s in flat:
        if s.meter_coords is not None and not s.is_inkdip:
            assert np.abs(s.meter_coords[:, :2]).max() <= 0.02 + 1e-9
            np.testing.assert_array_equal(s.meter_coords[:, 2], 0.0)
    packed = sl.pack(scene.stroke_length)
    tatbot = StrokeList.from_yaml(EXAMPLES / "tatbot_format" / "strokes.yaml", stroke_length=16)
    np.testing.assert_array_equal(tatbot.pack(16).coords, packed.coords)
    assert tatbot.pack(16) == packed


# ---------------------------------------------------------------------------------------------
# tatbot's on-disk format
# ---------------------------------------------------------------------------------------------


def write_tatbot(root: Path, n_pairs: int = 3, n: int = 16) -> Path:
    """A strokes file the way tatbot's StrokeList.to_yaml_with_arrays writes it."""
    arrays = root / "arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    doc = []
    for i in range(n_pairs):
        pair = []
        for k, side in enumerate(ARMS):
            d: dict[str, Any] = {
                "description": f"stroke {i} {side}",
                "arm": side,
                "gcode_text": "G1 X0 Y0",
                "frame_path": None,
                "is_rest": False,
                "is_inkdip": False,
                "inkcap": None,
                "color": "black",
                "dt": 0.1,
                "pixel_coords_file": f"arrays/stroke_{i}_{side}_pixel_coords.npy",  # never written
                "ee_rot_file": f"arrays/stroke_{i}_{side}_ee_rot.npy",
            }
            if i == 0 and k == 0:
                d["is_inkdip"] = True
                d["inkcap"] = "inkcap_left_large"
                np.save(arrays / "stroke_0_left_ee_pos.npy", pts(n, 99).astype(np.float32))
                d["ee_pos_file"] = "arrays/stroke_0_left_ee_pos.npy"
            else:
                rel = f"arrays/stroke_{i}_{side}_meter_coords.npy"
                np.save(root / rel, pts(n, 10 * i + k).astype(np.float32))
                d["meter_coords_file"] = rel
                d["normals"] = [[0, 0, 1]] * n  # inline ignored array
            pair.append(d)
        doc.append(pair)
    path = root / "strokes.yaml"
    path.write_text(yaml.safe_dump({"strokes": doc}, sort_keys=False))
    return path


def test_reads_tatbot_format(tmp_path: Path) -> None:
    path = write_tatbot(tmp_path)
    sl = StrokeList.from_yaml(path, stroke_length=16)
    assert len(sl) == 3
    left0, right0 = sl[0]
    assert left0.is_inkdip and left0.ee_pos is not None
    np.testing.assert_array_equal(left0.ee_pos, pts(16, 99).astype(np.float32))
    assert right0.description == "stroke 0 right" and right0.arm == "right"
    assert right0.color == "black"
    _, right2 = sl[2]
    assert right2.meter_coords is not None
    np.testing.assert_array_equal(right2.meter_coords, pts(16, 21).astype(np.float32))
    # inline arrays, a top-level list and {left:, right:} pairs are fine too
    inline = [{"left": sl[1][0].to_dict(), "right": sl[1][1].to_dict()}]
    assert StrokeList.from_dict(inline) == sl[1:2]


def test_tatbot_resample(tmp_path: Path) -> None:
    path = write_tatbot(tmp_path, n=20)
    with pytest.raises(InputError) as err:
        StrokeList.from_yaml(path, stroke_length=16)
    assert err.value.field == "strokes[0].left.ee_pos"
    assert "20 points" in str(err.value) and "stroke_length is 16" in str(err.value)
    assert "resample=True" in str(err.value) and str(path) in str(err.value)
    sl = StrokeList.from_yaml(path, stroke_length=16, resample=True)
    assert sl.stroke_length == 16
    assert StrokeList.from_yaml(path).stroke_length == 20  # no check without stroke_length


def _mutate(path: Path, fn: Any) -> None:
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _set(i: int, k: int, key: str, value: Any) -> Any:
    def fn(doc: Any) -> None:
        doc["strokes"][i][k][key] = value

    return fn


def _del(i: int, k: int, key: str) -> Any:
    def fn(doc: Any) -> None:
        del doc["strokes"][i][k][key]

    return fn


BAD_FILES: list[tuple[str, Any, str | None, str]] = [
    ("missing npy", _set(1, 0, "meter_coords_file", "arrays/nope.npy"),
     "strokes[1].left.meter_coords_file", "missing .npy"),
    ("no arrays", _del(1, 1, "meter_coords_file"), "strokes[1].right.meter_coords", "needs"),
    ("inkdip without ee_pos", _del(0, 0, "ee_pos_file"), "strokes[0].left.ee_pos", "ink-dip"),
    ("three arms", lambda d: d["strokes"][1].append(d["strokes"][1][0]), "strokes[1]", "3 arm"),
    ("one arm", lambda d: d["strokes"][2].pop(), "strokes[2]", "1 arm"),
    ("pair not list", lambda d: d["strokes"].__setitem__(1, 5), "strokes[1]", "pair"),
    ("stroke not mapping", lambda d: d["strokes"][1].__setitem__(0, [1, 2]),
     "strokes[1].left", "mapping"),
    ("no strokes key", lambda d: d.pop("strokes"), "strokes", "strokes"),
    ("strokes not list", lambda d: d.__setitem__("strokes", {"a": 1}), "strokes", "list"),
    ("bad version", lambda d: d.__setitem__("version", 2), "version", "version"),
    ("inline and file", _set(1, 0, "meter_coords", [[0, 0, 0]] * 16),
     "strokes[1].left.meter_coords", "both inline and"),
    ("inline nan", lambda d: d["strokes"][1][0].update(
        meter_coords_file=None, meter_coords=[[0, 0, float("nan")]] * 16),
     "strokes[1].left.meter_coords", "NaN"),
    ("arm mismatch", _set(2, 1, "arm", "left"), "strokes[2].right.arm", "left"),
    ("is_rest string", _set(2, 1, "is_rest", "maybe"), "strokes[2].right.is_rest", "true or false"),
    ("both flags", _set(0, 0, "is_rest", True), "strokes[0].left.is_inkdip", "both"),
    ("bad file ref type", _set(2, 0, "meter_coords_file", 5),
     "strokes[2].left.meter_coords_file", "string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "mutate", "field", "needle"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_tatbot_files(
    tmp_path: Path, label: str, mutate: Any, field: str | None, needle: str
) -> None:
    path = write_tatbot(tmp_path)
    _mutate(path, mutate)
    with pytest.raises(InputError) as err:
        StrokeList.from_yaml(path, stroke_length=16)
    assert err.value.field == field, label
    assert str(path) in str(err.value)
    assert needle in str(err.value)


BAD_NPY: list[tuple[str, str, Any, str, str]] = [
    ("wrong shape", "stroke_1_left_meter_coords.npy", np.zeros((16, 2)),
     "strokes[1].left.meter_coords", "shape (N, 3)"),
    ("1-d", "stroke_1_left_meter_coords.npy", np.zeros(16),
     "strokes[1].left.meter_coords", "shape"),
    ("nan", "stroke_2_right_meter_coords.npy", np.full((16, 3), np.nan),
     "strokes[2].right.meter_coords", "NaN"),
    ("inf", "stroke_0_left_ee_pos.npy", np.full((16, 3), np.inf),
     "strokes[0].left.ee_pos", "NaN or inf"),
    ("strings", "stroke_1_left_meter_coords.npy", np.array([["a", "b", "c"]]),
     "strokes[1].left.meter_coords", "numbers"),
    ("object (pickle)", "stroke_1_left_meter_coords.npy", np.array([None, 1], dtype=object),
     "strokes[1].left.meter_coords_file", "cannot read"),
    ("wrong length", "stroke_2_left_meter_coords.npy", np.zeros((12, 3)),
     "strokes[2].left.meter_coords", "12 points but stroke_length is 16"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "name", "arr", "field", "needle"), BAD_NPY, ids=[b[0] for b in BAD_NPY]
)
def test_bad_npy_files(
    tmp_path: Path, label: str, name: str, arr: Any, field: str, needle: str
) -> None:
    path = write_tatbot(tmp_path)
    np.save(tmp_path / "arrays" / name, arr, allow_pickle=True)
    with pytest.raises(InputError) as err:
        StrokeList.from_yaml(path, stroke_length=16)
    assert err.value.field == field, label
    assert str(path) in str(err.value) and needle in str(err.value)


def test_garbage_npy(tmp_path: Path) -> None:
    path = write_tatbot(tmp_path)
    (tmp_path / "arrays" / "stroke_1_right_meter_coords.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError) as err:
        StrokeList.from_yaml(path)
    assert err.value.field == "strokes[1].right.meter_coords_file"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("strokes: [[{}, {}]\n", "not valid YAML"), ("42\n", "list")],
)
def test_bad_yaml_text(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        StrokeList.from_yaml(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_missing_strokes_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        StrokeList.from_yaml(tmp_path / "nope.yaml")


def test_empty_strokes_list_ok(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("strokes: []\n")
    assert len(StrokeList.from_yaml(path)) == 0
    StrokeList().to_yaml(path)
    assert StrokeList.from_yaml(path) == StrokeList()


def test_packed_stroke_may_be_rest_and_inkdip():
    """first_last_rest on an ink-dip pair: coords stay world-frame, the arm holds its ready pose."""
    coords = np.zeros((1, 2, 4, 3), np.float32)
    flags = np.array([[True, False]])
    packed = PackedStrokes(coords=coords, is_inkdip=flags, is_rest=flags.copy())
    assert packed.is_rest[0, 0] and packed.is_inkdip[0, 0]


def test_reprs_are_short() -> None:
    """#18.13: print(strokes) was every point of every stroke; now counts and shapes."""
    from zmq_ik.robots import example_paths

    strokes = StrokeList.from_yaml(example_paths()[1])
    big = StrokeList(strokes.pairs * 100)
    assert (
        repr(big) == "StrokeList(3600 pairs, 16 points per stroke, 100 ink dips, 100 rest strokes)"
    )
    assert repr(big.pack()).startswith("PackedStrokes(b=3600, l=16, coords (3600, 2, 16, 3)")
    assert repr(strokes[1][0]).startswith("Stroke(meter_coords (16, 3), arm='left'")
