"""Faults, each with real processes on loopback: what the broker, workers and clients guarantee.

Every fault test checks the same four things, and measures a recovery time:

* no request lost while a healthy worker exists (every load request is answered correctly);
* no duplicate answer (every FINAL/ERROR reaching a client is counted by request id);
* no leaked process (every child exits on SIGTERM, with no descendants left) and no leaked
  file descriptor in the test process (``/proc/self/fd`` before and after);
* the time to recover, printed as ``RECOVERY <fault>: …`` (run with ``-s`` to see it; the
  numbers are in docs/reliability.md).

CI runs the reduced form. The full form (longer freeze and outage, default heartbeats, more
load) runs with ``ZMQ_IK_SLOW=1`` or ``-m slow``: ``ZMQ_IK_SLOW=1 pytest tests/test_faults.py -s``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import ANY_PORT, FORMS, Processes, full_form, wait_for_workers

from benchmarks._harness import ClientThreads
from benchmarks._harness import CountingClient as TallyClient
from zmq_ik.client import AsyncIKClient, IKClient
from zmq_ik.errors import IKError, IKTimeout, ProtocolError, RemoteError
from zmq_ik.protocol import (
    PROTOCOL,
    Command,
    Reply,
    Request,
    encode_payload,
    heartbeat_frames,
    parse_message,
    ready_frames,
    reply_frames,
    request_frames,
)

pytestmark = pytest.mark.timeout(120)


def report(fault: str, **numbers: Any) -> None:
    text = ", ".join(
        f"{k}={v:.3f}s" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
    )
    print(f"\nRECOVERY {fault}: {text}")


# --------------------------------------------------------------------------- leak checks


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return sorted(out)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        frontier.extend(kids - found)
        found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Harness:
    procs: Processes
    ctx: zmq.Context
    endpoint: str = ""
    """The broker's, once `broker` started it."""
    grandchildren: set[int] = field(default_factory=set)

    def broker(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start the broker: on a port it picks the first time, on the same one after."""
        proc = self.procs.broker(*extra, endpoint=self.endpoint or ANY_PORT)
        self.endpoint = proc.endpoint
        return proc

    def note_descendants(self) -> None:
        for proc in self.procs.procs:
            if proc.poll() is None:
                self.grandchildren |= descendants(proc.pid)

    def stop_all(self) -> list[str]:
        """SIGTERM every child still running (workers first), expect a clean exit."""
        self.note_descendants()
        problems = []
        running = [p for p in self.procs.procs if p.poll() is None]
        running.sort(key=lambda p: "broker" in p.args)  # workers first, broker last
        for proc in running:
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(15)
            except subprocess.TimeoutExpired:
                problems.append(f"{proc.args[3:5]} ignored SIGTERM")
                continue
            if rc != 0:
                problems.append(f"{proc.args[3:5]} exited {rc} on SIGTERM")
        return problems


@pytest.fixture
def harness(procs: Processes) -> Iterator[Harness]:
    # The shared context (conftest's wait_for_workers) lives on: not a leak. libzmq starts its
    # threads (and their fds) with the first socket, so start them before counting.
    zmq.Context.instance().socket(zmq.DEALER).close(0)
    fds_before = fd_count()
    targets_before = fd_targets()
    ctx = zmq.Context()
    h = Harness(procs, ctx)
    try:
        yield h
    finally:
        ctx.destroy(linger=0)
        problems = h.stop_all()
    leftovers = [pid for pid in h.grandchildren if alive(pid)]
    deadline = time.monotonic() + 3
    while fd_count() > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not problems, problems
    assert not leftovers, f"processes left behind: {leftovers}"
    assert fd_count() <= fds_before, (
        f"file descriptors leaked: {sorted(set(fd_targets()) - set(targets_before))}"
    )


# --------------------------------------------------------------------------- clients


class Load(ClientThreads):
    """Client threads sending back-to-back ``sleep`` requests; every answer is checked."""

    def __init__(
        self, h: Harness, clients: int = 3, timeout: float = 5.0, retries: int = 2
    ) -> None:
        self.h = h
        self.clients = clients
        self.timeout = timeout
        self.retries = retries
        self.ok = 0
        self.errors: list[str] = []
        self.duplicates: list[dict[bytes, int]] = []
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        super().__init__(clients)

    def _run(self, c: int) -> None:
        client = TallyClient(
            self.h.endpoint, timeout=self.timeout, retries=self.retries, context=self.h.ctx
        )
        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                seconds = round(0.01 * (1 + (c + i) % 3), 3)
                t0 = time.monotonic()
                try:
                    payload = client.request("echo", "sleep", {"seconds": seconds})
                except IKError as e:
                    with self._lock:
                        self.errors.append(f"client {c} request {i}: {e!r}")
                    continue
                with self._lock:
                    if payload.header.get("slept") != seconds:
                        self.errors.append(f"client {c} request {i}: wrong answer {payload.header}")
                    else:
                        self.ok += 1
                        self.latencies.append(time.monotonic() - t0)
            client.drain(0.3)
            with self._lock:
                self.duplicates.append(client.duplicates())
        finally:
            client.close()

    def check(self) -> None:
        assert not self.errors, self.errors[:5]
        assert not any(self.duplicates), self.duplicates
        assert self.ok > 0


def ping(h: Harness, timeout: float = 2.0) -> dict:
    with IKClient(h.endpoint, timeout=timeout, retries=0, context=h.ctx) as client:
        return client.ping()


def status(h: Harness, timeout: float = 2.0) -> dict:
    with IKClient(h.endpoint, timeout=timeout, retries=0, context=h.ctx) as client:
        return client.status()


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> float:
    """Poll ``predicate`` until true; return the seconds it took (fail after ``timeout``)."""
    t0 = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - t0
        except IKError:
            pass
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not reached within {timeout}s")
        time.sleep(step)


def busy_worker_pid(h: Harness, timeout: float = 5.0) -> int:
    pids: list[int] = []

    def one_busy() -> bool:
        pids[:] = [w["pid"] for w in ping(h)["workers"] if w["state"] == "busy"]
        return len(pids) == 1

    wait_until(one_busy, timeout)
    return pids[0]


def start_probe(h: Harness, seconds: float) -> tuple[TallyClient, dict[str, Any], threading.Thread]:
    """A long ``sleep`` request in a thread; its answer (or error) lands in the dict."""
    client = TallyClient(h.endpoint, timeout=30, retries=0, context=h.ctx)
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["payload"] = client.request("echo", "sleep", {"seconds": seconds})
        except IKError as e:
            result["error"] = e
        result["t"] = time.monotonic()

    thread = threading.Thread(target=ask)
    thread.start()
    return client, result, thread


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("form", FORMS)
def test_worker_sigkilled_during_job(harness: Harness, request, form: str) -> None:
    full = full_form(request, form)
    h = harness
    h.broker()
    h.procs.echo_worker(h.endpoint)
    wait_for_workers(h.endpoint, 1)
    h.procs.echo_worker(h.endpoint)
    wait_for_workers(h.endpoint, 2)
    job = 4.0 if full else 1.0  # still running when it is killed
    probe, result, thread = start_probe(h, job)
    victim = busy_worker_pid(h)
    with Load(h, clients=4 if full else 2) as load:
        time.sleep(2.0 if full else 0.5)
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        thread.join(30)
        time.sleep(2.0 if full else 0.5)  # the survivor keeps serving the load alone
    load.check()
    assert "payload" in result, result
    assert result["payload"].header["pid"] != victim  # answered by the other worker...
    probe.drain(0.3)
    assert list(probe.answers.values()) == [1]  # ...once
    probe.close()
    info = status(h)
    # Its connection closed with it: the broker's next heartbeat to it fails (unreachable),
    # usually before it has missed its heartbeats (lost). Either way: forgotten once.
    counters = info["counters"]
    assert counters.get("workers_lost", 0) + counters.get("workers_unreachable", 0) == 1
    assert counters.get("retries", 0) >= 1
    assert info["open_jobs"] == 0
    report(
        "worker SIGKILL",
        redispatch_after_kill=result["t"] - t_kill - job,
        load_ok=load.ok,
        load_p_max=max(load.latencies),
    )


@pytest.mark.parametrize("form", FORMS)
def test_worker_frozen_then_resumed_answers_once(harness: Harness, request, form: str) -> None:
    full = full_form(request, form)
    h = harness
    freeze = 5.0 if full else 2.0
    hb = [] if full else ["--heartbeat", "0.1"]  # full form: the default 250 ms x 4
    h.broker(*hb)
    h.procs.echo_worker(h.endpoint, *hb)
    wait_for_workers(h.endpoint, 1)
    h.procs.echo_worker(h.endpoint, *hb)
    wait_for_workers(h.endpoint, 2)
    job = 0.6
    probe, result, thread = start_probe(h, job)
    victim = busy_worker_pid(h)
    with Load(h, clients=2) as load:
        t_stop = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        thread.join(30)
        assert "payload" in result, result
        answered = result["t"] - t_stop
        assert result["payload"].header["pid"] != victim
        time.sleep(max(0.0, t_stop + freeze - time.monotonic()))
        t_cont = time.monotonic()
        os.kill(victim, signal.SIGCONT)
        rejoin = wait_until(lambda: len(ping(h)["workers"]) == 2, 30)
        time.sleep(1.0)  # the resumed worker's late reply has had time to arrive
    load.check()
    probe.drain(0.5)
    assert list(probe.answers.values()) == [1], probe.answers  # the late reply never reached it
    probe.close()
    info = status(h)
    # Declared dead: its watch dropped (unreachable, #27.1), or silence (an unwatched one).
    dead = info["counters"].get("workers_lost", 0) + info["counters"].get("workers_unreachable", 0)
    assert info["open_jobs"] == 0 and dead >= 1
    report(
        f"worker SIGSTOP {freeze:.0f}s",
        heartbeat=0.25 if full else 0.1,
        redispatch_after_stop=answered - job,
        rejoin_after_cont=rejoin,
        late_replies_dropped=info["counters"].get("late_replies_dropped", 0),
    )
    assert t_cont > 0


@pytest.mark.parametrize("form", FORMS)
def test_broker_killed_and_restarted_under_load(harness: Harness, request, form: str) -> None:
    full = full_form(request, form)
    h = harness
    outage = 3.0 if full else 0.5
    hb = [] if full else ["--heartbeat", "0.1"]
    broker = h.broker(*hb)
    for _ in range(2):
        h.procs.echo_worker(h.endpoint, *hb)
    wait_for_workers(h.endpoint, 2)
    # A deadline long enough to ride out the outage plus the workers' reconnect backoff.
    with Load(h, clients=4 if full else 2, timeout=3.0, retries=4) as load:
        time.sleep(1.0 if full else 0.5)
        ok_before = load.ok
        t_kill = time.monotonic()
        broker.send_signal(signal.SIGKILL)
        broker.wait(10)
        time.sleep(outage)
        t_up = time.monotonic()
        h.broker(*hb)
        rejoin = wait_until(lambda: len(ping(h)["workers"]) == 2, 30)
        ok_at_rejoin = load.ok
        served_again = wait_until(lambda: load.ok > ok_at_rejoin + 5, 30)
        time.sleep(1.0 if full else 0.3)
    load.check()
    assert load.ok > ok_before
    info = status(h)
    assert info["open_jobs"] == 0
    report(
        f"broker SIGKILL, {outage:.1f}s outage",
        workers_rejoined_after_restart=rejoin,
        load_flowing_after_rejoin=served_again,
        longest_client_wait=max(load.latencies),
        outage_total=t_up - t_kill + rejoin,
    )


@pytest.mark.parametrize("form", FORMS)
def test_client_vanishes_with_requests_in_flight(harness: Harness, request, form: str) -> None:
    full = full_form(request, form)
    h = harness
    n = 200 if full else 30
    h.broker()
    h.procs.echo_worker(h.endpoint)
    wait_for_workers(h.endpoint, 1)
    ctx = zmq.Context()
    ghost = ctx.socket(zmq.DEALER)
    ghost.setsockopt(zmq.LINGER, 0)
    ghost.connect(h.endpoint)
    for i in range(n):  # 0.1 s of work each, deadline 1 s: most cannot even start in time
        ghost.send_multipart(
            request_frames(
                i.to_bytes(4, "big"), "echo", "sleep", 1000, encode_payload({"seconds": 0.1})
            )
        )
    time.sleep(0.2)
    t_gone = time.monotonic()
    ghost.close(0)
    ctx.destroy(linger=0)
    wait_until(lambda: status(h)["open_jobs"] == 0, 30)
    drained = time.monotonic() - t_gone
    info = status(h)
    assert info["counters"]["requests"] == n
    assert info["counters"].get("unroutable", 0) >= 1  # counted, not fatal
    assert info["in_flight"] == 0 and sum(info["queues"].values()) == 0
    idle = wait_until(lambda: ping(h)["workers"][0]["state"] == "idle", 10)
    with TallyClient(h.endpoint, timeout=5, retries=0, context=h.ctx) as good:
        t0 = time.monotonic()
        assert good.request("echo", "echo", {"ok": 1}).header["ok"] == 1
        served = time.monotonic() - t0
    report(
        f"client gone with {n} requests",
        jobs_drained=drained,
        worker_idle_again=drained + idle,
        next_client_served_in=served,
        unroutable=info["counters"].get("unroutable", 0),
        answered_by_worker=info["counters"].get("replies", 0),
    )


class RogueWorker(threading.Thread):
    """Registers as a worker for ``echo`` and answers every REQUEST with garbage, cycling
    through kinds of garbage. Keeps heartbeating and re-registers when told to."""

    KINDS = (
        "bad_framing",  # too few frames: the broker cannot parse it
        "bad_protocol",  # wrong frame 0
        "bad_payload",  # well framed FINAL, header not msgpack
        "bad_arrays",  # well framed FINAL, array frame of the wrong size
        "bad_error",  # ERROR whose header is garbage
        "wrong_id",  # FINAL for a job id that does not exist
    )

    def __init__(self, endpoint: str, ctx: zmq.Context) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.ctx = ctx
        self.stop = threading.Event()
        self.jobs: Counter[str] = Counter()

    def garbage(self, kind: str, job_id: bytes) -> list[Any]:
        if kind == "bad_framing":
            return [PROTOCOL, Command.FINAL.value]
        if kind == "bad_protocol":
            return [b"ZMTP", Command.FINAL.value, job_id, b"\x80"]
        if kind == "bad_payload":
            return reply_frames(Command.FINAL, job_id, [b"\xc1\xff garbage"])
        if kind == "bad_arrays":
            header = encode_payload({}, {"x": [1.0, 2.0]})[0]
            return reply_frames(Command.FINAL, job_id, [header, b"\x00" * 3])
        if kind == "bad_error":
            return reply_frames(Command.ERROR, job_id, [b"\xff\xfe"])
        return reply_frames(Command.FINAL, b"\x00" * 8, encode_payload({"forged": 1}))

    def run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        sock.send_multipart(ready_frames({"robots": ["echo"], "device": "rogue"}))
        n = 0
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                if sock.poll(50):
                    try:
                        msg = parse_message(sock.recv_multipart())
                    except ProtocolError:
                        continue
                    if isinstance(msg, Request):
                        kind = self.KINDS[n % len(self.KINDS)]
                        n += 1
                        self.jobs[kind] += 1
                        sock.send_multipart(self.garbage(kind, msg.request_id))
                    elif not isinstance(msg, Reply):  # DISCONNECT: register again
                        if type(msg).__name__ == "Disconnect":
                            sock.send_multipart(ready_frames({"robots": ["echo"]}))
                if time.monotonic() - last > 0.1:
                    sock.send_multipart(heartbeat_frames())
                    last = time.monotonic()
        finally:
            sock.close(0)


@pytest.mark.parametrize("form", FORMS)
def test_worker_replying_garbage_never_leaves_a_client_hanging(
    harness: Harness, request, form: str
) -> None:
    full = full_form(request, form)
    h = harness
    n = 300 if full else 36
    h.broker()
    healthy = h.procs.echo_worker(h.endpoint)
    wait_for_workers(h.endpoint, 1)
    rogue = RogueWorker(h.endpoint, h.ctx)
    rogue.start()
    try:
        wait_for_workers(h.endpoint, 2)

        async def ask_all() -> list[Any]:
            actx = zmq.asyncio.Context()
            try:
                async with AsyncIKClient(h.endpoint, timeout=2.0, retries=0, context=actx) as c:

                    async def one(i: int) -> Any:
                        t0 = time.monotonic()
                        try:
                            res: Any = await c.request("echo", "echo", {"i": i})
                        except IKError as e:
                            res = e
                        return res, time.monotonic() - t0

                    out: list[Any] = []
                    for start in range(0, n, 6):  # 6 in flight: both workers get jobs
                        out += await asyncio.gather(*(one(i) for i in range(start, start + 6)))
                        await asyncio.sleep(0.15)  # time for a dropped rogue to re-register
                    return out
            finally:
                actx.destroy(linger=0)

        results = asyncio.run(ask_all())
    finally:
        rogue.stop.set()
        rogue.join(5)
    outcomes: Counter[str] = Counter()
    for i, (res, _) in enumerate(results):
        assert not isinstance(res, IKTimeout), f"request {i} hung: {res}"
        if isinstance(res, RemoteError):
            outcomes[f"error:{res.code}"] += 1
        elif isinstance(res, ProtocolError):
            outcomes["error:protocol (client-side decode)"] += 1
        else:
            assert isinstance(res, IKError) is False
            assert res.header["i"] == i and res.header["pid"] == healthy.pid
            outcomes["ok (healthy worker)"] += 1
    # Every kind of garbage was tried. Unparsable replies: the rogue is dropped and the job
    # goes to the healthy worker. Well-framed garbage is forwarded untouched and the client
    # refuses it (protocol). A reply for another job id is dropped; the client gets `timeout`
    # at its deadline (and the rogue, still "busy", gets no more work).
    assert set(rogue.jobs) == set(RogueWorker.KINDS), rogue.jobs
    assert outcomes["ok (healthy worker)"] == n - 4, outcomes
    assert outcomes["error:timeout"] == 1, outcomes
    info = status(h)
    assert info["open_jobs"] == 0
    latencies = sorted(t for _, t in results)
    report(
        "worker replying garbage",
        outcomes=dict(outcomes),
        rogue_jobs=dict(rogue.jobs),
        workers_dropped_malformed=info["counters"].get("workers_dropped_malformed", 0),
        slowest_answer=latencies[-1],
    )


def test_broker_stalled_longer_than_the_client_timeout(harness: Harness) -> None:
    """Issue #13.2: a broker frozen (SIGSTOP) for 5 s, longer than the clients' 3 s attempts.
    On resume it must read what queued up (late replies, heartbeats, retries) before judging
    workers or deadlines: no error, no request run twice, no worker declared dead."""
    h = harness
    broker = h.broker()
    for _ in range(2):
        h.procs.echo_worker(h.endpoint)
    wait_for_workers(h.endpoint, 2)
    with Load(h, clients=4, timeout=3.0, retries=4) as load:
        time.sleep(1.0)
        ok_before = load.ok
        broker.send_signal(signal.SIGSTOP)
        time.sleep(5.0)
        broker.send_signal(signal.SIGCONT)
        flowing = wait_until(lambda: load.ok > ok_before + 20, 20)
        time.sleep(0.5)
    load.check()  # no error, no duplicate answer
    counters = status(h)["counters"]
    assert counters.get("stalls", 0) >= 1, counters  # it noticed (a loaded host may add more)
    assert counters.get("workers_lost", 0) == 0, counters  # nobody declared dead
    assert status(h)["open_jobs"] == 0
    report(
        "broker SIGSTOP 5s (clients timeout 3 s x 5 attempts)",
        load_flowing_after_cont=flowing,
        duplicate_requests_dropped=counters.get("duplicate_requests", 0),
        workers_unreachable=counters.get("workers_unreachable", 0),
    )
