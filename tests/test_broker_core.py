"""BrokerCore without sockets: routing, LRU, in-flight tracking, retries, timers.

The core is driven with an explicit clock, so every timing rule is checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from zmq_ik.broker import BrokerCore, BrokerSettings
from zmq_ik.protocol import (
    BROKER_SERVICE,
    Command,
    Reply,
    Request,
    decode_error,
    decode_payload,
    disconnect_frames,
    encode_payload,
    heartbeat_frames,
    parse_message,
    ready_frames,
    reply_frames,
    request_frames,
)


def wire(frames):
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]


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
            out.append((identity, parse_message(wire(frames))))
        return out

    def ready(self, worker: bytes, robots=("tatbot",)) -> None:
        self.send(worker, ready_frames({"robots": list(robots), "device": "cpu"}))

    def request(self, client: bytes, rid: bytes, robot="tatbot", timeout_ms=1000, header=None):
        self.send(
            client, request_frames(rid, robot, "solve", timeout_ms, encode_payload(header or {}))
        )


def jobs_sent(msgs):
    return [(i, m) for i, m in msgs if isinstance(m, Request)]


def errors(msgs):
    return [
        (i, m.request_id, decode_error(m.payload)[0])
        for i, m in msgs
        if isinstance(m, Reply) and m.command is Command.ERROR
    ]


def test_request_routed_to_worker_and_answer_back_with_client_id():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C1", b"r1", header={"x": 1})
    [(to, job)] = jobs_sent(h.drain())
    assert to == b"W1" and job.service == "tatbot" and job.request_id != b"r1"
    assert decode_payload(job.payload).header == {"x": 1}
    h.send(b"W1", reply_frames(Command.FINAL, job.request_id, encode_payload({"ok": True})))
    [(to, reply)] = h.drain()
    assert to == b"C1" and reply.command is Command.FINAL and reply.request_id == b"r1"
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
        h.send(to, reply_frames(Command.FINAL, job.request_id, encode_payload({})))
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
    assert "nobot" in decode_error(msgs[0][1].payload)[1]


def test_busy_workers_give_timeout_not_unknown_robot():
    h = Harness(heartbeat_interval=10)
    h.ready(b"W1")
    h.request(b"C", b"r1", timeout_ms=10_000)
    h.request(b"C", b"r2", timeout_ms=500)
    h.drain()
    h.tick(0.6)
    assert errors(h.drain()) == [(b"C", b"r2", "timeout")]


def test_dead_worker_job_goes_to_another_and_is_answered_once():
    h = Harness()
    h.ready(b"W1")
    h.request(b"C", b"r", timeout_ms=10_000)
    [(_, job)] = jobs_sent(h.drain())
    h.ready(b"W2")
    for _ in range(5):  # W2 heartbeats, W1 is silent
        h.tick(0.25)
        h.send(b"W2", heartbeat_frames())
    msgs = h.drain()
    [(to, job2)] = jobs_sent(msgs)
    assert to == b"W2" and job2.request_id == job.request_id
    assert h.core.counters["retries"] == 1
    h.send(b"W2", reply_frames(Command.FINAL, job2.request_id, encode_payload({"who": 2})))
    # W1 was only frozen: it comes back with a late answer, which must not reach the client.
    h.send(b"W1", reply_frames(Command.FINAL, job.request_id, encode_payload({"who": 1})))
    replies = [(i, m) for i, m in h.drain() if isinstance(m, Reply)]
    assert [(i, decode_payload(m.payload).header) for i, m in replies] == [(b"C", {"who": 2})]
    assert h.core.counters["late_replies_dropped"] == 1


def test_disconnect_requeues_at_once_and_retries_are_bounded():
    h = Harness(max_retries=1)
    h.request(b"C", b"r", timeout_ms=10_000)
    for w in (b"W1", b"W2"):
        h.ready(w)
        assert jobs_sent(h.drain())
        h.send(w, disconnect_frames("bye"))
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
    h.send(b"STRANGER", heartbeat_frames())
    [(to, msg)] = h.drain()
    assert to == b"STRANGER" and type(msg).__name__ == "Disconnect"


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
    h.send(b"C", request_frames(b"p", BROKER_SERVICE, "ping", 1000, encode_payload({})))
    h.send(b"C", request_frames(b"s", BROKER_SERVICE, "status", 1000, encode_payload({})))
    h.send(b"C", request_frames(b"x", BROKER_SERVICE, "explode", 1000, encode_payload({})))
    msgs = h.drain()
    ping = decode_payload(msgs[0][1].payload).header
    assert ping["workers"][0]["robots"] == ["tatbot"] and ping["protocol"] == "ZIK/1"
    status = decode_payload(msgs[1][1].payload).header
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
    h.send(b"W1", reply_frames(Command.FINAL, job.request_id, encode_payload({})))
    assert [m for _, m in h.drain() if isinstance(m, Reply)] == []
    h.request(b"C", b"r2")
    assert jobs_sent(h.drain())  # the worker is idle again
