"""FK as an operation (#24.4): a real IK worker behind a real broker answers `fk` with the
engine's own FK (`Robot.fk`), padded to fixed shapes (nothing compiles after READY), through
`IKClient.fk`, `AsyncIKClient.fk` and `zmq-ik fk`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from zmq_ik.apps.report import parse_joint_vectors
from zmq_ik.client import AsyncIKClient, IKClient
from zmq_ik.errors import InputError, RemoteError
from zmq_ik.model import EEPoses, ops
from zmq_ik.robots import BUNDLED

ik = pytest.importorskip("zmq_ik.ik")
pytestmark = pytest.mark.timeout(300)
TATBOT = BUNDLED["tatbot"]


@pytest.fixture(scope="module")
def robot():
    return ik.Robot.from_urdf(TATBOT.urdf_path, TATBOT.ee_links)


def configurations(robot, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rest = np.asarray(TATBOT.rest, np.float32)
    q = rest + rng.uniform(-0.15, 0.15, (n, robot.n_joints))
    return np.clip(q, robot.lower, robot.upper).astype(np.float32)


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between unit quaternions, (..., 4)."""
    dot = np.abs(np.sum(a.astype(np.float64) * b, axis=-1))
    return 2 * np.arccos(np.clip(dot, 0.0, 1.0))


def test_fk_from_the_client_is_robot_fk_in_process(ik_endpoint, robot):
    q = configurations(robot, 70, seed=1)  # > the largest test bucket (64): two chunks
    with IKClient(ik_endpoint, timeout=60) as client:
        poses = client.fk("tatbot", q)
        one = client.fk("tatbot", q[3])  # one vector is batched for you
        payload = client.request("tatbot", ops.FK, {}, {"joints": q[:5]})
    T = robot.fk(q)
    assert isinstance(poses, EEPoses) and poses.ee_links == TATBOT.ee_links
    assert poses.pos.shape == (70, 2, 3) and poses.wxyz.shape == (70, 2, 4)
    np.testing.assert_allclose(poses.pos, np.asarray(T.translation()), atol=1e-6)
    np.testing.assert_allclose(poses.wxyz, np.asarray(T.rotation().wxyz), atol=1e-6)
    np.testing.assert_array_equal(one.pos, poses.pos[3:4])
    assert payload.header["compiles_since_ready"] == 0  # padded to the warmed shapes
    local = ik.fk_poses(robot, q)  # the in-process twin
    np.testing.assert_allclose(local.pos, poses.pos, atol=1e-6)


def test_fk_of_a_solve_answer_reproduces_its_target_within_its_errors(ik_endpoint, robot):
    T = robot.fk(configurations(robot, 8, seed=2))
    wxyz, pos = np.asarray(T.rotation().wxyz), np.asarray(T.translation())
    with IKClient(ik_endpoint, timeout=60) as client:
        sol = client.solve("tatbot", wxyz, pos)
        back = client.fk("tatbot", sol.joints)
    dist = np.linalg.norm(back.pos.astype(np.float64) - pos, axis=-1)
    np.testing.assert_allclose(dist, sol.pos_err, atol=2e-6)
    np.testing.assert_allclose(rotation_angle(back.wxyz, wxyz), sol.ori_err, atol=2e-3)
    assert (sol.pos_err < 1e-3).all()


def test_fk_for_named_end_effectors_and_the_async_client(ik_endpoint, robot):
    right = ik.Robot.from_urdf(TATBOT.urdf_path, ["right/tattoo_needle"])
    q = configurations(robot, 3, seed=3)

    async def run():
        async with AsyncIKClient(ik_endpoint, timeout=120) as client:
            both = await client.fk("tatbot", q)
            alone = await client.fk("tatbot", q[:, 7:], ee_links=["right/tattoo_needle"])
            return both, alone

    both, alone = asyncio.run(run())
    assert alone.ee_links == ("right/tattoo_needle",) and alone.pos.shape == (3, 1, 3)
    np.testing.assert_allclose(alone.pos[:, 0], both.pos[:, 1], atol=1e-6)
    np.testing.assert_allclose(alone.pos, np.asarray(right.fk(q[:, 7:]).translation()), atol=1e-6)


def test_bad_joints_are_refused_naming_the_field(ik_endpoint):
    with IKClient(ik_endpoint, timeout=30, retries=0) as client:
        for bad in (np.full((2, 14), np.nan), np.zeros((2, 3, 14)), np.full(14, 1e9), "q"):
            with pytest.raises(InputError) as info:  # before anything is sent
                client.fk("tatbot", bad)
            assert info.value.field == "joints"
        with pytest.raises(RemoteError) as remote:  # the count needs the robot: the worker's
            client.fk("tatbot", np.zeros((2, 13)))
        assert remote.value.code == "bad_request" and remote.value.field == "joints"
        assert "14 joints" in remote.value.message
        with pytest.raises(RemoteError) as remote:  # a peer skipping the client's checks
            client.request("tatbot", ops.FK, {}, {"joints": np.full((1, 14), np.inf)})
        assert remote.value.field == "joints"
        with pytest.raises(RemoteError) as remote:
            client.request("tatbot", ops.FK, {}, {})
        assert remote.value.field == "joints"
        assert client.fk("tatbot", np.zeros(14)).pos.shape == (1, 2, 3)  # and it carries on


def test_fk_reply_is_checked_like_any_peer_input():
    poses = EEPoses(("a",), np.tile([1.0, 0, 0, 0], (2, 1, 1)), np.zeros((2, 1, 3)))
    header, arrays = ops.fk_reply(poses)
    assert ops.read_fk_reply(header, arrays, 2) == poses
    with pytest.raises(InputError, match="2 poses for 3"):
        ops.read_fk_reply(header, arrays, 3)
    with pytest.raises(InputError):
        ops.read_fk_reply(header, {**arrays, "pos": np.full((2, 1, 3), np.nan)})
    with pytest.raises(InputError):
        ops.read_fk_reply({"ee_links": ["a", "b"]}, arrays)


def test_joint_vectors_parse_from_text():
    assert parse_joint_vectors(["0,-0.5,1e-3", "1,2,3"]) == [[0, -0.5, 1e-3], [1, 2, 3]]
    with pytest.raises(InputError, match="comma-separated"):
        parse_joint_vectors(["0,x"])
    with pytest.raises(InputError, match="different lengths"):
        parse_joint_vectors(["0,1", "0"])


def test_cli_fk_prints_a_table_and_json(ik_endpoint, robot):
    q = configurations(robot, 2, seed=4)
    q[0, 0] = -abs(q[0, 0]) - 0.01  # a vector starting with a minus sign is no option
    vectors = [",".join(f"{v:.7g}" for v in row) for row in q]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zmq_ik.cli", "fk", "--endpoint", ik_endpoint, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )

    out = cli("tatbot", *vectors, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ee_links"] == list(TATBOT.ee_links)
    np.testing.assert_allclose(doc["pos"], np.asarray(robot.fk(q).translation()), atol=1e-6)
    table = cli("tatbot", vectors[0])
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["pose", "ee_link", "x"] and len(lines) == 4
    assert "left/tattoo_needle" in lines[2] and "right/tattoo_needle" in lines[3]
    bad = cli("tatbot", "0,1")
    assert bad.returncode == 1 and "14 joints" in bad.stderr
