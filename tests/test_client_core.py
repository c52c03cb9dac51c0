"""The socket-free client core (client/_core.py, _exchange.py) driven with synthetic time.

What `IKClient` and `AsyncIKClient` both rely on: request ids, deadlines + answer grace,
retries with the same id, reply matching, PARTIAL replies, ERROR replies (retryable, plain,
and with an empty request id), batches with a bounded window (unordered and ordered), and
the chunk plan of stroke jobs. No socket, no clock: every ``now`` is given.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import numpy as np
import pytest
from conftest import Box, final, outbox

from zmq_ik.client._checks import check_count, check_endpoint, default_endpoint
from zmq_ik.client._core import (
    FAILED,
    FINAL,
    PARTIAL,
    Call,
    ClientCore,
    Event,
    answer_grace,
    settle,
)
from zmq_ik.client._exchange import DEFAULT_CHUNK_PAIRS, Exchange, StrokeJob, plan_chunks
from zmq_ik.client._failover import NO_ANSWER_AFTER
from zmq_ik.errors import (
    IKTimeout,
    InputError,
    NoBroker,
    Overloaded,
    ProtocolError,
    RemoteError,
)
from zmq_ik.model import Scene, StrokeBatch, StrokeList, ops
from zmq_ik.protocol import (
    BROKER_SERVICE,
    CANCEL,
    Command,
    Request,
    decode_payload,
    encode_payload,
    error_frames,
    reply_frames,
)
from zmq_ik.robots import example_paths


def call(i: int = 0, on_partial: Any = None) -> Call:
    return Call("echo", "echo", {"i": i}, {"x": np.arange(3, dtype=np.float32)}, on_partial)


def sent(core: ClientCore) -> list[Request]:
    """Every REQUEST in the outbox (taken out), parsed as the broker would; the core's own
    liveness probes (`zik.broker` / `alive`, client/_failover.py) are left out."""
    msgs = outbox(core)
    assert all(connection == 0 for connection, _ in msgs)
    return [msg for _, msg in msgs if msg.service != BROKER_SERVICE]


def partial(rid: bytes, **header: Any) -> list[Any]:
    return reply_frames(Command.PARTIAL, rid, encode_payload(header))


def error(rid: bytes, code: str, message: str = "m", field: str | None = None) -> list[Any]:
    return error_frames(rid, code, message, field)


# --------------------------------------------------------------------------- one request


def test_answer_matched_by_request_id_and_late_answers_dropped():
    core = ClientCore(["tcp://b:1"], retries=2)
    a, b = Box(), Box()
    ra = core.submit(call(1), 2.0, now=100.0, sink=a, tag="a")
    rb = core.submit(call(2), 2.0, now=100.0, sink=b, tag="b")
    reqs = sent(core)
    assert [r.request_id for r in reqs] == [ra, rb] and ra != rb
    assert reqs[0].timeout_ms == 2000 and reqs[0].service == "echo"
    core.handle(final(rb, who="b"), now=100.1)
    core.handle(final(ra, who="a"), now=100.2)
    assert [e[0] for e in a.events] == ["a"] and a.events[0][2].header["who"] == "a"
    assert b.events[0][1] == FINAL and b.events[0][2].header["who"] == "b"
    assert core.pending == {} and core.next_due() is None
    core.handle(final(ra), now=100.3)  # a second answer (a retry's): dropped
    core.handle(final(b"never-sent"), now=100.3)
    assert len(a.events) == 1 and len(b.events) == 1
    assert core.connections[0].last_heard == 100.3


def test_unanswered_attempt_is_resent_with_the_same_id_then_times_out():
    core = ClientCore(["tcp://b:1"], retries=2)
    core.handle(final(b"start-probe"), now=0.0)  # a broker answered once (else `NoBroker`)
    box = Box()
    rid = core.submit(call(), 1.0, now=0.0, sink=box)
    patience = 1.0 + answer_grace(1.0)
    assert core.pending[rid].expires == pytest.approx(patience)
    assert [r.request_id for r in sent(core)] == [rid]
    core.tick(patience - 0.001)  # not yet: the broker answers at the deadline
    assert not sent(core) and not box.events
    core.tick(patience)
    assert [r.request_id for r in sent(core)] == [rid]  # attempt 2, same id
    core.tick(2 * patience)
    assert [r.request_id for r in sent(core)] == [rid]  # attempt 3
    assert not box.events
    core.tick(3 * patience)
    assert not sent(core) and box.kinds() == [FAILED]
    err = box.events[0][2]
    assert isinstance(err, IKTimeout) and "after 3 attempt(s)" in str(err)
    assert "no answer from tcp://b:1 for echo/echo" in str(err)
    assert core.pending == {} and core.next_due() is None


def test_a_first_request_nobody_ever_answers_fails_in_2s_saying_why():
    """Issue 25.7: `compute` at a port with no broker failed after 3 x 30 s. While no broker
    ever answered the client (not even its start-up probe), requests fail after 2 s, with
    what the handshake monitor knows (`explain`); once a broker answered, never."""
    core = ClientCore(["tcp://b:1"], retries=2)
    core.explain = lambda i: "the broker refused this client's CURVE key (fingerprint x)"
    box, later = Box(), Box()
    core.submit(call(), 30.0, now=10.0, sink=box)
    core.submit(call(1), 30.0, now=11.0, sink=later)
    assert core.next_due() <= 10.0 + NO_ANSWER_AFTER  # the loop wakes for it
    core.tick(10.0 + NO_ANSWER_AFTER - 0.01)
    assert not box.events
    core.tick(10.0 + NO_ANSWER_AFTER)
    for b in (box, later):
        assert b.kinds() == [FAILED] and isinstance(b.events[0][2], NoBroker)
        assert "within 2s: the broker refused this client's CURVE key" in str(b.events[0][2])
    assert core.pending == {} and core.next_due() is None

    heard = ClientCore(["tcp://b:1"], retries=0)
    heard.handle(final(b"start-probe"), now=0.0)
    heard.submit(call(), 30.0, now=1.0, sink=(box := Box()))
    heard.tick(20.0)
    assert not box.events  # a broker that answered once is waited for, as before

    slow = ClientCore(["tcp://b:1"], retries=0)
    slow.reached = lambda i: True  # a handshake succeeded: a broker listens, slow to answer
    slow.submit(call(), 30.0, now=0.0, sink=(box := Box()))
    slow.tick(20.0)
    assert not box.events  # waited for, as before


def test_a_timeout_says_the_worker_was_compiling_for_the_request():
    """#24.5: a worker compiling a program for a request (a setting it did not warm) says so
    in a PARTIAL ``{"compiling": ...}``; a call without ``on_partial`` keeps it, and its
    timeout (the broker's ERROR, or its own) says it rather than timing out silently."""
    notice = "the worker is compiling ...; start the worker with --warm precise=false"
    for broker_answers in (True, False):
        core = ClientCore(["tcp://b:1"], retries=0)
        core.handle(final(b"start-probe"), now=0.0)
        box = Box()
        rid = core.submit(call(), 1.0, now=0.0, sink=box)
        core.handle(partial(rid, compiling=notice + "x" * 1000), now=0.1)
        assert not box.events  # no on_partial: nothing delivered, only kept
        if broker_answers:
            core.handle(error(rid, "timeout", "deadline passed"), now=1.0)
        else:
            core.tick(1.0 + answer_grace(1.0))
        assert box.kinds() == [FAILED]
        text = str(box.events[0][2])
        assert notice in text and "x" * 501 not in text  # bounded: an untrusted peer


def test_answer_within_the_grace_after_the_deadline_is_taken():
    core = ClientCore(["tcp://b:1"], retries=0)
    box = Box()
    rid = core.submit(call(), 1.0, now=0.0, sink=box)
    core.handle(error(rid, "timeout", "deadline passed"), now=1.0 + answer_grace(1.0) / 2)
    assert box.kinds() == [FAILED]
    assert isinstance(box.events[0][2], RemoteError) and box.events[0][2].code == "timeout"


@pytest.mark.parametrize("code", ["worker_lost", "shutting_down"])
def test_retryable_error_resends_at_once_with_the_same_id(code):
    core = ClientCore(["tcp://b:1"], retries=1)
    box = Box()
    rid = core.submit(call(), 5.0, now=0.0, sink=box)
    sent(core)
    core.handle(error(rid, code), now=0.5)
    assert [r.request_id for r in sent(core)] == [rid] and not box.events
    assert core.pending[rid].expires == pytest.approx(0.5 + 5.0 + answer_grace(5.0))  # anew
    core.handle(error(rid, code, "again"), now=0.6)  # retries spent: raised
    assert not sent(core) and box.kinds() == [FAILED]
    assert box.events[0][2].code == code and box.events[0][2].message == "again"


def test_other_errors_raise_with_code_and_field():
    core = ClientCore(["tcp://b:1"], retries=3)
    box = Box()
    r1 = core.submit(call(1), 5.0, now=0.0, sink=box, tag=1)
    r2 = core.submit(call(2), 5.0, now=0.0, sink=box, tag=2)
    sent(core)
    core.handle(error(r1, "bad_request", "NaN in target_pos", "target_pos"), now=0.1)
    core.handle(error(r2, "overloaded", "queue full"), now=0.1)
    assert not core.outbox  # never retried
    (t1, _, e1), (t2, _, e2) = box.events
    assert (t1, type(e1), e1.code, e1.field) == (1, RemoteError, "bad_request", "target_pos")
    assert t2 == 2 and isinstance(e2, Overloaded)


def test_partials_reach_the_caller_in_order_before_the_answer():
    core = ClientCore(["tcp://b:1"])
    seen: list[int] = []
    events: deque[Event] = deque()
    rid = core.submit(call(on_partial=lambda p: seen.append(p.header["n"])), 5, 0.0, events.append)
    for n in range(2):
        core.handle(partial(rid, n=n), now=0.1)
    assert [e[1] for e in events] == [PARTIAL] * 2 and seen == []  # the sink has them
    assert settle(events, lambda p: seen.append(p.header["n"])) is None  # still pending
    assert seen == [0, 1]
    core.handle(partial(rid, n=2), now=0.1)
    core.handle(final(rid, done=True), now=0.2)
    answer = settle(events, lambda p: seen.append(p.header["n"]))
    assert answer is not None and answer.header == {"done": True} and seen == [0, 1, 2]


def test_partials_ignored_without_a_reader_and_garbage_partial_fails_a_reader():
    core = ClientCore(["tcp://b:1"])
    quiet, reader = Box(), Box()
    r1 = core.submit(call(), 5, 0.0, quiet)
    r2 = core.submit(call(on_partial=lambda p: None), 5, 0.0, reader)
    garbage = [b"ZIK/1", Command.PARTIAL.value, r2, b"\xc1not msgpack"]
    core.handle(partial(r1, n=1), now=0.1)
    core.handle(garbage, now=0.1)
    assert not quiet.events and r1 in core.pending
    assert reader.kinds() == [FAILED] and isinstance(reader.events[0][2], ProtocolError)


def test_garbage_final_fails_the_request_and_malformed_messages_are_ignored():
    core = ClientCore(["tcp://b:1"])
    box = Box()
    rid = core.submit(call(), 5, 0.0, box)
    for junk in ([b"nope"], [b"ZIK/1"], [b"ZIK/1", b"FINAL"], [b"ZIK/2", b"FINAL", rid, b"\x80"]):
        core.handle(junk, now=0.1)
    assert not box.events and rid in core.pending
    core.handle([b"ZIK/1", Command.FINAL.value, rid, b"\x80", b"extra"], now=0.2)
    assert box.kinds() == [FAILED] and isinstance(box.events[0][2], ProtocolError)


def test_error_with_an_empty_request_id_fails_every_request_in_flight():
    """The broker could not parse one of our messages far enough to know its id: any of
    them may be the one, and it would only time out; all fail with the broker's reason."""
    core = ClientCore(["tcp://b:1"])
    boxes = [Box() for _ in range(3)]
    for i, box in enumerate(boxes):
        core.submit(call(i), 5, 0.0, box, tag=i)
    core.handle(error(b"", "version", "broker speaks ZIK/2"), now=0.1)
    for i, box in enumerate(boxes):
        assert box.kinds() == [FAILED]
        assert box.events[0][0] == i and box.events[0][2].code == "version"
    assert core.pending == {}
    core.handle(error(b"", "protocol", "stray"), now=0.2)  # nothing in flight: ignored


def test_forget_stops_retries_and_drops_the_late_answer():
    core = ClientCore(["tcp://b:1"], retries=5)
    box = Box()
    rid = core.submit(call(), 1.0, 0.0, box)
    sent(core)
    core.forget(rid)
    [(_, cancel)] = outbox(core)  # the broker is told to drop it (#18.11)
    assert cancel.operation == CANCEL and decode_payload(cancel.payload).header == {"ids": [rid]}
    assert core.next_due() is None
    core.tick(100.0)
    core.handle(final(rid), now=100.0)
    assert not core.outbox and not box.events


def test_fail_all_answers_everyone_waiting():
    core = ClientCore(["tcp://b:1"])
    box = Box()
    core.submit(call(1), 5, 0.0, box)
    core.submit(call(2), 5, 0.0, box)
    core.fail_all(InputError("the client was closed", "client"))
    assert box.kinds() == [FAILED, FAILED] and core.pending == {}


def test_timer_heap_stays_bounded_under_many_answered_requests():
    core = ClientCore(["tcp://b:1"])
    box = Box()
    for i in range(20_000):
        rid = core.submit(call(), 10.0, float(i) * 1e-4, box)
        core.handle(final(rid), float(i) * 1e-4)
    core.outbox.clear()
    assert len(core._timers) <= 2 * len(core.pending) + 1025


def test_oversized_request_refused_before_it_reaches_the_outbox():
    core = ClientCore(["tcp://b:1"])
    many = {f"a{i}": np.zeros(1) for i in range(100)}
    with pytest.raises(RemoteError) as e:
        core.submit(Call("echo", "echo", {}, many), 5, 0.0, Box())
    assert e.value.code == "too_large" and not core.outbox and not core.pending


# --------------------------------------------------------------------------- batches


def parse_i(req: Request) -> int:
    from zmq_ik.protocol import decode_payload

    return int(decode_payload(req.payload).header["i"])


def test_unordered_exchange_keeps_the_window_and_yields_as_answers_come():
    core = ClientCore(["tcp://b:1"])
    ex = Exchange(core, (call(i) for i in range(7)), timeout=5.0, window=3)
    ex.fill(0.0)
    reqs = sent(core)
    assert [parse_i(r) for r in reqs] == [0, 1, 2] and ex.held == 3
    core.handle(final(reqs[2].request_id), 0.1)
    assert ex.take()[0] == 2 and ex.take() is None  # type: ignore[index]
    ex.fill(0.1)
    reqs = reqs[:2] + sent(core)
    assert [parse_i(r) for r in reqs] == [0, 1, 3]
    got = [2]
    while not ex.done:
        assert ex.held <= 3
        core.handle(final(reqs.pop().request_id), 0.2)  # newest first
        while (item := ex.take()) is not None:
            got.append(item[0])
        ex.fill(0.2)
        reqs += sent(core)
    assert got == [2, 3, 4, 5, 6, 1, 0] and core.pending == {}


def test_ordered_exchange_holds_at_most_the_window_and_yields_in_order():
    core = ClientCore(["tcp://b:1"])
    ex = Exchange(core, (call(i) for i in range(6)), timeout=5.0, window=3, ordered=True)
    ex.fill(0.0)
    r = sent(core)
    assert len(r) == 3
    core.handle(final(r[2].request_id), 0.1)
    core.handle(final(r[1].request_id), 0.1)
    assert ex.take() is None  # 0 not answered: nothing to yield...
    ex.fill(0.1)
    assert sent(core) == [] and ex.held == 3  # ...and nothing more sent: 1 and 2 are held
    core.handle(final(r[0].request_id), 0.2)
    assert [ex.take()[0], ex.take()[0], ex.take()[0]] == [0, 1, 2]  # type: ignore[index]
    ex.fill(0.2)
    r = sent(core)
    assert [parse_i(x) for x in r] == [3, 4, 5]
    for x in reversed(r):
        core.handle(final(x.request_id), 0.3)
    assert [ex.take()[0] for _ in range(3)] == [3, 4, 5]  # type: ignore[index]
    assert ex.take() is None
    ex.fill(0.3)
    assert ex.done


def test_ordered_failure_raises_after_every_earlier_answer_and_sends_nothing_after_it():
    core = ClientCore(["tcp://b:1"])
    ex = Exchange(core, (call(i) for i in range(10)), timeout=5.0, window=4, ordered=True)
    ex.fill(0.0)
    r = sent(core)
    core.handle(error(r[2].request_id, "bad_request", "chunk 2 is bad", "coords"), 0.1)
    core.handle(final(r[3].request_id), 0.1)
    core.handle(final(r[1].request_id), 0.1)
    assert ex.take() is None
    ex.fill(0.1)
    assert sent(core) == []  # a failure is known: nothing more goes out
    core.handle(final(r[0].request_id), 0.2)
    assert ex.take()[0] == 0 and ex.take()[0] == 1  # type: ignore[index]
    with pytest.raises(RemoteError) as e:
        ex.take()
    assert e.value.field == "coords"
    ex.abandon()
    assert core.pending == {}


def test_ordered_failure_to_build_a_call_raises_in_its_turn():
    def calls():
        yield call(0)
        yield Call("echo", "echo", {}, {f"a{i}": np.zeros(1) for i in range(100)})  # too large
        yield call(2)

    core = ClientCore(["tcp://b:1"])
    ex = Exchange(core, calls(), timeout=5.0, window=4, ordered=True)
    ex.fill(0.0)
    r = sent(core)
    assert len(r) == 1
    core.handle(final(r[0].request_id), 0.1)
    assert ex.take()[0] == 0  # type: ignore[index]
    with pytest.raises(RemoteError, match="too_large"):
        ex.take()


def test_abandoned_exchange_forgets_everything_it_held():
    core = ClientCore(["tcp://b:1"], retries=3)
    ex = Exchange(core, (call(i) for i in range(10)), timeout=1.0, window=4, ordered=True)
    ex.fill(0.0)
    r = sent(core)
    core.handle(final(r[1].request_id), 0.1)
    ex.abandon()
    assert core.pending == {} and ex.done
    [(_, cancel)] = outbox(core)  # one cancel for the unanswered three, none for the answered
    held = [r[i].request_id for i in (0, 2, 3)]
    assert cancel.operation == CANCEL and decode_payload(cancel.payload).header["ids"] == held
    core.tick(1e6)
    core.handle(final(r[0].request_id), 1e6)
    ex.fill(1e6)
    assert not core.outbox and ex.take() is None


def test_exchange_partials_run_their_callbacks():
    seen: list[tuple[int, int]] = []
    calls = [call(i, on_partial=lambda p, i=i: seen.append((i, p.header["n"]))) for i in range(2)]
    core = ClientCore(["tcp://b:1"])
    ex = Exchange(core, calls, timeout=5.0)
    ex.fill(0.0)
    r = sent(core)
    core.handle(partial(r[1].request_id, n=7), 0.1)
    core.handle(partial(r[0].request_id, n=8), 0.1)
    core.handle(final(r[0].request_id), 0.1)
    assert ex.take()[0] == 0 and seen == [(1, 7), (0, 8)]  # type: ignore[index]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", None])
def test_window_must_be_a_positive_integer(bad):
    with pytest.raises(InputError) as e:
        Exchange(ClientCore(["tcp://b:1"]), [], timeout=1.0, window=bad)
    assert e.value.field == "max_in_flight" and ">= 1" in str(e.value)


# --------------------------------------------------------------------------- stroke jobs


def test_chunk_plan_starts_with_one_pair_and_doubles_to_the_largest():
    chunks = plan_chunks(1000)
    sizes = [b - a for a, b in chunks]
    assert sizes[:8] == [1, 2, 4, 8, 16, 32, 64, 64] and max(sizes) == DEFAULT_CHUNK_PAIRS
    assert chunks[0][0] == 0 and chunks[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert plan_chunks(3) == [(0, 1), (1, 3)]
    assert plan_chunks(0) == [(0, 0)] and plan_chunks(0, 5) == [(0, 0)]
    assert plan_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_chunks(100, largest=8)[-2:] == [(87, 95), (95, 100)]  # 1+2+4, then 8s
    for bad in (0, -3, 2.0, True):
        with pytest.raises(InputError, match="chunk_pairs"):
            plan_chunks(10, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("pairs", [1, 2, 9])
@pytest.mark.parametrize("chunk_pairs", [None, 1, 4, 100])
def test_stroke_job_applies_first_last_rest_to_the_whole_job_then_chunks(pairs, chunk_pairs):
    """Chunks carry exactly the whole job's packed arrays, rest flags included (the first
    chunk is packed on its own, before the rest of the job)."""
    scene_path, strokes_path = example_paths()
    scene = Scene.from_yaml(scene_path)
    assert scene.first_last_rest
    strokes = StrokeList.from_yaml(strokes_path, stroke_length=scene.stroke_length)[:pairs]
    job = StrokeJob(scene, strokes, chunk_pairs)
    whole = ops.apply_first_last_rest(strokes.pack(scene.stroke_length), scene)
    if (pairs, chunk_pairs) == (9, None):
        assert job.chunks == [(0, 1), (1, 3), (3, 7), (7, 9)]
    assert job.poses == pairs * scene.stroke_length * scene.offset_num
    calls = list(job.calls())
    assert len(calls) == len(job.chunks)
    for name in ("coords", "is_inkdip", "is_rest"):
        joined = np.concatenate([c.arrays[name] for c in calls])
        np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
    assert whole.is_rest[0, 1] and whole.is_rest[-1, 0]


def test_stroke_job_refuses_an_answer_of_the_wrong_size():
    scene_path, strokes_path = example_paths()
    scene = Scene.from_yaml(scene_path)
    strokes = StrokeList.from_yaml(strokes_path, stroke_length=scene.stroke_length)[:3]
    job = StrokeJob(scene, strokes)
    n, o = scene.stroke_length, scene.offset_num

    def reply(b: int) -> Any:
        from zmq_ik.protocol import Payload

        z = np.zeros((b, n, o, 1), np.float32)
        arrays = dict(
            ee_pos_l=np.zeros((b, n, o, 3)),
            ee_pos_r=np.zeros((b, n, o, 3)),
            ee_rot_l=np.zeros((b, n, o, 4)),
            ee_rot_r=np.zeros((b, n, o, 4)),
            joints=np.zeros((b, n, o, 14)),
            pos_err=np.concatenate([z, z], -1),
            ori_err=np.concatenate([z, z], -1),
        )
        return Payload({}, {k: np.asarray(v, np.float32) for k, v in arrays.items()})

    start, part = job.part(1, reply(2))
    assert start == 1 and isinstance(part, StrokeBatch) and len(part) == 2
    with pytest.raises(ProtocolError, match=r"pairs 1:3 has shape \(3,"):
        job.part(1, reply(3))
    with pytest.raises(ProtocolError, match="lacks"):
        job.part(0, type(reply(1))({}, {}))


def test_stroke_job_checks_its_arguments():
    with pytest.raises(InputError, match="scene"):
        StrokeJob("scene.yaml", StrokeList([]))  # type: ignore[arg-type]
    scene = Scene.from_yaml(example_paths()[0])
    with pytest.raises(InputError, match="strokes"):
        StrokeJob(scene, [])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("bad", ["gpu-host:5555", "127.0.0.1:5555", "localhost"])
def test_endpoint_without_a_transport_says_what_to_write(bad):
    with pytest.raises(InputError) as e:
        check_endpoint(bad)
    assert "tcp://host:port" in str(e.value) and e.value.field == "endpoint"
    assert f"tcp://{bad}" in str(e.value)


@pytest.mark.parametrize("bad", ["", "  ", None, 5555, "http://gpu-host:5555", "tcp://"])
def test_endpoint_that_is_no_zeromq_endpoint_is_refused(bad):
    with pytest.raises(InputError, match="tcp://host:port"):
        check_endpoint(bad)


def test_default_endpoint_is_read_when_asked_not_at_import(monkeypatch):
    monkeypatch.delenv("ZMQ_IK_ENDPOINT", raising=False)
    assert default_endpoint() == "tcp://127.0.0.1:5555"
    monkeypatch.setenv("ZMQ_IK_ENDPOINT", "tcp://gpu-host:6000")
    assert default_endpoint() == "tcp://gpu-host:6000"
    monkeypatch.setenv("ZMQ_IK_ENDPOINT", "")
    assert default_endpoint() == "tcp://127.0.0.1:5555"


def test_counts_are_positive_integers():
    assert check_count(np.int64(3), "n") == 3 and check_count(1, "n") == 1
    for bad in (0, -1, 2.5, True, "2", None):
        with pytest.raises(InputError, match="n must be an integer >= 1"):
            check_count(bad, "n")
