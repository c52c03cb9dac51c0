"""The `zmq-ik` command line (issue #18's CLI items, #14's settings-as-wiring): in process with
click's runner where no process is needed, as real processes otherwise."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import click
import numpy as np
import pytest
import zmq
from click.testing import CliRunner
from conftest import ROOT, ctrl_c_reaches, wait_for_workers

from zmq_ik.cli import main
from zmq_ik.client import IKClient
from zmq_ik.model import Scene, StrokeBatch, StrokeList
from zmq_ik.robots import example_paths

pytestmark = pytest.mark.timeout(60)
SCENE, STROKES = (str(p) for p in example_paths())


def run(*args: str, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(main, list(args), env=env)


def cli(*args: str, timeout: float = 30, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


def compute_example(output: object, endpoint: str, *options: str) -> object:
    """`zmq-ik compute` of the bundled example job to ``output`` through ``endpoint`` (where
    nothing listens, for a refusal that must come before any request)."""
    args = [SCENE, STROKES, "-o", str(output), *options]
    return run("compute", *args, "--endpoint", endpoint, "--timeout", "5")


# --------------------------------------------------------------------------- #18.2 output


@pytest.mark.parametrize("where", ["missing_dir/x.safetensors", "."])
def test_compute_refuses_an_unwritable_output_before_any_work(tmp_path, where, nowhere):
    """Before: the whole job was computed, then a SafetensorError traceback. Now a usage
    error at once: the (absent) broker is never asked."""
    t0 = time.monotonic()
    result = compute_example(tmp_path / where, nowhere)
    assert result.exit_code == 2, result.output
    assert "--output" in result.output and "Traceback" not in result.output
    assert ("does not exist" if "missing" in where else "is a directory") in result.output
    assert time.monotonic() - t0 < 3  # no 5 s wait for an answer


def _batch(value: float) -> StrokeBatch:
    shape = (1, 2, 1)
    return StrokeBatch(
        ee_pos_l=np.full((*shape, 3), value),
        ee_pos_r=np.zeros((*shape, 3)),
        ee_rot_l=np.tile([1.0, 0, 0, 0], (*shape, 1)),
        ee_rot_r=np.tile([1.0, 0, 0, 0], (*shape, 1)),
        joints=np.zeros((*shape, 14)),
        pos_err=np.zeros((*shape, 2)),
        ori_err=np.zeros((*shape, 2)),
    )


def test_output_is_written_atomically(tmp_path, monkeypatch):
    """A write that fails leaves the old file as it was and no temporary file behind."""
    from zmq_ik.apps.compute import write_atomic

    out = tmp_path / "sb.safetensors"
    write_atomic(_batch(1.0), out, errors=False)
    before = out.read_bytes()
    monkeypatch.setattr(StrokeBatch, "to_bytes", lambda self, errors: b"x" + 1)  # type: ignore[operator]
    with pytest.raises(TypeError):
        write_atomic(_batch(2.0), out, errors=False)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sb.safetensors"]
    assert StrokeBatch.load(out).ee_pos_l[0, 0, 0, 0] == 1.0
    assert oct(out.stat().st_mode & 0o777) == "0o644"  # issue 25.7: mkstemp's 0600 before


# --------------------------------------------------------------------------- #18.5 ids


def test_ping_and_status_show_full_worker_ids(procs, endpoint):
    procs.echo_worker(endpoint)
    [worker] = wait_for_workers(endpoint, 1)["workers"]
    assert len(worker["id"]) > 8
    for command in ("ping", "status"):
        result = run(command, "--endpoint", endpoint)
        assert result.exit_code == 0, result.output
        assert worker["id"] in result.output, command


# --------------------------------------------------------------------------- #18.9 GPU


def test_worker_require_gpu_without_a_gpu_exits_78_with_one_line(nowhere):
    """JAX_PLATFORMS=cpu (as on this machine): no GPU for JAX. Before: no such option, and
    `--gpu 0` silently ran on the CPU."""
    result = cli("worker", "--gpu", "0", "--require-gpu", "--connect", nowhere, "-q")
    assert result.returncode == 78, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--gpu 0" in line and "no GPU" in line and "--require-gpu" in line


def test_worker_gpu_without_a_gpu_warns_clearly(tmp_path, nowhere):
    from conftest import JAX_CACHE

    log = tmp_path / "worker.log"
    with open(log, "w") as f:
        args = ["worker", "--gpu", "0", "--connect", nowhere, "--buckets", "16"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "zmq_ik.cli", *args, "--cache-dir", str(JAX_CACHE)],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "JAX sees no GPU" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "WARNING" in text and "RUNNING ON THE CPU" in text and "--require-gpu" in text
    finally:
        proc.kill()
        proc.wait(10)


def test_gpu_options_are_consistent(monkeypatch):
    """`serve --gpu` takes several (repeated or comma-separated), `worker --gpu` one index;
    both parse the same way."""
    for args in (["--gpu", "0", "--gpu", "1"], ["--gpu", "0,1"]):
        ctx = main.commands["serve"].make_context("serve", args)
        assert ctx.params["gpus"] == (0, 1)
    assert main.commands["worker"].make_context("worker", ["--gpu", "1"]).params["gpu"] == 1
    for bad, message in ((["--gpu", "0,1"], "one GPU"), (["--gpu", "x"], "GPU indices")):
        result = run("worker", *bad, "--echo")
        assert result.exit_code == 2 and message in result.output, result.output
    result = run("serve", "--require-gpu", "--echo")
    assert result.exit_code == 2 and "require_gpu needs GPU" in result.output


def test_bad_fk_joints_are_a_usage_error():
    """Exit 2 before any connection, like every other bad argument (was 1, from the client)."""
    for joints, message in ((["0,x"], "comma-separated"), (["0,1", "0"], "different lengths")):
        result = run("fk", "tatbot", *joints, "--endpoint", "tcp://127.0.0.1:9")
        assert result.exit_code == 2 and message in result.output, result.output


def test_warmup_logs_progress_while_it_compiles(caplog):
    from zmq_ik.errors import ConfigError, InputError
    from zmq_ik.worker import EchoService
    from zmq_ik.worker.settings import WarmupProgress

    class Slow(EchoService):
        def warmup(self, progress=None) -> dict:
            progress(1, 4)  # as the engine's warm-up does per compiled bucket
            time.sleep(0.35)
            return super().warmup()

    progress = WarmupProgress(Slow(["r"]), interval=0.1)
    told: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, "zmq_ik.worker.settings"):
        assert progress.warmup(lambda *step: told.append(step))["device"] == "cpu"
    assert told == [(1, 4)]  # passed on (the worker announces it)
    lines = [r.getMessage() for r in caplog.records]
    assert "warming r: bucket 1/4 compiled, 0 s elapsed" in lines
    ticks = [line for line in lines if line.startswith("warming r: still compiling (bucket 1/4")]
    assert len(ticks) >= 2, lines
    assert progress.robots == ["r"]

    class Broken(EchoService):
        def warmup(self, progress=None) -> dict:
            raise InputError("robot 'r': URDF is broken")

    with pytest.raises(ConfigError, match="URDF is broken"):
        WarmupProgress(Broken()).warmup()


# --------------------------------------------------------------------------- #18.11 Ctrl-C


def test_ctrl_c_during_compute_exits_130_at_once(procs, endpoint, tmp_path):
    """Before: exit 1 ('Aborted!'). The client closes at once and cancels the chunks still
    queued at the broker (#18.11; before, they stayed until their deadline). Its only worker is still warming up (never given a
    job): the chunks wait for it however long `compute` takes to start (with no worker at
    all they would be refused `unknown_robot` once the broker is 6 s old, #18.8)."""
    urdf = example_paths()[0].parent / "tatbot.urdf"
    procs.echo_worker(endpoint, "--robot", f"tatbot={urdf}", "--echo-warmup", "120")
    with IKClient(endpoint, timeout=1, retries=0) as client:
        deadline = time.monotonic() + 20
        while not client.ping().get("warming"):
            assert time.monotonic() < deadline, "the warming worker never announced itself"
            time.sleep(0.05)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zmq_ik.cli",
            "compute",
            SCENE,
            STROKES,
            "-o",
            str(tmp_path / "x"),
            "--endpoint",
            endpoint,
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=ctrl_c_reaches,
    )
    try:
        with IKClient(endpoint, timeout=1, retries=0) as client:
            deadline = time.monotonic() + 20
            while not client.status().get("queues", {}).get("tatbot"):
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    print(f"\nMEASURED compute exit after SIGINT: {took:.3f}s, code {proc.returncode}")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert took < 2
    with IKClient(endpoint, timeout=1, retries=0) as client:
        st = client.status()
    assert st["open_jobs"] == 0 and st["counters"].get("cancelled", 0) >= 1, st  # #18.11


# --------------------------------------------------------------------------- #18.12 help etc.


def test_help_documents_endpoint_timeout_and_environment():
    top = run("--help").output
    for text in ("ZMQ_IK_ENDPOINT", "ZMQ_IK_CACHE_DIR", "_ZMQ_IK_COMPLETE=bash_source zmq-ik"):
        assert text in top
    for command in ("ping", "status", "compute"):
        out = run(command, "--help").output
        endpoint_help = out.split("--endpoint", 1)[1].split("\n  -", 1)[0]
        timeout_help = out.split("--timeout", 1)[1].split("\n  -", 1)[0]
        assert "Broker endpoint" in endpoint_help and "ZMQ_IK_ENDPOINT" in endpoint_help
        assert "Seconds" in timeout_help, command


def test_every_command_takes_its_endpoint_from_the_environment(monkeypatch, nowhere):
    monkeypatch.setenv("ZMQ_IK_ENDPOINT", "tcp://10.1.2.3:7777")
    for name, param, args in (
        ("broker", "bind", []),
        ("serve", "bind", []),
        ("worker", "connect", []),
        ("ping", "endpoint", []),
        ("status", "endpoint", []),
        ("demo", "endpoint", []),
        ("compute", "endpoint", [SCENE, STROKES]),
    ):
        value = main.commands[name].make_context(name, list(args)).params[param]
        assert value in ("tcp://10.1.2.3:7777", ("tcp://10.1.2.3:7777",)), name
    # ...and it really is used: nothing listens there, so the message names it.
    result = run("ping", "--timeout", "0.3", env={"ZMQ_IK_ENDPOINT": nowhere})
    assert result.exit_code == 1 and nowhere in result.output


def test_verbosity_options_work_after_the_command(tmp_path):
    root = logging.getLogger()
    level = root.level
    try:
        for flag, expected in (("-q", logging.WARNING), ("-v", logging.DEBUG)):
            result = run("keygen", str(tmp_path / flag), flag)
            assert result.exit_code == 0, result.output
            assert root.level == expected
    finally:
        root.setLevel(level)


def test_no_answer_says_the_real_timeout(nowhere):
    """Before: `--timeout 1` was reported as 'attempt(s) of 1.1s'."""
    result = run("ping", "--endpoint", nowhere, "--timeout", "0.3")
    assert result.exit_code == 1
    assert "within 0.3s" in result.output and "0.4s" not in result.output


# --------------------------------------------------------------------------- #18.14 messages


@pytest.mark.parametrize("command", ["compute", "ping", "status"])
@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "1e12"])
def test_bad_timeouts_are_usage_errors(command, value, nowhere):
    args = [SCENE, STROKES] if command == "compute" else []
    result = run(command, *args, "--endpoint", nowhere, "--timeout", value)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and "Traceback" not in result.output


def test_swapped_scene_and_strokes_are_named(tmp_path):
    result = run("compute", STROKES, SCENE, "-o", str(tmp_path / "x"))
    assert result.exit_code == 1
    assert "looks like a strokes file" in result.output and "SCENE_FILE first" in result.output


def test_strokes_of_another_length_suggest_resample(tmp_path, nowhere):
    scene = Scene.from_yaml(SCENE)
    longer = tmp_path / "strokes17.yaml"
    StrokeList.from_yaml(STROKES).resampled(scene.stroke_length + 1)[:2].to_yaml(longer)
    args = ["compute", SCENE, str(longer), "-o", str(tmp_path / "x"), "--timeout", "0.2"]
    refused = run(*args, "--endpoint", nowhere)
    assert refused.exit_code == 1 and "add --resample" in refused.output
    assert "resample=True" not in refused.output
    resampled = run(*args, "--endpoint", nowhere, "--resample")
    assert resampled.exit_code == 1 and "no answer" in resampled.output  # loaded, then asked


# --------------------------------------------------------------------------- #14 settings


def test_service_settings_travel_as_json_and_are_checked(tmp_path):
    from zmq_ik.apps.serve import Supervisor
    from zmq_ik.errors import InputError
    from zmq_ik.model import IKSettings
    from zmq_ik.settings.apps import ServeSettings
    from zmq_ik.settings.worker import ServiceSettings

    settings = ServiceSettings(
        robots={"tatbot": SCENE},
        ee_links={"tatbot": ("a", "b")},
        rest={"tatbot": (0.0, 1.0)},
        buckets=(16, 64),
        warm=(IKSettings(precise=True),),
        gpu=1,
        require_gpu=True,
    )
    assert ServiceSettings.from_json(settings.to_json()) == settings
    saved = tmp_path / "service.json"
    saved.write_text(settings.to_json())
    assert ServiceSettings.from_json(str(saved)) == settings  # --config FILE
    sup = Supervisor(ServeSettings("tcp://*:5999", gpus=(0, 1), worker=settings))
    workers = sup.children[1:]
    assert len(workers) == 2
    for gpu, child in enumerate(workers):
        assert child.args[:4] == ["worker", "--connect", "tcp://127.0.0.1:5999", "--config"]
        assert len(child.args) == 5
        assert ServiceSettings.from_json(child.args[4]).gpu == gpu
    for bad, field in (
        ('{"robots": {"zik.broker": "x"}}', "robots"),
        ('{"buckets": [0]}', "buckets"),
        ('{"rest": {"r": [1e999]}}', "rest"),
        ('{"echo": "yes"}', "echo"),
        ('{"gpu": -1}', "gpu"),
        ('{"warm": [{"seeds": 0}]}', "seeds"),
        ('{"nope": 1}', "config"),
        ("[1]", "config"),
        ("{", "config"),
    ):
        with pytest.raises(InputError) as info:
            ServiceSettings.from_json(bad)
        assert info.value.field == field, bad


def test_worker_config_json_with_options_overriding_it(procs, endpoint, tmp_path):
    """`serve` passes `--config`; options given on the command line win over it."""
    urdf = tmp_path / "r.urdf"
    urdf.write_text('<robot name="r"><link name="a"/></robot>')
    config = json.dumps({"robots": {"arm": str(urdf)}, "echo": False})
    procs.start("worker", "--connect", endpoint, "--config", config, "--echo")
    info = wait_for_workers(endpoint, 1, robot="arm", timeout=30)
    assert info["workers"][0]["robots"] == ["arm"]
    with IKClient(endpoint, timeout=5) as client:  # the echo service: --echo won
        assert client.request("arm", "echo", {"x": 1}).header["x"] == 1


def test_demo_and_compute_settings_defaults_are_the_dataclass_ones():
    from zmq_ik.settings.apps import ComputeSettings

    ctx = main.commands["compute"].make_context("compute", [SCENE, STROKES])
    options = {k: v for k, v in ctx.params.items() if k in ComputeSettings.__dataclass_fields__}
    assert ComputeSettings(**options) == ComputeSettings()


# --------------------------------------------------------------------------- #18.7 verdicts


def test_tolerances_are_metres_and_a_millimetre_habit_is_refused_before_any_work(tmp_path, nowhere):
    """Before: --pos-tol was in mm while JSON pos_tol (and the library) were in metres."""
    t0 = time.monotonic()
    result = compute_example(tmp_path / "x", nowhere, "--pos-tol", "0.1")
    assert result.exit_code == 2 and "--pos-tol" in result.output and "metres" in result.output
    assert time.monotonic() - t0 < 3
    assert "metres" in run("compute", "--help").output and "radians" in run("demo", "--help").output


def test_strict_needs_every_pose_known_within_tolerance_and_limits():
    """#27.2: one verdict (`zmq_ik.model.verdict.judge`): errors against the tolerances, joints
    against the limits with the amount and its unit; `--strict` fails on any of them."""
    from zmq_ik.apps.compute import check_strict, summary_table
    from zmq_ik.errors import IKError
    from zmq_ik.model.verdict import JointLimits, judge

    limits = JointLimits.bundled()

    def summary(batch: StrokeBatch, soft: bool = False, judged: bool = True) -> dict:
        v = judge(batch, 1e-4, 0.05, limits if judged else None, soft=soft)
        timing = {"wall_s": 1.0, "poses_per_s": 8.0, "stroke_pairs": batch.b}
        return {**v.to_dict(), **timing, "precise": not soft}

    good_batch = _limits_batch(pairs=slice(0, 2))  # pair 1: marginal, within tolerance
    good = summary(good_batch)
    check_strict(good)
    text = summary_table(good)
    assert "OK: all 12 poses within tolerance and joint limits" in text
    assert "0.0001 m (= 0.1 mm)" in text and "poses with unknown error" in text
    assert "note: tatbot's mode (ik.precise false) pulls" in summary_table(
        {**good, "precise": False}
    )
    assert "note:" not in text
    assert "(joint limits not checked)" in summary_table(summary(good_batch, judged=False))
    past = "left/joint_1 up to 0.01 rad past its lower limit"
    for batch, soft, words in (
        (_limits_batch(pairs=slice(2, 3)), False, "1 of 6 poses miss tolerance"),
        (_limits_batch(errors=False, pairs=slice(0, 1)), False, "6 of 6 poses have no known"),
        (
            _limits_batch(pairs=slice(3, 4)),
            False,
            f"1 of 6 poses have a joint past its limit: {past}",
        ),
        (_limits_batch(pairs=slice(3, 4)), True, "(soft limits: ik.precise false lets a joint"),
    ):
        bad = summary(batch, soft)
        assert f"NOT OK: {words}" in summary_table(bad) if not soft else words in summary_table(bad)
        with pytest.raises(IKError, match=re.escape(words)):
            check_strict(bad)


# --------------------------------------------------------------------------- report / --plot


def _limits_batch(errors: bool = True, pairs: slice = slice(None)) -> StrokeBatch:
    """4 stroke pairs of the bundled robot near its rest pose: pair 1 marginal in position,
    pair 2 over in orientation, pair 3 with left/joint_1 past its lower limit (0); ``pairs``
    of them."""
    from zmq_ik.robots import BUNDLED

    shape = (4, 3, 2)
    joints = np.broadcast_to(BUNDLED["tatbot"].rest, (*shape, 14)).copy()
    joints[..., 6] = joints[..., 13] = 0.02  # needle carriages mid-range
    joints[3, 1, 0, 1] = -0.01
    pos_err, ori_err = np.full((*shape, 2), 2e-5), np.full((*shape, 2), 1e-3)
    pos_err[1, 2, 1, 0] = 9e-5
    ori_err[2, 0, 0, 1] = 0.07
    nan = np.full((*shape, 2), np.nan)
    return StrokeBatch(
        ee_pos_l=np.zeros((*shape, 3)),
        ee_pos_r=np.zeros((*shape, 3)),
        ee_rot_l=np.tile([1.0, 0, 0, 0], (*shape, 1)),
        ee_rot_r=np.tile([1.0, 0, 0, 0], (*shape, 1)),
        joints=joints,
        pos_err=pos_err if errors else nan,
        ori_err=ori_err if errors else nan,
    )[pairs]


def test_report_writes_a_png_and_names_the_marginal_strokes(tmp_path):
    pytest.importorskip("matplotlib")
    sb, png = tmp_path / "sb.safetensors", tmp_path / "report.png"
    _limits_batch().save(sb, errors=True)
    result = run("report", str(sb), "-o", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    out = result.output
    assert (
        "position error: worst 0.09 mm (tolerance 0.1 mm); over: none; marginal (> 80%): 1" in out
    )
    assert "orientation error: worst 0.07 rad (tolerance 0.05 rad); over: 2;" in out
    assert (
        "strokes past a joint limit (by more than 1e-05 rad or m): 3 (left/joint_1 up to "
        "0.01 rad past its lower limit)" in out
    )
    # the verdict, as compute says it (test_strict_needs_every_pose_known_within_...)
    assert "NOT OK: 1 of 24 poses miss tolerance; 1 of 24 poses have a joint past its" in out
    # a tatbot file (no error tensors): said, not guessed
    _limits_batch(errors=False).save(sb)
    result = run("report", str(sb), "-o", str(png), "--pos-tol", "0.0002")
    assert result.exit_code == 0 and "position error: unknown" in result.output


def test_plots_without_matplotlib_name_the_extra_before_any_work(tmp_path, monkeypatch, nowhere):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    sb = tmp_path / "sb.safetensors"
    _limits_batch().save(sb)
    t0 = time.monotonic()
    for result in (
        run("report", str(sb)),
        compute_example(tmp_path / "x", nowhere, "--plot", str(tmp_path / "p.png")),
    ):
        assert result.exit_code == 78, result.output
        assert "pip install matplotlib" in result.output and "Traceback" not in result.output
    assert time.monotonic() - t0 < 3 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("where", ["missing_dir/report.png", "."])
def test_report_refuses_an_unwritable_output_as_a_usage_error_before_any_work(tmp_path, where):
    """Before: exit 1 (a library error). Now as `compute -o`: exit 2 naming --output, one
    line, before the input is read (here it is not even a StrokeBatch)."""
    garbage = tmp_path / "sb.safetensors"
    garbage.write_bytes(b"not a strokebatch")
    result = run("report", str(garbage), "-o", str(tmp_path / where))
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "--output" in error[0], result.output
    assert ("does not exist" if "missing" in where else "is a directory") in error[0]
    assert "Traceback" not in result.output and "safetensors" not in error[0]  # not read
    if where == ".":
        assert error[0].endswith(f"e.g. {tmp_path / where / 'report.png'}")


# --------------------------------------------------------------------------- #18.10 big YAML


def test_big_strokes_file_says_its_size_and_time(tmp_path, nowhere):
    """Before: a 4.3 MB strokes file took 20 s to load with nothing printed."""
    strokes = StrokeList.from_yaml(STROKES)
    big = tmp_path / "big.yaml"
    StrokeList(strokes.pairs * 30).to_yaml(big)  # 1,080 pairs, ~1.3 MB
    assert big.stat().st_size > 1 << 20
    t0 = time.monotonic()
    result = cli(
        "compute",
        SCENE,
        str(big),
        "-o",
        str(tmp_path / "x"),
        "--endpoint",
        nowhere,
        "--timeout",
        "0.2",
    )
    took = time.monotonic() - t0
    print(
        f"\nMEASURED compute on a {big.stat().st_size / 1e6:.1f} MB strokes file: "
        f"{took:.1f}s to fail at the absent broker"
    )
    assert result.returncode == 1 and "no answer" in result.stderr
    assert f"reading {big} (1.3 MB of YAML)..." in result.stderr
    assert f"read {big} in " in result.stderr


# --------------------------------------------------------------------------- #25 trust


def test_key_directories_without_a_broker_key_are_usage_errors(tmp_path):
    """Issue 25.2: --allow-keys without --curve-secret-key ran plaintext, without a word."""
    d = str(tmp_path)
    for args in (
        ("broker", "--allow-keys", d),
        ("broker", "--worker-keys", d),
        ("serve", "--allow-keys", d),
        ("serve", "--worker-keys", d),
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "needs --curve-secret-key FILE" in result.output and "plaintext" in result.output


def test_key_mistakes_are_one_line_errors(tmp_path, nowhere):
    """Issue 25.7: keygen over an existing key, a public key as a secret one: tracebacks."""
    assert run("keygen", str(tmp_path), "--name", "a").exit_code == 0
    again = run("keygen", str(tmp_path), "--name", "a")
    assert again.exit_code == 1 and "a.key exists; remove it first" in again.output
    assert isinstance(again.exception, SystemExit)  # click's exit, not a traceback
    public = str(tmp_path / "a.key")
    for args in (("ping", "--endpoint", nowhere), ("status", "--endpoint", nowhere)):
        result = run(*args, "--curve-server-key", public, "--curve-secret-key", public)
        assert result.exit_code == 2 and "holds no secret key" in result.output
        assert isinstance(result.exception, SystemExit)
    broker = cli("broker", "--bind", "tcp://127.0.0.1:*", "--curve-secret-key", public,
                 "--allow-keys", str(tmp_path))  # fmt: skip
    assert broker.returncode == 78 and "holds no secret key" in broker.stderr
    assert "Traceback" not in broker.stderr


def test_compute_at_a_port_with_no_broker_fails_in_about_2s(tmp_path, nowhere):
    """Issue 25.7: 1 min 34 s before (3 attempts of 30 s); `ping` knew in 2 s."""
    t0 = time.monotonic()
    result = run("compute", SCENE, STROKES, "-o", str(tmp_path / "o.safetensors"),
                 "--endpoint", nowhere)  # fmt: skip
    took = time.monotonic() - t0
    assert result.exit_code == 1
    assert "nothing answered at" in result.output and "within 2s" in result.output
    assert "is a broker" in result.output
    assert took < 6.0, took  # 2 s plus loading the example job
    print(f"compute with no broker failed after {took:.2f}s")


# --------------------------------------------------------------------------- #27 exits, hints


@pytest.mark.parametrize(
    ("args", "example"),
    [
        (["broker", "--bind", "5555"], "tcp://127.0.0.1:5555"),
        (["broker", "--bind", "localhost"], "tcp://localhost:5555"),
        (["broker", "--bind", "tcp://127.0.0.1"], "needs a host and a port"),
        (["broker", "--worker-bind", "5556"], "tcp://127.0.0.1:5556"),
        (["serve", "--bind", "5555"], "tcp://127.0.0.1:5555"),
        (["serve", "--connect", "gpu-host:5555"], "tcp://gpu-host:5555"),
        (["worker", "--connect", "5555", "--echo"], "tcp://127.0.0.1:5555"),
        (["ping", "--endpoint", "gpu-host:5555"], "tcp://gpu-host:5555"),
        (["status", "--endpoint", "gpu-host:5555"], "tcp://gpu-host:5555"),
        (["demo", "--endpoint", "gpu-host:5555"], "tcp://gpu-host:5555"),
        (["compute", SCENE, STROKES, "--endpoint", "gpu-host:5555"], "tcp://gpu-host:5555"),
    ],
)
def test_a_bare_port_or_host_is_a_usage_error_with_the_endpoint_hint(args, example):
    """Issue 27.5: `broker --bind 5555` said libzmq's `Invalid argument` (exit 78); the
    client side explained `tcp://host:port`. One check (`protocol.check_endpoint`) for all."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "use tcp://host:port" in result.output and example in result.output, result.output
    assert "Invalid argument" not in result.output


def test_a_taken_port_is_a_configuration_error_for_broker_and_serve(zctx):
    """Issue 27.5: configuration errors exit 78 everywhere (systemd's RestartPreventExitStatus,
    `serve` not restarting it)."""
    other = zctx.socket(zmq.ROUTER)
    other.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{other.bind_to_random_port('tcp://127.0.0.1')}"
    try:
        broker = run("broker", "--bind", endpoint)
        assert broker.exit_code == 78 and "cannot bind" in broker.output, broker.output
        serve = cli("serve", "--bind", endpoint, "--echo", "-q")
        assert serve.returncode == 78 and "cannot bind" in serve.stderr, serve.stderr
    finally:
        other.close(0)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be there")
def test_serve_require_gpu_without_a_gpu_exits_78(serve_endpoint):
    """Issue 27.5: its worker exited 78, and `serve` then exited 1."""
    result = cli("serve", "--bind", serve_endpoint, "--gpu", "0", "--require-gpu", "-q", timeout=90)
    assert result.returncode == 78, result.stderr
    assert "no GPU" in result.stderr and "configuration error" in result.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be there")
def test_jax_backend_probing_is_quiet_unless_verbose():
    """Issue 27.3: every `worker --gpu N` start logged JAX's `Unable to initialize backend
    'tpu'` (INFO from its backend probing; JAX_PLATFORMS unset, as under systemd)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    args = [sys.executable, "-m", "zmq_ik.cli", "worker", "--gpu", "0", "--require-gpu"]
    args += ["--connect", "tcp://127.0.0.1:9"]
    for flags, shown in (([], False), (["-v"], True)):
        done = subprocess.run([*args, *flags], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env=env)  # fmt: skip
        assert done.returncode == 78, done.stderr
        assert ("Unable to initialize backend" in done.stderr) is shown, done.stderr
        if not shown:
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # the error alone


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def test_every_option_shows_its_default_and_every_number_its_unit():
    """Issue 27.5: `ping --count`, `demo --startup-timeout` showed no default; `keygen --name`
    said "Names."; `worker --config JSON` did not say file or text. Every option of every
    command now shows `[default: ...]` or names its default in its help, a non-integer number
    names its unit, and each command's help ends with an example."""
    units = ("second", "(s)", "metres", "radians")
    for name, command in main.commands.items():
        ctx = click.Context(command, info_name=name)
        text = command.get_help(ctx)
        assert f"Example:\n    zmq-ik {name} " in text, name
        for option in _options(command):
            if option.is_flag or option.count:
                continue
            record = option.get_help_record(ctx)
            assert record is not None
            help_text = " ".join(record[1].split())
            assert "default" in help_text.lower(), (name, option.opts, help_text)
            if isinstance(option.type, click.types.FloatParamType):  # (or its metavar)
                said = f"{record[0]} {help_text}".lower()
                assert any(u in said for u in units), (name, option.opts, help_text)
    keygen = main.commands["keygen"].get_help(click.Context(main.commands["keygen"]))
    assert "NAME.key and NAME.key_secret" in keygen
    worker = " ".join(
        main.commands["worker"].get_help(click.Context(main.commands["worker"])).split()
    )
    assert "as text" in worker and "file" in worker
    ping = run("ping", "--help").output
    assert "Pings per broker.  [default: 1" in ping
    assert "[default: 900" in run("demo", "--help").output
