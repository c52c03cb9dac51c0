"""Data model: IKSettings, Scene (validation, dict/YAML/msgpack round trips, tatbot aliases)
and the bundled robot registry."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zmq_ik.errors import InputError
from zmq_ik.model import IKSettings, Scene
from zmq_ik.robots import (
    BUNDLED,
    RobotDefaults,
    bundled_robot_path,
    example_paths,
    fixed_link_pose,
)

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------------------------


def test_scene_defaults_are_tatbot() -> None:
    s = Scene()
    assert s.robot == "tatbot"
    assert s.ee_links == ("left/tattoo_needle", "right/tattoo_needle")
    assert (s.stroke_length, s.offset_num, s.offset_range) == (16, 6, (-0.002, 0.002))
    np.testing.assert_array_equal(s.ready_l, [-0.333, 0.639, 0.667, -1.034, 0.541, 2.240, 0.04])
    np.testing.assert_array_equal(s.ready_r, [0.333, 0.639, 0.667, -1.034, -0.541, -2.240, 0.04])
    np.testing.assert_allclose(s.ee_rot_l, [0.7071, 0, 0, -0.7071], atol=1e-4)
    np.testing.assert_allclose(s.ee_rot_r, [0.7071, 0, 0, 0.7071], atol=1e-4)
    assert np.linalg.norm(s.ee_rot_l) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_array_equal(
        s.ee_offset_l, [-0.0032011130459314863, -0.006146244846220735, 0.0]
    )
    np.testing.assert_array_equal(
        s.ee_offset_r, [0.0003607626669337727, 0.011764407112841976, 0.00529831437515331]
    )
    np.testing.assert_array_equal(s.hover_offset, [0, 0, 0.005])
    np.testing.assert_array_equal(s.design_wxyz, [1, 0, 0, 0])
    assert s.first_last_rest is True and s.name == "default"
    assert s.ik == IKSettings()
    assert s.ready.shape == (14,)
    np.testing.assert_array_equal(s.ready, np.concatenate([s.ready_l, s.ready_r]))


def test_design_origin_is_lasercross_link() -> None:
    pos, wxyz = fixed_link_pose("tatbot", "lasercross")
    np.testing.assert_allclose(Scene().design_pos, pos, atol=1e-12)
    np.testing.assert_allclose(Scene().design_wxyz, wxyz, atol=1e-12)


def test_ik_settings_defaults() -> None:
    ik = IKSettings()  # the reaching mode (#23); tatbot's solver is a preset
    assert (ik.pos_weight, ik.ori_weight, ik.rest_weight, ik.limit_weight) == (10, 1, 0.1, 32)
    assert (ik.lambda_initial, ik.max_iterations, ik.precise, ik.seeds, ik.continuous) == (
        0.3,
        16,
        True,
        1,
        False,
    )
    assert hash(ik) == hash(IKSettings())
    assert IKSettings.from_dict(ik.to_dict()) == ik
    assert isinstance(IKSettings(pos_weight=3).pos_weight, float)


def test_scene_arrays_are_read_only_copies() -> None:
    src = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    s = Scene(ready_l=src)
    assert s.ready_l.dtype == np.float64
    src[0] = 99
    assert s.ready_l[0] == 1.0
    with pytest.raises(ValueError):
        s.ready_l[0] = 5.0
    with pytest.raises(AttributeError):
        s.robot = "x"  # type: ignore[misc]
    assert Scene().ready_l is not Scene().ready_l  # no shared mutable default


def test_scene_accepts_lists_and_normalises_quaternions() -> None:
    s = Scene(ee_rot_l=[2.0, 0.0, 0.0, 0.0], ee_links=["a", "b"], offset_range=[0, 1])  # type: ignore[arg-type]
    np.testing.assert_array_equal(s.ee_rot_l, [1, 0, 0, 0])
    assert s.ee_links == ("a", "b") and s.offset_range == (0.0, 1.0)


def test_scene_equality_and_replace() -> None:
    a = Scene()
    assert a == Scene() and hash(a) == hash(Scene())
    b = a.replace(hover_offset=np.array([0.0, 0.0, 0.006]))
    assert b != a and b.hover_offset[2] == 0.006
    assert a != "scene"
    assert a.replace(ik=IKSettings(seeds=4)) != a


# ---------------------------------------------------------------------------------------------
# validation: every failure names its field
# ---------------------------------------------------------------------------------------------

BAD_SCENES: list[tuple[dict[str, Any], str]] = [
    ({"robot": ""}, "robot"),
    ({"robot": 3}, "robot"),
    ({"ee_links": ()}, "ee_links"),
    ({"ee_links": ("a", "a")}, "ee_links"),
    ({"ee_links": ("a",)}, "ee_rot"),  # one arm: its orientation has no default
    ({"ee_links": "ab"}, "ee_links"),
    ({"ee_links": ("a", "")}, "ee_links[1]"),
    ({"stroke_length": 0}, "stroke_length"),
    ({"stroke_length": 16.0}, "stroke_length"),
    ({"stroke_length": True}, "stroke_length"),
    ({"offset_num": 0}, "offset_num"),
    ({"offset_range": (0.1, -0.1)}, "offset_range"),
    ({"offset_range": (float("nan"), 0.0)}, "offset_range"),
    ({"offset_range": (0.0,)}, "offset_range"),
    ({"ready_l": np.zeros(6)}, "ready"),  # tatbot's chains: 7 + 7
    ({"ready_r": [0, 0, 0, 0, 0, 0, float("nan")]}, "ready_r"),
    ({"ready_r": None}, "ready_r"),
    ({"ee_rot_l": np.zeros(4)}, "ee_rot_l"),
    ({"ee_rot_r": [1, 0, 0]}, "ee_rot_r"),
    ({"ee_offset_l": np.zeros((3, 1))}, "ee_offset_l"),
    ({"ee_offset_r": ["a", "b", "c"]}, "ee_offset_r"),
    ({"hover_offset": [True, False, True]}, "hover_offset"),
    ({"design_pos": [0, float("inf"), 0]}, "design_pos"),
    ({"design_wxyz": [[1, 0, 0, 0]]}, "design_wxyz"),
    ({"design_pos": [[1, 2], [3]]}, "design_pos"),
    ({"first_last_rest": 1}, "first_last_rest"),
    ({"name": 3}, "name"),
    ({"ik": "fast"}, "ik"),
    ({"ik": {"seeds": 0}}, "ik.seeds"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_SCENES)
def test_scene_validation_names_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        Scene(**kwargs)
    assert err.value.field == field
    assert field.split("[")[0] in str(err.value)


BAD_IK: list[tuple[dict[str, Any], str]] = [
    ({"pos_weight": -1.0}, "pos_weight"),
    ({"ori_weight": float("nan")}, "ori_weight"),
    ({"rest_weight": float("inf")}, "rest_weight"),
    ({"limit_weight": True}, "limit_weight"),
    ({"limit_weight": "1"}, "limit_weight"),
    ({"pos_weight": 2e19}, "pos_weight"),  # float32 cost overflow: silently the rest pose
    ({"ori_weight": 1.1e6}, "ori_weight"),
    ({"lambda_initial": 0.0}, "lambda_initial"),
    ({"lambda_initial": 1e8}, "lambda_initial"),
    ({"max_iterations": 0}, "max_iterations"),
    ({"max_iterations": 1001}, "max_iterations"),
    ({"max_iterations": 3.0}, "max_iterations"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": 257}, "seeds"),
    ({"precise": "yes"}, "precise"),
    ({"continuous": 1}, "continuous"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_IK)
def test_ik_settings_validation_names_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        IKSettings(**kwargs)
    assert err.value.field == field
    with pytest.raises(InputError) as err2:
        Scene.from_dict({"ik": kwargs})
    assert err2.value.field == f"ik.{field}"
    assert str(err2.value).startswith(f"ik.{field}")


def test_ik_settings_limits_accepted() -> None:
    IKSettings(pos_weight=0.0, max_iterations=1, seeds=256, precise=True, continuous=True)
    IKSettings(max_iterations=1000, seeds=np.int64(3))  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_keys_and_non_mappings() -> None:
    with pytest.raises(InputError) as err:
        Scene.from_dict({"bogus": 1})
    assert err.value.field == "bogus"
    with pytest.raises(InputError) as err:
        Scene.from_dict({"ik": {"bogus": 1}})
    assert err.value.field == "ik.bogus"
    with pytest.raises(InputError) as err:
        Scene.from_dict([1, 2])  # type: ignore[arg-type]
    assert err.value.field == "scene"
    with pytest.raises(InputError) as err:
        Scene.from_dict({"ready_pos_l": [0] * 7, "ready_l": [0] * 7})
    assert err.value.field == "ready_l"
    assert Scene.from_dict(None) == Scene()
    assert Scene.from_dict({"ik": None}) == Scene()


def test_from_dict_accepts_tatbot_spellings() -> None:
    d = {
        "name": "tatbot-ish",
        "arms_config_name": "default",
        "pen_names_l": ["black"],
        "ready_pos_l": {"joints": [0.1] * 7},
        "ready_pos_r": [0.2] * 7,
        "ee_rot_l": {"wxyz": [0, 0, 0, 1]},
        "hover_offset": {"xyz": [0, 0, 0.01]},
        "lasercross_pose": {"pos": {"xyz": [0.3, 0.0, 0.1]}, "rot": {"wxyz": [1, 0, 0, 0]}},
        "offset_range": [-0.001, 0.001],
    }
    s = Scene.from_dict(d)
    np.testing.assert_array_equal(s.ready_l, [0.1] * 7)
    np.testing.assert_array_equal(s.ready_r, [0.2] * 7)
    np.testing.assert_array_equal(s.ee_rot_l, [0, 0, 0, 1])
    np.testing.assert_array_equal(s.hover_offset, [0, 0, 0.01])
    np.testing.assert_array_equal(s.design_pos, [0.3, 0.0, 0.1])
    assert s.offset_range == (-0.001, 0.001)
    with pytest.raises(InputError) as err:
        Scene.from_dict({"lasercross_pose": {"pos": [0, 0, 0], "scale": 1}})
    assert err.value.field == "lasercross_pose"


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
small = st.floats(-1e3, 1e3, allow_nan=False)
names = st.text(min_size=1, max_size=12)


def _vec(n: int, elements: st.SearchStrategy[float] = finite) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, (n,), elements=elements)


quats = _vec(4, st.floats(-10, 10, allow_nan=False)).filter(lambda q: np.linalg.norm(q) > 1e-3)

ik_settings = st.builds(
    IKSettings,
    pos_weight=st.floats(0, 1e6),
    ori_weight=st.floats(0, 1e6),
    rest_weight=st.floats(0, 1e6),
    limit_weight=st.floats(0, 1e6),
    lambda_initial=st.floats(1e-9, 1e6),
    max_iterations=st.integers(1, 1000),
    precise=st.booleans(),
    seeds=st.integers(1, 256),
    continuous=st.booleans(),
)


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    lo, hi = sorted(draw(st.tuples(small, small)))
    return Scene(
        robot=draw(names),
        ee_links=tuple(draw(st.lists(names, min_size=2, max_size=2, unique=True))),
        stroke_length=draw(st.integers(1, 10_000)),
        offset_num=draw(st.integers(1, 64)),
        offset_range=(lo, hi),
        ready_l=draw(_vec(7)),
        ready_r=draw(_vec(7)),
        ee_rot_l=draw(quats),
        ee_rot_r=draw(quats),
        ee_offset_l=draw(_vec(3)),
        ee_offset_r=draw(_vec(3)),
        hover_offset=draw(_vec(3)),
        design_pos=draw(_vec(3)),
        design_wxyz=draw(quats),
        first_last_rest=draw(st.booleans()),
        name=draw(st.text(max_size=12)),
        pos_tol=draw(st.floats(0.0, 0.01)),
        ori_tol=draw(st.floats(0.0, 0.5)),
        ik=draw(ik_settings),
    )


@FAST
@given(scenes())
def test_scene_dict_json_msgpack_roundtrip(scene: Scene) -> None:
    d = scene.to_dict()
    assert Scene.from_dict(d) == scene
    assert Scene.from_dict(json.loads(json.dumps(d))) == scene
    assert Scene.from_dict(msgpack.unpackb(msgpack.packb(d))) == scene
    # msgpack-friendly: only plain types
    assert all(not isinstance(v, np.ndarray) for v in d.values())


@FAST
@given(scenes())
def test_scene_yaml_roundtrip(scene: Scene) -> None:
    text = scene.to_yaml()
    assert Scene.from_yaml(text) == scene


def test_scene_yaml_files(tmp_path: Path) -> None:
    path = tmp_path / "scene.yaml"
    scene = Scene(name="file", stroke_length=8)
    text = scene.to_yaml(path)
    assert path.read_text() == text
    assert Scene.from_yaml(path) == scene
    assert Scene.from_yaml(str(path)) == scene
    # partial file: missing keys take defaults
    partial = tmp_path / "partial.yml"
    partial.write_text("stroke_length: 32\nik:\n  seeds: 4\n")
    s = Scene.from_yaml(partial)
    assert s.stroke_length == 32 and s.ik.seeds == 4 and s.robot == "tatbot"
    # `scene:` wrapper accepted
    assert Scene.from_yaml("scene:\n  name: wrapped\n").name == "wrapped"
    assert Scene.from_yaml("") == Scene()
    assert Scene.from_yaml("name: my.yaml").name == "my.yaml"  # one-line text, not a path


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        ("stroke_length: 0\n", "stroke_length", "stroke_length"),
        ("ready_l: [1, 2]\n", "ready", "which have 14"),
        ("ee_rot_l: [0, 0, 0, 0]\n", "ee_rot_l", "zero norm"),
        ("hover_offset: [0, .nan, 0]\n", "hover_offset", "NaN"),
        ("unknown_key: 1\n", "unknown_key", "unknown"),
        ("ik: {seeds: 1000}\n", "ik.seeds", "seeds"),
        ("- 1\n- 2\n", "scene", "mapping"),
        ("a: [1, 2\n", None, "not valid YAML"),
    ],
)
def test_scene_bad_files_name_file_and_field(
    tmp_path: Path, text: str, field: str | None, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        Scene.from_yaml(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and needle in str(err.value)


def test_scene_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        Scene.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="not found"):
        Scene.from_yaml(str(tmp_path / "nope.yaml"))


def test_scene_yaml_is_safe() -> None:
    with pytest.raises(InputError, match="not valid YAML"):
        Scene.from_yaml("name: !!python/object/apply:os.system ['true']\n")


def test_example_scene_is_default() -> None:
    assert Scene.from_yaml(ROOT / "examples" / "scene.yaml") == Scene()


def test_all_fields_documented() -> None:
    src = (ROOT / "zmq_ik" / "model" / "scene.py").read_text()
    for f in fields(Scene):
        assert f"    {f.name}:" in src


def test_tolerances_belong_to_the_scene_in_metres_and_radians() -> None:
    """#18.7: one definition of the tolerances (POS_TOL, ORI_TOL), one unit convention; they
    judge answers on the client and are not sent to workers (an older worker refuses
    unknown scene fields)."""
    from zmq_ik.model import ORI_TOL, POS_TOL, PackedStrokes
    from zmq_ik.model.ops import strokebatch_request

    s = Scene.from_yaml("pos_tol: 0.0005\nori_tol: 0.1\n")
    assert (s.pos_tol, s.ori_tol) == (5e-4, 0.1) and (Scene().pos_tol, Scene().ori_tol) == (
        POS_TOL,
        ORI_TOL,
    )
    assert Scene.from_dict(s.to_dict()) == s
    packed = PackedStrokes(
        np.zeros((1, 2, 16, 3), np.float32), np.zeros((1, 2), bool), np.zeros((1, 2), bool)
    )
    header, _ = strokebatch_request(s, packed)
    assert "pos_tol" not in header["scene"] and "ori_tol" not in header["scene"]
    for text, unit in (("pos_tol: 0.5\n", "metres"), ("ori_tol: 10\n", "radians")):
        with pytest.raises(InputError, match=unit):  # 0.5 "mm" is not taken as 0.5 m
            Scene.from_yaml(text)
    # #24.7: degrees typed for ori_tol are refused (up to pi passed before), with a hint.
    with pytest.raises(InputError, match=r"3° is 0\.05236 rad") as info:
        Scene(ori_tol=3)
    assert info.value.field == "ori_tol"
    with pytest.raises(InputError, match=r"0\.5 mm is 0\.0005 m"):
        Scene(pos_tol=0.5)
    assert Scene(ori_tol=0.5).ori_tol == 0.5


def test_settings_added_after_the_first_release_travel_only_when_set(monkeypatch) -> None:
    """#23.5: requests carry `IKSettings.to_wire`: a field listed in `ADDED_SETTINGS` is left
    out while it holds its default (an older worker, which refuses unknown keys, still
    serves every request that does not use it), sent when set. No field is listed yet."""
    from zmq_ik.model import ADDED_SETTINGS, PackedStrokes, ops
    from zmq_ik.settings import ik as _ik_settings

    assert ADDED_SETTINGS == {}  # every field shipped with ZIK/1's first release
    assert IKSettings(seeds=4).to_wire() == IKSettings(seeds=4).to_dict()
    one_pose = np.array([[1.0, 0, 0, 0]]), np.array([[0.1, 0.0, 0.2]])
    packed = PackedStrokes(
        np.zeros((1, 2, 16, 3), np.float32), np.zeros((1, 2), bool), np.zeros((1, 2), bool)
    )
    monkeypatch.setitem(_ik_settings.ADDED_SETTINGS, "continuous", "0.2.0")  # as if added
    assert "continuous" not in IKSettings().to_wire()
    assert IKSettings(continuous=True).to_wire()["continuous"] is True
    assert IKSettings.from_dict(IKSettings().to_wire()) == IKSettings()  # read as the default
    header, _ = ops.solve_request(*one_pose, ik=IKSettings(seeds=2))
    assert "continuous" not in header["ik"] and header["ik"]["seeds"] == 2
    scene = Scene().replace(ik=IKSettings(max_iterations=5))
    header, _ = ops.strokebatch_request(scene, packed)
    assert "continuous" not in header["scene"]["ik"] and "pos_tol" not in header["scene"]
    assert header["scene"] == scene.to_wire()
    assert ops.read_strokebatch_request(header, ops.strokebatch_request(scene, packed)[1])[0] == (
        scene
    )


def test_a_worker_tells_a_newer_clients_fields_from_typos_by_saying_both() -> None:
    """#23.5: what a worker reads (`ops.read_*_request`) refuses unknown keys naming its
    own zmq-ik version and that the client may be newer; tatbot's spellings still pass."""
    from zmq_ik._version import __version__
    from zmq_ik.model import ops

    one_pose = np.array([[[1.0, 0, 0, 0]]], np.float32), np.array([[[0.1, 0.0, 0.2]]], np.float32)
    arrays = {"target_wxyz": one_pose[0], "target_pos": one_pose[1]}
    with pytest.raises(InputError, match=f"zmq-ik {__version__}.*client may be newer") as err:
        ops.read_solve_request({"ik": {"seeds": 2, "retry_misses": True}}, arrays)
    assert err.value.field == "ik" and "'retry_misses'" in err.value.message
    preset = ops.read_solve_request({"ik": {"preset": "tatbot", "seeds": 2}}, arrays)[4]
    assert preset == IKSettings.preset("tatbot", seeds=2)  # a key this worker knows
    with pytest.raises(InputError) as err:  # a bad value is still named by its setting
        ops.read_solve_request({"ik": {"seeds": 0}}, arrays)
    assert err.value.field == "seeds" and "newer" not in err.value.message
    packed = {"coords": np.zeros((1, 2, 16, 3), np.float32)}
    packed |= {"is_inkdip": np.zeros((1, 2), bool), "is_rest": np.zeros((1, 2), bool)}
    for scene, field in (({"reach": 1}, "reach"), ({"ik": {"reach": 1}}, "ik")):
        with pytest.raises(InputError, match="client may be newer") as err:
            ops.read_strokebatch_request({"scene": scene}, packed)
        assert err.value.field == field
    tatbot_like = {"ready_pos_l": [0.0] * 7, "lasercross_pose": {"pos": [0, 0, 0]}}
    scene, _ = ops.read_strokebatch_request({"scene": {**tatbot_like, "yaml_dir": "x"}}, packed)
    assert scene.ready_l.tolist() == [0.0] * 7


def test_yaml_goes_through_libyaml_and_big_files_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """#18.10: every YAML read goes through one helper, with libyaml's C loader when PyYAML
    has it (a 4.3 MB strokes file: 2-4x faster), and a big file says its size and time."""
    import logging

    import yaml

    from zmq_ik.base import yaml_files
    from zmq_ik.model import StrokeList

    used: list[Any] = []
    real = yaml.load
    monkeypatch.setattr(
        yaml, "load", lambda text, Loader: used.append(Loader) or real(text, Loader)
    )
    scene_path, strokes_path = example_paths()
    Scene.from_yaml(scene_path)
    StrokeList.from_yaml(strokes_path)
    expected = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert used == [expected, expected]
    if hasattr(yaml, "CSafeLoader"):  # libyaml is installed with PyYAML's wheels
        assert expected is yaml.CSafeLoader
    monkeypatch.setattr(yaml_files, "BIG_YAML_BYTES", 1000)
    with caplog.at_level(logging.INFO, logger="zmq_ik.base.yaml_files"):
        StrokeList.from_yaml(strokes_path)
    lines = [r.getMessage() for r in caplog.records]
    assert any("MB of YAML" in line and str(strokes_path) in line for line in lines), lines
    assert any(
        line.startswith(f"read {strokes_path} in ") and line.endswith(" s") for line in lines
    )


# ---------------------------------------------------------------------------------------------
# bundled robots
# ---------------------------------------------------------------------------------------------


def test_bundled_tatbot() -> None:
    tatbot = BUNDLED["tatbot"]
    assert isinstance(tatbot, RobotDefaults)
    assert bundled_robot_path() == tatbot.urdf_path
    assert tatbot.urdf_path.is_file() and tatbot.urdf_path.suffix == ".urdf"
    assert (tatbot.urdf_path.parent / "tatbot.LICENSE").is_file()
    assert tatbot.ee_links == Scene().ee_links
    np.testing.assert_array_equal(tatbot.rest, Scene().ready)
    assert not tatbot.rest.flags.writeable
    urdf = tatbot.urdf_path.read_text()
    for link in tatbot.ee_links:
        assert f'<link name="{link}"' in urdf
    assert tatbot == BUNDLED["tatbot"] and hash(tatbot) == hash(BUNDLED["tatbot"])


def test_bundled_unknown_robot() -> None:
    with pytest.raises(InputError) as err:
        bundled_robot_path("nobot")
    assert err.value.field == "robot" and "tatbot" in str(err.value)
    with pytest.raises(InputError) as err:
        example_paths("nobot")
    assert err.value.field == "robot"


def test_bundled_examples_match_repo_examples() -> None:
    scene, strokes = example_paths()
    assert scene.read_bytes() == (ROOT / "examples" / "scene.yaml").read_bytes()
    assert strokes.read_bytes() == (ROOT / "examples" / "strokes.yaml").read_bytes()
    assert Scene.from_yaml(scene) == Scene()


def test_fixed_link_pose() -> None:
    pos, wxyz = fixed_link_pose("tatbot", "inkcap_left_large")
    np.testing.assert_allclose(pos, [0.126, 0.055, 0.085], atol=1e-12)
    np.testing.assert_allclose(wxyz, [1, 0, 0, 0], atol=1e-12)
    _, q = fixed_link_pose("tatbot", "camera1_optical_frame")  # rotated chain
    assert np.linalg.norm(q) == pytest.approx(1.0)
    with pytest.raises(InputError, match="non-fixed"):
        fixed_link_pose("tatbot", "left/tattoo_needle")
    with pytest.raises(InputError, match="no link"):
        fixed_link_pose("tatbot", "nolink")


def test_model_import_has_no_jax() -> None:
    code = "import sys, zmq_ik.model, zmq_ik.robots; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_tiny_and_large_arrays_are_judged_alike():
    """Arrays up to `_checks.SMALL` elements are checked in Python (#17), larger ones with
    numpy: the same inputs are refused, with the same message and field, either way."""
    from zmq_ik.base.checks import SMALL, check_targets
    from zmq_ik.model import IKSolution

    def targets(n: int) -> tuple[np.ndarray, np.ndarray]:
        wxyz = np.tile(np.array([1.0, 0, 0, 0], np.float32), (n, 2, 1))
        return wxyz, np.full((n, 2, 3), 0.1, np.float32)

    big = SMALL // 4 + 1  # a (big, 2, 4) array is over SMALL
    assert targets(1)[0].size <= SMALL < targets(big)[0].size
    cases = [
        (lambda w, p: w.__setitem__((0, 1, 2), np.nan), "target_wxyz", "NaN or inf"),
        (lambda w, p: p.__setitem__((0, 0, 0), -np.inf), "target_pos", "NaN or inf"),
        (lambda w, p: p.__setitem__((0, 1, 1), 1e6), "target_pos", "beyond"),
        (lambda w, p: w.__setitem__((0, 1), 1e-7), "target_wxyz", "zero quaternion"),
    ]
    for spoil, field, needle in cases:
        messages = []
        for n in (1, big):
            wxyz, pos = targets(n)
            check_targets(wxyz, pos)
            spoil(wxyz, pos)
            with pytest.raises(InputError, match=needle) as info:
                check_targets(wxyz, pos)
            assert info.value.field == field
            messages.append(info.value.message)
        assert messages[0] == messages[1]
    for n in (1, big):  # IK errors: >= 0 or NaN (unknown), never negative or inf
        joints, err = np.zeros((n, 14), np.float32), np.zeros((n, 40), np.float32)
        assert (n == 1) == (err.size <= SMALL)
        err[0, 3] = np.nan
        IKSolution(joints=joints, pos_err=err, ori_err=err)
        for bad in (-1e-9, np.inf):
            spoilt = err.copy()
            spoilt[-1, -1] = bad
            with pytest.raises(InputError, match="never inf") as info:
                IKSolution(joints=joints, pos_err=spoilt, ori_err=err)
            assert info.value.field == "pos_err"
