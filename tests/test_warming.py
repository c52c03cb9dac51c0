"""#18.8: workers still warming up are visible (WARMING, docs/protocol.md 4.11), and a request
for a robot nobody serves or announces is refused at once, naming what is served. Real
broker and worker processes; the echo worker's ``--echo-warmup`` stands in for compiling."""

from __future__ import annotations

import re
import threading
import time

import pytest
import zmq
from click.testing import CliRunner
from conftest import wait_for_workers

from zmq_ik.broker import BrokerSettings
from zmq_ik.cli import main
from zmq_ik.client import IKClient
from zmq_ik.errors import ErrorCode, RemoteError
from zmq_ik.protocol import Ready, Warming, error_frames, parse_message
from zmq_ik.robots import BUNDLED

pytestmark = pytest.mark.timeout(60)
TATBOT_URDF = str(BUNDLED["tatbot"].urdf_path)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_warming_worker_is_shown_then_ready_and_a_misspelt_robot_is_refused_at_once(
    procs, endpoint
):
    worker = procs.echo_worker(endpoint, "--robot", f"tatbot={TATBOT_URDF}", "--echo-warmup", "3")
    with IKClient(endpoint, timeout=1, retries=0) as client:
        deadline = time.monotonic() + 20
        while not (info := client.ping())["warming"]:
            assert time.monotonic() < deadline, "the worker never announced itself"
            time.sleep(0.05)
        assert info["workers"] == [] and info["warming_total"] == 1
        [entry] = info["warming"]
        assert entry["robots"] == ["tatbot"] and entry["progress"]["total"] in (0, 4)
        ping = cli("ping", "--endpoint", endpoint)
        assert re.search(r"^0 ready, 1 warming \(tatbot: (bucket \d/4, )?\d+ s\)$", ping, re.M), (
            ping
        )
        status = cli("status", "--endpoint", endpoint)
        assert "0 ready, 1 warming" in status and re.search(
            r"tatbot\s+(bucket \d/4, )?\d+ s", status
        )

        # A request for its robot waits for it (as before): served once it is READY.
        answers: list = []

        def ask() -> None:
            with IKClient(endpoint, timeout=20, retries=0) as c:
                answers.append(c.request("tatbot", "echo", {"n": 1}).header)

        waiter = threading.Thread(target=ask)
        waiter.start()
        wait_for_workers(endpoint, 1, "tatbot", timeout=20)
        waiter.join(20)
        assert answers and answers[0]["n"] == 1
        info = client.ping()
        assert info["warming"] == [] and info["workers"][0]["robots"] == ["tatbot"]
        log = procs.log(worker)  # #18.9: the worker says how far its warm-up is
        for done in range(1, 5):
            assert re.search(rf"warming tatbot: bucket {done}/4 compiled, \d+ s elapsed", log), log
        assert "1 ready, 0 warming" in cli("ping", "--endpoint", endpoint)

        # Past the broker's start-up grace a misspelt robot is refused at once, by name.
        grace = BrokerSettings().rejoin_grace
        while info["uptime_s"] <= grace:
            time.sleep(min(0.5, grace - info["uptime_s"] + 0.05))
            info = client.ping()
    with IKClient(endpoint, timeout=30, retries=0) as client:
        t0 = time.monotonic()
        with pytest.raises(RemoteError) as err:
            client.request("tatbott", "echo", {})
        took = time.monotonic() - t0
    print(f"MEASURED unknown_robot for a misspelt robot after {took * 1000:.1f} ms")
    assert err.value.code == ErrorCode.UNKNOWN_ROBOT.value
    assert "unknown robot 'tatbott'" in err.value.message
    assert "served: tatbot" in err.value.message
    assert took < 1.0


def test_an_older_broker_refusing_warming_does_not_stop_the_worker(procs, zctx):
    """An older broker answers the unknown command WARMING with ERROR (field ``command``):
    the worker stops announcing to it and registers with READY once warm, as before."""
    router = zctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    worker = procs.echo_worker(endpoint, "--echo-warmup", "1")
    seen: list[str] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and "READY" not in seen:
            if not router.poll(100):
                continue
            identity, *frames = router.recv_multipart()
            msg = parse_message(frames)
            seen.append(type(msg).__name__.upper())
            if isinstance(msg, Warming):  # as a broker without 4.11 answers it
                refusal = error_frames(b"", "protocol", "unknown command b'WARMING'", "command")
                router.send_multipart([identity, *refusal])
            assert not isinstance(msg, Ready) or msg.robots == ["echo"]
        assert seen == ["WARMING", "READY"], seen  # one WARMING, no more after the ERROR
    finally:
        router.close(0)
    worker.terminate()
    worker.wait(10)
    assert "does not take WARMING (an older broker)" in procs.log(worker)


def test_a_worker_whose_warm_up_fails_is_forgotten_at_once(procs, tmp_path):
    """It announced itself, then its robot did not load (exit 78): it says DISCONNECT, so the
    broker forgets it at once rather than after `WARMING_TTL`."""
    pytest.importorskip("jax")
    broker = procs.broker()
    endpoint = broker.endpoint
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot><link")
    worker = procs.start(
        "worker", "--connect", endpoint, "--robot", f"r={bad}", "--ee-links", "r=tip"
    )
    assert worker.wait(60) == 78, procs.log(worker)
    with IKClient(endpoint, timeout=2, retries=0) as client:
        status = client.status()
    assert status["warming"] == [] and status["workers"] == []
    assert status["counters"].get("warming_announced") == 1
    assert "warming_expired" not in status["counters"]
    assert "disconnected (warm-up failed)" in procs.log(broker)
