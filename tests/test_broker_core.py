"""BrokerCore without sockets: routing, LRU, in-flight tracking, retries, timers.

The core is driven with an explicit clock, so every timing rule is checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import final, wire

from zmq_ik import protocol as proto
from zmq_ik.broker import BrokerCore, BrokerSettings, _warming


class Harness:
    def __init__(self, **settings):
        self.core = BrokerCore(BrokerSettings(**settings), now=0.0)
        self.now = 0.0

    def send(self, identity: bytes, frames) -> None:
        self.core.handle(identity, wire(frames), self.now)

    def tick(self, dt: float = 0.0) -> None:
        self.now += dt
        self.core.tick(self.now)

    def drain(self):
        out = []
        while self.core.outbox:
            identity, frames = self.core.outbox.popleft()
            out.append((identity, proto.parse_message(wire(frames))))
        return out

    def ready(self, worker: bytes, robots=("tatbot",), confirm: bool = True, features=()) -> None:
        """READY, and (``confirm``) the HEARTBEAT a real worker answers its ack with."""
        info = {"robots": list(robots), "device": "cpu", "features": list(features)}
        self.send(worker, proto.ready_frames(info))
        # A READY is acknowledged at once with a HEARTBEAT (the worker's backoff resets on it).
        acks = [m for m in self.core.outbox if m[0] == worker and m[1][1] == b"HEARTBEAT"]
        assert len(acks) == 1, acks
        self.core.outbox.remove(acks[0])
        if confirm:
            self.send(worker, proto.heartbeat_frames())

    def request(self, client: bytes, rid: bytes, robot="tatbot", timeout_ms=1000, header=None):
        self.send(
            client,
            proto.request_frames(
                rid, robot, "solve", timeout_ms, proto.encode_payload(header or {})
            ),
        )


def jobs_sent(msgs):
    return [(i, m) for i, m in msgs if isinstance(m, proto.Request)]


def errors(msgs):
    return [
        (i, m.request_id, proto.decode_error(m.payload)[0])
        for i, m in msgs
        if isinstance(m, proto.Reply) and m.command is proto.Command.ERROR
    ]


def test_request_routed_to_worker_and_answer_back_with_client_id():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C1", b"r1", header={"x": 1})
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1" and job.service == "tatbot" and job.request_id != b"r1"
    assert proto.decode_payload(job.payload).header == {"x": 1}
    h.send(
        b"W1",
        final(job.request_id, ok=True),
    )
    [(to, reply)] = h.drain()
    assert to == b"C1" and reply.command is proto.Command.FINAL and reply.request_id == b"r1"
    assert h.core.status(h.now)["workers"][0]["served"] == 1


def test_lru_idle_workers_first():
    h = Harness()
    for w in (b"W1", b"W2", b"W3"):
        h.ready(w)
    order = []
    for i in range(6):
        h.request(b"C", b"r%d" % i)
        [(to, job)] = jobs_sent(h.drain())
        order.append(to)
        h.send(to, final(job.request_id))
        h.drain()
    assert order == [b"W1", b"W2", b"W3", b"W1", b"W2", b"W3"]


def test_only_workers_serving_the_robot_get_its_jobs():
    h = Harness()
    h.ready(b"W1", ["other"])
    h.ready(b"W2", ["tatbot"])
    h.request(b"C", b"r")
    [(to, _)] = jobs_sent(h.drain())
    assert to == b"W2"


def test_request_waits_for_a_worker_then_is_served():
    h = Harness()
    h.request(b"C", b"r", timeout_ms=5000)
    h.tick(1.0)
    assert jobs_sent(h.drain()) == []
    h.ready(b"W1")
    [(to, _)] = jobs_sent(h.drain())
    assert to == b"W1"


def test_unknown_robot_error_at_deadline_naming_the_robot():
    h = Harness()
    h.request(b"C", b"r", robot="nobot", timeout_ms=500)
    h.tick(0.4)
    assert errors(h.drain()) == []
    h.tick(0.2)
    msgs = h.drain()
    assert errors(msgs) == [(b"C", b"r", "unknown_robot")]
    assert "nobot" in proto.decode_error(msgs[0][1].payload)[1]


def test_busy_workers_give_timeout_not_unknown_robot():
    h = Harness(heartbeat_interval=10)
    h.ready(b"W1")
    h.request(b"C", b"r1", timeout_ms=10_000)
    h.request(b"C", b"r2", timeout_ms=500)
    h.drain()
    h.tick(0.6)
    assert errors(h.drain()) == [(b"C", b"r2", "timeout")]


def w1_forgotten_its_job_at_w2(h: Harness) -> tuple[proto.Request, proto.Request]:
    """W1 takes a job and goes silent; W2 heartbeats: W1 is forgotten, its job goes to W2.
    The job as W1 got it, and as W2 got it."""
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=10_000)
    [(_, job)] = jobs_sent(h.drain())
    h.ready(b"W2")
    for _ in range(5):
        h.tick(0.25)
        h.send(b"W2", proto.heartbeat_frames())
    [(to, job2)] = jobs_sent(h.drain())
    assert to == b"W2" and job2.request_id == job.request_id
    return job, job2


def test_dead_worker_job_goes_to_another_and_is_answered_once():
    h = Harness()
    job, job2 = w1_forgotten_its_job_at_w2(h)
    assert h.core.counters["retries"] == 1
    h.send(
        b"W2",
        final(job2.request_id, who=2),
    )
    # W1 was only frozen: it comes back with a late answer, which must not reach the client.
    h.send(
        b"W1",
        final(job.request_id, who=1),
    )
    replies = [(i, m) for i, m in h.drain() if isinstance(m, proto.Reply)]
    assert [(i, proto.decode_payload(m.payload).header) for i, m in replies] == [(b"C", {"who": 2})]
    assert h.core.counters["late_replies_dropped"] == 1


def test_a_forgotten_workers_late_timeout_does_not_fail_the_attempt_another_runs():
    h = Harness()
    job, job2 = w1_forgotten_its_job_at_w2(h)
    h.send(b"W1", proto.error_frames(job.request_id, proto.ErrorCode.TIMEOUT, "too late"))
    assert errors(h.drain()) == [] and h.core.counters["late_replies_dropped"] == 1
    h.send(b"W2", final(job2.request_id, who=2))
    replies = [m for i, m in h.drain() if isinstance(m, proto.Reply)]
    assert [proto.decode_payload(m.payload).header for m in replies] == [{"who": 2}]


def test_disconnect_requeues_at_once_and_retries_are_bounded():
    h = Harness(max_retries=1)
    h.request(b"C", b"r", timeout_ms=10_000)
    for w in (b"W1", b"W2"):
        h.ready(w)
        assert jobs_sent(h.drain())
        h.send(w, proto.disconnect_frames("bye"))
    assert errors(h.drain()) == [(b"C", b"r", "worker_lost")]


def test_client_retry_with_same_id_is_not_run_twice():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"r")
    h.request(b"C", b"r")
    assert len(jobs_sent(h.drain())) == 1
    assert h.core.counters["duplicate_requests"] == 1


def test_queue_full_gives_overloaded_at_once():
    h = Harness(max_queue=2)
    for i in range(3):
        h.request(b"C", b"r%d" % i)
    assert errors(h.drain()) == [(b"C", b"r2", "overloaded")]


def test_heartbeats_sent_and_unknown_heartbeat_gets_disconnect():
    h = Harness()
    h.ready(b"W1")
    h.tick(0.3)
    assert any(i == b"W1" and type(m).__name__ == "Heartbeat" for i, m in h.drain())
    h.send(b"STRANGER", proto.heartbeat_frames())
    [(to, msg)] = h.drain()
    assert to == b"STRANGER" and type(msg).__name__ == "Disconnect"


WORD = proto.WATCH + "0123456789abcdef"


def watched(h: Harness, worker: bytes, watch: bytes) -> None:
    """READY listing a watch word, then the watch connection saying it (`protocol.WATCH`)."""
    h.ready(worker, features=[WORD])
    h.send(watch, proto.heartbeat_frames(WORD))
    assert h.core.watches == {watch: worker}


def test_a_silent_watched_worker_is_slow_not_dead_until_watched_silence():
    """Issue 27.1: a worker whose watch stands (its death would drop it, and the next
    HEARTBEAT sent there would be undeliverable) is not declared dead for its own silence
    (a starved host) until `watched_silence`; one without a watch still is after the
    liveness window (1 s). Only while silent is its watch sent anything."""
    h = Harness(watched_silence=5.0)
    h.ready(b"OLD")
    watched(h, b"NEW", b"WATCH")
    assert not h.drain()  # (the watch is not answered: it only ever gets heartbeats)
    for _ in range(12):  # 3 s of silence from both, the broker heartbeating every 0.25 s
        h.tick(0.25)
    to = [i for i, m in h.drain() if isinstance(m, proto.Heartbeat)]
    assert set(h.core.workers) == {b"NEW"} and h.core.counters["workers_lost"] == 1
    assert to.count(b"NEW") == 12 and 7 <= to.count(b"WATCH") <= 9  # silent > 1 s: asked
    h.send(b"NEW", proto.heartbeat_frames())  # late, but alive: it gets jobs
    h.request(b"C", b"r")
    [(to_w, job)] = jobs_sent(h.drain())
    assert to_w == b"NEW"
    h.send(b"NEW", final(job.request_id))
    for _ in range(19):  # now silent for good, watch up (hung): dead after 5 s
        h.tick(0.25)
    assert b"NEW" in h.core.workers
    h.tick(0.5)
    assert not h.core.workers and not h.core.watches
    assert h.core.counters["workers_lost"] == 2


def test_a_watched_worker_whose_watch_drops_is_forgotten_and_its_job_runs_elsewhere():
    h = Harness()
    watched(h, b"W", b"WATCH")
    h.request(b"C", b"r", timeout_ms=10_000)
    h.drain()
    for _ in range(5):  # stopped: silent, and its watch asked
        h.tick(0.25)
    [(to, frames)] = [(i, f) for i, f in h.core.outbox if i == b"WATCH"]
    h.core.outbox.clear()
    h.core.undelivered(to, frames, h.now)  # libzmq dropped it (TTL, or TCP closed)
    assert not h.core.workers and not h.core.watches
    assert h.core.counters["workers_unreachable"] == 1
    h.ready(b"W2")
    assert [to for to, _ in jobs_sent(h.drain())] == [b"W2"]  # its job runs elsewhere at once


def test_a_watch_word_nobody_registered_or_already_watched_gets_nothing():
    h = Harness()
    h.send(b"X", proto.heartbeat_frames(WORD))  # nobody listed it: a stranger, told to register
    [(to, msg)] = h.drain()
    assert to == b"X" and isinstance(msg, proto.Disconnect)
    watched(h, b"W", b"WATCH")
    h.send(b"THIEF", proto.heartbeat_frames(WORD))  # a second claim changes nothing
    assert h.core.watches == {b"WATCH": b"W"}
    h.ready(b"W3", features=[WORD])  # nor does another READY with the same word
    h.send(b"W3-WATCH", proto.heartbeat_frames(WORD))
    assert h.core.watches == {b"WATCH": b"W"} and h.core.workers[b"W3"].watch_word is None


def test_malformed_messages_are_rejected_and_counted():
    h = Harness()
    for frames in (
        [b"junk"],
        [b"ZIK/2", b"REQUEST"],
        [b"ZIK/1", b"NOPE"],
        [b"ZIK/1", b"REQUEST", b"id"],
    ):
        h.send(b"ROGUE", frames)
    codes = [c for _, _, c in errors(h.drain())]
    assert codes == ["protocol", "version", "protocol", "protocol"]
    assert h.core.rejects == {"protocol": 3, "version": 1}


def test_management_ping_and_status():
    h = Harness()
    h.ready(b"W1")
    h.send(
        b"C",
        proto.request_frames(b"p", proto.BROKER_SERVICE, "ping", 1000, proto.encode_payload({})),
    )
    h.send(
        b"C",
        proto.request_frames(b"s", proto.BROKER_SERVICE, "status", 1000, proto.encode_payload({})),
    )
    h.send(
        b"C",
        proto.request_frames(b"x", proto.BROKER_SERVICE, "explode", 1000, proto.encode_payload({})),
    )
    msgs = h.drain()
    ping = proto.decode_payload(msgs[0][1].payload).header
    assert ping["workers"][0]["robots"] == ["tatbot"] and ping["protocol"] == "ZIK/1"
    status = proto.decode_payload(msgs[1][1].payload).header
    assert {"queues", "in_flight", "counters", "errors", "rejects"} <= set(status)
    assert errors(msgs) == [(b"C", b"x", "unknown_operation")]


def test_shutdown_refuses_new_work_and_answers_queued():
    h = Harness()
    h.request(b"C", b"queued", timeout_ms=10_000)
    h.core.begin_shutdown(h.now)
    h.request(b"C", b"late")
    assert errors(h.drain()) == [
        (b"C", b"queued", "shutting_down"),
        (b"C", b"late", "shutting_down"),
    ]


@pytest.mark.parametrize("timeout_ms", [0, 1])
def test_expired_in_flight_job_answered_timeout_then_worker_reply_dropped(timeout_ms):
    h = Harness(heartbeat_interval=10)
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=timeout_ms)
    [(_, job)] = jobs_sent(h.drain())
    h.tick(0.01)
    assert errors(h.drain()) == [(b"C", b"r", "timeout")]
    h.send(b"W1", final(job.request_id))
    assert [m for _, m in h.drain() if isinstance(m, proto.Reply)] == []
    h.request(b"C", b"r2")
    assert jobs_sent(h.drain())  # the worker is idle again


# --------------------------------------------------------------------------- issue #13


def replies(msgs):
    return [(i, m.request_id, m.command.name) for i, m in msgs if isinstance(m, proto.Reply)]


def test_after_a_stall_queued_messages_are_read_before_workers_or_deadlines_are_judged():
    # The loop's usual order after a stall: one message, then a tick, then the rest.
    h = Harness()
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C", b"r", timeout_ms=3000)
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1"
    h.now += 5.0  # the broker was stopped; W1 answered, the client retried meanwhile
    h.send(b"W2", proto.heartbeat_frames())
    h.tick()
    h.send(b"W1", proto.heartbeat_frames())
    h.send(b"W1", final(job.request_id))
    h.request(b"C", b"r", timeout_ms=3000)
    h.tick(0.3)  # past the hold: nothing left to judge
    msgs = h.drain()
    assert replies(msgs) == [(b"C", b"r", "FINAL")]
    assert jobs_sent(msgs) == []  # the retry was not run again
    assert h.core.counters["stalls"] == 1
    assert h.core.counters["workers_lost"] == 0 and len(h.core.workers) == 2
    assert h.core.counters["duplicate_requests"] == 1


def test_after_a_stall_a_retry_read_within_the_hold_saves_a_queued_job_from_its_deadline():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"busy", timeout_ms=60_000)
    h.request(b"C", b"r", timeout_ms=3000)  # waits behind "busy"
    h.drain()
    h.now += 5.0
    h.tick()  # deadline of "r" passed during the stall: not judged yet
    assert errors(h.drain()) == []
    h.request(b"C", b"r", timeout_ms=3000)  # its retry, queued during the stall
    h.tick(0.3)
    assert errors(h.drain()) == []
    for _ in range(12):  # the extended deadline holds: W1 is still busy after it
        h.send(b"W1", proto.heartbeat_frames())
        h.tick(0.25)
    assert errors(h.drain()) == [(b"C", b"r", "timeout")]


def test_a_job_dispatched_within_a_stalls_hold_gets_the_hold_as_its_deadline():
    """Its retry (queued during the stall) may not be read yet: the worker must not get the
    deadline that passed while the broker was stopped (1 ms, then a certain `timeout`)."""
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"busy", timeout_ms=60_000)
    h.request(b"C", b"r", timeout_ms=3000)  # waits behind "busy"
    ((_, busy),) = jobs_sent(h.drain())
    h.now += 5.0
    h.send(
        b"W1", proto.reply_frames(proto.Command.FINAL, busy.request_id, proto.encode_payload({}))
    )
    ((_, job),) = jobs_sent(h.drain())
    assert job.timeout_ms >= 200  # the hold: one heartbeat interval (250 ms) from the stall


def test_a_worker_timeout_by_a_deadline_a_retry_extended_runs_the_job_again():
    """After a broker stall, a job re-queued from a lost worker went out with its old
    deadline (1 ms left) just before the client's retry extending it was read: the worker's
    `timeout` then must not fail a request the client still waits for (test_faults'
    5 s SIGSTOP failed 1 run in 3 so). A `timeout` by the deadline that still holds is
    the answer."""
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=1000)
    ((_, job),) = jobs_sent(h.drain())
    h.tick(0.9)
    h.request(b"C", b"r", timeout_ms=1000)  # the client's retry: deadline now 1.9 s
    h.drain()
    h.tick(0.2)  # the worker's deadline (1.0 s) passed
    h.send(b"W1", proto.error_frames(job.request_id, proto.ErrorCode.TIMEOUT, "deadline passed"))
    msgs = h.drain()
    assert errors(msgs) == []  # not failed: sent again, with the deadline that holds
    ((_, again),) = jobs_sent(msgs)
    assert again.request_id == job.request_id and 700 <= again.timeout_ms <= 800
    assert h.core.counters["retimed"] == 1
    h.tick(0.85)
    h.send(b"W1", proto.error_frames(job.request_id, proto.ErrorCode.TIMEOUT, "deadline passed"))
    assert errors(h.drain()) == [(b"C", b"r", "timeout")]


def test_a_retry_arriving_after_its_answer_is_not_run_again_until_the_horizon():
    h = Harness(heartbeat_interval=10)
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=2000)
    [(_, job)] = jobs_sent(h.drain())
    h.send(b"W1", final(job.request_id))
    assert replies(h.drain()) == [(b"C", b"r", "FINAL")]
    h.tick(1.5)
    h.request(b"C", b"r", timeout_ms=2000)  # crossed the answer
    assert h.drain() == [] and h.core.counters["duplicate_requests"] == 1
    h.tick(1.0)  # past the horizon (the request's own timeout): a new request after all
    h.request(b"C", b"r", timeout_ms=2000)
    assert len(jobs_sent(h.drain())) == 1


def test_an_answer_that_could_not_be_delivered_is_forgotten_so_the_retry_runs():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"r")
    [(_, job)] = jobs_sent(h.drain())
    h.send(b"W1", final(job.request_id))
    [(to, frames)] = list(h.core.outbox)
    h.core.outbox.clear()
    h.core.undelivered(to, frames, h.now)  # the loop's send raised (client unroutable)
    h.request(b"C", b"r")
    assert len(jobs_sent(h.drain())) == 1
    assert h.core.counters["unroutable"] == 1


def test_after_worker_lost_the_clients_retry_runs():
    h = Harness(max_retries=0)
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=10_000)
    h.drain()
    h.send(b"W1", proto.disconnect_frames("bye"))
    assert errors(h.drain()) == [(b"C", b"r", "worker_lost")]
    h.ready(b"W2")
    h.request(b"C", b"r", timeout_ms=10_000)  # worker_lost is retryable: it must run
    assert [to for to, _ in jobs_sent(h.drain())] == [b"W2"]


def test_unreachable_worker_is_forgotten_and_its_undelivered_job_costs_no_attempt():
    h = Harness(max_retries=0)
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C", b"r")
    [(to, frames)] = list(h.core.outbox)
    h.core.outbox.clear()
    assert to == b"W1"
    h.core.undelivered(to, frames, h.now)  # its connection is gone
    [(to2, _)] = jobs_sent(h.drain())
    assert to2 == b"W2"  # not worker_lost: the job never reached W1
    assert set(h.core.workers) == {b"W2"}
    assert h.core.counters["workers_unreachable"] == 1


def _at_limit_ready(i: int) -> dict:
    return {
        "robots": [f"{i}-{j:02d}".ljust(128, "r") for j in range(64)],
        "device": "d" * 256,
        "host": "h" * 256,
        "pid": i,
        "versions": {f"v{k:02d}".ljust(64, "k"): "9" * 64 for k in range(16)},
        "capacity": 1,
    }


@pytest.mark.parametrize(
    ("info", "field"),
    [
        ({"robots": [f"r{i}" for i in range(65)]}, "robots"),
        ({"robots": ["tatbot"], "device": "d" * 600_000}, "device"),
        ({"robots": ["tatbot"], "operations": ["x" * 100] * 200}, "header"),
        ({"robots": ["tatbot"], "device": "d" * 257}, "device"),
        ({"robots": ["tatbot"], "host": "h" * 257}, "host"),
        ({"robots": ["tatbot"], "versions": {f"p{i}": "1" for i in range(17)}}, "versions"),
        ({"robots": ["tatbot"], "versions": {"jax": "1" * 65}}, "versions"),
        ({"robots": ["r" * 129]}, "robots"),
        ({"robots": ["tatbot"], "pid": "twelve"}, "pid"),
    ],
)
def test_over_limit_ready_refused_naming_the_field(info, field):
    h = Harness()
    h.send(b"ROGUE", proto.ready_frames(info))
    [(to, msg)] = h.drain()
    assert to == b"ROGUE" and msg.command is proto.Command.ERROR
    code, text, fld = proto.decode_error(msg.payload)
    assert fld == field and code in ("too_large", "protocol"), text
    assert h.core.workers == {}


def test_workers_at_every_ready_limit_keep_ping_and_status_within_limits():
    h = Harness()
    for i in range(100):  # ~10 KiB each when listed: more than one header holds
        h.send(b"W%03d" % i, proto.ready_frames(_at_limit_ready(i)))
    h.ready(b"GOOD")
    h.drain()  # the READY acknowledgements
    for op in ("ping", "status"):
        h.send(
            b"C",
            proto.request_frames(b"m", proto.BROKER_SERVICE, op, 1000, proto.encode_payload({})),
        )
        [(_, msg)] = h.drain()
        assert msg.command is proto.Command.FINAL
        body = proto.decode_payload(msg.payload).header
        assert body["workers_total"] == 101
        assert 0 < len(body["workers"]) < 101
        assert body["workers_omitted"] == 101 - len(body["workers"])
    assert body["robots_omitted"] > 0 and len(body["robots"]) <= 256


def test_dispatch_cost_does_not_grow_with_the_robots_a_worker_claims():
    h = Harness()
    h.ready(b"W1", ["tatbot", *(f"r{i}" for i in range(63))])
    calls = []
    dispatch = h.core._dispatch
    h.core._dispatch = lambda robot, now: (calls.append(robot), dispatch(robot, now))
    for i in range(3):
        h.request(b"C", b"r%d" % i)
        [(_, job)] = jobs_sent(h.drain())
        h.send(b"W1", final(job.request_id))
        h.drain()
    # one per request; releasing the worker looks only at robots with waiting jobs
    assert calls == ["tatbot"] * 3


def test_byte_budget_refuses_at_once_and_frees_when_jobs_leave():
    h = Harness(max_queued_bytes=10_000)
    h.ready(b"W1")
    blob = proto.encode_payload({}, {"x": np.zeros(6000, np.uint8)})
    h.send(b"C", proto.request_frames(b"a", "tatbot", "solve", 10_000, blob))
    h.send(b"C", proto.request_frames(b"b", "tatbot", "solve", 10_000, blob))
    msgs = h.drain()
    [(_, job)] = jobs_sent(msgs)
    [(_, rid, code)] = errors(msgs)
    assert (rid, code) == (b"b", "overloaded")
    assert "max_queued_bytes" in proto.decode_error(msgs[-1][1].payload)[1]
    held = h.core.jobs[job.request_id]
    assert h.core.queued_bytes > 6000
    h.send(b"W1", final(job.request_id))
    h.drain()
    assert h.core.queued_bytes == 0 and held.payload == [] and h.core.freed_bytes > 6000
    h.send(b"C", proto.request_frames(b"c", "tatbot", "solve", 10_000, blob))
    assert jobs_sent(h.drain())


KIB = 1024
MIB = 1024 * KIB


class Tracker:
    """What the loop puts on a `Receipt`: pyzmq's MessageTracker, ``done`` once libzmq let go
    of the message (here set by the test, as the client reads or leaves)."""

    def __init__(self) -> None:
        self.done = False


def hand_over(h: Harness, client: bytes) -> list[Tracker]:
    """What the loop does with the tracked messages to ``client`` in the outbox: a tracker
    each (not done: the client has not read them)."""
    trackers = []
    for receipt in h.core.clients.accounts[client].receipts:
        if receipt.tracker is None:
            receipt.tracker = Tracker()
            trackers.append(receipt.tracker)
    return trackers


def echo_reply(rid: bytes, nbytes: int) -> list:
    return proto.reply_frames(
        proto.Command.FINAL, rid, proto.encode_payload({}, {"x": np.zeros(nbytes, np.uint8)})
    )


def serve(h: Harness, client: bytes, rid: bytes, reply_bytes: int, request_bytes: int = 0):
    """``client`` asks for ``rid``; the worker W1 answers ``reply_bytes``; what ``client``
    was sent."""
    blob = proto.encode_payload({}, {"x": np.zeros(request_bytes, np.uint8)})
    h.send(client, proto.request_frames(rid, "tatbot", "solve", 10_000, blob))
    msgs = h.drain()
    for _, job in jobs_sent(msgs):
        h.send(b"W1", echo_reply(job.request_id, reply_bytes))
        msgs += h.drain()
    return [(to, m) for to, m in msgs if to == client]


def test_unread_replies_count_per_client_until_zeromq_lets_go():
    """#25.3: a client that does not read its replies is refused new requests once its
    share is held (`overloaded`, saying why); another client is served meanwhile; once
    ZeroMQ let go of the replies (read, or dropped with the client) it is served again."""
    h = Harness(max_client_bytes=1 * MIB)
    h.ready(b"W1")
    for i in range(3):  # 3 x 300 KiB replies: 900 KiB unread of its 1 MiB share
        [(_, reply)] = serve(h, b"slow", b"r%d" % i, 300 * KIB)
        assert reply.command is proto.Command.FINAL
    trackers = hand_over(h, b"slow")
    assert len(trackers) == 3 and h.core.clients.unread > 900 * KIB
    assert h.core.status(h.now)["unread_bytes"] == h.core.clients.unread
    msgs = serve(h, b"slow", b"r3", 300 * KIB, request_bytes=200 * KIB)
    [(to, rid, code)] = errors(msgs)
    assert (to, rid, code) == (b"slow", b"r3", "overloaded")
    text = proto.decode_error(msgs[0][1].payload)[1]
    assert "replies it has not read" in text and "max_client_bytes" in text, text
    [(_, other)] = serve(h, b"fast", b"r", 300 * KIB)  # another client: its own share
    assert other.command is proto.Command.FINAL
    freed = h.core.freed_bytes
    for t in trackers:
        t.done = True  # the slow client read them (or left: libzmq dropped them)
    h.tick(1.0)
    assert h.core.clients.unread < 400 * KIB  # (the fast client's reply is still out)
    assert h.core.freed_bytes - freed >= 900 * KIB  # the loop trims the heap on this
    [(_, again)] = serve(h, b"slow", b"r4", 300 * KIB)
    assert again.command is proto.Command.FINAL


def test_a_reply_past_the_share_is_dropped_and_the_request_answered_overloaded():
    """A reply that would pass its client's share (here: far larger than its request) is
    not queued: the client gets `overloaded` for that request, counted."""
    h = Harness(max_client_bytes=1 * MIB)
    h.ready(b"W1")
    [(_, ok)] = serve(h, b"C", b"a", 600 * KIB)
    assert ok.command is proto.Command.FINAL
    hand_over(h, b"C")
    msgs = serve(h, b"C", b"b", 600 * KIB)
    assert errors(msgs) == [(b"C", b"b", "overloaded")]
    assert "(dropped)" in proto.decode_error(msgs[0][1].payload)[1]
    assert h.core.counters["replies_dropped_unread"] == 1
    assert h.core.jobs == {} and h.core.queued_bytes == 0
    h.send(b"C", proto.request_frames(b"b", "tatbot", "solve", 10_000, proto.encode_payload({})))
    assert h.drain() == []  # answered (overloaded): its retry is a duplicate, not run again


def test_unread_replies_share_the_broker_budget_with_queued_requests():
    """`max_queued_bytes` counts unread replies with open requests: what one client leaves
    unread is room another's requests do not get."""
    h = Harness(max_queued_bytes=1 * MIB, max_client_bytes=1 * MIB)
    h.ready(b"W1")
    for i in range(3):
        serve(h, b"slow", b"r%d" % i, 300 * KIB)
    hand_over(h, b"slow")
    msgs = serve(h, b"other", b"r", 0, request_bytes=200 * KIB)
    [(_, _, code)] = errors(msgs)
    assert code == "overloaded"
    assert "requests and unread replies" in proto.decode_error(msgs[0][1].payload)[1]


def test_small_replies_are_tracked_one_in_64_kib_and_a_failed_send_is_not_held():
    """Tracking a message costs tens of µs, so small replies are tracked together: one
    message per 64 KiB handed, covering those before it. A tracked message the loop could
    not send is not held; the bytes before it wait for the next tracked one."""
    from zmq_ik.broker._jobs import TRACKED_BYTES, Tracked

    h = Harness()
    h.ready(b"W1")
    for i in range(40):  # 40 x 5 KiB: 200 KiB, three tracked messages
        [(_, reply)] = serve(h, b"C", b"r%d" % i, 5 * KIB)
        assert reply.command is proto.Command.FINAL
    account = h.core.clients.accounts[b"C"]
    tracked = len(account.receipts)
    assert tracked == 3 and account.residue < TRACKED_BYTES
    assert account.unread + account.residue >= 200 * KIB
    h.send(b"C", proto.request_frames(b"x", "tatbot", "solve", 10_000, proto.encode_payload({})))
    [(_, job)] = jobs_sent(h.drain())
    h.send(b"W1", echo_reply(job.request_id, 100 * KIB))
    [(to, frames)] = list(h.core.outbox)
    assert type(frames) is Tracked
    h.core.outbox.clear()
    before = account.unread
    h.core.undelivered(to, frames, h.now)  # EHOSTUNREACH/EAGAIN: never reached ZeroMQ
    assert account.unread == before - frames.receipt.own - frames.receipt.folded
    assert account.residue == frames.receipt.folded


def test_client_accounts_are_forgotten_once_nothing_is_held():
    h = Harness()
    h.ready(b"W1")
    for c in range(50):
        serve(h, b"C%d" % c, b"r", 100 * KIB)
    for c in range(50):
        for t in hand_over(h, b"C%d" % c):
            t.done = True
    h.tick(1.0)
    assert h.core.clients.accounts == {} and h.core.clients.unread == 0


def test_open_jobs_are_capped_over_all_robots():
    h = Harness(max_open_jobs=3)
    for i in range(4):  # made-up robots: every queue is short, the total is not
        h.request(b"C", b"r%d" % i, robot=f"made-up-{i}", timeout_ms=60_000)
    [(_, rid, code)] = errors(h.drain())
    assert (rid, code) == (b"r3", "overloaded")
    assert len(h.core.jobs) == 3


def test_status_summarises_many_queues():
    h = Harness(max_open_jobs=1000)
    for i in range(300):
        h.request(b"C", b"r%d" % i, robot=f"made-up-{i:03d}", timeout_ms=60_000)
    h.send(
        b"C",
        proto.request_frames(b"s", proto.BROKER_SERVICE, "status", 1000, proto.encode_payload({})),
    )
    msgs = h.drain()
    body = proto.decode_payload(msgs[-1][1].payload).header
    assert len(body["queues"]) == 256 and body["queues_omitted"] == 44
    assert body["open_jobs"] == 300


# --------------------------------------------------------------------------- several brokers


def test_alive_probe_is_answered_at_once_with_the_workers_and_the_boot_id():
    """The clients' probe (docs/protocol.md 4.6): answered by the broker itself."""
    h = Harness()
    h.send(
        b"C",
        proto.request_frames(
            b"a", proto.BROKER_SERVICE, proto.ALIVE, 100, proto.encode_payload({})
        ),
    )
    h.ready(b"W1")
    h.send(
        b"C",
        proto.request_frames(
            b"b", proto.BROKER_SERVICE, proto.ALIVE, 100, proto.encode_payload({})
        ),
    )
    [(to, first), (_, second)] = h.drain()
    assert to == b"C" and first.command is proto.Command.FINAL and first.request_id == b"a"
    boot = h.core.boot
    assert proto.decode_payload(first.payload).header == {"workers": 0, "boot": boot}
    assert proto.decode_payload(second.payload).header == {"workers": 1, "boot": boot}
    assert BrokerCore().boot != boot  # another process, another id


def ready_multi(h: Harness, worker: bytes, robots=("tatbot",)) -> None:
    h.send(
        worker, proto.ready_frames({"robots": list(robots), "features": [proto.FEATURE_DECLINE]})
    )
    h.send(worker, proto.heartbeat_frames())  # its confirmation: it may get jobs from now on


def w1_holding_a_job(h: Harness) -> proto.Request:
    """A worker W1 that listed `decline`, sent the job of request r1 from client C: the job."""
    ready_multi(h, b"W1")
    h.drain()
    h.request(b"C", b"r1")
    [(_, job)] = jobs_sent(h.drain())
    return job


def test_a_worker_listing_the_feature_is_answered_with_a_flagged_heartbeat_at_once():
    """The gate: only a worker that listed `decline` hears it back (and then may use it);
    a plain worker never sees a flags frame, now or in later heartbeats."""
    h = Harness()
    h.ready(b"OLD")
    assert h.drain() == []
    ready_multi(h, b"NEW")
    [(to, beat)] = h.drain()
    assert to == b"NEW" and isinstance(beat, proto.Heartbeat)
    assert proto.FEATURE_DECLINE in beat.flags
    h.tick(0.3)
    beats = {i: m.flags for i, m in h.drain() if isinstance(m, proto.Heartbeat)}
    assert beats == {b"OLD": frozenset(), b"NEW": frozenset({proto.FEATURE_DECLINE})}


def test_declined_job_goes_to_another_worker_at_once_without_counting_an_attempt():
    h = Harness(max_retries=0)
    ready_multi(h, b"W1")
    ready_multi(h, b"W2")
    h.drain()
    h.request(b"C", b"r")
    [(first, job)] = jobs_sent(h.drain())
    h.send(first, proto.decline_frames(job.request_id))
    [(second, again)] = jobs_sent(h.drain())
    assert second != first and again.request_id == job.request_id
    # The declining worker may not answer it (it never ran it); the one running it may.
    h.send(
        first,
        final(job.request_id, by="W1"),
    )
    assert h.drain() == [] and h.core.counters["late_replies_dropped"] == 1
    h.send(
        second,
        final(job.request_id, by="W2"),
    )
    [(to, reply)] = h.drain()
    # max_retries=0: no attempt was spent
    assert to == b"C" and reply.command is proto.Command.FINAL
    assert h.core.counters["declined"] == 1 and h.core.counters["retries"] == 0


def test_a_declining_worker_gets_nothing_until_it_flags_idle():
    h = Harness()
    job = w1_holding_a_job(h)
    h.send(b"W1", proto.decline_frames(job.request_id))
    assert jobs_sent(h.drain()) == []  # W1 is away: the job waits in its queue
    assert h.core.status(h.now)["workers"][0]["state"] == "away"
    h.send(b"W1", proto.heartbeat_frames())  # a plain heartbeat changes nothing
    assert jobs_sent(h.drain()) == []
    h.send(b"W1", proto.heartbeat_frames(proto.FLAG_IDLE))
    [(to, again)] = jobs_sent(h.drain())
    assert to == b"W1" and again.request_id == job.request_id


def test_busy_flag_takes_an_idle_worker_out_of_rotation_until_idle():
    h = Harness()
    ready_multi(h, b"W1")
    ready_multi(h, b"W2")
    h.drain()
    h.send(b"W1", proto.heartbeat_frames(proto.FLAG_BUSY))  # running another broker's job
    for i in range(3):
        h.request(b"C", b"r%d" % i)
    assert [to for to, _ in jobs_sent(h.drain())] == [b"W2"]
    h.send(b"W1", proto.heartbeat_frames(proto.FLAG_IDLE))
    assert [to for to, _ in jobs_sent(h.drain())] == [b"W1"]


def test_state_flags_of_a_worker_holding_our_job_and_stray_declines_change_nothing():
    h = Harness()
    job = w1_holding_a_job(h)
    h.send(b"W1", proto.heartbeat_frames(proto.FLAG_IDLE))  # stale: it works for us now
    h.send(b"W1", proto.decline_frames(b"not-its-job"))
    h.send(b"STRANGER", proto.decline_frames(job.request_id))
    assert h.drain() == [] and h.core.counters["declines_dropped"] == 2
    h.request(b"C", b"r2")
    assert jobs_sent(h.drain()) == []  # still busy with r1
    h.send(b"W1", final(job.request_id))
    msgs = h.drain()
    assert [m.request_id for _, m in msgs if isinstance(m, proto.Reply)] == [b"r1"]
    assert len(jobs_sent(msgs)) == 1  # then r2


def test_a_declined_job_whose_deadline_passed_meanwhile_is_not_requeued():
    h = Harness()
    ready_multi(h, b"W1")
    h.drain()
    h.request(b"C", b"r", timeout_ms=100)
    [(_, job)] = jobs_sent(h.drain())
    h.tick(0.2)
    assert errors(h.drain()) == [(b"C", b"r", "timeout")]
    h.send(b"W1", proto.decline_frames(job.request_id))
    h.send(b"W1", proto.heartbeat_frames(proto.FLAG_IDLE))
    assert h.drain() == [] and not h.core.jobs
    assert h.core.status(h.now)["workers"][0]["state"] == "idle"


# --------------------------------------------------------------------------- #18.8 warming

GRACE = BrokerSettings().rejoin_grace  # 6 s: RECONNECT_MAX + heartbeat x liveness
DEPARTED_WAIT = _warming.DEPARTED_WAIT  # 300 s


def warming(h, worker: bytes, robots=("tatbot",), **progress) -> None:
    info = {"robots": list(robots), "host": "h", "pid": 7, "progress": progress}
    h.send(worker, proto.warming_frames(info))


def advance(h, seconds: float) -> None:
    """Tick in heartbeat-sized steps (a longer gap would be a broker stall, which refreshes
    every worker)."""
    for _ in range(round(seconds / 0.25)):
        h.tick(0.25)


def ping(h):
    h.send(
        b"P",
        proto.request_frames(b"ping", proto.BROKER_SERVICE, "ping", 1000, proto.encode_payload({})),
    )
    [(_, reply)] = [(i, m) for i, m in h.drain() if i == b"P"]
    return proto.decode_payload(reply.payload).header


def test_a_warming_worker_is_listed_with_its_progress_and_never_given_a_job():
    h = Harness()
    h.tick(GRACE + 1)
    warming(h, b"W1", done=3, total=8, elapsed_s=41.0)
    assert h.drain() == []  # no answer to an accepted WARMING
    info = ping(h)
    assert info["workers"] == [] and info["warming_total"] == 1
    [entry] = info["warming"]
    assert entry["robots"] == ["tatbot"] and entry["state"] == "warming"
    assert entry["progress"] == {"done": 3, "total": 8, "elapsed_s": 41.0}
    assert (entry["host"], entry["pid"]) == ("h", 7)
    h.request(b"C", b"r", timeout_ms=5000)  # its robot only warms: the request waits
    assert h.drain() == []
    warming(h, b"W1", done=8, total=8, elapsed_s=50.0)
    h.tick(1.0)
    assert jobs_sent(h.drain()) == []  # still never dispatched to
    h.ready(b"W1")  # READY replaces the warming entry and takes the job
    [(to, _)] = jobs_sent(h.drain())
    assert to == b"W1"
    info = ping(h)
    assert info["warming"] == [] and len(info["workers"]) == 1


def test_a_warming_worker_that_goes_silent_is_forgotten_and_one_that_leaves_at_once():
    h = Harness()
    warming(h, b"W1", done=0, total=4)
    for _ in range(8):  # repeated every second: kept
        advance(h, 1.0)
        warming(h, b"W1", done=1, total=4)
    assert ping(h)["warming_total"] == 1
    advance(h, proto.WARMING_TTL - 0.5)
    assert ping(h)["warming_total"] == 1
    advance(h, 1.0)  # silent longer than WARMING_TTL
    assert ping(h)["warming_total"] == 0 and h.core.counters["warming_expired"] == 1
    warming(h, b"W2")
    h.send(b"W2", proto.disconnect_frames("warm-up failed"))
    assert ping(h)["warming_total"] == 0


@pytest.mark.parametrize(
    "info, code, field",
    [
        ({"robots": [f"r{i}" for i in range(65)]}, "too_large", "robots"),
        ({"robots": []}, "protocol", "robots"),
        ({"robots": ["x" * 129]}, "protocol", "robots"),
        ({"robots": [proto.BROKER_SERVICE]}, "protocol", "robots"),
        ({"robots": ["a"], "host": "h" * 257}, "too_large", "host"),
        ({"robots": ["a"], "pid": "7"}, "protocol", "pid"),
        ({"robots": ["a"], "progress": {"done": 5, "total": 4}}, "protocol", "progress"),
        ({"robots": ["a"], "progress": {"done": -1}}, "protocol", "progress"),
        ({"robots": ["a"], "progress": {"elapsed_s": float("nan")}}, "protocol", "progress"),
        ({"robots": ["a"], "progress": {"done": 1, "extra": 1}}, "protocol", "progress"),
        ({"robots": ["a"], "progress": [1, 2]}, "protocol", "progress"),
        ({"robots": ["a"], "pad": "x" * 17_000}, "too_large", "header"),
    ],
)
def test_warming_fields_are_bounded_as_ready_s(info, code, field):
    h = Harness()
    h.send(b"W", proto.warming_frames(info))
    msgs = h.drain()
    assert errors(msgs) == [(b"W", b"", code)]
    assert proto.decode_error(msgs[0][1].payload)[2] == field
    assert ping(h)["warming_total"] == 0


def test_warming_workers_are_capped_and_a_registered_worker_cannot_warm_again():
    h = Harness(max_warming=2)
    for w in (b"W1", b"W2", b"W3"):
        warming(h, w)
    assert errors(h.drain()) == [(b"W3", b"", "overloaded")]
    warming(h, b"W1", done=1, total=2)  # a known one is still refreshed
    assert h.drain() == [] and ping(h)["warming_total"] == 2
    h.ready(b"W4")
    warming(h, b"W4")
    assert errors(h.drain()) == [(b"W4", b"", "protocol")]
    assert [w["id"] for w in ping(h)["workers"]] == [b"W4".hex()]


def test_unknown_robot_at_once_after_the_grace_naming_what_is_served():
    h = Harness()
    h.ready(b"W1")
    warming(h, b"W2", robots=["arm"])

    def live(seconds: float) -> list:  # W1 heartbeats, W2 keeps warming; C's messages
        for _ in range(round(seconds / 0.25)):
            h.tick(0.25)
            h.send(b"W1", proto.heartbeat_frames())
            warming(h, b"W2", robots=["arm"])
        return [(i, m) for i, m in h.drain() if i == b"C"]

    live(GRACE - 1)
    h.request(b"C", b"early", robot="tatbott", timeout_ms=500)
    assert live(0) == []  # within the grace after a (re)start: it waits, as before
    assert errors(live(0.75)) == [(b"C", b"early", "unknown_robot")]  # at its deadline
    live(1.0)  # past the grace
    h.request(b"C", b"late", robot="tatbott", timeout_ms=30_000)
    msgs = live(0)
    assert errors(msgs) == [(b"C", b"late", "unknown_robot")]  # at once
    _, message, field = proto.decode_error(msgs[0][1].payload)
    assert message == (
        "unknown robot 'tatbott': no worker serves it; served: tatbot; warming up: arm"
    )
    assert field == "robot"
    h.request(b"C", b"arm", robot="arm", timeout_ms=500)  # only warming: waits
    assert live(0) == []
    msgs = live(0.75)
    assert errors(msgs) == [(b"C", b"arm", "timeout")]
    assert "warming up" in proto.decode_error(msgs[0][1].payload)[1]
    h.request(b"C", b"ok", robot="tatbot")
    assert len(jobs_sent(h.drain())) == 1


def test_a_robot_whose_last_worker_left_waits_for_it_while_it_may_restart():
    """A supervisor restarting a crashed worker (import JAX, load, announce) may take longer
    than the rejoin grace: requests for that robot keep waiting for DEPARTED_WAIT."""
    h = Harness()
    h.tick(GRACE + 1)
    h.ready(b"W1")
    h.send(b"W1", proto.disconnect_frames("restarting"))
    advance(h, DEPARTED_WAIT - 1)
    h.request(b"C", b"r1", timeout_ms=30_000)
    assert h.drain() == []  # its worker may be on its way back
    h.ready(b"W2")
    assert len(jobs_sent(h.drain())) == 1
    h.send(b"W2", proto.disconnect_frames("gone"))
    h.drain()
    advance(h, DEPARTED_WAIT + 0.5)
    assert errors(h.drain()) == [(b"C", b"r1", "timeout")]  # requeued, and waited 30 s
    h.request(b"C", b"r2", timeout_ms=30_000)
    msgs = h.drain()
    assert errors(msgs) == [(b"C", b"r2", "unknown_robot")]
    assert "served: none" in proto.decode_error(msgs[0][1].payload)[1]


def test_a_warming_worker_that_renames_its_robots_announces_only_the_new_ones():
    h = Harness()
    h.tick(GRACE + 1)
    warming(h, b"W1", robots=["a"])
    warming(h, b"W1", robots=["b"])
    h.request(b"C", b"r1", robot="a")
    msgs = h.drain()
    assert errors(msgs) == [(b"C", b"r1", "unknown_robot")]
    assert proto.decode_error(msgs[0][1].payload)[1].endswith("served: none; warming up: b")
    h.request(b"C", b"r2", robot="b")
    assert h.drain() == []


def test_registered_workers_are_capped_and_a_refused_ready_gets_overloaded_naming_the_cap():
    h = Harness(max_workers=2)
    h.ready(b"W1")
    h.ready(b"W2")
    h.send(b"W3", proto.ready_frames({"robots": ["tatbot"], "device": "cpu"}))
    msgs = h.drain()
    assert errors(msgs) == [(b"W3", b"", "overloaded")]
    assert "max_workers 2" in proto.decode_error(msgs[0][1].payload)[1]
    h.ready(b"W1")  # a re-registration is no new worker
    assert sorted(w["id"] for w in ping(h)["workers"]) == [b"W1".hex(), b"W2".hex()]
    h.send(b"W2", proto.disconnect_frames("bye"))
    h.ready(b"W3")  # room again: taken
    assert len(ping(h)["workers"]) == 2 and h.drain() == []


# --------------------------------------------------------------------------- issue #25


def beat(h: Harness, seconds: float, *workers: bytes) -> None:
    """Tick in heartbeat-sized steps, ``workers`` heartbeating at each (alive, maybe stuck)."""
    for _ in range(round(seconds / 0.25)):
        h.tick(0.25)
        for w in workers:
            h.send(w, proto.heartbeat_frames())


def worker_error(job_id: bytes, code: str) -> list:
    return proto.error_frames(job_id, proto.ErrorCode(code), f"{code} from a worker")


def test_a_stopping_workers_refusal_goes_to_another_worker_at_once_and_is_not_answered():
    h = Harness()
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C", b"r", timeout_ms=5000)
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1"
    h.send(b"W1", worker_error(job.request_id, "shutting_down"))
    msgs = h.drain()
    assert errors(msgs) == []  # the client is not told: nothing for it to re-send
    [(to, again)] = jobs_sent(msgs)
    assert to == b"W2" and again.request_id == job.request_id
    assert h.core.counters["refused_stopping"] == 1 and h.core.jobs[job.request_id].attempts == 1
    assert [w["id"] for w in ping(h)["workers"]] == [b"W2".hex()]  # it is leaving: forgotten
    h.request(b"C", b"r", timeout_ms=5000)  # the client's retry crossing it: one job, one answer
    h.send(b"W2", final(again.request_id, who=2))
    assert replies(h.drain()) == [(b"C", b"r", "FINAL")]


def test_with_no_other_worker_the_refused_job_waits_for_the_next_one():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=5000)
    [(_, job)] = jobs_sent(h.drain())
    h.send(b"W1", worker_error(job.request_id, "shutting_down"))
    assert h.drain() == [] and h.core.queues["tatbot"][0].request_id == b"r"
    h.tick(0.5)
    h.ready(b"W1b")  # its replacement
    [(to, again)] = jobs_sent(h.drain())
    assert to == b"W1b" and again.request_id == job.request_id


def test_a_job_refused_by_stopping_workers_again_and_again_counts_attempts_at_last():
    h = Harness(max_retries=1)
    h.request(b"C", b"r", timeout_ms=5000)
    outcomes = []
    for i in range(3):
        h.ready(b"W%d" % i)
        [(_, job)] = jobs_sent(h.drain())
        h.send(b"W%d" % i, worker_error(job.request_id, "shutting_down"))
        outcomes.append(errors(h.drain()))
    # The first refusal (up to max_retries) costs nothing, the next ones an attempt each: a
    # peer re-registering to refuse it cannot keep a job from the others for free.
    assert outcomes == [[], [], [(b"C", b"r", "worker_lost")]]


@pytest.mark.parametrize("code", ["worker_lost", "shutting_down", "overloaded", "version"])
def test_a_forgotten_workers_late_broker_only_code_is_dropped(code):
    h = Harness()
    job, job2 = w1_forgotten_its_job_at_w2(h)
    h.send(b"W1", worker_error(job.request_id, code))
    assert errors(h.drain()) == [] and h.core.counters["late_replies_dropped"] == 1
    h.send(b"W2", final(job2.request_id))
    assert replies(h.drain()) == [(b"C", b"r", "FINAL")]


@pytest.mark.parametrize("code", ["worker_lost", "overloaded", "version"])
def test_a_worker_cannot_end_a_job_with_a_broker_only_code(code):
    h = Harness(max_retries=1)
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C", b"r", timeout_ms=5000)
    [(_, job)] = jobs_sent(h.drain())
    h.send(b"W1", worker_error(job.request_id, code))  # a fault: re-queued, not forwarded
    msgs = h.drain()
    assert errors(msgs) == [] and [to for to, _ in jobs_sent(msgs)] == [b"W2"]
    assert h.core.counters["broker_codes_from_workers"] == 1
    h.send(b"W2", worker_error(job.request_id, code))  # attempts spent: the broker says so
    [(to, rid, got)] = errors(h.drain())
    assert (to, rid, got) == (b"C", b"r", "worker_lost")
    assert sorted(w["state"] for w in ping(h)["workers"]) == ["idle", "idle"]


def test_a_ready_never_followed_by_a_heartbeat_is_forgotten_even_if_repeated():
    h = Harness()
    h.ready(b"FAKE", confirm=False)
    for _ in range(2):  # READY again and again, nothing else: no sign of a working worker
        beat(h, 0.5)
        h.drain()
        h.ready(b"FAKE", confirm=False)
    beat(h, 0.25)  # 1.25 s after its first READY (each READY refreshed its last sign of life)
    assert h.core.counters["workers_unconfirmed"] == 1 and ping(h)["workers"] == []
    h.ready(b"W1")  # a worker that heartbeats stays
    beat(h, 3.0, b"W1")
    assert len(ping(h)["workers"]) == 1


def test_unconfirmed_registrations_cannot_fill_max_workers():
    h = Harness(max_workers=3)
    h.ready(b"W1")  # a real one, confirmed
    h.ready(b"F1", confirm=False)
    h.ready(b"F2", confirm=False)
    h.ready(b"W2")  # at the cap: the oldest unconfirmed makes room, not `overloaded`
    assert errors(h.drain()) == [] and h.core.counters["workers_evicted_unconfirmed"] == 1
    assert sorted(w["id"] for w in ping(h)["workers"]) == sorted(
        x.hex() for x in (b"W1", b"W2", b"F2")
    )
    h.ready(b"W3")
    h.send(b"W4", proto.ready_frames({"robots": ["tatbot"]}))  # all confirmed: the cap holds
    assert errors(h.drain()) == [(b"W4", b"", "overloaded")]


def test_a_registration_gets_jobs_from_its_first_heartbeat_on_not_before():
    h = Harness(max_workers=1)
    h.request(b"C", b"r", timeout_ms=5000)
    h.ready(b"F1", confirm=False)
    assert jobs_sent(h.drain()) == []  # a READY alone: no job (it may be all a fake sends)
    h.ready(b"W1", confirm=False)  # F1 evicted, W1 in ...
    assert jobs_sent(h.drain()) == []
    h.send(b"W1", proto.heartbeat_frames())  # ... and given the job once it heartbeats
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1"
    h.send(b"W1", final(job.request_id))
    assert replies(h.drain()) == [(b"C", b"r", "FINAL")]


def stuck_with_a_job(h: Harness, timeout_ms: int = 1000) -> proto.Request:
    """W1 and W2 registered; W1 took request r's job and will never answer it."""
    h.ready(b"W1")
    h.ready(b"W2")
    h.request(b"C", b"r", timeout_ms=timeout_ms)
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1"
    return job


def test_a_job_held_past_its_deadline_runs_elsewhere_when_a_retry_left_time():
    h = Harness()
    job = stuck_with_a_job(h)
    beat(h, 0.75, b"W1", b"W2")
    h.request(b"C", b"r", timeout_ms=5000)  # the client's retry moves the deadline later
    beat(h, 1.0, b"W1", b"W2")  # W1 was given 1 s: past it + overdue_grace (1 s) ...
    assert jobs_sent(h.drain()) == []
    beat(h, 0.5, b"W1", b"W2")  # ... it is overdue: the job runs on W2
    [(to, again)] = jobs_sent(h.drain())
    assert to == b"W2" and again.request_id == job.request_id
    states = {w["id"]: w["state"] for w in ping(h)["workers"]}
    assert states == {b"W1".hex(): "overdue", b"W2".hex(): "busy"}
    h.send(b"W2", final(again.request_id, who=2))
    h.send(b"W1", final(job.request_id, who=1))  # W1's late answer: dropped
    assert [(i, r) for i, r, _ in replies(h.drain())] == [(b"C", b"r")]  # one answer
    assert ping(h)["workers"][0]["state"] == "idle"  # W1 answered late: released
    assert h.core.counters["overdue_rerun"] == 1 and h.core.counters["jobs_overdue"] == 1


def test_an_overdue_worker_gets_no_job_and_a_staller_is_dropped_after_overdue_drop():
    h = Harness(overdue_drop=5.0)
    stuck_with_a_job(h)
    beat(h, 1.25, b"W1", b"W2")
    assert errors(h.drain()) == [(b"C", b"r", "timeout")]  # no time left: the client is told
    beat(h, 1.0, b"W1", b"W2")
    h.request(b"C", b"r2", timeout_ms=5000)
    h.request(b"C", b"r3", timeout_ms=5000)
    assert [to for to, _ in jobs_sent(h.drain())] == [b"W2"]  # r3 waits for W2, not W1
    beat(h, 4.5, b"W1", b"W2")
    assert h.core.counters["workers_dropped_overdue"] == 0
    beat(h, 0.5, b"W1", b"W2")  # overdue for overdue_drop (5 s): dropped, told so
    assert h.core.counters["workers_dropped_overdue"] == 1
    assert any(to == b"W1" and isinstance(m, proto.Disconnect) for to, m in h.drain())
    assert [w["id"] for w in ping(h)["workers"]] == [b"W2".hex()]


def test_a_worker_overdue_again_and_again_is_dropped():
    h = Harness(max_overruns=3)
    h.ready(b"W1")
    for i in range(3):
        h.request(b"C", b"r%d" % i, timeout_ms=250)
        [(_, job)] = jobs_sent(h.drain())
        beat(h, 1.5, b"W1")  # past its deadline + overdue_grace
        h.send(b"W1", final(job.request_id))  # its answer, too late (the client had timeout)
        h.drain()
    assert h.core.counters["jobs_overdue"] == 3 and h.core.counters["workers_dropped_overdue"] == 1
    assert ping(h)["workers"] == []


def test_a_timely_answer_resets_the_overrun_count():
    h = Harness(max_overruns=2)
    h.ready(b"W1")
    for i in range(4):
        h.request(b"C", b"late%d" % i, timeout_ms=250)
        [(_, job)] = jobs_sent(h.drain())
        beat(h, 1.5, b"W1")
        h.send(b"W1", final(job.request_id))
        h.request(b"C", b"ok%d" % i, timeout_ms=250)
        [(_, job)] = jobs_sent(h.drain())
        h.send(b"W1", final(job.request_id))
        h.drain()
    assert h.core.counters["jobs_overdue"] == 4 and len(ping(h)["workers"]) == 1


def serve_round(h: Harness, rid: bytes, answers: dict[bytes, str | None]) -> bytes:
    """Request ``rid``; whichever worker gets it answers as ``answers`` says (None: FINAL,
    else an ERROR with that code). Returns that worker."""
    h.request(b"C", rid, timeout_ms=5000)
    [(to, job)] = jobs_sent(h.drain())
    code = answers[to]
    h.send(to, final(job.request_id) if code is None else worker_error(job.request_id, code))
    h.drain()
    return to


def test_circuit_breaker_pauses_a_worker_failing_by_its_own_fault_while_others_succeed():
    h = Harness(breaker_failures=3, breaker_pause=10.0)
    h.ready(b"W1")
    h.ready(b"W2")
    answers = {b"W1": "internal", b"W2": None}
    who = [serve_round(h, b"r%d" % i, answers) for i in range(6)]
    assert who == [b"W1", b"W2"] * 3  # LRU: they alternate until W1's third failure
    assert h.core.counters["workers_paused"] == 1
    listed = {w["id"]: w for w in ping(h)["workers"]}
    assert listed[b"W1".hex()]["state"] == "paused" and listed[b"W1".hex()]["pauses"] == 1
    assert [serve_round(h, b"s%d" % i, answers) for i in range(4)] == [b"W2"] * 4
    beat(h, 10.0, b"W1", b"W2")  # the pause ends: W1 is given jobs again (last in LRU) ...
    assert [serve_round(h, b"t%d" % i, answers) for i in range(2)] == [b"W2", b"W1"]
    assert h.core.counters["workers_paused"] == 2  # ... and one more failure pauses it again
    assert [serve_round(h, b"u%d" % i, answers) for i in range(2)] == [b"W2"] * 2
    beat(h, 10.0, b"W1", b"W2")
    assert serve_round(h, b"v", answers) == b"W2"  # the second pause is twice as long
    beat(h, 10.0, b"W1", b"W2")
    answers[b"W1"] = None  # it recovered: a success ends the series
    assert [serve_round(h, b"w%d" % i, answers) for i in range(2)] == [b"W2", b"W1"]
    assert h.core.workers[b"W1"].failures == 0 and ping(h)["workers"][0]["pauses"] == 2


def test_a_paused_worker_stays_paused_through_a_second_ready():
    h = Harness(breaker_failures=2)
    h.ready(b"W1")
    h.ready(b"W2")
    answers = {b"W1": "internal", b"W2": None}
    for i in range(4):
        serve_round(h, b"r%d" % i, answers)
    assert h.core.counters["workers_paused"] == 1
    h.ready(b"W1")  # READY again on the same connection: still paused
    assert [serve_round(h, b"s%d" % i, answers) for i in range(3)] == [b"W2"] * 3
    states = {w["id"]: w["state"] for w in ping(h)["workers"]}
    assert states == {b"W1".hex(): "paused", b"W2".hex(): "idle"}


@pytest.mark.parametrize(
    "code", ["bad_request", "too_large", "protocol", "unknown_operation", "timeout"]
)
def test_circuit_breaker_never_counts_a_clients_bad_input(code):
    h = Harness(breaker_failures=2)
    h.ready(b"W1")
    h.ready(b"W2")
    answers = {b"W1": code, b"W2": None}
    for i in range(10):
        serve_round(h, b"r%d" % i, answers)
    assert h.core.counters["workers_paused"] == 0


def test_circuit_breaker_pauses_nobody_when_no_worker_does_better():
    h = Harness(breaker_failures=2)
    h.ready(b"W1")
    h.ready(b"W2")
    answers = {b"W1": "internal", b"W2": "internal"}
    for i in range(10):
        serve_round(h, b"r%d" % i, answers)
    assert h.core.counters["workers_paused"] == 0
