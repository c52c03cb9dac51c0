"""Any number of end effectors (#24.3): a one-arm robot (the Panda example) through the data
model, the wire and the CLI (`compute`, `--stream`, `report`), with one verdict (#27.2);
tatbot's two-arm files stay as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ik_service

from zmq_ik.errors import InputError
from zmq_ik.model import ARM_TENSORS, TATBOT_TENSORS, Scene, Stroke, StrokeBatch, StrokeList

PANDA = ROOT / "examples" / "panda"
PANDA_URDF = ROOT / "tests" / "robots" / "panda.urdf"


def panda_inputs() -> tuple[Scene, StrokeList]:
    scene = Scene.from_yaml(PANDA / "scene.yaml")
    return scene, StrokeList.from_yaml(PANDA / "strokes.yaml", stroke_length=scene.stroke_length)


def test_one_arm_scene_and_strokes():
    scene, strokes = panda_inputs()
    assert scene.ee_links == ("panda_hand",) and scene.arms == ("panda_hand",)
    assert scene.ee_rot.shape == (1, 4) and scene.ready is not None and len(scene.ready) == 7
    assert scene.first_last_rest is False  # tatbot's hand-over needs two arms
    assert strokes.n_ee == 1 and len(strokes) == 6
    packed = strokes.pack(scene.stroke_length)
    assert packed.coords.shape == (6, 1, 16, 3) and packed.unpack().pack(16) == packed
    assert Scene.from_dict(scene.to_dict()) == scene
    with pytest.raises(InputError) as err:  # one arm: its orientation has no default
        Scene(robot="panda", ee_links=("panda_hand",))
    assert err.value.field == "ee_rot"
    with pytest.raises(InputError, match="1 row"):
        Scene(ee_rot=[(1.0, 0, 0, 0)])  # tatbot's two arms, one orientation
    with pytest.raises(InputError, match="needs two end effectors"):
        scene.replace(first_last_rest=True)
    with pytest.raises(InputError, match=r"groups of 2 stroke\(s\) for a scene of 1"):
        StrokeList.from_yaml(ROOT / "examples" / "strokes.yaml").check_arms(scene.arms)
    bad = StrokeList(((Stroke(meter_coords=np.zeros((16, 3)), arm="other_link"),),))
    with pytest.raises(InputError, match="place of 'panda_hand'"):
        bad.check_arms(scene.arms)


def test_tatbot_two_arm_spellings_are_the_special_case():
    """``ready_l``... are ``ready``'s halves and rows 0/1 of ``ee_rot``/``ee_offset``; a
    two-arm scene is written in them (examples/scene.yaml is unchanged, byte for byte)."""
    scene = Scene()
    assert (ROOT / "examples" / "scene.yaml").read_text() == scene.to_yaml()
    np.testing.assert_array_equal(scene.ready, np.concatenate([scene.ready_l, scene.ready_r]))
    np.testing.assert_array_equal(scene.ee_rot[1], scene.ee_rot_r)
    moved = scene.replace(ee_offset_r=[0.0, 0.0, 0.01])
    np.testing.assert_array_equal(moved.ee_offset, [scene.ee_offset_l, [0.0, 0.0, 0.01]])
    assert Scene(ready_l=scene.ready_r, ready_r=scene.ready_l).ready_l.tolist() == list(
        scene.ready_r
    )


def test_strokebatch_files_of_one_arm_and_of_two(tmp_path):
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)
    one = StrokeBatch(
        ee_pos=rng.normal(size=(*shape, 1, 3)),
        ee_rot=np.tile([1.0, 0, 0, 0], (*shape, 1, 1)),
        joints=rng.normal(size=(*shape, 7)),
        pos_err=np.full((*shape, 1), 1e-6),
        ori_err=np.full((*shape, 1), 1e-6),
    )
    one.save(tmp_path / "one.safetensors")
    from safetensors.numpy import load_file

    assert tuple(load_file(str(tmp_path / "one.safetensors"))) == tuple(sorted(ARM_TENSORS))
    back = StrokeBatch.load(tmp_path / "one.safetensors")
    assert back.n_ee == 1 and np.isnan(back.pos_err).all()
    np.testing.assert_array_equal(back.ee_pos, one.ee_pos)
    with pytest.raises(AttributeError, match="ee_pos"):
        one.ee_pos_l  # noqa: B018
    two = StrokeBatch(
        ee_pos_l=one.ee_pos[..., 0, :],
        ee_pos_r=one.ee_pos[..., 0, :] + 1,
        ee_rot_l=one.ee_rot[..., 0, :],
        ee_rot_r=one.ee_rot[..., 0, :],
        joints=rng.normal(size=(*shape, 14)),
    )
    assert set(load_file(str(_saved(two, tmp_path)))) == set(TATBOT_TENSORS)
    np.testing.assert_array_equal(StrokeBatch.load(_saved(two, tmp_path)).ee_pos_r, two.ee_pos_r)


def _saved(batch: StrokeBatch, tmp_path: Path) -> Path:
    path = tmp_path / "two.safetensors"
    batch.save(path)
    return path


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def panda_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A broker and a real IK worker serving the Panda (one bucket, 64: the one
    tests/test_reach.py compiles for it, so the compile cache may already hold it)."""
    extra = ("--robot", f"panda={PANDA_URDF}", "--ee-links", "panda=panda_hand")
    with ik_service(tmp_path_factory, "panda", "64", extra) as endpoint:
        yield endpoint


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.mark.timeout(600)
def test_one_arm_example_end_to_end_through_the_cli(panda_endpoint, tmp_path):
    """examples/panda through `compute --strict --errors --plot`, `--stream` and `report`
    (limits from the URDF): the same verdict everywhere, the answer exact and in limits."""
    pytest.importorskip("matplotlib")
    scene_file, strokes_file = str(PANDA / "scene.yaml"), str(PANDA / "strokes.yaml")
    out, png = tmp_path / "sb.safetensors", tmp_path / "report.png"
    args = ["compute", scene_file, strokes_file, "--endpoint", panda_endpoint, "-o", str(out)]
    result = cli(*args, "--strict", "--errors", "--plot", str(png), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    n = 6 * 16 * 3
    assert summary["verdict"] == f"OK: all {n} poses within tolerance and joint limits"
    assert summary["ok"] and summary["limits_checked"] and summary["n_past_limit"] == 0
    assert summary["pos_err_max"] < 1e-5 and png.read_bytes()[:4] == b"\x89PNG"
    batch = StrokeBatch.load(out)
    assert batch.n_ee == 1 and batch.joints.shape == (6, 16, 3, 7)
    # The targets: the pen's tip on the design, the hand 10.34 cm above it, pointing down.
    scene, strokes = panda_inputs()
    tip = strokes[2][0].meter_coords[5] + scene.design_pos  # no hover on a middle pose
    np.testing.assert_allclose(batch.ee_pos[2, 5, 1, 0], tip + np.array([0, 0, 0.1034]), atol=1e-6)
    np.testing.assert_allclose(batch.ee_rot[0, 0, 0, 0], [0, 1, 0, 0])

    report = cli(
        "report", str(out), "--scene", scene_file, "--robot", str(PANDA_URDF), "-o", str(png)
    )
    assert report.returncode == 0, report.stderr
    assert summary["verdict"] in report.stdout.splitlines()

    stream = tmp_path / "slices"
    result = cli(*args, "--stream", str(stream))
    assert result.returncode == 0, result.stderr
    slices = [json.loads(line) for line in (stream / "slices.jsonl").read_text().splitlines()]
    assert sum(s["pairs"] for s in slices) == 6
    parts = [StrokeBatch.load(stream / s["file"]) for s in slices]
    np.testing.assert_array_equal(StrokeBatch.concat(parts).joints, batch.joints)

    # A verdict that fails --strict: the file is kept aside, the output never written.
    tight = tmp_path / "tight.yaml"
    scene.replace(pos_tol=1e-9).to_yaml(tight)
    out2 = tmp_path / "strict.safetensors"
    result = cli(
        "compute",
        str(tight),
        strokes_file,
        "--endpoint",
        panda_endpoint,
        "-o",
        str(out2),
        "--strict",
    )
    assert result.returncode == 1 and "miss tolerance" in result.stdout + result.stderr
    assert not out2.exists() and Path(f"{out2}.rejected").is_file()
