"""#18.11: requests a client abandoned are cancelled at the broker (`zik.broker` / `cancel`).

The broker core driven with an explicit clock (its own jobs only, queued dropped, a running
one's answer discarded and never re-dispatched, bounds); the client core (which ids, when,
cut at the limit, acknowledgements ignored); and real processes: a client that leaves an
exchange of `sleep` jobs early, or is interrupted (SIGINT) in another process, leaves the
worker at most the job it was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time

import msgpack
import pytest
import zmq.asyncio
from conftest import ROOT, Box, ctrl_c_reaches, final, outbox, wait_for_workers
from test_broker_core import Harness, errors, jobs_sent

from zmq_ik import protocol as proto
from zmq_ik.client import AsyncIKClient, Call, IKClient
from zmq_ik.client._core import CANCEL_WAIT, ClientCore
from zmq_ik.errors import IKTimeout, InputError

pytestmark = pytest.mark.timeout(60)


def cancel(h: Harness, client: bytes, ids, rid: bytes = b"k1") -> list:
    """Send ``client``'s cancel of ``ids``; the messages it caused."""
    h.send(client, proto.cancel_frames(rid, ids))
    return h.drain()


def counts(msgs, client: bytes = b"C1", rid: bytes = b"k1") -> dict:
    [(to, reply)] = [(i, m) for i, m in msgs if getattr(m, "request_id", None) == rid]
    assert to == client and reply.command is proto.Command.FINAL, msgs
    return proto.decode_payload(reply.payload).header


# --------------------------------------------------------------------------- broker core


def test_cancel_drops_the_senders_queued_jobs_and_frees_their_budget():
    h = Harness(max_open_jobs=3)
    h.ready(b"W1")
    for rid in (b"r1", b"r2", b"r3"):
        h.request(b"C1", rid, header={"pad": "x" * 1000})
    [(_, job1)] = jobs_sent(h.drain())  # r1 runs, r2 and r3 wait
    held = h.core.queued_bytes
    got = counts(cancel(h, b"C1", [b"r2", b"r3", b"never-sent"]))
    assert got == {"dropped": 2, "running": 0, "unknown": 1}
    assert len(h.core.jobs) == 1 and h.core.queued_bytes < held / 2
    assert h.core.queues.get("tatbot", []) == [] or not h.core.queues["tatbot"]
    st = h.core.status(h.now)["counters"]
    assert st["cancelled"] == 2 and st["cancel_unknown"] == 1 and st["cancel_requests"] == 1
    h.request(b"C1", b"r4")  # the open-job budget is free again: queued, not `overloaded`
    h.send(b"W1", final(job1.request_id, ok=True))
    out = h.drain()
    assert [(i, m.request_id) for i, m in out if isinstance(m, proto.Reply)] == [(b"C1", b"r1")]
    [(_, job4)] = jobs_sent(out)  # the next job the worker gets is r4: r2 and r3 are gone
    assert proto.decode_payload(job4.payload).header == {}
    h.tick(5.0)  # past every deadline: nothing is ever said about r2, r3
    assert [e for e in errors(h.drain()) if e[1] in (b"r2", b"r3")] == []
    h.send(b"C1", proto.request_frames(b"r2", "tatbot", "solve", 1000, proto.encode_payload({})))
    assert jobs_sent(h.drain()) == []  # a retry crossing the cancel never runs


def test_a_client_cannot_cancel_another_clients_jobs():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C1", b"r1")
    h.request(b"C1", b"r2")
    h.drain()
    got = counts(cancel(h, b"C2", [b"r1", b"r2"]), client=b"C2")
    assert got == {"dropped": 0, "running": 0, "unknown": 2}
    assert len(h.core.jobs) == 2 and len(h.core.queues["tatbot"]) == 1


def test_a_running_job_cancelled_has_its_answer_dropped_and_is_never_redispatched():
    h = Harness(max_retries=2)
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C1", b"r1")
    h.request(b"C2", b"x1")
    jobs = dict(jobs_sent(h.drain()))  # both run
    assert counts(cancel(h, b"C1", [b"r1"])) == {"dropped": 0, "running": 1, "unknown": 0}
    assert h.core.in_flight() == 1 and h.core.workers[b"W1"].state == "busy"
    h.send(b"W1", final(jobs[b"W1"].request_id, ok=True))  # its answer: dropped
    assert h.drain() == [] and h.core.workers[b"W1"].state == "idle"
    # A worker that dies running a cancelled job: the job is not queued again, nor retried.
    h.request(b"C1", b"r3")
    [(w, _)] = jobs_sent(h.drain())
    assert w == b"W1"
    counts(cancel(h, b"C1", [b"r3"], rid=b"k2"), rid=b"k2")
    h.send(b"W1", proto.disconnect_frames("crashed"))
    h.ready(b"W3")  # an idle worker that would take a re-queued job at once
    out = h.drain()
    assert b"W1" not in h.core.workers and jobs_sent(out) == [] and errors(out) == []
    assert h.core.counters["retries"] == 0 and h.core.jobs.keys() == {jobs[b"W2"].request_id}
    assert h.core.counters["late_replies_dropped"] == 1


@pytest.mark.parametrize(
    ("header", "code", "why"),
    [
        ({}, "bad_request", "non-empty list"),
        ({"ids": []}, "bad_request", "non-empty list"),
        ({"ids": b"r1"}, "bad_request", "non-empty list"),
        ({"ids": ["r1"]}, "bad_request", "1..64 bytes"),
        ({"ids": [b""]}, "bad_request", "1..64 bytes"),
        ({"ids": [b"x" * 65]}, "bad_request", "1..64 bytes"),
        ({"ids": [1]}, "bad_request", "1..64 bytes"),
        ({"ids": [b"r"] * (proto.MAX_CANCEL_IDS + 1)}, "too_large", "limit 4096"),
    ],
)
def test_bad_cancels_get_an_error_naming_ids(header, code, why):
    h = Harness()
    h.ready(b"W1")
    h.request(b"C1", b"r1")
    h.drain()
    frames = proto.request_frames(
        b"k1", proto.BROKER_SERVICE, proto.CANCEL, 1000, [msgpack.packb(header)]
    )
    h.send(b"C1", frames)
    [(to, reply)] = h.drain()
    got, message, fld = proto.decode_error(reply.payload)
    assert to == b"C1" and reply.request_id == b"k1" and (got, fld) == (code, "ids")
    assert why in message
    assert len(h.core.jobs) == 1  # nothing dropped, nothing broken


def test_a_cancel_with_an_unreadable_header_is_refused():
    h = Harness()
    frames = proto.request_frames(b"k1", proto.BROKER_SERVICE, proto.CANCEL, 1000, [b"\xc1"])
    h.send(b"C1", frames)
    [(_, reply)] = h.drain()
    assert proto.decode_error(reply.payload)[0] == "protocol" and reply.request_id == b"k1"


# --------------------------------------------------------------------------- client core


def call() -> Call:
    return Call("echo", "sleep", {"seconds": 1}, {})


def cancels(core: ClientCore) -> list[list[bytes]]:
    return [
        proto.decode_payload(m.payload).header["ids"]
        for _, m in outbox(core)
        if m.operation == proto.CANCEL
    ]


def test_client_cancels_a_request_that_gave_up_and_everything_on_close():
    core = ClientCore(["tcp://b:1"], retries=1)
    core.handle(final(b"start-probe"), now=0.0)  # a broker answered once (else `NoBroker`)
    box = Box()
    gave_up = core.submit(call(), 1.0, 0.0, box)
    outbox(core)
    core.tick(2.0)  # attempt 2
    assert cancels(core) == []
    core.tick(4.0)  # no answer to the last attempt: IKTimeout, and the broker is told
    assert isinstance(box.events[-1][2], IKTimeout) and cancels(core) == [[gave_up]]
    a = core.submit(call(), 5.0, 5.0, box)
    b = core.submit(call(), 5.0, 5.0, box)
    core.handle(final(a), 5.1)
    outbox(core)
    core.fail_all(InputError("closed", "client"))
    assert cancels(core) == [[b]]  # the answered one is not named


def test_client_cuts_cancels_at_the_limit_and_ignores_their_answers():
    core = ClientCore(["tcp://b:1"])
    rids = [core.submit(call(), 5.0, 0.0, Box()) for _ in range(proto.MAX_CANCEL_IDS + 3)]
    outbox(core)
    core.forget(*rids)
    frames = list(core.outbox)
    assert [len(ids) for ids in cancels(core)] == [proto.MAX_CANCEL_IDS, 3]
    assert len(core.cancelling) == 2
    # Acknowledged (counts), or refused by an older broker: either way nothing to anyone.
    (_, first), (_, second) = frames
    core.handle(final(first[2], dropped=1, running=0, unknown=0), 0.1)
    core.handle(proto.error_frames(second[2], "unknown_operation", "old broker"), 0.1)
    assert core.cancelling == {} and not core.outbox and core.pending == {}


# --------------------------------------------------------------------------- real processes

SLEEP = 0.5
JOBS = 8


def sleeps() -> list[Call]:
    return [Call("echo", "sleep", {"seconds": SLEEP}, {}) for _ in range(JOBS)]


def drained(client: IKClient, since: float, limit: float = 10.0) -> tuple[float, dict]:
    """Seconds from ``since`` until the broker holds no job and its worker is idle."""
    while True:
        st = client.status()
        if st["open_jobs"] == 0 and all(w["state"] == "idle" for w in st["workers"]):
            return time.monotonic() - since, st
        assert time.monotonic() - since < limit, st
        time.sleep(0.02)


def test_leaving_an_exchange_early_cancels_what_is_left(procs, endpoint):
    """Issue #18.11: 8 sleep jobs of 0.5 s on one worker, the client leaves after the first
    answer. Before: the 7 others ran anyway (3.5 s of worker time, nobody waiting). Now: the
    6 queued are dropped at once, only the one running finishes."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    with IKClient(endpoint, timeout=10) as client:
        answers = client.exchange(sleeps(), max_in_flight=JOBS)
        next(answers)
        left = time.monotonic()
        answers.close()  # leave early (as a `break` does)
        busy, st = drained(client, left)
    [worker] = st["workers"]
    print(f"\nMEASURED worker busy after leaving {JOBS} x {SLEEP}s sleep jobs: {busy:.2f}s")
    assert worker["served"] == 2, st  # the first, and the one running when it was left
    assert st["counters"]["cancelled"] == JOBS - 2 and st["counters"]["cancelled_running"] == 1
    assert busy < SLEEP + 1.0  # before: 3.5 s


def test_cancelling_an_async_task_cancels_its_requests(procs, endpoint):
    """The same through `AsyncIKClient`: the task consuming the exchange is cancelled."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)

    async def go() -> float:
        actx = zmq.asyncio.Context()
        try:
            async with AsyncIKClient(endpoint, context=actx, timeout=10) as client:

                async def consume() -> None:
                    async for _ in client.exchange(sleeps(), max_in_flight=JOBS):
                        await asyncio.sleep(3600)  # holds the rest until cancelled

                task = asyncio.ensure_future(consume())
                while not task.done() and len(client._core.pending) != JOBS - 1:
                    await asyncio.sleep(0.01)  # until the first answer came
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return time.monotonic()
        finally:
            actx.destroy(linger=0)

    left = asyncio.run(go())
    with IKClient(endpoint, timeout=5) as client:
        busy, st = drained(client, left)
    assert st["counters"]["cancelled"] == JOBS - 2 and st["workers"][0]["served"] == 2, st
    assert busy < SLEEP + 1.0  # before: 3.5 s


def test_closing_a_client_with_requests_in_flight_cancels_them(procs, endpoint):
    """`close()` with 7 requests outstanding: the cancel is sent and acknowledged before the
    sockets close (with LINGER 0 an unsent message would be dropped)."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    client = IKClient(endpoint, timeout=10)
    answers = client.exchange(sleeps(), max_in_flight=JOBS)
    next(answers)
    closed = time.monotonic()
    client.close()
    took = time.monotonic() - closed
    answers.close()  # nothing left to forget
    with IKClient(endpoint, timeout=5) as other:
        busy, st = drained(other, closed)
    assert st["counters"]["cancelled"] == JOBS - 2 and st["workers"][0]["served"] == 2, st
    assert took < CANCEL_WAIT + 0.3 and busy < SLEEP + 1.0  # before: 3.5 s


SCRIPT = """
import sys
from zmq_ik.client import Call, IKClient
endpoint, seconds, jobs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
with IKClient(endpoint, timeout=10) as client:
    calls = [Call("echo", "sleep", {"seconds": seconds}, {}) for _ in range(jobs)]
    answers = client.exchange(calls, max_in_flight=jobs)
    next(answers)
    print("first", flush=True)
    for _ in answers:
        pass
"""


def test_ctrl_c_in_another_process_cancels_its_requests(procs, endpoint):
    """The issue as reported: Ctrl-C (SIGINT) to a client process mid-job. Its cancel must
    reach the broker before the process is gone (close waits for the acknowledgement)."""
    procs.echo_worker(endpoint)
    wait_for_workers(endpoint, 1)
    client_proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, endpoint, str(SLEEP), str(JOBS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=ctrl_c_reaches,
    )
    try:
        assert client_proc.stdout is not None
        assert client_proc.stdout.readline().strip() == b"first"
        client_proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        client_proc.wait(timeout=10)
    finally:
        if client_proc.poll() is None:
            client_proc.kill()
            client_proc.wait()
    with IKClient(endpoint, timeout=5) as client:
        busy, st = drained(client, interrupted)
    print(f"\nMEASURED worker busy after SIGINT to the client: {busy:.2f}s")
    assert st["counters"].get("cancelled", 0) >= JOBS - 3, st  # the one running, one racing
    assert st["workers"][0]["served"] <= 3 and busy < SLEEP + 1.0  # before: 3.5 s
