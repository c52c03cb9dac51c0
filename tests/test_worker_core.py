"""WorkerCore without sockets: links, backoff, heartbeats, jobs, refusals, the warm-up.

The core is driven with an explicit clock, so every timing rule is checked exactly; what it
says it would send is parsed as a broker would read it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import wire

from zmq_ik import protocol as proto
from zmq_ik.errors import ConfigError, ErrorCode
from zmq_ik.protocol import Limits
from zmq_ik.worker import EchoService, WorkerSettings
from zmq_ik.worker._core import Op, WorkerCore
from zmq_ik.worker._job import Job, run_job

INTERVAL = 0.25
EXPIRY = 4 * INTERVAL
INFO = {"robots": ["echo"], "device": "cpu"}


class Harness:
    """A `WorkerCore` with ``brokers`` links and a clock of its own."""

    def __init__(self, brokers: int = 1, **settings) -> None:
        endpoints = [f"tcp://127.0.0.1:{5555 + i}" for i in range(brokers)]
        self.core = WorkerCore(WorkerSettings(connect=endpoints, **settings), "watch-test")
        self.now = 0.0

    def send(self, i: int, frames) -> Job | None:
        """Link ``i``'s broker sends ``frames``."""
        return self.core.handle(i, wire(frames), self.now)

    def tick(self, dt: float = 0.0) -> None:
        self.now += dt
        self.core.tick(self.now)

    def drain(self) -> list[tuple[int, object]]:
        """What the core asked for: (link, parsed message or `Op`)."""
        out = []
        while self.core.outbox:
            i, what = self.core.outbox.popleft()
            out.append((i, what if isinstance(what, Op) else proto.parse_message(wire(what))))
        return out

    def warm(self, **announced) -> None:
        self.core.start({"robots": ["echo"], **announced}, self.now)

    def serve(self, declines: bool = True) -> None:
        """Warm up, READY to every broker, each acknowledges (with DECLINE known or not)."""
        self.warm()
        self.tick()
        self.core.ready(dict(INFO), self.now)
        flags = [proto.FEATURE_DECLINE] if declines else []
        for i in range(len(self.core.links)):
            self.send(i, proto.heartbeat_frames(*flags))
        self.drain()

    def request(self, i: int, job_id: bytes, timeout_ms: int = 1000) -> Job | None:
        payload = proto.encode_payload({"x": 1})
        return self.send(i, proto.request_frames(job_id, "echo", "echo", timeout_ms, payload))


def sent(out, kind):
    return [(i, m) for i, m in out if isinstance(m, kind)]


def ops(out):
    return [(i, m) for i, m in out if isinstance(m, Op)]


def flags(out):
    """(link, HEARTBEAT flags) of each HEARTBEAT in ``out``."""
    return [(i, sorted(m.flags)) for i, m in sent(out, proto.Heartbeat)]


def errors(out):
    return [
        (i, m.request_id, proto.decode_error(m.payload)[0])
        for i, m in sent(out, proto.Reply)
        if m.command is proto.Command.ERROR
    ]


def refusal(code: ErrorCode, field: str | None = None):
    return proto.error_frames(b"", code, f"refused ({code.value})", field)


# --------------------------------------------------------------------------- warm-up


def test_the_warm_up_is_announced_at_once_on_each_bucket_and_every_interval():
    h = Harness(brokers=2)
    h.warm()
    assert ops(h.drain()) == [(0, Op.OPEN), (1, Op.OPEN)]
    assert [link.state for link in h.core.links] == ["connecting", "connecting"]
    h.tick()
    warming = sent(h.drain(), proto.Warming)
    assert [i for i, _ in warming] == [0, 1]
    assert warming[0][1].info["progress"] == {"done": 0, "total": 0, "elapsed_s": 0.0}
    h.tick(0.5)
    assert h.drain() == []  # nothing new, not yet an interval
    h.core.warmup_progress(1, 4)
    h.tick(0.125)
    [(_, first), _] = sent(h.drain(), proto.Warming)
    assert first.info["progress"] == {"done": 1, "total": 4, "elapsed_s": 0.6}
    h.tick(proto.WARMING_INTERVAL - 0.0625)
    assert h.drain() == []
    h.tick(0.0625)
    assert len(sent(h.drain(), proto.Warming)) == 2  # the interval's reminder


def test_a_warming_refusal_for_good_leaves_that_broker_and_readies_the_others():
    h = Harness(brokers=2)
    h.warm()
    h.tick()
    h.drain()
    h.send(0, refusal(ErrorCode.TOO_LARGE, "robots"))
    h.send(0, refusal(ErrorCode.TOO_LARGE, "robots"))  # a second one changes nothing
    assert h.core.links[0].refused == "[too_large] refused (too_large) (field robots)"
    h.core.check_refused()  # one broker still takes us
    h.core.warmup_progress(2, 4)
    h.tick()
    assert [i for i, _ in sent(h.drain(), proto.Warming)] == [1]  # no more WARMING there
    h.core.ready(dict(INFO), h.now)
    out = h.drain()
    assert ops(out) == [(0, Op.CLOSE)]
    [(to, ready)] = sent(out, proto.Ready)
    assert to == 1 and ready.info["features"] == [proto.FEATURE_DECLINE, "watch-test"]
    assert ready.info["heartbeat_ms"] == 250
    assert h.core.links[0].state == "refused"
    h.tick(100.0)  # never reconnected
    assert ops(h.drain()) == [(1, Op.CLOSE)]  # (the other one: silent since READY)
    h.tick(100.0)
    assert (0, Op.OPEN) not in ops(h.drain())


def test_every_broker_refusing_for_good_is_a_config_error():
    h = Harness(brokers=2)
    h.warm()
    for i in (0, 1):
        h.send(i, refusal(ErrorCode.VERSION))
    with pytest.raises(ConfigError, match="every broker refused this worker"):
        h.core.check_refused()
    with pytest.raises(ConfigError):
        h.core.ready(dict(INFO), h.now)


def test_an_older_broker_refusing_warming_still_gets_ready():
    h = Harness()
    h.warm()
    h.send(0, refusal(ErrorCode.PROTOCOL, "command"))
    h.core.warmup_progress(1, 4)
    h.tick()
    assert sent(h.drain(), proto.Warming) == []
    h.core.ready(dict(INFO), h.now)
    assert len(sent(h.drain(), proto.Ready)) == 1


# --------------------------------------------------------------------------- heartbeats


def test_ready_is_confirmed_at_once_then_heartbeats_every_interval_and_a_watch_opens():
    h = Harness()
    h.warm()
    h.core.ready(dict(INFO), h.now)
    h.drain()
    assert h.core.links[0].state == "connecting"
    h.send(0, proto.heartbeat_frames(proto.FEATURE_DECLINE))
    assert h.core.links[0].state == "ready"
    assert flags(h.drain()) == [(0, [proto.FLAG_IDLE])]  # the acknowledgement's confirmation
    h.tick(0.0)
    assert h.drain() == [(0, Op.WATCH)]
    h.tick(INTERVAL - 0.01)
    assert h.drain() == []
    h.tick(0.01)
    out = h.drain()
    assert flags(out) == [(0, [proto.FLAG_IDLE])] and ops(out) == [(0, Op.DISCARD)]


def test_a_broker_without_decline_gets_plain_heartbeats():
    h = Harness()
    h.serve(declines=False)
    h.tick(INTERVAL)
    assert flags(h.drain()) == [(0, [])]


def test_a_silent_broker_is_dropped_after_the_liveness_window_and_reconnected():
    h = Harness()
    h.serve()
    for _ in range(3):  # heartbeats go out, nothing comes back
        h.tick(INTERVAL)
    h.tick(EXPIRY - 3 * INTERVAL)
    assert (0, Op.CLOSE) not in ops(h.drain())  # exactly the window: not yet
    h.tick(0.001)
    assert ops(h.drain()) == [(0, Op.CLOSE)]
    assert h.core.links[0].state == "backoff"
    h.tick(0.25 - 0.002)
    assert h.drain() == []
    h.tick(0.002)
    out = h.drain()
    assert ops(out) == [(0, Op.OPEN)] and len(sent(out, proto.Ready)) == 1
    assert h.core.links[0].state == "connecting"


def test_a_broker_heard_from_is_not_dropped():
    h = Harness()
    h.serve()
    for _ in range(20):
        h.tick(INTERVAL)
        h.send(0, proto.heartbeat_frames())
    assert Op.CLOSE not in [op for _, op in ops(h.drain())]


def reconnect_delays(h: Harness, outages: int, answer: bool) -> list[float]:
    """Let the broker go silent ``outages`` times; the delays until each reconnect."""
    delays = []
    for _ in range(outages):
        if answer:
            h.send(0, proto.heartbeat_frames())
        h.tick(EXPIRY + 0.001)
        assert (0, Op.CLOSE) in ops(h.drain())
        delay = h.core.links[0].reconnect_at - h.now
        delays.append(round(delay, 3))
        h.tick(delay)
        assert (0, Op.OPEN) in ops(h.drain())
    return delays


def test_the_backoff_doubles_while_a_broker_stays_silent_up_to_its_cap():
    h = Harness(reconnect_max=2.0)
    h.serve()
    h.core.links[0].answered = False  # (a broker that never answered this connection)
    h.tick(EXPIRY + 0.001)
    h.drain()
    h.tick(h.core.links[0].reconnect_at - h.now)
    h.drain()
    assert reconnect_delays(h, 5, answer=False) == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_broker_that_refuses_our_handshake_is_backed_off_like_a_silent_one():
    """Before: the handshake's explanation changed the outcome's text, and a broker refusing
    our CURVE key was retried at the shortest delay forever."""
    h = Harness(reconnect_max=2.0)
    h.core.explain = lambda i: "its CURVE handshake failed (wrong server key?)"
    h.serve()
    h.core.links[0].answered = False
    h.tick(EXPIRY + 0.001)
    h.drain()
    h.tick(h.core.links[0].reconnect_at - h.now)
    h.drain()
    assert reconnect_delays(h, 4, answer=False) == [0.5, 1.0, 2.0, 2.0]


def test_each_outage_after_an_answer_backs_off_from_the_start():
    """Before: the delay kept growing over separate outages (0.25 -> 5 s)."""
    h = Harness()
    h.serve()
    assert reconnect_delays(h, 5, answer=True) == [0.25] * 5


def test_a_refusal_for_now_backs_off_and_keeps_backing_off_while_it_lasts():
    """``overloaded`` (max_workers): the DISCONNECT that follows ends the connection, and each
    reconnect waits longer; READY is sent again each time."""
    h = Harness()
    h.warm()
    h.core.ready(dict(INFO), h.now)
    h.drain()
    delays = []
    for _ in range(4):
        h.send(0, refusal(ErrorCode.OVERLOADED))
        assert h.core.links[0].held_off
        h.send(0, proto.disconnect_frames("overloaded"))
        h.tick(0.01)
        assert ops(h.drain()) == [(0, Op.CLOSE)]
        delays.append(round(h.core.links[0].reconnect_at - h.now, 3))
        h.tick(delays[-1])
        out = h.drain()
        assert ops(out) == [(0, Op.OPEN)] and len(sent(out, proto.Ready)) == 1
    assert delays == [0.25, 0.5, 1.0, 2.0]
    h.send(0, proto.heartbeat_frames())  # room was made: registered
    assert h.core.links[0].state == "ready" and not h.core.links[0].held_off


def test_a_disconnect_reconnects_after_the_shortest_delay():
    h = Harness()
    h.serve()
    h.send(0, proto.disconnect_frames("broker stopping"))
    h.send(0, proto.heartbeat_frames())  # what follows on that connection is not for us
    h.tick()
    assert ops(h.drain()) == [(0, Op.CLOSE)]
    assert h.core.links[0].reconnect_at == pytest.approx(h.now + 0.25)


def test_a_send_that_cannot_proceed_drops_the_connection_as_silent():
    h = Harness()
    h.serve()
    h.core.send_failed(0)
    h.tick()
    assert ops(h.drain()) == [(0, Op.CLOSE)]
    h.core.explain = lambda i: "CURVE handshake refused"
    h.tick(1.0)
    h.core.send_failed(0)
    h.tick()
    assert ops(h.drain()) == [(0, Op.OPEN), (0, Op.CLOSE)]


def test_a_ready_refused_for_good_while_serving_leaves_the_broker():
    h = Harness(brokers=2)
    h.warm()
    h.core.ready(dict(INFO), h.now)
    h.drain()
    h.send(1, proto.heartbeat_frames())
    h.send(0, refusal(ErrorCode.TOO_LARGE, "versions"))
    h.tick()
    assert (0, Op.CLOSE) in ops(h.drain())
    assert h.core.links[0].state == "refused"
    h.send(1, refusal(ErrorCode.FORBIDDEN))  # an ERROR once registered: logged, no more
    assert h.core.links[1].refused is None


def test_the_last_broker_refusing_for_good_while_serving_is_a_config_error():
    h = Harness()
    h.warm()
    h.core.ready(dict(INFO), h.now)
    h.send(0, refusal(ErrorCode.FORBIDDEN))
    with pytest.raises(ConfigError):
        h.tick()


# --------------------------------------------------------------------------- jobs


def test_a_job_runs_with_busy_heartbeats_then_its_reply_goes_back():
    h = Harness()
    h.serve()
    job = h.request(0, b"j1", timeout_ms=2000)
    assert job is not None and job.job_id == b"j1" and job.deadline == h.now + 2.0
    assert h.drain() == []
    h.core.job_started(0, h.now)
    for _ in range(3):
        h.now += INTERVAL
        h.core.busy_tick(h.now, others=False)
    assert flags(h.drain()) == [(0, [proto.FLAG_BUSY])] * 3
    h.now += 5.0  # a long job: its broker is not taken for silent meanwhile
    reply = proto.reply_frames(proto.Command.FINAL, b"j1", proto.encode_payload({"ok": 1}))
    assert h.core.job_done(reply, h.now, others_read=False) is None
    [(to, msg)] = h.drain()
    assert to == 0 and msg.command is proto.Command.FINAL and h.core.served == 1
    h.tick(0.001)
    assert Op.CLOSE not in [op for _, op in ops(h.drain())]


def test_a_partial_reply_counts_as_a_heartbeat():
    h = Harness()
    h.serve()
    h.core.job_started(0, h.now)
    h.now += INTERVAL - 0.01
    h.core.sent(0, h.now)
    h.now += 0.02
    h.core.busy_tick(h.now, others=False)
    assert h.drain() == []


def test_another_brokers_job_during_a_job_is_declined_and_it_hears_idle_after():
    h = Harness(brokers=2)
    h.serve()
    assert h.request(0, b"a") is not None
    h.core.job_started(0, h.now)
    assert h.request(1, b"b") is None
    assert sent(h.drain(), proto.Decline) == [(1, proto.Decline(b"b"))]
    h.now += INTERVAL
    h.core.busy_tick(h.now, others=True)
    assert flags(h.drain()) == [(0, [proto.FLAG_BUSY]), (1, [proto.FLAG_BUSY])]
    assert h.core.job_done(proto.error_frames(b"a", "x", "y"), h.now, others_read=True) is None
    out = h.drain()
    assert flags(out) == [(1, [proto.FLAG_IDLE])] and h.core.declined == 1


def test_a_job_from_a_broker_without_decline_runs_next_and_a_second_one_is_refused_busy():
    h = Harness(brokers=2)
    h.serve(declines=False)
    h.request(0, b"a")
    h.core.job_started(0, h.now)
    assert h.request(1, b"b") is None and h.drain() == []
    assert h.request(1, b"c") is None
    assert errors(h.drain()) == [(1, b"c", "internal")]
    h.now += 0.5
    nxt = h.core.job_done(proto.error_frames(b"a", "x", "y"), h.now, others_read=True)
    assert nxt is not None and nxt[0] == 1 and nxt[1].job_id == b"b"
    h.core.job_started(1, h.now)
    assert h.core.job_done(proto.error_frames(b"b", "x", "y"), h.now, others_read=False) is None
    assert h.core.served == 2


def test_a_job_held_for_a_broker_that_is_then_lost_is_dropped():
    h = Harness(brokers=2)
    h.serve(declines=False)
    h.request(0, b"a")
    h.core.job_started(0, h.now)
    h.request(1, b"b")
    h.send(1, proto.disconnect_frames())
    assert h.core.job_done(proto.error_frames(b"a", "x", "y"), h.now, others_read=True) is not None
    # (held: the disconnect is acted on at the next tick, after it ran, as before)


def test_a_stopping_worker_refuses_new_jobs():
    h = Harness()
    h.serve()
    h.core.stopping = True
    assert h.request(0, b"j") is None
    assert errors(h.drain()) == [(0, b"j", "shutting_down")]
    h.core.leave("worker stopping", h.now)
    [(to, msg)] = h.drain()
    assert to == 0 and isinstance(msg, proto.Disconnect)


def test_the_services_refusals_are_error_replies():
    """What the service refuses (an unknown operation, a payload over the limits) comes
    back as an ERROR naming the problem (`run_job`)."""
    service = EchoService()

    def answer(job: Job, limits: Limits = proto.LIMITS) -> tuple[str, str | None]:
        frames = run_job(service, job, limits, lambda frames: None)
        msg = proto.parse_message(wire(frames))
        assert isinstance(msg, proto.Reply) and msg.command is proto.Command.ERROR
        code, _, field = proto.decode_error(msg.payload)
        return code, field

    far = 1e12
    unknown = Job(b"j", "echo", "dance", far, proto.encode_payload({}))
    assert answer(unknown) == ("unknown_operation", "operation")
    big = proto.encode_payload({"pad": "x" * 1000}, {"a": np.zeros(3)})
    code, _ = answer(Job(b"j", "echo", "echo", far, big), Limits(max_header_bytes=100))
    assert code == "too_large"
    assert answer(Job(b"j", "echo", "echo", 0.0, big)) == ("timeout", None)


# --------------------------------------------------------------------------- hostile brokers


HOSTILE = [
    [],
    [b""],
    [b"garbage"],
    [b"IKv0", b"\x01"],
    [proto.PROTOCOL, b"\xff"],
    [proto.PROTOCOL, proto.Command.REQUEST.value, b"j"],
    [proto.PROTOCOL, proto.Command.REQUEST.value, b"", b"echo", b"echo", b"\0\0\0\1", b"{}"],
    [proto.PROTOCOL, proto.Command.REQUEST.value, b"j" * 10_000, b"e", b"e", b"\0\0\0\1", b""],
    [proto.PROTOCOL, proto.Command.REQUEST.value, b"j", b"\xff", b"e", b"\0\0\0\1", b""],
    [proto.PROTOCOL, proto.Command.REQUEST.value, b"j", b"e", b"e", b"\0\1", b""],
    [proto.PROTOCOL, proto.Command.ERROR.value, b"", b"\xc1not msgpack"],
    [proto.PROTOCOL, proto.Command.ERROR.value, b"", b"\x93\x01\x02\x03"],
    [proto.PROTOCOL, proto.Command.HEARTBEAT.value, b"x" * 100_000],
    [proto.PROTOCOL, proto.Command.READY.value, b"\x80"],
    [proto.PROTOCOL, proto.Command.FINAL.value, b"j", b""],
    [b"x"] * 10_000,
]


@pytest.mark.parametrize("warming", [True, False])
def test_hostile_broker_messages_never_crash_the_core_nor_end_the_link(warming):
    h = Harness(brokers=2)
    if warming:
        h.warm()
    else:
        h.serve()
    for frames in HOSTILE:
        assert h.send(0, frames) is None
    out = h.drain()
    assert all(isinstance(m, proto.Heartbeat | Op) for _, m in out), out
    assert h.core.links[0].connected and h.core.links[0].refused is None
    assert h.core.links[0].broken is None
    if not warming:  # still serving it
        assert h.request(0, b"ok") is not None


def test_messages_on_a_connection_that_ended_are_ignored():
    h = Harness()
    h.serve()
    h.send(0, proto.disconnect_frames())
    assert h.request(0, b"late") is None
    assert h.drain() == []
