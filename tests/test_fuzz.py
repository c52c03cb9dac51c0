"""Fuzzing: random and mutated frame sequences against the broker (in process and live) and a
live worker. Nothing may crash or hang, every malformed message is counted, and a good client
is served throughout.

Messages start from real, valid ZIK/1 messages (REQUEST with arrays, READY, FINAL, PARTIAL,
ERROR, HEARTBEAT, DISCONNECT, management) and are mutated: frames dropped, duplicated,
truncated, bit-flipped, replaced, inserted, swapped; oversized headers, ids and frame counts;
bad array specs (big-endian, object, unicode and structured dtypes, negative, huge and deep
shapes, wrong frame sizes, duplicate names); a msgpack-numpy *object* array whose pickle would
create a file if anything ever unpickled it; bad deadlines and other protocol versions.

CI runs a few thousand messages. The full form (``ZMQ_IK_SLOW=1`` or ``-m slow``) sends
100,000 to each target and prints counts and rejects by error code (``-s`` to see them).
"""

from __future__ import annotations

import os
import pickle
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import FORMS, ROOT, full_form, wait_for_workers, wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmq_ik import protocol as proto
from zmq_ik.broker import Broker, BrokerCore, BrokerSettings
from zmq_ik.client import IKClient
from zmq_ik.errors import ProtocolError

pytestmark = pytest.mark.timeout(300)

FULL_COUNT = 100_000
CANARY = Path(os.environ.get("TMPDIR", "/tmp")) / f"zmq-ik-fuzz-unpickled-{os.getpid()}"


# --------------------------------------------------------------------------- corpus


class _Canary:
    """Unpickling this creates CANARY: proof that someone unpickled network input."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(CANARY), "w"))


def _evil_header() -> bytes:
    obj = {
        b"nd": True,
        b"type": "|O",
        b"kind": b"O",
        b"shape": [1],
        b"data": pickle.dumps(_Canary()),
    }
    return msgpack.packb({"x": obj, "arrays": []}, use_bin_type=True)


BAD_SPECS: list[Any] = [
    ["a", ">f8", [2]],
    ["a", "|O", [1]],
    ["a", "<U4", [1]],
    ["a", "|V8", [1]],
    ["a", "<f4", [-1]],
    ["a", "<f4", [2**41]],
    ["a", "<f4", [1] * 33],
    ["a", "<f4", [True]],
    ["a", "<f4", "3"],
    ["", "<f4", [1]],
    [1, "<f4", [1]],
    ["a", "<f4"],
    "a",
    None,
    ["a", "<f4", [2**31, 2**31]],
    ["a", "<f8", [3]],  # right dtype, wrong frame size
]


def corpus(service: str, worker_robot: str) -> list[list[bytes]]:
    """Valid messages of every kind, as bytes frames."""
    arrays = {
        "target_pos": np.arange(12, dtype="<f4").reshape(2, 2, 3),
        "flags": np.array([True, False]),
        "scalar": np.float64(3.5),
        "empty": np.zeros((0, 3), "<i8"),
    }
    job = (1).to_bytes(8, "big")
    msgs = [
        proto.request_frames(
            b"req-1", service, "echo", 2000, proto.encode_payload({"k": [1, 2]}, arrays)
        ),
        proto.request_frames(b"r2", service, "echo", 300, proto.encode_payload({})),
        proto.request_frames(b"r3", service, "unknownop", 300, proto.encode_payload({"x": 1.5})),
        proto.request_frames(
            b"r4", worker_robot, "solve", 100, proto.encode_payload({}, {"a": np.ones(3)})
        ),
        proto.request_frames(b"m1", proto.BROKER_SERVICE, "ping", 1000, proto.encode_payload({})),
        proto.ready_frames({"robots": [worker_robot], "device": "cpu", "capacity": 1, "pid": 1}),
        proto.reply_frames(
            proto.Command.FINAL, job, proto.encode_payload({"ok": 1}, {"j": np.zeros(4, "<f4")})
        ),
        proto.reply_frames(proto.Command.PARTIAL, job, proto.encode_payload({"progress": [1, 2]})),
        proto.reply_frames(
            proto.Command.ERROR, job, proto.encode_payload({"code": "internal", "message": "x"})
        ),
        proto.heartbeat_frames(),
        proto.disconnect_frames("bye"),
    ]
    return [wire(m) for m in msgs]


OPS = (
    "drop",
    "dup",
    "truncate",
    "flip",
    "replace",
    "insert",
    "swap",
    "big_header",
    "many_frames",
    "long_field",
    "bad_spec",
    "evil_header",
    "bad_deadline",
    "version",
    "nothing",
)
Op = tuple[str, int, bytes]


def mutate(frames: list[bytes], ops: Sequence[Op]) -> list[bytes]:
    """Apply mutations; each op is (kind, index, blob) with index taken modulo the length."""
    out = list(frames)
    for kind, i, blob in ops:
        n = len(out)
        j = i % n if n else 0
        if kind == "drop" and n:
            del out[j]
        elif kind == "dup" and n:
            out.insert(j, out[j])
        elif kind == "truncate" and n:
            out[j] = out[j][: len(blob) % (len(out[j]) + 1)]
        elif kind == "flip" and n and out[j]:
            f = bytearray(out[j])
            for k, b in enumerate(blob or b"\x01"):
                f[(i + k * 7) % len(f)] ^= b or 1
            out[j] = bytes(f)
        elif kind == "replace" and n:
            out[j] = blob
        elif kind == "insert":
            out.insert(j, blob)
        elif kind == "swap" and n > 1:
            k = (j + 1 + len(blob)) % n
            out[j], out[k] = out[k], out[j]
        elif kind == "big_header" and n > 2:
            out[min(n - 1, 6 if n > 6 else 2)] = b"\x00" * (1024 * 1024 + 1 + len(blob))
        elif kind == "many_frames":
            out.extend([blob] * (73 + i % 8))
        elif kind == "long_field" and n > 2:
            out[2 + j % min(3, n - 2)] = b"x" * (65 + (i % 100)) + blob
        elif kind == "bad_spec" and n > 6:
            spec = BAD_SPECS[i % len(BAD_SPECS)]
            header: dict[str, Any] = {"arrays": [spec] if i % 3 else [spec, spec]}
            out[6] = msgpack.packb(header, use_bin_type=True)
            out[7:] = [blob]
        elif kind == "evil_header" and n > 2:
            out[6 if n > 6 else 3 if n > 3 else 2] = _evil_header()
        elif kind == "bad_deadline" and n > 5:
            out[5] = blob[:3] if len(blob) != 4 else blob + b"\x00"
        elif kind == "version" and n:
            out[0] = b"ZIK/" + blob[:3]
    return out


op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 200), st.binary(max_size=24))
message_strategy = st.tuples(st.integers(0, 1000), st.lists(op_strategy, max_size=3))
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def random_ops(rng: random.Random) -> list[Op]:
    return [
        (rng.choice(OPS), rng.randrange(201), rng.randbytes(rng.randrange(25)))
        for _ in range(rng.randrange(4))
    ]


def random_messages(seed: int, corpus_: list[list[bytes]]) -> Iterator[list[bytes]]:
    """An endless stream of mutated corpus messages (the bulk of the full form)."""
    rng = random.Random(seed)
    while True:
        if rng.random() < 0.03:  # now and then, pure noise
            yield [rng.randbytes(rng.randrange(40)) for _ in range(rng.randrange(1, 9))]
        else:
            yield mutate(rng.choice(corpus_), random_ops(rng))


def no_canary() -> None:
    assert not CANARY.exists(), "network input was unpickled"


# --------------------------------------------------------------------------- in process


class CoreFuzz:
    """BrokerCore driven by fuzzers, a simulated good worker and a good client.

    The good worker answers every job it gets; the good client's requests must each get
    exactly one FINAL. State invariants are checked as it goes.
    """

    GOOD_WORKER, GOOD_CLIENT = b"good-worker", b"good-client"

    def __init__(self) -> None:
        self.core = BrokerCore(BrokerSettings(max_queue=64), now=0.0)
        self.now = 0.0
        self.sent = 0
        self.good_sent: set[bytes] = set()
        self.good_answers: Counter[bytes] = Counter()
        self.register()

    def register(self) -> None:
        """READY and, as a real worker at once, a HEARTBEAT: jobs come from then on."""
        for frames in (proto.ready_frames({"robots": ["echo"]}), proto.heartbeat_frames()):
            self.core.handle(self.GOOD_WORKER, wire(frames), self.now)

    def handle(self, identity: bytes, frames: list[bytes]) -> None:
        self.core.handle(identity, frames, self.now)
        self.pump()

    def pump(self) -> None:
        while self.core.outbox:
            identity, frames = self.core.outbox.popleft()
            msg = proto.parse_message(wire(frames))  # whatever the broker sends is valid framing
            if identity == self.GOOD_WORKER and isinstance(msg, proto.Request):
                self.core.handle(
                    identity,
                    wire(proto.reply_frames(proto.Command.FINAL, msg.request_id, msg.payload)),
                    self.now,
                )
            elif identity == self.GOOD_WORKER and msg.__class__.__name__ == "Disconnect":
                self.register()
            elif identity == self.GOOD_CLIENT and isinstance(msg, proto.Reply):
                assert msg.command is proto.Command.FINAL, proto.decode_error(msg.payload)
                self.good_answers[msg.request_id] += 1

    def fuzz(self, identity: bytes, frames: list[bytes]) -> None:
        self.sent += 1
        self.now += 0.001
        self.handle(identity, frames)
        if self.sent % 10 == 0:
            rid = b"good-%d" % self.sent
            self.good_sent.add(rid)
            self.handle(
                self.GOOD_CLIENT,
                wire(
                    proto.request_frames(rid, "echo", "echo", 5000, proto.encode_payload({"n": 1}))
                ),
            )
            self.handle(self.GOOD_WORKER, wire(proto.heartbeat_frames()))
            self.core.tick(self.now)
            self.pump()
        if self.sent % 500 == 0:
            self.check()

    def check(self) -> None:
        core = self.core
        assert len(core.by_client) == len(core.jobs)
        for job in core.jobs.values():
            assert not job.closed
            if job.worker is not None:
                assert core.workers[job.worker].job is job
            else:
                assert job in core.queues[job.service]
        for identity in core.idle:
            assert core.workers[identity].job is None
        assert all(len(q) <= core.settings.max_queue for q in core.queues.values())
        assert self.good_answers.keys() <= self.good_sent
        assert all(n == 1 for n in self.good_answers.values())

    def finish(self) -> None:
        self.now += 2**32 / 1000 + 1  # every deadline passes, even a 49-day one
        self.core.tick(self.now)  # a gap this long is a broker stall: deadlines wait a beat
        self.now += self.core.settings.heartbeat_interval
        self.core.tick(self.now)
        self.pump()
        self.check()
        assert self.good_answers.keys() == self.good_sent  # every good request answered once
        assert not self.core.jobs


FUZZERS = [b"fuzz-a", b"fuzz-b", b"fuzz-c"]


def test_broker_core_fuzz_hypothesis() -> None:
    fz = CoreFuzz()
    base = corpus("echo", "fuzzbot")

    @settings(FUZZ_SETTINGS, max_examples=300)
    @given(batch=st.lists(message_strategy, min_size=1, max_size=12), who=st.integers(0, 2))
    def run(batch: list[tuple[int, list[Op]]], who: int) -> None:
        for pick, ops in batch:
            fz.fuzz(FUZZERS[who], mutate(base[pick % len(base)], ops))

    run()
    fz.finish()
    no_canary()
    print(f"\nFUZZ core/hypothesis: {fz.sent} messages, rejects {dict(fz.core.rejects)}")
    assert fz.sent >= 1000 and sum(fz.core.rejects.values()) > fz.sent // 4


@pytest.mark.parametrize("form", FORMS)
def test_broker_core_fuzz_random(request, form: str) -> None:
    """Seeded random mutations, fast (no sockets): 5,000 in CI, 100,000+ in the full form."""
    count = FULL_COUNT if full_form(request, form) else 20_000
    fz = CoreFuzz()
    base = corpus("echo", "fuzzbot")
    t0 = time.perf_counter()
    for n, frames in enumerate(random_messages(1234, base)):
        if n >= count:
            break
        fz.fuzz(FUZZERS[n % 3], frames)
    fz.finish()
    no_canary()
    dt = time.perf_counter() - t0
    print(
        f"\nFUZZ core/random: {fz.sent} messages in {dt:.1f}s ({fz.sent / dt:,.0f}/s), "
        f"rejects {dict(sorted(fz.core.rejects.items()))}, counters "
        f"{ {k: v for k, v in fz.core.counters.items() if k != 'management'} }"
    )


@pytest.mark.parametrize("form", FORMS)
def test_codec_fuzz(request, form: str) -> None:
    """The worker's and client's payload decoder: only ProtocolError, never anything else."""
    count = FULL_COUNT if full_form(request, form) else 5000
    base = [m[6:] for m in corpus("echo", "r") if len(m) > 6]  # payloads of the requests
    rng = random.Random(99)
    codes: Counter[str] = Counter()
    for _ in range(count):
        payload = mutate(rng.choice(base), random_ops(rng))
        try:
            proto.decode_payload(payload)
            codes["ok"] += 1
        except ProtocolError as e:
            codes[e.code.value] += 1
    no_canary()
    print(f"\nFUZZ codec: {count} payloads, outcomes {dict(codes)}")
    assert codes["ok"] and codes["protocol"]


# --------------------------------------------------------------------------- live broker


def _drain(sock: zmq.Socket) -> int:
    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return n
        n += 1


@pytest.mark.parametrize("form", FORMS)
def test_live_broker_fuzz(procs, request, form: str) -> None:
    full = full_form(request, form)
    target = FULL_COUNT if full else 10_000
    broker = procs.broker()
    endpoint = broker.endpoint
    urdf = str(ROOT / "zmq_ik" / "robots" / "tatbot.urdf")  # any existing file: echo ignores it
    good_worker = procs.echo_worker(endpoint)  # serves "echo": the good client's robot
    fuzz_worker = procs.echo_worker(endpoint, "--robot", f"fuzzecho={urdf}")  # decodes fuzz
    wait_for_workers(endpoint, 2)
    ctx = zmq.Context()
    base = corpus("fuzzecho", "fuzzbot")
    sockets: list[zmq.Socket] = []

    def new_socket() -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 10_000)  # a hung broker fails the test, not the runner
        s.connect(endpoint)
        sockets.append(s)
        return s

    fuzzers = [new_socket() for _ in range(3)]
    good = IKClient(endpoint, timeout=10.0, retries=0, context=ctx)
    sent = 0
    served = 0
    good_latency: list[float] = []

    def send(frames: list[bytes]) -> None:
        nonlocal sent, served
        fuzzers[sent % len(fuzzers)].send_multipart(frames or [b""])  # 0 frames: not sendable
        sent += 1
        if sent % 250 == 0:
            for s in fuzzers:
                _drain(s)
            t0 = time.perf_counter()
            assert good.request("echo", "echo", {"n": sent}).header["n"] == sent
            good_latency.append(time.perf_counter() - t0)
            served += 1
        if sent % 5000 == 0:  # fresh identities now and then (drops fuzz "workers")
            old = fuzzers.pop(0)
            old.close(0)
            sockets.remove(old)
            fuzzers.append(new_socket())

    @settings(FUZZ_SETTINGS, max_examples=250)
    @given(batch=st.lists(message_strategy, min_size=1, max_size=12))
    def run(batch: list[tuple[int, list[Op]]]) -> None:
        for pick, ops in batch:
            send(mutate(base[pick % len(base)], ops))

    t0 = time.perf_counter()
    try:
        run()  # hypothesis-driven part (~1,500 messages)
        for frames in random_messages(7, base):  # seeded random part, up to the target
            if sent >= target:
                break
            send(frames)
        dt = time.perf_counter() - t0
        time.sleep(0.5)
        info = good.status()
        assert good.request("echo", "echo", {"last": 1}).header["last"] == 1
    finally:
        good.close()
        for s in sockets:
            s.close(0)
        ctx.destroy(linger=0)
    for proc in (broker, good_worker, fuzz_worker):
        assert proc.poll() is None, procs.log(proc)[-3000:]
    no_canary()
    assert sum(info["rejects"].values()) > sent // 4
    latencies = sorted(good_latency)
    print(
        f"\nFUZZ live broker: {sent} messages in {dt:.1f}s ({sent / dt:,.0f}/s); "
        f"rejects by code {dict(sorted(info['rejects'].items()))}; errors sent "
        f"{dict(sorted(info['errors'].items()))}; good client served {served + 1}/{served + 1}, "
        f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"broker counters {info['counters']}"
    )


# --------------------------------------------------------------------------- live worker


class FakeBroker:
    """A ROUTER the worker connects to: the test plays the broker, mutations included."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.worker: bytes | None = None
        self.readies = 0
        self.replies: Counter[str] = Counter()
        self.answered: set[bytes] = set()
        self.last_hb = 0.0
        self.unexpected: list[str] = []

    def pump(self, wait_ms: int = 0) -> None:
        if not self.sock.poll(wait_ms):
            return
        while True:
            try:
                identity, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            msg = proto.parse_message(frames)  # whatever the worker sends is valid framing
            if msg.__class__.__name__ == "Ready":
                self.worker = identity
                self.readies += 1
            elif isinstance(msg, proto.Reply) and identity == self.worker:
                kind = msg.command.name
                if msg.command is proto.Command.ERROR:
                    code, text, _ = proto.decode_error(msg.payload)
                    kind += ":" + code
                    if code == "internal" and "failing on purpose" not in text:
                        self.unexpected.append(text)
                self.replies[kind] += 1
                self.answered.add(msg.request_id)
        if time.monotonic() - self.last_hb > 0.1 and self.worker is not None:
            self.send(proto.heartbeat_frames())
            self.last_hb = time.monotonic()

    def send(self, frames: list[Any]) -> None:
        assert self.worker is not None
        try:
            self.sock.send_multipart([self.worker, *frames])
        except zmq.ZMQError as e:  # the worker reconnected with a new identity
            if e.errno != zmq.EHOSTUNREACH:
                raise

    def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "worker did not answer in time"
            self.pump(20)


@pytest.mark.parametrize("form", FORMS)
def test_live_worker_fuzz(procs, request, form: str) -> None:
    """Broker-to-worker messages, mutated, sent straight to a live echo worker."""
    target = FULL_COUNT if full_form(request, form) else 5000
    ctx = zmq.Context()
    fake = FakeBroker(ctx)
    worker = procs.start(  # -q: no warning line per malformed message
        "-q", "worker", "--echo", "--connect", fake.endpoint, "--heartbeat", "0.1"
    )
    # Broker-to-worker messages: REQUESTs (echo, fail, unknown op), heartbeats, stray replies
    # and READYs (which a worker must ignore). No DISCONNECT: it would only make it reconnect.
    base = [
        m
        for m in corpus("echo", "echo")
        if m[1] != proto.Command.DISCONNECT.value and m[3:4] != proto.BROKER_SERVICE.encode()
    ]
    base.append(wire(proto.request_frames(b"f", "echo", "fail", 500, proto.encode_payload({}))))
    sent = good = 0
    t0 = time.perf_counter()
    try:
        fake.wait(lambda: fake.worker is not None, 30)
        for frames in random_messages(11, base):
            if sent >= target:
                break
            fake.send(frames)
            sent += 1
            if sent % 200 == 0:  # a good request must still be answered, correctly
                rid = b"good-%d" % sent
                fake.send(
                    wire(
                        proto.request_frames(
                            rid, "echo", "echo", 5000, proto.encode_payload({"g": sent})
                        )
                    )
                )
                fake.wait(lambda rid=rid: rid in fake.answered, 30)
                good += 1
            else:
                fake.pump()
        dt = time.perf_counter() - t0
        time.sleep(0.3)
        fake.pump()
        assert worker.poll() is None, procs.log(worker)[-3000:]
        # `internal` only from the `fail` operation: bad input never becomes an exception.
        assert not fake.unexpected, fake.unexpected[:5]
    finally:
        ctx.destroy(linger=0)
    no_canary()
    print(
        f"\nFUZZ live worker: {sent} messages in {dt:.1f}s ({sent / dt:,.0f}/s); worker replies "
        f"{dict(sorted(fake.replies.items()))}; good requests answered {good}/{good}; "
        f"re-registrations {fake.readies - 1}"
    )


# --------------------------------------------------------------------------- MAXMSGSIZE


def test_oversized_frame_drops_the_connection_not_the_broker() -> None:
    """MAXMSGSIZE: libzmq refuses a frame over the limit before buffering it (the peer's
    connection is dropped); the broker keeps serving others. A small limit keeps it cheap."""
    settings_ = BrokerSettings(
        bind="tcp://127.0.0.1:0", limits=proto.Limits(max_message_bytes=64 * 1024)
    )
    ctx = zmq.Context()
    broker = Broker(settings_, context=ctx)
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    try:
        big = ctx.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(broker.endpoint)
        frames = proto.request_frames(
            b"big",
            proto.BROKER_SERVICE,
            "ping",
            1000,
            [proto.encode_payload({})[0], b"\x00" * 100_000],
        )
        big.send_multipart(frames)
        assert not big.poll(500)  # nothing comes back: the message never reached the broker
        with IKClient(broker.endpoint, timeout=2.0, retries=0, context=ctx) as client:
            info = client.status()
            assert info["counters"].get("requests", 0) == 0 and not info["rejects"]
        big.close(0)
    finally:
        broker.stop()
        thread.join(10)
        ctx.destroy(linger=0)
    assert not thread.is_alive()


def test_nothing_was_unpickled() -> None:
    no_canary()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-s", "-m", "slow"]))


def test_made_up_robot_names_neither_grow_nor_crash_the_broker() -> None:
    """Found by fuzzing: every robot name ever asked for kept a queue entry, and once there
    were enough of them the `status` reply outgrew the header limit and raised out of the
    broker loop. Empty queues are now forgotten, and a management reply that cannot be
    encoded is answered with an ERROR."""
    core = BrokerCore(BrokerSettings(), now=0.0)
    header = proto.encode_payload({})
    for i in range(20_000):
        frames = proto.request_frames(b"r%d" % i, f"made-up-robot-{i:06d}", "solve", 0, header)
        core.handle(b"client", wire(frames), 0.0)
    core.tick(0.1)
    assert not core.queues and not core.jobs
    core.outbox.clear()
    core.handle(
        b"client",
        wire(proto.request_frames(b"s", proto.BROKER_SERVICE, "status", 1000, header)),
        0.2,
    )
    (_, frames), *_ = core.outbox
    assert proto.parse_message(wire(frames)).command is proto.Command.FINAL
