"""`zmq-ik serve`: supervised children, restart on crash, clean stop with no child left."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import wait_for_workers

from zmq_ik.client import IKClient

pytestmark = pytest.mark.timeout(90)


def children_of(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(entry))
    return kids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_serves_and_stops_cleanly(procs, serve_endpoint, sig):
    serve = procs.serve(serve_endpoint, "--echo", "--workers", "2")
    wait_for_workers(serve_endpoint, 2, timeout=30)
    kids = children_of(serve.pid)
    assert len(kids) == 3  # broker + 2 workers
    with IKClient(serve_endpoint, timeout=5) as client:
        assert client.request("echo", "echo", {"x": 1}).header["x"] == 1
    serve.send_signal(sig)
    assert serve.wait(20) == 0
    assert not any(alive(k) for k in kids)


def test_serve_restarts_a_crashed_worker(procs, serve_endpoint):
    serve = procs.serve(serve_endpoint, "--echo", "--workers", "1")
    info = wait_for_workers(serve_endpoint, 1, timeout=30)
    first = info["workers"][0]["pid"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = wait_for_workers(serve_endpoint, 1, timeout=30)["workers"]
        if any(w["pid"] != first for w in workers):
            break
        time.sleep(0.2)
    else:
        pytest.fail("crashed worker was not restarted")
    assert "restart #1" in procs.log(serve)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(20) == 0


def test_serve_stops_when_a_worker_cannot_load_its_robot(procs, serve_endpoint, tmp_path):
    """A bad URDF fails the same way on every restart: serve says which and exits non-zero
    instead of restarting the worker forever."""
    pytest.importorskip("jax")
    from conftest import JAX_CACHE

    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot><link")
    serve = procs.serve(
        serve_endpoint,
        "--workers",
        "1",
        "--robot",
        f"arm={bad}",
        "--ee-links",
        "arm=tip",
        "--cache-dir",
        str(JAX_CACHE),
    )
    assert serve.wait(120) != 0
    log = procs.log(serve)
    assert "robot 'arm'" in log and "configuration error" in log
    assert "restart #" not in log


def test_sigterm_to_the_whole_process_group_reaches_each_child_once(serve_endpoint, tmp_path):
    """`kill -TERM -PGID` (a shell, systemd's KillMode=control-group) must not hand each child a
    second SIGTERM through `serve`: children run in their own session, and `serve` alone
    forwards the signal, once (#18.6: a worker signalled twice sometimes hung for 10 s)."""
    import re
    import subprocess
    import sys

    from conftest import ROOT

    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zmq_ik.cli",
                "serve",
                "--echo",
                "--workers",
                "2",
                "--bind",
                serve_endpoint,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # its own process group, so killpg spares pytest
        )
    try:
        wait_for_workers(serve_endpoint, 2, timeout=30)
        kids = children_of(serve.pid)
        assert all(os.getpgid(k) != serve.pid for k in kids)  # out of serve's group
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(20) == 0
        assert not any(alive(k) for k in kids)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
    text = log_path.read_text(errors="replace")
    for pid in kids:
        got = re.findall(rf"\[{pid}\]: received SIGTERM", text)
        assert len(got) == 1, (pid, text[-3000:])


def test_serve_settings_from_flat_options() -> None:
    """`zmq-ik serve`'s flat options: its own fields, the rest the workers' settings."""
    from zmq_ik.settings.apps import ServeSettings

    s = ServeSettings.from_options(bind="tcp://127.0.0.1:5999", workers=2, gpus=(), buckets=(1, 8))
    assert (s.bind, s.workers, s.worker.buckets) == ("tcp://127.0.0.1:5999", 2, (1, 8))


def test_serve_refuses_a_wildcard_port():
    """Its workers connect to the port `serve` binds, so it must be known beforehand. Before:
    ``tcp://127.0.0.1:*`` started workers connecting to ``tcp://127.0.0.1:127.0.0.1``, silent
    forever."""
    from zmq_ik.errors import InputError
    from zmq_ik.settings.apps import ServeSettings

    for bind in ("tcp://127.0.0.1:*", "tcp://*:*", "tcp://127.0.0.1:0", "ipc://*"):
        with pytest.raises(InputError, match="fixed port") as info:
            ServeSettings(bind)
        assert info.value.field == "bind"
