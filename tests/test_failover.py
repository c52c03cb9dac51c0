"""Several brokers, no single point of failure (#15): real brokers, workers and clients.

Workers serve several brokers (one job at a time whichever sends it, declining the others'
jobs meanwhile); an older broker, which never flags the extension, never sees it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import zmq
from conftest import ROOT, wait_for_workers

from benchmarks._harness import EchoLoad
from zmq_ik.apps.serve import free_endpoint
from zmq_ik.client import AsyncIKClient, IKClient
from zmq_ik.protocol import (
    Command,
    Decline,
    Heartbeat,
    Ready,
    Reply,
    Warming,
    encode_payload,
    error_frames,
    heartbeat_frames,
    parse_message,
    request_frames,
)

pytestmark = pytest.mark.timeout(90)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "zmq_ik.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)


def sleep_on(
    endpoint: str, seconds: float, out: dict[str, Any], key: str, timeout: float = 10.0
) -> threading.Thread:
    """Ask ``endpoint`` for an echo `sleep`; the reply header and its arrival time land in ``out``."""

    def run() -> None:
        ctx = zmq.Context()
        try:
            with IKClient(endpoint, timeout=timeout, retries=0, context=ctx) as c:
                header = c.request("echo", "sleep", {"seconds": seconds}).header
                out[key] = (header, time.monotonic())
        except Exception as e:  # reported by the test
            out[key] = (e, time.monotonic())
        finally:
            ctx.destroy(linger=0)

    t = threading.Thread(target=run)
    t.start()
    return t


def counters(endpoint: str) -> dict[str, int]:
    with IKClient(endpoint, timeout=2, retries=0, context=zmq.Context.instance()) as c:
        return dict(c.status()["counters"])


def test_a_worker_of_two_brokers_declines_the_other_brokers_job_so_it_runs_elsewhere(procs):
    """W1 runs a 2 s job for A; B's two jobs must not wait for it: W1 tells B it is busy (a
    flagged heartbeat), or declines the job B sends it, and both run on W2, well before A's
    job ends."""
    a, b = two_brokers_two_workers(procs)
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    threads = [sleep_on(a, 2.0, out, "a")]
    time.sleep(0.3)  # A's job is running on one worker
    threads += [sleep_on(b, 0.3, out, f"b{i}") for i in range(2)]
    for t in threads:
        t.join(20)
    (ha, ta), (hb0, tb0), (hb1, tb1) = out["a"], out["b0"], out["b1"]
    assert all(isinstance(h, dict) for h in (ha, hb0, hb1)), out
    assert hb0["pid"] == hb1["pid"] != ha["pid"]  # B's jobs ran on the free worker only
    assert max(tb0, tb1) - t0 < 1.6 < ta - t0  # ...and did not wait for A's job
    assert counters(b).get("declined", 0) <= 1
    assert counters(a).get("declined", 0) == 0


def test_a_worker_runs_one_job_at_a_time_and_is_away_at_the_other_broker_meanwhile(procs):
    a, b = procs.broker().endpoint, procs.broker().endpoint
    procs.echo_worker(a, "--connect", b)
    wait_for_workers(b, 1)
    out: dict[str, Any] = {}
    threads = [sleep_on(a, 1.0, out, "a")]
    time.sleep(0.2)
    threads.append(sleep_on(b, 0.1, out, "b"))
    time.sleep(0.2)
    with IKClient(b, timeout=2, retries=0, context=zmq.Context.instance()) as c:
        [w] = c.ping()["workers"]
        assert w["state"] == "away"  # it declined B's job: B waits for it to be idle
    for t in threads:
        t.join(20)
    (ha, ta), (hb, tb) = out["a"], out["b"]
    assert isinstance(ha, dict) and isinstance(hb, dict), out
    assert tb > ta  # B's job ran after A's, not beside it
    with IKClient(b, timeout=2, retries=0, context=zmq.Context.instance()) as c:
        assert c.ping()["workers"][0]["state"] == "idle"


def raw_broker(zctx: zmq.Context) -> tuple[zmq.Socket, str]:
    """A bare ROUTER standing in for a broker, on a port it picked; and its endpoint."""
    router = zctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, f"tcp://127.0.0.1:{port}"


def until_ready(router: zmq.Socket, older: bool = False) -> tuple[bytes, Ready]:
    """The worker's READY, after its WARMING (4.11), which a broker takes silently, or with
    ``older`` answers as a broker older than WARMING does (ERROR, field ``command``)."""
    while True:
        assert router.poll(30_000)
        identity, *frames = router.recv_multipart()
        msg = parse_message(frames)
        if isinstance(msg, Ready):
            return identity, msg
        assert isinstance(msg, Warming), msg
        if older:
            refusal = error_frames(b"", "protocol", "unknown command b'WARMING'", "command")
            router.send_multipart([identity, *refusal])


def test_a_job_sent_to_a_busy_worker_is_declined_at_once(procs, zctx):
    """A broker (a raw ROUTER here, flagging `decline`) that sends a job to a worker busy with
    another broker's job gets DECLINE for it within milliseconds, then FLAG_IDLE once free."""
    a = procs.broker().endpoint
    router, b = raw_broker(zctx)
    procs.echo_worker(a, "--connect", b)
    identity, _ = until_ready(router)
    router.send_multipart([identity, *heartbeat_frames("decline")])
    wait_for_workers(a, 1)
    out: dict[str, Any] = {}
    thread = sleep_on(a, 1.0, out, "a")
    time.sleep(0.3)
    job = request_frames(b"job-1", "echo", "echo", 5000, encode_payload({}))
    router.send_multipart([identity, *job])
    sent = time.monotonic()
    declined_after = idle_at = None
    while idle_at is None and time.monotonic() - sent < 5:
        router.send_multipart([identity, *heartbeat_frames("decline")])
        if not router.poll(50):
            continue
        _, *frames = router.recv_multipart()
        msg = parse_message(frames)
        if isinstance(msg, Decline):
            assert msg.job_id == b"job-1" and declined_after is None
            declined_after = time.monotonic() - sent
        elif isinstance(msg, Heartbeat) and "idle" in msg.flags and declined_after is not None:
            idle_at = time.monotonic()
        else:
            assert not isinstance(msg, Reply), msg  # the declined job is never run
    thread.join(10)
    print(f"\nMEASURED job declined {declined_after * 1000:.1f} ms after it was sent")
    assert declined_after is not None and declined_after < 0.1
    # Idle only once A's job is done (it had 0.7 s left when B's job came), not before.
    assert idle_at is not None and idle_at - sent > 0.5, (idle_at, sent)
    assert "slept" in out["a"][0]


def test_a_broker_without_the_extension_never_sees_it_and_its_job_runs_next(procs, zctx):
    """An older broker (a raw ROUTER speaking plain ZIK/1 here) never flags `decline`: the
    worker never sends it a DECLINE or a flagged HEARTBEAT, and runs its job after A's."""
    a = procs.broker().endpoint
    router, old = raw_broker(zctx)
    procs.echo_worker(a, "--connect", old)
    identity, ready = until_ready(router, older=True)
    assert "decline" in ready.info["features"]
    wait_for_workers(a, 1)
    out: dict[str, Any] = {}
    thread = sleep_on(a, 1.0, out, "a")
    time.sleep(0.3)
    job = request_frames(b"job-1", "echo", "echo", 5000, encode_payload({"from": "old"}))
    router.send_multipart([identity, *job])
    sent = time.monotonic()
    seen: list[Any] = []
    final_at = None
    deadline = time.monotonic() + 5
    last_beat = 0.0
    while final_at is None and time.monotonic() < deadline:
        if time.monotonic() - last_beat > 0.2:  # keep the worker's link to us alive
            router.send_multipart([identity, *heartbeat_frames()])
            last_beat = time.monotonic()
        if router.poll(50):
            _, *frames = router.recv_multipart()
            msg = parse_message(frames)
            seen.append(msg)
            if isinstance(msg, Reply) and msg.command is Command.FINAL:
                final_at = time.monotonic()
    thread.join(10)
    assert final_at is not None, seen
    assert final_at - sent > 0.5  # run after A's job (0.7 s left), neither beside it nor lost
    assert "slept" in out["a"][0]
    assert [type(m).__name__ for m in seen if not isinstance(m, Heartbeat | Reply)] == []
    assert all(not m.flags for m in seen if isinstance(m, Heartbeat))


def test_worker_keeps_serving_one_broker_while_the_other_is_killed_and_restarted(procs):
    a = procs.broker().endpoint
    broker_b = procs.broker()
    b = broker_b.endpoint
    procs.echo_worker(a, "--connect", b)
    wait_for_workers(a, 1)
    wait_for_workers(b, 1)
    broker_b.send_signal(signal.SIGKILL)
    broker_b.wait(5)
    t_kill = time.monotonic()
    with IKClient(a, timeout=2, retries=0, context=zmq.Context.instance()) as c:
        n = 0
        while time.monotonic() - t_kill < 1.5:  # across B's death and the worker noticing it
            assert c.request("echo", "echo", {"i": n}).header["i"] == n
            n += 1
    procs.broker(endpoint=b)
    t_up = time.monotonic()
    wait_for_workers(b, 1, timeout=5)
    rejoined = time.monotonic() - t_up
    print(
        f"\nMEASURED worker re-registered at the restarted broker after {rejoined:.2f}s; {n} requests via the other meanwhile"
    )
    assert rejoined < 2.0


def test_serve_workers_also_serve_the_brokers_named_with_connect(procs):
    """Two hosts' worth on one: each `serve` runs a broker, and its workers serve the other's
    broker too (`--connect`), so either broker alone reaches every worker."""
    a, b = free_endpoint(), free_endpoint()  # serve binds a fixed port: its workers need it
    serves = [
        procs.start("serve", "--echo", "--workers", "1", "--bind", a, "--connect", b),
        procs.start("serve", "--echo", "--workers", "1", "--bind", b, "--connect", a),
    ]
    for endpoint in (a, b):
        info = wait_for_workers(endpoint, 2, timeout=30)
        assert len({w["pid"] for w in info["workers"]}) == 2
    for s in serves:
        s.send_signal(signal.SIGTERM)
    assert [s.wait(20) for s in serves] == [0, 0]


def test_worker_refuses_an_empty_connect_list(procs):
    proc = procs.start("worker", "--echo", "--connect", " , ")
    assert proc.wait(20) == 2
    assert "--connect" in procs.log(proc) and "no broker endpoint" in procs.log(proc)


def test_ping_and_status_report_each_broker_and_ping_fails_if_one_is_silent(procs, nowhere):
    a, b, dead = procs.broker().endpoint, procs.broker().endpoint, nowhere
    procs.echo_worker(a, "--connect", b)
    wait_for_workers(a, 1)
    wait_for_workers(b, 1)
    ok = cli("ping", "--endpoint", a, "--endpoint", b, "--timeout", "1")
    assert ok.returncode == 0, ok.stderr
    assert f"reply from {a}" in ok.stdout and f"reply from {b}" in ok.stdout
    as_json = cli("ping", "--endpoint", f"{a},{b}", "--json")
    assert as_json.returncode == 0 and set(json.loads(as_json.stdout)) == {a, b}
    status = cli("status", "--endpoint", f"{a},{b}")
    assert status.returncode == 0 and f"== {a}" in status.stdout and f"== {b}" in status.stdout
    partial = cli("ping", "--endpoint", a, "--endpoint", dead, "--timeout", "0.3")
    assert partial.returncode == 1
    assert f"reply from {a}" in partial.stdout and dead in partial.stderr
    assert "1 of 2 brokers did not answer" in partial.stderr


# --------------------------------------------------------------------------- clients


class Load(EchoLoad):
    """Client threads, each an `IKClient` given every broker (client c lists them from the
    c-th on: its home, so every broker carries load), sending back-to-back echo requests;
    each answer must carry the thread's own (client, sequence) and array."""

    def check(self, name: str, longest: float) -> float:
        tally = self.tally
        worst = max(b - a for a, b in tally.spans)
        print(f"\nMEASURED {name}: {len(tally.spans)} answered, longest {worst:.3f}s")
        assert not tally.errors, tally.errors[:5]
        assert tally.wrong == 0
        assert worst < longest, worst
        return worst


def two_brokers_two_workers(procs: Any) -> tuple[str, str]:
    a, b = procs.broker().endpoint, procs.broker().endpoint
    for _ in range(2):
        procs.echo_worker(a, "--connect", b)
    wait_for_workers(a, 2)
    wait_for_workers(b, 2)
    return a, b


def test_clients_survive_killing_a_broker_restarting_it_and_killing_the_other(procs):
    """Under load: SIGKILL A, restart A, SIGKILL B. Every request answered with its own answer,
    no error, and none waits anywhere near its attempt timeout (3 s)."""
    a, b = two_brokers_two_workers(procs)
    broker_a, broker_b = procs.procs[0], procs.procs[1]
    with Load([a, b]) as load:
        time.sleep(1.0)
        broker_a.send_signal(signal.SIGKILL)
        time.sleep(1.0)
        procs.broker(endpoint=a)
        wait_for_workers(a, 2, timeout=10)
        time.sleep(1.0)
        broker_b.send_signal(signal.SIGKILL)
        time.sleep(1.0)
    load.check("kill A, restart A, kill B", longest=2.0)


def test_clients_survive_a_broker_frozen_for_five_seconds(procs):
    a, b = two_brokers_two_workers(procs)
    broker_a = procs.procs[0]
    with Load([a, b]) as load:
        time.sleep(0.5)
        broker_a.send_signal(signal.SIGSTOP)
        time.sleep(5.0)
        broker_a.send_signal(signal.SIGCONT)
        time.sleep(1.0)
    load.check("SIGSTOP A 5 s", longest=2.0)


def test_with_one_broker_a_request_lost_in_a_restart_is_resent_as_soon_as_it_is_back(procs):
    """Before: the lost request waited for its whole attempt timeout (here 5 s)."""
    broker = procs.broker()
    endpoint = broker.endpoint
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    out: dict[str, Any] = {}
    thread = sleep_on(endpoint, 0.5, out, "r", timeout=5.0)
    time.sleep(0.2)  # running at the worker
    broker.send_signal(signal.SIGKILL)
    broker.wait(5)
    time.sleep(0.3)
    procs.broker(endpoint=endpoint, wait=False)
    restarted = time.monotonic()
    thread.join(10)
    header, answered = out["r"]
    assert isinstance(header, dict) and header["slept"] == 0.5, header
    took = answered - restarted
    print(f"\nMEASURED lost request answered {took:.2f}s after the broker was restarted")
    assert took < 3.5  # restart (~0.5 s) + re-registration + the 0.5 s job; was >= 4.5 s
    # (2.5 s failed under load average ~15: the broker alone took ~1.6 s to start)


def test_async_client_fails_over_too(procs):
    a, b = two_brokers_two_workers(procs)
    brokers = {a: procs.procs[0], b: procs.procs[1]}

    async def main() -> list[Any]:
        async with AsyncIKClient([a, b], timeout=3, retries=0) as client:
            home = client.endpoints[client._core.brokers.route()]
            first = asyncio.gather(
                *(client.request("echo", "sleep", {"seconds": 0.5, "i": i}) for i in range(4))
            )
            await asyncio.sleep(0.2)
            brokers[home].send_signal(signal.SIGKILL)  # with the requests in flight there
            t0 = time.monotonic()
            done = await first
            took = time.monotonic() - t0
            more = await asyncio.gather(
                *(client.request("echo", "echo", {"i": i}) for i in range(8))
            )
            print(f"\nMEASURED async: 4 requests lost with their broker answered after {took:.2f}s")
            assert took < 2.0
            return [*done, *more]

    answers = asyncio.run(main())
    assert [p.header.get("slept") for p in answers[:4]] == [0.5] * 4
    assert [p.header["i"] for p in answers[4:]] == list(range(8))


def test_a_broker_given_several_endpoints_to_bind_says_so(procs):
    """`ZMQ_IK_ENDPOINT` may list several brokers for clients and workers; a broker (or
    `serve`) started with it must say what is wrong, not libzmq's 'No such device'."""
    env = {**os.environ, "ZMQ_IK_ENDPOINT": "tcp://127.0.0.1:5555,tcp://127.0.0.1:5556"}
    for command in ("broker", "serve"):
        cmd = [sys.executable, "-m", "zmq_ik.cli", command]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
        assert done.returncode == 2, done.stderr
        assert "--bind" in done.stderr and "a broker binds one endpoint" in done.stderr
