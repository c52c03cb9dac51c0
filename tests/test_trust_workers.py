"""Issue #25 (restarts without stalls; hostile or broken workers) with real processes: a real
broker and echo workers, rogue workers played by the test. The rules themselves, with a
synthetic clock: tests/test_broker_core.py (section "issue #25")."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import zmq
from conftest import wait_for_workers

from benchmarks._harness import EchoLoad
from zmq_ik.client import IKClient
from zmq_ik.errors import ErrorCode, RemoteError
from zmq_ik.protocol import (
    Disconnect,
    Request,
    error_frames,
    heartbeat_frames,
    new_routing_id,
    parse_message,
    ready_frames,
)


def worker_pids(endpoint: str) -> set[int]:
    with IKClient(endpoint, timeout=1.0, retries=2) as c:
        return {w["pid"] for w in c.ping()["workers"]}


def wait_for_pids(endpoint: str, pids: set[int], timeout: float = 30.0) -> None:
    """Until exactly the workers with ``pids`` are registered (a stopped one forgotten)."""
    deadline = time.monotonic() + timeout
    while (listed := worker_pids(endpoint)) != pids:
        assert time.monotonic() < deadline, (listed, pids)
        time.sleep(0.05)


def test_a_rolling_restart_of_workers_under_load_stalls_no_request(procs):
    """SIGTERM one worker at a time under load, start its successor, wait for it, go on.
    A job a stopping worker refuses (`shutting_down`) goes to the other worker at once;
    before, it was recorded as answered, the client's retry was dropped as a duplicate, and
    the call waited out its whole timeout (5.4 s at timeout 5)."""
    endpoint = procs.broker().endpoint
    workers = [procs.echo_worker(endpoint) for _ in range(2)]
    wait_for_pids(endpoint, {w.pid for w in workers})
    with EchoLoad([endpoint], 4, timeout=5.0, retries=2) as load:
        time.sleep(0.5)
        for r in range(4):
            old = workers[r % 2]
            old.send_signal(signal.SIGTERM)
            assert old.wait(10) == 0
            workers[r % 2] = procs.echo_worker(endpoint)
            wait_for_pids(endpoint, {w.pid for w in workers})
            time.sleep(0.3)
    tally = load.tally
    assert tally.errors == [] and tally.wrong == 0
    worst = max(tally.latencies_ms())
    print(f"MEASURED rolling restart x4: {len(tally.spans)} answered, longest {worst:.1f} ms")
    assert worst < 1500, worst


class Rogue(threading.Thread):
    """A worker for robot ``echo`` played by the test: it heartbeats, and answers every job
    with ERROR ``code`` (or never, ``code`` None: a staller). Re-registers when told to."""

    def __init__(self, endpoint: str, ctx: zmq.Context, code: str | None) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.ctx, self.code = endpoint, ctx, code
        self.stop = threading.Event()
        self.jobs = 0

    def run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
        sock.connect(self.endpoint)
        ready = ready_frames({"robots": ["echo"], "device": "rogue"})
        sock.send_multipart(ready)
        last = 0.0
        try:
            while not self.stop.is_set():
                if sock.poll(20):
                    msg: Any = parse_message(sock.recv_multipart())
                    if isinstance(msg, Request):
                        self.jobs += 1
                        if self.code is not None:
                            code = ErrorCode(self.code)
                            sock.send_multipart(error_frames(msg.request_id, code, "rogue"))
                    elif isinstance(msg, Disconnect):
                        sock.send_multipart(ready)
                if time.monotonic() - last > 0.1:
                    sock.send_multipart(heartbeat_frames())
                    last = time.monotonic()
        finally:
            sock.close(0)


def _with_rogue(procs, zctx, code: str | None) -> tuple[str, Any, Rogue]:
    endpoint = procs.broker().endpoint
    healthy = procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    rogue = Rogue(endpoint, zctx, code)
    rogue.start()
    wait_for_workers(endpoint, 2)
    return endpoint, healthy, rogue


def _rogue_listed(client: IKClient) -> dict[str, Any]:
    [entry] = [w for w in client.ping()["workers"] if w["device"] == "rogue"]
    return entry


def test_a_worker_failing_every_job_is_paused_while_the_other_serves(procs, zctx):
    """Circuit breaker: the rogue answers every job `internal` at once. After 5 failures in
    a row, with the healthy worker answering meanwhile, it is paused: every later request
    goes to the healthy worker. Before, half of all requests failed, for ever."""
    endpoint, healthy, rogue = _with_rogue(procs, zctx, "internal")
    try:
        with IKClient(endpoint, timeout=3.0, retries=0) as client:
            failed = 0
            for i in range(40):
                try:
                    got = client.request("echo", "echo", {"i": i})
                except RemoteError as e:
                    assert e.code == "internal"
                    failed += 1
                else:
                    assert got.header["pid"] == healthy.pid
            entry = _rogue_listed(client)
            counters = client.status()["counters"]
    finally:
        rogue.stop.set()
        rogue.join(5)
    assert failed == 5 and rogue.jobs == 5, (failed, rogue.jobs)  # then paused, no more jobs
    assert entry["state"] == "paused" and entry["pauses"] == 1, entry
    assert counters["workers_paused"] == 1, counters


def test_a_worker_ending_jobs_with_broker_only_codes_fails_no_request(procs, zctx):
    """`worker_lost` from a worker is not forwarded (the client would re-send it, and the
    retry was dropped as a duplicate): the job goes to the healthy worker, and the rogue is
    paused after 5 such faults."""
    endpoint, healthy, rogue = _with_rogue(procs, zctx, "worker_lost")
    try:
        with IKClient(endpoint, timeout=3.0, retries=0) as client:
            t0 = time.monotonic()
            for i in range(30):
                assert client.request("echo", "echo", {"i": i}).header["pid"] == healthy.pid
            took = time.monotonic() - t0
            counters = client.status()["counters"]
    finally:
        rogue.stop.set()
        rogue.join(5)
    assert took < 3.0, took  # nothing waited for a timeout
    assert counters["broker_codes_from_workers"] == 5 and counters["workers_paused"] == 1


def test_a_worker_holding_a_job_past_its_deadline_is_marked_overdue_and_gets_no_more(procs, zctx):
    """A staller takes a job and heartbeats without answering: its client gets `timeout`
    at the deadline; a second after it the staller is `overdue` (shown by `ping`) and gets
    no job until it answers, while the healthy worker serves everything else."""
    endpoint, healthy, rogue = _with_rogue(procs, zctx, None)
    try:
        with IKClient(endpoint, timeout=0.5, retries=0) as client:
            outcomes = []
            for i in range(2):  # LRU: one of the two reaches the staller
                try:
                    outcomes.append(client.request("echo", "echo", {"i": i}).header["pid"])
                except RemoteError as e:
                    outcomes.append(e.code)
            assert sorted(map(str, outcomes)) == sorted([str(healthy.pid), "timeout"])
            time.sleep(1.2)  # deadline + overdue_grace (1 s) passed
            assert _rogue_listed(client)["state"] == "overdue"
            for i in range(10):
                assert client.request("echo", "echo", {"i": i}).header["pid"] == healthy.pid
            counters = client.status()["counters"]
    finally:
        rogue.stop.set()
        rogue.join(5)
    assert rogue.jobs == 1 and counters["jobs_overdue"] == 1


def test_readies_never_followed_by_a_heartbeat_cannot_keep_a_real_worker_out(procs, zctx):
    """``--max-workers 4`` filled by peers that send READY again and again and nothing
    else: a real worker still gets in (an unconfirmed registration makes room) and serves.
    Before, each READY refreshed the fake's registration and the real worker was refused
    (`overloaded`) for as long as the fakes kept it up."""
    endpoint = procs.broker("--max-workers", "4").endpoint
    fakes = []
    for _ in range(4):
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, new_routing_id())
        s.connect(endpoint)
        fakes.append(s)
    stop = threading.Event()

    def keep_up() -> None:
        while not stop.is_set():
            for s in fakes:
                s.send_multipart(ready_frames({"robots": ["echo"], "device": "fake"}))
            stop.wait(0.2)

    keeper = threading.Thread(target=keep_up, daemon=True)
    keeper.start()
    try:
        time.sleep(0.5)
        real = procs.echo_worker(endpoint)
        deadline = time.monotonic() + 30
        while real.pid not in worker_pids(endpoint):
            assert time.monotonic() < deadline, "the real worker never got in"
            time.sleep(0.1)
        with IKClient(endpoint, timeout=3.0, retries=0) as client:
            for i in range(5):  # LRU would give fakes jobs: they are evicted or forgotten
                assert client.request("echo", "echo", {"i": i}).header["pid"] == real.pid
            counters = client.status()["counters"]
        evicted = counters.get("workers_evicted_unconfirmed", 0)
        assert evicted + counters.get("workers_unconfirmed", 0) >= 1, counters
    finally:
        stop.set()
        keeper.join(5)
        for s in fakes:
            s.close(0)
