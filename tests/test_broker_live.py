"""Broker, workers and clients as real processes on loopback (echo workers: no JAX needed)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from conftest import wait_for_workers

from zmq_ik.client import Call, IKClient
from zmq_ik.errors import IKTimeout, RemoteError
from zmq_ik.protocol import (
    decode_error,
    encode_payload,
    heartbeat_frames,
    parse_message,
    ready_frames,
    request_frames,
)

pytestmark = pytest.mark.timeout(90)


def test_many_clients_many_workers_each_gets_its_own_answer(procs, endpoint):
    for _ in range(3):
        procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 3)
    failures: list[str] = []
    pids: set[int] = set()

    def run_client(c: int) -> None:
        ctx = zmq.Context()
        try:
            with IKClient(endpoint, timeout=10, context=ctx) as client:
                calls = [
                    Call(
                        "echo",
                        "echo",
                        {"c": c, "i": i},
                        {"x": np.full((i % 5, 3), c * 1000 + i, np.float32)},
                    )
                    for i in range(40)
                ]
                for index, payload in client.exchange(calls, max_in_flight=8):
                    if payload.header["c"] != c or payload.header["i"] != index:
                        failures.append(f"client {c} got {payload.header} for {index}")
                    if not np.all(payload.arrays["x"] == c * 1000 + index):
                        failures.append(f"client {c} wrong array for {index}")
                    pids.add(payload.header["pid"])
        finally:
            ctx.destroy(linger=0)

    threads = [threading.Thread(target=run_client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert len(pids) == 3  # the load was spread over every worker


def test_sigkill_worker_during_job_answered_by_the_other_once(procs, endpoint):
    w1 = procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 2)
    with IKClient(endpoint, timeout=15, retries=0) as client:
        result: dict = {}

        def ask() -> None:
            result["payload"] = client.request("echo", "sleep", {"seconds": 1.0})

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.4)
        status = IKClient(endpoint, timeout=2)
        busy = [w for w in status.ping()["workers"] if w["state"] == "busy"]
        status.close()
        assert len(busy) == 1
        victim = w1 if busy[0]["pid"] == w1.pid else None
        if victim is None:  # the job went to the second worker: kill that one
            victim = next(p for p in procs.procs if p.pid == busy[0]["pid"])
        victim.send_signal(signal.SIGKILL)
        t.join(20)
        assert result["payload"].header["pid"] != victim.pid
        # Exactly one answer: nothing else is waiting on the socket.
        assert client.socket.poll(300) == 0


def test_client_asks_before_any_worker_exists(procs, endpoint):
    with IKClient(endpoint, timeout=20, retries=0) as client:
        threading.Timer(0.5, lambda: procs.echo_worker(endpoint)).start()
        payload = client.request("echo", "echo", {"hello": 1})
        assert payload.header["hello"] == 1


def test_unknown_robot_error_within_deadline(procs, endpoint):
    with IKClient(endpoint, timeout=0.5, retries=0) as client:
        t0 = time.monotonic()
        with pytest.raises(RemoteError) as info:
            client.request("no-such-robot", "solve")
        assert time.monotonic() - t0 < 1.5
    assert info.value.code == "unknown_robot" and "no-such-robot" in info.value.message


def test_broker_restart_client_retry_succeeds(procs):
    broker = procs.broker()
    endpoint = broker.endpoint
    procs.echo_worker(endpoint, "--heartbeat", "0.1")
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=2.0, retries=3) as client:
        assert client.request("echo", "echo", {"n": 1}).header["n"] == 1
        broker.send_signal(signal.SIGKILL)
        broker.wait(5)
        # wait=False: the client's retry is what waits for the new broker here.
        threading.Timer(0.5, lambda: procs.broker(endpoint=endpoint, wait=False)).start()
        assert client.request("echo", "echo", {"n": 2}).header["n"] == 2


def test_rogue_peer_does_not_stop_good_client(procs, endpoint, zctx):
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    rogue = zctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(endpoint)
    rng = np.random.default_rng(0)
    with IKClient(endpoint, timeout=5) as client:
        for i in range(1000):
            n = int(rng.integers(1, 6))
            frames = [rng.bytes(int(rng.integers(0, 20))) for _ in range(n)]
            if i % 2:
                frames[0] = b"ZIK/1"
            rogue.send_multipart(frames)
            if i % 100 == 0:
                assert client.request("echo", "echo", {"i": i}).header["i"] == i
        # The broker reads the rogue's frames beside the client's: wait until it has.
        deadline = time.monotonic() + 10
        while sum(client.status()["rejects"].values()) < 900 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = client.status()
    assert sum(status["rejects"].values()) >= 900
    # The rogue got an ERROR per bad message, not silence.
    assert rogue.poll(2000)
    msg = parse_message(rogue.recv_multipart())
    assert decode_error(msg.payload)[0] in ("protocol", "version")
    rogue.close()


def test_ping_cli_exit_codes(procs, endpoint, nowhere):
    ok = subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", "ping", "--endpoint", endpoint, "--timeout", "5"],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert b"rtt" in ok.stdout
    t0 = time.monotonic()
    bad = subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", "ping", "--endpoint", nowhere, "--timeout", "1"],
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode != 0 and b"no answer" in bad.stderr
    assert time.monotonic() - t0 < 15


def test_broker_sigterm_exits_zero_and_tells_workers(procs):
    broker = procs.broker("--grace", "0.5")
    endpoint = broker.endpoint
    worker = procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    broker.send_signal(signal.SIGTERM)
    assert broker.wait(10) == 0
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0


def test_worker_sigterm_finishes_current_job(procs, endpoint):
    worker = procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=10, retries=0) as client:
        threading.Timer(0.3, lambda: worker.send_signal(signal.SIGTERM)).start()
        payload = client.request("echo", "sleep", {"seconds": 1.0})
        assert payload.header["slept"] == 1.0
    assert worker.wait(10) == 0


def test_worker_errors_become_error_replies_and_worker_carries_on(procs, endpoint):
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=5, retries=0) as client:
        with pytest.raises(RemoteError) as info:
            client.request("echo", "fail")
        assert info.value.code == "internal" and "failing on purpose" in info.value.message
        with pytest.raises(RemoteError) as info:
            client.request("echo", "nope")
        assert info.value.code == "unknown_operation"
        with pytest.raises(RemoteError) as info:
            client.request("echo", "sleep", {"seconds": "long"})
        assert info.value.code == "bad_request" and info.value.field == "seconds"
        assert client.request("echo", "echo", {"ok": 1}).header["ok"] == 1


def test_a_job_past_its_deadline_frees_the_worker(procs, endpoint):
    """A client that stopped waiting must not keep the only worker busy: long work checks
    the request's deadline, gives up with ``timeout``, and the next request is served."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=0.5, retries=0) as client:
        t0 = time.monotonic()
        with pytest.raises((IKTimeout, RemoteError)) as info:
            client.request("echo", "sleep", {"seconds": 30.0})
        if isinstance(info.value, RemoteError):
            assert info.value.code == "timeout"
        assert client.request("echo", "echo", {"n": 1}, timeout=5).header["n"] == 1
        assert time.monotonic() - t0 < 5


def test_nothing_listening_times_out_cleanly(nowhere):
    with IKClient(nowhere, timeout=0.3, retries=1) as client:
        t0 = time.monotonic()
        with pytest.raises(IKTimeout):
            client.request("echo", "echo")
        assert 0.5 < time.monotonic() - t0 < 3


def test_heartbeats_flow_while_a_long_job_runs(procs):
    """The worker runs jobs on its main thread; a job ten liveness windows long must neither
    get the worker declared dead by the broker nor make the worker think the broker is gone
    (no re-registration), and quick jobs keep working afterwards."""
    endpoint = procs.broker("--heartbeat", "0.05").endpoint
    procs.echo_worker(endpoint, "--heartbeat", "0.05")
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=10, retries=0) as client:
        payload = client.request("echo", "sleep", {"seconds": 2.0})  # liveness window: 0.2 s
        assert payload.header["slept"] == 2.0
        assert client.request("echo", "echo", {"n": 1}).header["n"] == 1
        counters = client.status()["counters"]
    assert counters.get("workers_lost", 0) == 0
    assert counters.get("workers_registered") == 1
    assert counters.get("retries", 0) == 0


def test_rogue_ready_peers_are_refused_and_everyone_else_carries_on(procs, endpoint, zctx):
    """Issue #13.4: READYs with a 600 kB device or 100k robot names used to be accepted,
    after which `ping`/`status` answered `too_large` to everyone and dispatch crawled."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    rogues = []
    for info, fld in (
        ({"robots": ["r"], "device": "d" * 600_000}, "device"),
        ({"robots": ["r"], "device": "d" * 600_000}, "device"),
        ({"robots": [f"r{i}" for i in range(100_000)]}, "robots"),
    ):
        rogue = zctx.socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.connect(endpoint)
        rogue.send_multipart(ready_frames(info))
        rogues.append((rogue, fld))
    for rogue, fld in rogues:
        assert rogue.poll(5000), "a refused READY gets an ERROR, not silence"
        msg = parse_message(rogue.recv_multipart())
        code, text, got = decode_error(msg.payload)
        assert (code, got) == ("too_large", fld), text
        rogue.send_multipart(heartbeat_frames())  # and it keeps heartbeating: still nobody
    with IKClient(endpoint, timeout=5) as client:
        assert len(client.ping()["workers"]) == 1
        assert client.status()["rejects"]["too_large"] == 3
        assert client.request("echo", "echo", {"ok": 1}).header["ok"] == 1
    ping = subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", "ping", "--endpoint", endpoint, "--timeout", "5"],
        capture_output=True,
        timeout=30,
    )
    assert ping.returncode == 0, ping.stderr


def test_byte_budget_refuses_big_requests_at_once(procs, zctx):
    """Issue #13.5: queued request payloads are bounded in bytes, not only in count."""
    endpoint = procs.broker("--max-queued-bytes", str(8 * 1024 * 1024)).endpoint
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    sender = zctx.socket(zmq.DEALER)
    sender.setsockopt(zmq.LINGER, 0)
    sender.connect(endpoint)
    sender.send_multipart(
        request_frames(b"busy", "echo", "sleep", 10_000, encode_payload({"seconds": 1.0}))
    )
    blob = encode_payload({}, {"x": np.zeros(3 * 1024 * 1024, np.uint8)})
    for i in range(4):  # 3 MiB each behind a busy worker: two fit the 8 MiB budget
        sender.send_multipart(
            request_frames(b"big%d" % i, "echo", "echo", 10_000, blob), copy=False
        )
    answers = {}
    while len(answers) < 5 and sender.poll(10_000):
        msg = parse_message(sender.recv_multipart())
        answers[msg.request_id] = (
            msg.command.name,
            decode_error(msg.payload) if msg.command.name == "ERROR" else None,
        )
    refused = {rid for rid, (cmd, _) in answers.items() if cmd == "ERROR"}
    assert refused == {b"big2", b"big3"}, answers
    code, text, _ = answers[b"big2"][1]
    assert code == "overloaded" and "max_queued_bytes" in text
    assert [answers[r][0] for r in (b"busy", b"big0", b"big1")] == ["FINAL"] * 3
    with IKClient(endpoint, timeout=5) as client:
        status = client.status()
    assert status["queued_bytes"] == 0 and status["open_jobs"] == 0


def test_a_client_that_never_reads_is_refused_and_another_is_served(procs, zctx):
    """#25.3: replies a client leaves unread count in its byte share (`--max-client-bytes`,
    here 4 MiB): past it its requests are answered `overloaded` saying why, the broker holds
    no more than the share for it, a client that reads is served as usual, and what was
    held is released once the slow client is gone."""
    mib = 1024 * 1024
    endpoint = procs.broker("--max-client-bytes", str(4 * mib)).endpoint
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    slow = zctx.socket(zmq.DEALER)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.RCVHWM, 1)  # its own process takes almost nothing off the broker
    slow.setsockopt(zmq.RCVBUF, 64 * 1024)
    slow.connect(endpoint)
    blob = encode_payload({}, {"x": np.zeros(mib // 2, np.uint8)})
    with IKClient(endpoint, timeout=10) as reader:
        for i in range(60):  # 30 MiB of echoes, never read
            slow.send_multipart(request_frames(b"%d" % i, "echo", "echo", 10_000, blob))
            time.sleep(0.01)
        assert reader.request("echo", "echo", {"n": 1}).header["n"] == 1
        status = reader.status()
        assert 0 < status["unread_bytes"] <= 4 * mib, status
        assert status["errors"]["overloaded"] > 10, status
        slow.setsockopt(zmq.RCVHWM, 1000)
        texts = []
        while slow.poll(1000):
            msg = parse_message(slow.recv_multipart())
            if msg.command.name == "ERROR":
                texts.append(decode_error(msg.payload)[1])
        assert texts and all("max_client_bytes" in t for t in texts), texts[:3]
        assert any("read your replies" in t for t in texts), texts[:3]
        slow.close(0)
        deadline = time.monotonic() + 10
        while (status := reader.status())["unread_bytes"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status["unread_bytes"] == 0 and status["queued_bytes"] == 0, status
