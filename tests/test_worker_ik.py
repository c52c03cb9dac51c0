"""A real IK worker process behind a real broker: answers match the in-process solver, bad
input gets errors naming the field, and steady state compiles nothing."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import zmq
from conftest import KINDS, run_with, wait_for_workers

from zmq_ik.base.process import COMPILE_NICE
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError, RemoteError
from zmq_ik.model import ORI_TOL, POS_TOL, IKSettings, IKSolution
from zmq_ik.robots import BUNDLED
from zmq_ik.worker import ServiceCall

ik = pytest.importorskip("zmq_ik.ik")
jax = pytest.importorskip("jax")
pytestmark = pytest.mark.timeout(300)
TATBOT = BUNDLED["tatbot"]


@pytest.fixture(scope="module")
def robot():
    return ik.Robot.from_urdf(TATBOT.urdf_path, TATBOT.ee_links)


def reachable_targets(robot, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(robot.lower), np.asarray(robot.upper)
    rest = np.asarray(TATBOT.rest, np.float32)
    q = np.clip(rest + rng.uniform(-0.15, 0.15, (n, len(rest))), lower, upper).astype(np.float32)
    T = robot.fk(q)
    return np.asarray(T.rotation().wxyz), np.asarray(T.translation())


def test_solve_over_the_wire_matches_in_process(ik_endpoint, robot):
    wxyz, pos = reachable_targets(robot, 5)
    with IKClient(ik_endpoint, timeout=60) as client:
        remote = client.solve("tatbot", wxyz, pos)
    local = ik.solve_ik(robot, wxyz, pos, np.asarray(TATBOT.rest, np.float32))
    assert remote.joints.shape == (5, 14) and remote.joints.dtype == np.float32
    np.testing.assert_allclose(remote.joints, local.joints, atol=1e-5)
    assert (remote.pos_err < 1e-3).all()


def test_in_process_solve_is_the_clients_with_the_same_default_rest(ik_endpoint, robot):
    """`ik.solve_ik` takes what `IKClient.solve` takes: one pose, no rest (the robot's
    default: tatbot's ready pose for the bundled robot, in process as through a worker)."""
    wxyz, pos = reachable_targets(robot, 1, seed=4)
    with IKClient(ik_endpoint, timeout=60) as client:
        remote = client.solve("tatbot", wxyz[0], pos[0], ik=IKSettings(rest_weight=0.5))
    local = ik.solve_ik(
        ik.Robot.bundled("tatbot"), wxyz[0], pos[0], ik=IKSettings(rest_weight=0.5), buckets=(16,)
    )
    assert type(local) is type(remote) and local.joints.shape == (1, 14)
    np.testing.assert_allclose(local.joints, remote.joints, atol=1e-5)


def test_a_hand_may_be_left_without_a_target(ik_endpoint, robot):
    """``active``: the right hand omitted (its target NaN) in the first two poses. It holds
    the rest pose, its errors are NaN, ``reached`` judges the left hand; the wire carries
    NaN for it, so a worker that predates ``active`` refuses it instead of solving it."""
    from zmq_ik.errors import InputError
    from zmq_ik.model import ops

    wxyz, pos = (np.array(a) for a in reachable_targets(robot, 3, seed=5))
    wxyz[:2, 1], pos[:2, 1] = np.nan, np.nan
    active = np.array([[True, False], [True, False], [True, True]])
    rest = np.asarray(TATBOT.rest, np.float32)
    with IKClient(ik_endpoint, timeout=60) as client:
        remote = client.solve("tatbot", wxyz, pos, active=active)
    assert remote.reached.all() and remote.n_over == 0
    np.testing.assert_array_equal(np.isnan(remote.pos_err), ~active)
    np.testing.assert_array_equal(remote.joints[:2, 7:], np.tile(rest[7:], (2, 1)))
    local = ik.solve_ik(ik.Robot.bundled("tatbot"), wxyz, pos, rest, active=active, buckets=(16,))
    np.testing.assert_allclose(remote.joints, local.joints, atol=1e-5)
    header, arrays = ops.solve_request(wxyz, pos, active=active)
    assert np.isnan(arrays["target_pos"][:2, 1]).all() and arrays["active"].dtype == np.bool_
    with pytest.raises(InputError, match="contains NaN") as err:  # as an older worker reads it
        ops.read_solve_request(header, {k: v for k, v in arrays.items() if k != "active"})
    assert err.value.field == "target_wxyz"
    all_on = ops.solve_request(wxyz[2:], pos[2:], active=[True, True])
    assert "active" not in all_on[1]  # nothing omitted: the request of old


def test_single_pose_is_batched_for_you(ik_endpoint, robot):
    wxyz, pos = reachable_targets(robot, 1, seed=3)
    with IKClient(ik_endpoint, timeout=60) as client:
        sol = client.solve("tatbot", wxyz[0], pos[0])
    assert sol.joints.shape == (1, 14)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda w, p: (w, p * np.nan), "target_pos"),
        (lambda w, p: (w[:, :1], p), "target_pos"),
        (lambda w, p: (w * 0, p), "target_wxyz"),
        (lambda w, p: (w, p[..., :2]), "target_pos"),
        (lambda w, p: (w, p * 1e20), "target_pos"),
        (lambda w, p: (w, p * 1000), "target_pos"),  # millimetres: beyond twice the reach
    ],
)
def test_bad_targets_get_bad_request_naming_the_field(ik_endpoint, robot, mutate, field):
    from zmq_ik.model import ops
    from zmq_ik.protocol import encode_payload  # noqa: F401  (frames built by the client)

    wxyz, pos = reachable_targets(robot, 2)
    w, p = mutate(wxyz, pos)
    with IKClient(ik_endpoint, timeout=30, retries=0) as client:
        arrays = {"target_wxyz": w.astype(np.float32), "target_pos": p.astype(np.float32)}
        with pytest.raises(RemoteError) as info:
            client.request("tatbot", ops.SOLVE, {}, arrays)
    assert info.value.code == "bad_request"
    assert info.value.field == field


def test_unknown_link_and_bad_settings(ik_endpoint, robot):
    wxyz, pos = reachable_targets(robot, 1)
    with IKClient(ik_endpoint, timeout=30, retries=0) as client:
        with pytest.raises(RemoteError) as info:
            client.solve("tatbot", wxyz, pos, ee_links=["left/no_such_link", "right/tattoo_needle"])
        assert info.value.code == "bad_request" and "no_such_link" in info.value.message
        with pytest.raises(RemoteError) as info:
            client.request(
                "tatbot",
                "solve",
                {"ik": {"pos_wieght": 3}},
                {"target_wxyz": wxyz, "target_pos": pos},
            )
        assert info.value.field == "ik"
        with pytest.raises(RemoteError) as info:
            client.request("tatbot", "dance")
        assert info.value.code == "unknown_operation"
        # ...and the worker carries on.
        assert client.solve("tatbot", wxyz, pos).joints.shape == (1, 14)


def test_describe_says_joint_order_limits_and_rest(ik_endpoint, robot):
    import asyncio

    from zmq_ik.client import AsyncIKClient

    with IKClient(ik_endpoint, timeout=60, retries=0) as client:
        info = client.describe("tatbot")
        swapped = client.describe("tatbot", ["right/tattoo_needle", "left/tattoo_needle"])
        with pytest.raises(RemoteError) as err:
            client.describe("tatbot", "left/no_such_link")
    assert info["ee_links"] == list(TATBOT.ee_links)
    assert info["joint_names"] == list(robot.joint_names)
    np.testing.assert_allclose(info["rest"], TATBOT.rest, atol=1e-6)
    np.testing.assert_array_equal(info["lower"], robot.lower)
    assert info["limited"].dtype == np.bool_ and (info["lower"] <= info["upper"]).all()
    assert swapped["joint_names"] == info["joint_names"][7:] + info["joint_names"][:7]
    np.testing.assert_allclose(swapped["rest"], (swapped["lower"] + swapped["upper"]) / 2)
    assert err.value.code == "bad_request" and "no_such_link" in err.value.message

    async def run():
        async with AsyncIKClient(ik_endpoint, timeout=60) as client:
            return await client.describe("tatbot")

    assert asyncio.run(run())["joint_names"] == info["joint_names"]


def test_steady_state_compiles_nothing(ik_endpoint, robot):
    rng = np.random.default_rng(7)
    wxyz, pos = reachable_targets(robot, 64, seed=11)
    with IKClient(ik_endpoint, timeout=60) as client:
        # The session's worker may have compiled for other tests (other end effectors, FK
        # shapes, settings): steady state is no compile from here on.
        before = client.request("tatbot", "describe", {}, {}).header["compiles_since_ready"]
        compiles = []
        for _ in range(200):
            n = int(rng.integers(1, 65))
            payload = client.request(
                "tatbot", "solve", {}, {"target_wxyz": wxyz[:n], "target_pos": pos[:n]}
            )
            compiles.append(payload.header["compiles_since_ready"])
    assert compiles[-1] == before, f"{compiles[-1] - before} compilations in steady state"


def test_warm_settings_compile_their_program_before_ready(robot):
    """In process: ``warm`` programs (here tatbot's mode) compile at warm-up, not on first
    use; settings that pick the same program as another (the default with seeds) add none."""
    from conftest import JAX_CACHE

    from zmq_ik.worker.ik_service import IKService

    wxyz, pos = reachable_targets(robot, 5, seed=9)  # before READY: FK compiles too
    service = IKService(
        buckets=(16,),
        cache_dir=JAX_CACHE,
        warm=[IKSettings.preset("tatbot"), IKSettings(seeds=4)],
        warmup_threads=2,
    )
    info = service.warmup()
    assert info["buckets"] == [16]
    assert info["programs"] == [{"precise": True, "seeds": 1}, {"precise": False, "seeds": 1}]
    arrays = {"target_wxyz": wxyz, "target_pos": pos}
    for header in ({"ik": {"preset": "tatbot", "pos_weight": 4.0}}, {"ik": {"seeds": 4}}, {}):
        reply, out = service.handle(ServiceCall("tatbot", "solve", header, arrays))
        assert reply["compiles_since_ready"] == 0
        assert out["joints"].shape == (5, 14)


def test_ready_after_one_bucket_and_no_request_waits_for_the_others(robot):
    """#24.5: READY once one bucket of each warmed program (and FK's smallest) is compiled;
    until the others are (`finish_warmup`: a thread after READY in a worker), requests of
    any size use the compiled ones, in chunks, so none waits for a compile."""
    from conftest import JAX_CACHE

    from zmq_ik.worker.ik_service import IKService

    service = IKService(buckets=(16, 64), cache_dir=JAX_CACHE, background=False)
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    compiled_at: list[int] = []  # the niceness of the thread of each compile (or cache load)

    def record(event: str, duration: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled_at.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        assert service.warmup()["buckets"] == [16, 64]
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    # #27.1: the warm-up's compiles (or cache loads) yield the CPU to serving workers; the
    # calling thread, which serves after READY, keeps its priority.
    assert len(compiled_at) >= 2  # the solver's bucket and FK's
    assert min(compiled_at) >= COMPILE_NICE, compiled_at
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice
    wxyz, pos = reachable_targets(robot, 100, seed=13)
    joints = np.repeat(np.asarray(TATBOT.rest, np.float32)[None], 100, axis=0)

    def compiles(operation, arrays):
        reply, out = service.handle(ServiceCall("tatbot", operation, {}, arrays))
        assert all(np.isfinite(a).all() for a in out.values())
        return reply["compiles_since_ready"]

    for _ in ("while the rest compile", "once all are compiled"):
        for n in (1, 37, 100):  # 37: bucket 64 once compiled; 100: chunks
            assert compiles("solve", {"target_wxyz": wxyz[:n], "target_pos": pos[:n]}) == 0
        assert compiles("fk", {"joints": joints}) == 0  # FK's largest shape: 64
        service.finish_warmup()  # what a worker's thread does after READY


def test_an_on_demand_compile_is_logged_and_told_to_the_client(robot, caplog):
    """#24.5: a request for a program not warmed waits for its compile: the client is told
    at once (a PARTIAL ``{"compiling": ...}`` naming the ``--warm`` that avoids it) and the
    log says the setting, the time and the same ``--warm``."""
    from conftest import JAX_CACHE

    from zmq_ik.worker.ik_service import IKService

    service = IKService(buckets=(16,), cache_dir=JAX_CACHE)
    service.warmup()
    wxyz, pos = reachable_targets(robot, 3, seed=14)
    arrays = {"target_wxyz": wxyz, "target_pos": pos}
    told: list[dict] = []

    def solve(header):
        call = ServiceCall("tatbot", "solve", header, arrays, lambda h, a: told.append(dict(h)))
        return service.handle(call)[0]["compiles_since_ready"]

    assert solve({}) == 0 and told == []  # the default: nothing compiled, nothing said
    with caplog.at_level("INFO", logger="zmq_ik.worker.ik_service"):
        assert solve({"ik": {"precise": False}}) >= 1
    hint = "--warm precise=false,seeds=1"
    assert len(told) == 1 and hint in told[0]["compiling"]
    (logged,) = [r.getMessage() for r in caplog.records if "on demand in" in r.getMessage()]
    assert "solve precise=False seeds=1 compiled" in logged and hint in logged


def test_warmup_reports_each_compiled_bucket_over_every_program():
    """#18.9: the warm-up tells ``progress(done, total)`` as each bucket is compiled,
    counted over every program it compiles before READY (the worker logs it and announces
    it, WARMING): the smallest bucket of each (#24.5; the others compile after READY)."""
    from conftest import JAX_CACHE

    from zmq_ik.worker.ik_service import IKService

    calls: list[tuple[int, int]] = []
    service = IKService(
        buckets=(1, 16),
        cache_dir=JAX_CACHE,
        warm=[IKSettings.preset("tatbot")],
        background=False,
    )
    service.warmup(lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    # tatbot's mode solves seeds in its program: 16 x 16 > 64; the reaching mode outside it
    assert ik.warmup_buckets(IKSettings.preset("tatbot", seeds=16), (1, 16, 64)) == (1,)
    assert ik.warmup_buckets(IKSettings(seeds=16), (1, 16, 64)) == (1, 16, 64)
    assert ik.warmup_buckets(None, (1, 16, 64)) == (1, 16, 64)


def test_programs_compiled_on_demand_are_bounded(robot):
    """Clients choose settings and end effectors, so on-demand programs must not pile up:
    past ``max_extra_compiles`` they are dropped; warm ones stay and still compile nothing."""
    from conftest import JAX_CACHE

    from zmq_ik.worker.ik_service import IKService

    service = IKService(buckets=(16,), cache_dir=JAX_CACHE, max_extra_compiles=10**6)
    service.warmup()
    (default_key,) = service._solvers
    warm_programs = ik.programs_of(service._solvers[default_key]).keys()
    wxyz, pos = reachable_targets(robot, 3, seed=12)
    arrays = {"target_wxyz": wxyz, "target_pos": pos}

    def solve(header, arrays=arrays):
        reply, out = service.handle(ServiceCall("tatbot", "solve", header, arrays))
        assert np.isfinite(out["joints"]).all()
        return reply["compiles_since_ready"]

    left = {"target_wxyz": wxyz[:, :1], "target_pos": pos[:, :1]}
    first = solve({"ee_links": ["left/tattoo_needle"]}, left)  # a second solver: compiles
    assert first > 0 and len(service._solvers) == 2
    service.max_extra_compiles = first  # the next compile goes over the bound
    second = solve({"ik": {"precise": False}})  # a second program for the default solver
    assert second > first
    assert list(service._solvers) == [default_key]  # everything on demand dropped...
    assert ik.programs_of(service._solvers[default_key]).keys() == warm_programs  # ...warm kept
    assert solve({}) == second  # the warm program still compiles nothing
    assert solve({"ik": {"precise": False}}) > second  # a dropped one is built again on use


def test_service_defaults_deadline_and_solver_bound(robot):
    """In process: naming the default end effectors is the same as naming none (same rest
    pose); a huge request stops at its deadline; solvers built for client-named end effectors
    count against ``max_extra_compiles`` even when they never compile (empty requests)."""
    import time

    from conftest import JAX_CACHE, stroke_like

    from zmq_ik.errors import IKTimeout
    from zmq_ik.worker.ik_service import IKService

    service = IKService(buckets=(16,), cache_dir=JAX_CACHE, max_extra_compiles=2)
    service.warmup()
    wxyz, pos = reachable_targets(robot, 3, seed=21)
    arrays = {"target_wxyz": wxyz, "target_pos": pos}

    def solve(header, arrays=arrays, deadline=None):
        return service.handle(ServiceCall("tatbot", "solve", header, arrays, deadline=deadline))

    _, implicit = solve({})
    _, named = solve({"ee_links": list(TATBOT.ee_links)})
    np.testing.assert_array_equal(named["joints"], implicit["joints"])

    many_wxyz, many_pos = stroke_like(100_000, seed=22)
    t0 = time.monotonic()
    with pytest.raises(IKTimeout):
        solve(
            {}, {"target_wxyz": many_wxyz, "target_pos": many_pos}, deadline=time.monotonic() + 0.2
        )
    assert time.monotonic() - t0 < 5  # the whole solve: 6,250 chunks, ~15 s

    links = ["left/link_2", "left/link_3", "left/link_4", "left/link_5", "right/link_3"]
    empty = {"target_wxyz": np.zeros((0, 1, 4)), "target_pos": np.zeros((0, 1, 3))}
    for link in links:
        solve({"ee_links": [link]}, empty)
        assert len(service._solvers) <= 1 + service.max_extra_compiles


def test_ik_settings_travel_with_the_request(ik_endpoint, robot):
    wxyz, pos = reachable_targets(robot, 3, seed=5)
    with IKClient(ik_endpoint, timeout=120) as client:
        tatbot_like = client.solve("tatbot", wxyz, pos)
        precise = client.solve("tatbot", wxyz, pos, ik=IKSettings(precise=True))
    assert precise.pos_err.max() <= tatbot_like.pos_err.max() + 1e-6


@pytest.mark.parametrize("buckets", ["3", "16,x", "16,,32"])
def test_worker_cli_refuses_bad_buckets_before_compiling(buckets):
    from click.testing import CliRunner

    from zmq_ik.cli import main

    result = CliRunner().invoke(
        main, ["worker", "--buckets", buckets, "--connect", "tcp://127.0.0.1:1"]
    )
    assert result.exit_code == 2
    assert "--buckets" in result.output


@pytest.mark.parametrize(
    ("warm", "message"),
    [("precise", "KEY=VALUE"), ("precise=maybe", "precise"), ("seeds=0", "seeds"), ("x=1", "x")],
)
def test_worker_cli_refuses_bad_warm_settings_before_compiling(warm, message):
    from click.testing import CliRunner

    from zmq_ik.cli import main

    result = CliRunner().invoke(main, ["worker", "--warm", warm, "--connect", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--warm" in result.output and message in result.output


def test_warm_settings_parse_as_ik_settings():
    from zmq_ik.settings.worker import parse_warm

    assert parse_warm(("precise=true, seeds=16", "seeds=4")) == (
        IKSettings(precise=True, seeds=16),
        IKSettings(seeds=4),
    )


def test_robot_defaults_per_robot(tmp_path):
    """A copy of the bundled URDF under its name keeps the bundled defaults; another URDF
    under that name inherits nothing; ``ee_links`` and ``rest`` set them per robot; options
    for robots not served, or a rest without end effectors, are refused."""
    from zmq_ik.errors import InputError
    from zmq_ik.worker.ik_service import robot_entries

    copy, other = tmp_path / "copy.urdf", tmp_path / "other.urdf"
    copy.write_text(TATBOT.urdf_path.read_text())
    other.write_text(
        '<robot name="o"><link name="a"/><link name="tip"/><joint name="j" type="revolute">'
        '<parent link="a"/><child link="tip"/><limit lower="-1" upper="1"/></joint></robot>'
    )
    (bundled,) = robot_entries(None)
    assert bundled.ee_links == tuple(TATBOT.ee_links) and bundled.rest is not None
    (copied,) = robot_entries({"tatbot": str(copy)})  # e.g. deploy/'s /etc/zmq-ik/tatbot.urdf
    assert copied.ee_links == bundled.ee_links
    np.testing.assert_array_equal(copied.rest, bundled.rest)
    (renamed,) = robot_entries({"tatbot": str(other)})
    assert renamed.ee_links is None and renamed.rest is None
    (mine,) = robot_entries({"tatbot": str(other)}, {"tatbot": ["tip"]}, {"tatbot": [0.5]})
    assert mine.ee_links == ("tip",) and mine.rest.tolist() == [0.5]
    (chosen,) = robot_entries(None, {"tatbot": ["left/tattoo_needle"]})
    assert chosen.rest is None  # the ready pose is for the two needles, not for this set
    (same,) = robot_entries(None, {"tatbot": list(TATBOT.ee_links)})
    assert same.rest is not None
    with pytest.raises(InputError, match="'nobody'"):
        robot_entries(None, {"nobody": ["x"]})
    with pytest.raises(InputError, match="needs its default end effectors"):
        robot_entries({"o": str(other)}, rest={"o": [0.0]})


def test_default_rest_and_seeds_stay_in_a_working_range():
    """Limits like [0, 1e10] mean "unlimited": the default rest pose and the seeds sit in a
    window of one turn (2 m) inside them, and the rest passes the request checks."""
    wide = """<robot name="w"><link name="a"/><link name="b"/><link name="c"/>
      <link name="d"/>
      <joint name="r" type="revolute"><parent link="a"/><child link="b"/><axis xyz="0 0 1"/>
        <limit lower="-10" upper="-3.5"/></joint>
      <joint name="p" type="prismatic"><parent link="b"/><child link="c"/><axis xyz="1 0 0"/>
        <limit lower="0" upper="1e10"/></joint>
      <joint name="s" type="revolute"><parent link="c"/><child link="d"/><axis xyz="0 1 0"/>
        <limit lower="-1e10" upper="1e10"/></joint></robot>"""
    robot = ik.Robot.from_urdf(wide, ["d"])
    rest = ik.default_rest(robot)
    ik.check_rest(robot, rest)
    np.testing.assert_allclose(rest, [-3.5 - np.pi, 1.0, 0.0], atol=1e-5)  # nearest zero
    seeds = ik.seed_points(robot, 17)
    assert ((seeds[:, 0] >= -10) & (seeds[:, 0] <= -3.5)).all() and np.ptp(seeds[:, 0]) > 3
    assert ((seeds[:, 1] >= 0) & (seeds[:, 1] <= 2)).all()
    assert (np.abs(seeds[:, 2]) <= np.pi).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--robot", "zik.broker=URDF"], "cannot be a robot name"),
        (["--robot", "r=BAD", "--ee-links", "r=tip"], "robot 'r': URDF"),
        (["--robot", "r=GOOD", "--ee-links", "r=nowhere"], "no link named 'nowhere'"),
        (["--robot", "r=GOOD", "--ee-links", "r=tip", "--rest", "r=1,2"], "rest: must have"),
        (["--robot", "r=GOOD", "--ee-links", "r=tip", "--rest", "r=50"], "far outside"),
        (["--robot", "r=GOOD", "--rest", "r=0.5"], "needs its default end effectors"),
        (["--robot", "r=GOOD", "--ee-links", "s=tip"], "not served here"),
    ],
)
def test_worker_cli_refuses_robots_it_cannot_load(tmp_path, monkeypatch, args, message):
    """Before READY and without a traceback: a bad URDF, link or rest pose names the robot."""
    from click.testing import CliRunner
    from conftest import JAX_CACHE

    from zmq_ik.cli import main
    from zmq_ik.worker import Worker

    # The worker would take over SIGINT/SIGTERM of the test process.
    monkeypatch.setattr(Worker, "install_signal_handlers", lambda self: None)

    good, bad = tmp_path / "good.urdf", tmp_path / "bad.urdf"
    good.write_text(
        '<robot name="g"><link name="a"/><link name="tip"/><joint name="j" type="revolute">'
        '<parent link="a"/><child link="tip"/><limit lower="-1" upper="1"/></joint></robot>'
    )
    bad.write_text("<robot><link")
    args = [a.replace("GOOD", str(good)).replace("BAD", str(bad)) for a in args]
    if "zik.broker" in args[1]:
        args[1] = args[1].replace("URDF", str(good))
    result = CliRunner().invoke(
        main,
        [
            "worker",
            "--connect",
            "tcp://127.0.0.1:1",
            "--buckets",
            "16",
            "--cache-dir",
            str(JAX_CACHE),
            *args,
        ],
    )
    assert result.exit_code in (2, 78), result.output  # usage / configuration error
    assert message in result.output
    assert "Traceback" not in result.output


def test_client_side_checks_name_the_argument():
    """Before any round trip: what a caller gets wrong is an `InputError` naming it."""
    from zmq_ik.errors import InputError
    from zmq_ik.model import ops

    one_pose = np.array([[1.0, 0, 0, 0]]), np.array([[0.1, 0.0, 0.2]])
    header, _ = ops.solve_request(*one_pose, ee_links="tool0")  # one link, as a string
    assert header["ee_links"] == ["tool0"]
    for args, field, needle in (
        ((np.array(["a", "b", "c", "d"]), one_pose[1]), "target_wxyz", "numeric"),
        ((np.zeros(4), one_pose[1]), "target_wxyz", "(N, n_ee, 4)"),
        ((one_pose[0], one_pose[1] * 1e20), "target_pos", "beyond"),
    ):
        with pytest.raises(InputError, match=needle) as info:
            ops.solve_request(*args)
        assert info.value.field == field


# --------------------------------------------------------------------------- #23.2 misses


def far_target(robot, n: int):
    """``n`` reachable targets with the middle one's left arm 2 m above: out of reach."""
    wxyz, pos = reachable_targets(robot, n, seed=7)
    pos = pos.copy()
    pos[n // 2, 0, 2] += 2.0
    return wxyz, pos


@pytest.mark.parametrize("kind", KINDS)
def test_a_miss_is_flagged_not_raised_and_strict_raises_as_compute_does(ik_endpoint, robot, kind):
    """`reached` per pose from the worker's errors and the call's tolerances (judged by the
    client: the reply carries no flag), the count in `n_over`; ``strict`` raises `IKError`
    (what ``compute --strict`` raises) naming the misses of N and the worst errors."""
    wxyz, pos = far_target(robot, 3)

    async def both(client):  # the async client: the same calls, awaited
        return (
            await client.solve("tatbot", wxyz, pos),
            await client.solve("tatbot", wxyz, pos, pos_tol=0.01, ori_tol=0.5),
        )

    def sync_both(client):
        return client.solve("tatbot", wxyz, pos), client.solve(
            "tatbot", wxyz, pos, pos_tol=0.01, ori_tol=0.5
        )

    sol, loose = run_with(kind, ik_endpoint, both if kind == "async" else sync_both, timeout=60)
    judged = (sol.pos_err <= POS_TOL).all(1) & (sol.ori_err <= ORI_TOL).all(1)
    assert sol.reached.tolist() == judged.tolist() and not sol.reached[1]
    assert sol.n_over == 3 - int(judged.sum()) >= 1 and sol.pos_err[1, 0] > 0.1
    assert (loose.pos_tol, loose.ori_tol) == (0.01, 0.5) and not loose.reached[1]
    assert f"n_over={sol.n_over}" in repr(sol)
    np.testing.assert_array_equal(loose.joints, sol.joints)

    async def strict(client):
        return await client.solve("tatbot", wxyz, pos, strict=True)

    def sync_strict(client):
        return client.solve("tatbot", wxyz, pos, strict=True)

    with pytest.raises(IKError) as info:
        run_with(kind, ik_endpoint, strict if kind == "async" else sync_strict, timeout=60)
    assert type(info.value) is IKError  # not a RemoteError: the worker answered
    text = str(info.value)
    assert f"{sol.n_over} of 3 poses miss tolerance" in text and "worst pos_err" in text
    assert f"pos_tol {POS_TOL:g}" in text


def test_in_process_solve_flags_the_same_misses(ik_endpoint, robot):
    wxyz, pos = far_target(robot, 3)
    local = ik.solve_ik(robot, wxyz, pos, np.asarray(TATBOT.rest, np.float32), buckets=(16,))
    with IKClient(ik_endpoint, timeout=60) as client:
        remote = client.solve("tatbot", wxyz, pos)
    assert local.reached.tolist() == remote.reached.tolist() and local.n_over == remote.n_over


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"pos_tol": 0.1}, "pos_tol", "metres"),  # millimetres typed as metres
        ({"pos_tol": -1.0}, "pos_tol", ">= 0"),
        ({"ori_tol": 7.0}, "ori_tol", "radians"),
        ({"ori_tol": "0.05"}, "ori_tol", "number"),
        ({"strict": 1}, "strict", "true or false"),
    ],
)
def test_bad_tolerances_are_refused_before_anything_is_sent(nowhere, zctx, kwargs, field, words):
    """Checked as `compute` checks them (`check_tolerance`), before a request leaves: no
    broker listens at ``nowhere``, so a request would wait out its timeout."""
    from zmq_ik.errors import InputError

    wxyz, pos = np.array([[1.0, 0, 0, 0]]), np.array([[0.1, 0.0, 0.2]])
    with IKClient(nowhere, timeout=30, retries=0, context=zctx) as client:
        t0 = time.monotonic()
        with pytest.raises(InputError, match=words) as info:
            client.solve("tatbot", wxyz, pos, **kwargs)
        assert info.value.field == field and time.monotonic() - t0 < 1
    with pytest.raises(InputError, match=words) as info:
        ik.solve_ik(ik.Robot.bundled("tatbot"), wxyz, pos, **kwargs)
    assert info.value.field == field


# --------------------------------------------------------------------------- #23.5 versions


def test_an_unknown_setting_names_the_workers_version_and_a_newer_client(ik_endpoint, robot):
    """A setting this worker does not know (a newer client's, in a rolling upgrade) fails at
    once, saying so with the worker's version, in `solve` and `strokebatch` alike."""
    from zmq_ik._version import __version__
    from zmq_ik.model import PackedStrokes, Scene, ops

    wxyz, pos = reachable_targets(robot, 1)
    scene = Scene(stroke_length=4, offset_num=1)
    coords = np.random.default_rng(3).uniform(-0.01, 0.01, (1, 2, 4, 3)).astype(np.float32)
    no = np.zeros((1, 2), bool)
    _, arrays = ops.strokebatch_request(scene, PackedStrokes(coords, no, no))
    cases = [
        ("solve", {"ik": {"pos_weight": 3, "retry_misses": True}}, None, "ik"),
        ("strokebatch", {"scene": {**scene.to_wire(), "ik": {"retry_misses": 1}}}, arrays, "ik"),
        ("strokebatch", {"scene": {**scene.to_wire(), "reach_mode": "new"}}, arrays, "reach_mode"),
    ]
    with IKClient(ik_endpoint, timeout=60, retries=0) as client:
        for operation, header, payload, field in cases:
            payload = payload or {"target_wxyz": wxyz, "target_pos": pos}
            t0 = time.monotonic()
            with pytest.raises(RemoteError) as info:
                client.request("tatbot", operation, header, payload)
            assert time.monotonic() - t0 < 5
            assert info.value.code == "bad_request" and info.value.field == field
            assert f"zmq-ik {__version__}" in info.value.message
            assert "client may be newer" in info.value.message
        assert client.solve("tatbot", wxyz, pos).joints.shape == (1, 14)  # and it carries on


class NewerWorker(threading.Thread):
    """A worker from the future, on real sockets: its READY, its solve and describe replies
    each carry a field and an array this version has never heard of."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.stop = threading.Event()

    def run(self) -> None:
        from zmq_ik.model import ops
        from zmq_ik.protocol import (
            Command,
            Request,
            decode_payload,
            encode_payload,
            heartbeat_frames,
            parse_message,
            ready_frames,
            reply_frames,
        )

        future = {"future_field": {"nested": [1, 2]}}
        extra = {"future_array": np.arange(3, dtype=np.float32)}
        info = {"robots": ["newer"], "device": "cpu", "versions": {"zmq-ik": "9.0.0"}}
        try:
            self.sock.send_multipart(ready_frames({**info, **future, "next_gen": True}))
            last = 0.0
            while not self.stop.is_set():
                if time.monotonic() - last > 0.1:
                    self.sock.send_multipart(heartbeat_frames())
                    last = time.monotonic()
                if not self.sock.poll(20):
                    continue
                msg = parse_message(self.sock.recv_multipart())
                if not isinstance(msg, Request):
                    continue
                if msg.operation == "solve":  # pose 1: an unknown (NaN) error
                    n = decode_payload(msg.payload).arrays["target_pos"].shape[0]
                    pos_err = np.full((n, 1), 1e-5, np.float32)
                    pos_err[1] = np.nan
                    header, arrays = ops.solve_reply(
                        IKSolution(np.zeros((n, 3)), pos_err, np.zeros((n, 1)))
                    )
                else:
                    header, arrays = ops.describe_reply(
                        ["tool"],
                        ["a", "b", "c"],
                        -np.ones(3),
                        np.ones(3),
                        np.ones(3, bool),
                        np.zeros(3),
                    )
                payload = encode_payload({**header, **future}, {**arrays, **extra})
                self.sock.send_multipart(reply_frames(Command.FINAL, msg.request_id, payload))
        finally:
            self.sock.close(0)

    def __enter__(self) -> NewerWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)


def test_a_newer_workers_extra_fields_and_arrays_are_ignored(endpoint, zctx):
    """A real broker registers a READY with fields it does not know (keeping what it knows),
    and a real client reads solve and describe replies with an extra header field and an
    extra array: nothing new breaks the old peer. Its NaN error reads as not reached."""
    with NewerWorker(zctx, endpoint):
        wait_for_workers(endpoint, 1, robot="newer", timeout=30)
        with IKClient(endpoint, timeout=10, context=zctx) as client:
            listed = client.ping()["workers"]
            assert [w["versions"] for w in listed] == [{"zmq-ik": "9.0.0"}]
            wxyz, pos = np.tile([1.0, 0, 0, 0], (3, 1, 1)), np.full((3, 1, 3), 0.1)
            sol = client.solve("newer", wxyz, pos)
            assert sol.joints.shape == (3, 3) and sol.reached.tolist() == [True, False, True]
            assert sol.n_over == 1 and not hasattr(sol, "future_array")
            with pytest.raises(IKError, match="1 of 3 poses miss tolerance"):
                client.solve("newer", wxyz, pos, strict=True)
            info = client.describe("newer")
            assert set(info) == {"ee_links", "joint_names", "lower", "upper", "limited", "rest"}
            assert info["joint_names"] == ["a", "b", "c"]
