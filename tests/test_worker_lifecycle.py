"""A worker's start and end as an operator meets them, with real processes: a broker that
refuses it for good (exit 78) or for now (`overloaded`, `max_workers`: retry with backoff),
and a SIGTERM/SIGINT during its warm-up (it leaves at once, not after compiling)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import IK_TEST_BUCKETS, FakeBroker, wait_for_workers

from zmq_ik.client import IKClient
from zmq_ik.errors import ErrorCode
from zmq_ik.protocol import Ready, error_frames
from zmq_ik.robots import BUNDLED

pytestmark = pytest.mark.timeout(60)
TOO_MANY = [a for i in range(65) for a in ("--robot", f"r{i}={BUNDLED['tatbot'].urdf_path}")]
"""One robot more than a READY/WARMING may name (`Limits.max_robots`, 64)."""


def exits(proc: subprocess.Popen[bytes], within: float) -> int | None:
    """The exit status if ``proc`` ends within ``within`` seconds, else None."""
    try:
        return proc.wait(within)
    except subprocess.TimeoutExpired:
        return None


def refusing_ready(code: ErrorCode, message: str, field: str | None):
    """A `FakeBroker` script: every READY gets this ERROR, the rest no answer."""

    def script(n: int, msg: object) -> list:
        return [(0, error_frames(b"", code, message, field))] if isinstance(msg, Ready) else []

    return script


def readies(broker: FakeBroker) -> int:
    return sum(isinstance(m, Ready) for m in broker.requests)


# --------------------------------------------------------------------------- refused for good


@pytest.mark.parametrize("warmup", ["0", "20"])
def test_a_worker_its_broker_refuses_for_good_says_why_once_and_exits_78(procs, endpoint, warmup):
    """Before: it logged the refusal and re-registered every 0.25 s forever. Its WARMING is
    refused at once: a long warm-up is left at its next step (here 5 s), not finished."""
    t0 = time.monotonic()
    worker = procs.echo_worker(endpoint, *TOO_MANY, "--echo-warmup", warmup)
    code = exits(worker, 15)
    took = time.monotonic() - t0
    log = procs.log(worker)
    assert code == 78, log
    assert took < 10, f"{took:.2f}s"
    print(f"\nMEASURED refused for good, warm-up {warmup} s: exit {code} after {took:.2f}s")
    assert log.count("refused this worker for good") == 1, log
    assert "claims 65 robots, limit 64 (field robots)" in log
    assert "Traceback" not in log


def test_a_ready_refused_for_good_by_every_broker_exits_78(procs, zctx):
    """The READY itself refused (a field WARMING does not carry), by both brokers."""
    script = refusing_ready(ErrorCode.TOO_LARGE, "READY 'versions' too many", "versions")
    with FakeBroker(zctx, script) as a, FakeBroker(zctx, script) as b:
        worker = procs.echo_worker(a.endpoint, "--connect", b.endpoint)
        assert exits(worker, 15) == 78, procs.log(worker)
        assert readies(a) == readies(b) == 1
    log = procs.log(worker)
    assert "every broker refused this worker" in log and "(field versions)" in log


def test_a_broker_that_refuses_for_good_is_left_while_the_others_are_served(procs, zctx, endpoint):
    script = refusing_ready(ErrorCode.TOO_LARGE, "READY 'versions' too many", "versions")
    with FakeBroker(zctx, script) as refusing:
        worker = procs.echo_worker(refusing.endpoint, "--connect", endpoint)
        wait_for_workers(endpoint, 1, timeout=15)
        with IKClient(endpoint, timeout=5, retries=0) as client:
            assert client.request("echo", "echo", {"x": 1}).header["x"] == 1
        time.sleep(2.5)  # a silent broker would be reconnected to (and sent READY) after 1.25 s
        assert worker.poll() is None and readies(refusing) == 1
        seen = len(refusing.requests)
        time.sleep(0.5)
        assert len(refusing.requests) == seen  # no heartbeat either: that broker is left
    assert "no longer served" in procs.log(worker)


# --------------------------------------------------------------------------- refused for now


def test_a_worker_past_max_workers_retries_with_backoff_and_gets_in_when_room_is_made(procs):
    broker = procs.broker("--max-workers", "1")
    first = procs.echo_worker(broker.endpoint)
    wait_for_workers(broker.endpoint, 1, timeout=15)
    second = procs.echo_worker(broker.endpoint)
    # Its retries back off (each delay longer): checked exactly in tests/test_worker_core.py.
    deadline = time.monotonic() + 15
    while procs.log(second).count("refused this worker for now") < 2:
        assert time.monotonic() < deadline, procs.log(second)
        time.sleep(0.05)
    log = procs.log(second)
    assert second.poll() is None, log  # `overloaded` is not for good
    assert "refused this worker for now: [overloaded]" in log and "max_workers 1" in log
    with IKClient(broker.endpoint, timeout=2, retries=0) as client:
        assert len(client.ping()["workers"]) == 1
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    t0 = time.monotonic()
    info = wait_for_workers(broker.endpoint, 1, timeout=15)
    assert info["workers"][0]["pid"] == second.pid
    print(f"\nMEASURED in {time.monotonic() - t0:.2f}s after room was made")


# --------------------------------------------------------------------------- stopped warming


def warming_pid(endpoint: str, timeout: float = 30) -> int:
    """The pid of the first worker the broker lists as warming up."""
    deadline = time.monotonic() + timeout
    with IKClient(endpoint, timeout=1, retries=0) as client:
        while time.monotonic() < deadline:
            warming = client.ping()["warming"]
            if warming:
                return int(warming[0]["pid"])
            time.sleep(0.05)
    raise TimeoutError("no worker announced itself")


def stop_while_warming(procs, endpoint: str, worker, sig: int) -> float:
    """Signal ``worker`` once it is warming; seconds until it exited (asserts it did)."""
    assert warming_pid(endpoint) == worker.pid
    t0 = time.monotonic()
    worker.send_signal(sig)
    code = exits(worker, 10)
    took = time.monotonic() - t0
    assert code == (130 if sig == signal.SIGINT else 0), procs.log(worker)
    assert took < 2.5, f"{took:.2f}s"
    with IKClient(endpoint, timeout=1, retries=0) as client:  # it said DISCONNECT: gone now,
        info = client.ping()  # not after the 5 s a silent warming worker is kept
    assert info["warming"] == [] and info["workers"] == []
    assert "Traceback" not in procs.log(worker)
    return took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_warming_worker_stops_at_once_on_a_signal(procs, endpoint, sig):
    """Before: the warm-up (here 30 s) ran to its end, then READY, then the exit."""
    worker = procs.echo_worker(endpoint, "--echo-warmup", "30")
    took = stop_while_warming(procs, endpoint, worker, sig)
    print(f"\nMEASURED echo worker exit {signal.Signals(sig).name} in warm-up: {took:.2f}s")


def test_a_compiling_ik_worker_stops_at_once_on_sigterm(procs, endpoint, tmp_path):
    """A real compile (an empty JAX cache): before, the worker compiled every bucket (24-42 s
    on this shared 2-core machine for buckets 16,64) and only then left."""
    pytest.importorskip("jax")
    cache = tmp_path / "jax-cache"
    worker = procs.start(
        "-v", "worker", "--connect", endpoint, "--buckets", IK_TEST_BUCKETS,
        "--cache-dir", str(cache),
    )  # fmt: skip
    assert warming_pid(endpoint) == worker.pid
    deadline = time.monotonic() + 40  # until JAX compiles both buckets (its debug log)
    while procs.log(worker).count("PERSISTENT COMPILATION CACHE MISS") < 2:
        assert time.monotonic() < deadline and worker.poll() is None, procs.log(worker)
        time.sleep(0.05)
    took = stop_while_warming(procs, endpoint, worker, signal.SIGTERM)
    assert "bucket 2/2 compiled" not in procs.log(worker)
    print(f"\nMEASURED IK worker exit on SIGTERM while compiling: {took:.2f}s")


def test_a_serving_worker_exits_130_on_sigint_and_0_on_sigterm(procs, endpoint):
    """SIGINT is Ctrl-C: 130, as the other commands (and a warming worker) exit."""
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        worker = procs.echo_worker(endpoint)
        wait_for_workers(endpoint, 1, timeout=15)
        worker.send_signal(sig)
        assert exits(worker, 10) == code, procs.log(worker)
        with IKClient(endpoint, timeout=2, retries=0) as client:  # it said DISCONNECT
            assert client.ping()["workers"] == []
