"""#16: a stroke job's results streamed in order while the rest is computed.

Two halves. Against a scripted broker (`conftest.FakeBroker`, a real ROUTER answering with
StrokeBatch arrays that carry each pair's index): order whatever order answers come in,
lost and retryable chunks, an error mid-stream, the memory bound of a slow consumer, a
consumer slower than the timeout, and leaving early. Against the real broker and IK worker
(`ik_endpoint`): stream == compute to the bit, the first slice is one pair, an error in a
later chunk, and what leaving early leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio
from conftest import KINDS, FakeBroker, run_with

from zmq_ik.client import AsyncIKClient, IKClient
from zmq_ik.errors import IKError, IKTimeout, InputError, RemoteError
from zmq_ik.model import Scene, Stroke, StrokeBatch, StrokeList, ops
from zmq_ik.protocol import (
    BROKER_SERVICE,
    CANCEL,
    Command,
    decode_payload,
    encode_payload,
    error_frames,
    reply_frames,
)
from zmq_ik.robots import example_paths

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene.from_yaml(example_paths()[0])


def marked_job(scene: Scene, pairs: int) -> StrokeList:
    """Pair i's strokes sit at x = i mm: the fake worker's answer carries i back."""
    n = scene.stroke_length
    return StrokeList(
        [
            (Stroke(meter_coords=np.full((n, 3), i * 1e-3)), Stroke(meter_coords=np.zeros((n, 3))))
            for i in range(pairs)
        ]
    )


def pair_indices(part: StrokeBatch) -> list[int]:
    return [round(float(x) * 1000) for x in part.joints[:, 0, 0, 0]]


def chunk_of(req: Any) -> tuple[int, int]:
    """(first pair index, pairs) of a strokebatch request from `marked_job`."""
    coords = decode_payload(req.payload).arrays["coords"]
    return round(float(coords[0, 0, 0, 0]) * 1000) if len(coords) else 0, len(coords)


def fake_strokebatch(req: Any) -> list[Any]:
    """What an IK worker answers, with each pair's marker in its joints."""
    payload = decode_payload(req.payload)
    scene = Scene.from_dict(payload.header["scene"])
    coords = payload.arrays["coords"]
    b, n, o = len(coords), scene.stroke_length, scene.offset_num
    marker = np.broadcast_to(coords[:, 0, :, :1, None], (b, n, 1, 1))
    zeros = {k: np.zeros((b, n, o, d), np.float32) for k, d in (("p", 3), ("r", 4), ("e", 2))}
    arrays = {
        "ee_pos_l": zeros["p"],
        "ee_pos_r": zeros["p"],
        "ee_rot_l": zeros["r"],
        "ee_rot_r": zeros["r"],
        "joints": np.ascontiguousarray(np.broadcast_to(marker, (b, n, o, 14)), np.float32),
        "pos_err": zeros["e"],
        "ori_err": zeros["e"],
    }
    return reply_frames(Command.FINAL, req.request_id, encode_payload({}, arrays))


def answer(req: Any) -> list[Any]:
    if req.service == BROKER_SERVICE:
        return reply_frames(Command.FINAL, req.request_id, encode_payload({"workers": []}))
    return fake_strokebatch(req)


def run_stream(
    kind: str,
    endpoint: str,
    make: Callable[[Any], Any],
    *,
    each: Callable[[int, StrokeBatch], Any] | None = None,
    after: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> tuple[list[tuple[int, StrokeBatch]], BaseException | None, Any]:
    """Consume ``make(client)`` (a stream) with either client: the slices got, the error
    that ended it (or None), and ``after(client)``'s result. ``each`` returning False breaks."""
    got: list[tuple[int, StrokeBatch]] = []

    def take(start: int, part: StrokeBatch) -> bool:
        """Keep a slice; True: stop here."""
        got.append((start, part))
        return each is not None and each(start, part) is False

    def sync_body(client: IKClient) -> Any:
        err = None
        try:
            for start, part in make(client):
                if take(start, part):
                    break
        except IKError as e:
            err = e
        return got, err, after(client) if after else None

    async def async_body(client: AsyncIKClient) -> Any:
        err = None
        try:
            async for start, part in make(client):
                if take(start, part):
                    break
        except IKError as e:
            err = e
        return got, err, (await after(client)) if after else None

    return run_with(kind, endpoint, sync_body if kind == "sync" else async_body, **kwargs)  # type: ignore[no-any-return]


def assert_in_order(got: list[tuple[int, StrokeBatch]], pairs: int) -> None:
    starts = [s for s, _ in got]
    assert starts == [0, *np.cumsum([len(p) for _, p in got])[:-1].tolist()]
    assert [i for _, p in got for i in pair_indices(p)] == list(range(pairs))


# --------------------------------------------------------------------------- scripted broker


@pytest.mark.parametrize("kind", KINDS)
def test_slices_come_in_order_whatever_order_the_answers_come_in(kind, zctx, scene):
    """First chunk one pair, then doubling; the later a chunk was sent, the sooner it is
    answered here: the stream still yields 0, 1, 3, 7... in order."""

    def script(n: int, req: Any) -> list[Any]:
        return [(max(0.0, 0.3 - 0.05 * n), fake_strokebatch(req))]

    with FakeBroker(zctx, script) as broker:
        got, err, _ = run_stream(
            kind, broker.endpoint, lambda c: c.stream(scene, marked_job(scene, 40))
        )
    assert err is None
    assert [(s, len(p)) for s, p in got] == [(0, 1), (1, 2), (3, 4), (7, 8), (15, 16), (31, 9)]
    assert_in_order(got, 40)
    assert len(broker.requests) == 6


@pytest.mark.parametrize("kind", KINDS)
def test_lost_and_retryable_chunks_are_resent_and_the_stream_stays_in_order(kind, zctx, scene):
    def script(n: int, req: Any) -> list[Any]:
        first, _ = chunk_of(req)
        tries = sum(1 for r in broker.requests if r.request_id == req.request_id)
        if first == 1 and tries == 1:
            return []  # lost with its worker, say: resent at the attempt's deadline
        if first == 3 and tries == 1:
            return [(0, error_frames(req.request_id, "worker_lost", "3 workers died"))]
        return [(0, fake_strokebatch(req))]

    with FakeBroker(zctx, script) as broker:
        t0 = time.monotonic()
        got, err, _ = run_stream(
            kind,
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 20)),
            timeout=0.3,
            retries=2,
        )
    assert err is None and time.monotonic() - t0 < 3
    assert_in_order(got, 20)
    ids = [r.request_id for r in broker.requests]
    assert len(ids) == len(set(ids)) + 2  # chunks 1 and 3 sent twice, same ids


@pytest.mark.parametrize("kind", KINDS)
def test_error_mid_stream_raises_after_every_earlier_slice(kind, zctx, scene):
    """Chunk 3 fails while chunk 0 is still being computed: slices 0-2 are yielded first,
    then the error; nothing is sent after the failure is known."""

    def script(n: int, req: Any) -> list[Any]:
        first, _ = chunk_of(req)
        if first == 7:  # the fourth chunk
            return [(0, error_frames(req.request_id, "bad_request", "bad coords", "coords"))]
        return [(0.3 if first == 0 else 0, fake_strokebatch(req))]

    with FakeBroker(zctx, script) as broker:
        got, err, pending = run_stream(
            kind,
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 200), max_in_flight=8),
            after=lambda c: _pending(c),
        )
    assert isinstance(err, RemoteError) and err.code == "bad_request" and err.field == "coords"
    assert [s for s, _ in got] == [0, 1, 3]  # every slice before the failed chunk
    assert_in_order(got, 7)
    assert pending == 0
    sent = sorted(chunk_of(r)[0] for r in broker.requests)
    # The first window only: taking slices 0-2 freed three slots, but the failure was known.
    assert sent == [0, 1, 3, 7, 15, 31, 63, 127], sent


def _pending(client: Any) -> Any:
    n = len(client._core.pending)
    if isinstance(client, AsyncIKClient):

        async def now() -> int:
            return n

        return now()
    return n


@pytest.mark.parametrize("kind", KINDS)
def test_slow_consumer_holds_at_most_max_in_flight_chunks(kind, zctx, scene):
    """The workers answer at once; the consumer takes 20 ms a slice. Sent chunks never run
    ahead of the consumer by more than ``max_in_flight`` (sent + answered-not-yielded)."""
    with FakeBroker(zctx, lambda n, req: [(0, fake_strokebatch(req))]) as broker:
        ahead: list[int] = []

        def each(start: int, part: StrokeBatch) -> None:
            time.sleep(0.02)
            ahead.append(len(broker.requests) - start // 2)

        got, err, _ = run_stream(
            kind,
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 40), max_in_flight=3, chunk_pairs=2),
            each=each,
        )
    assert err is None and len(got) == 20
    assert_in_order(got, 40)
    assert max(ahead) <= 3, ahead  # slice k is being consumed: at most k + 3 chunks sent


@pytest.mark.parametrize("kind", KINDS)
def test_consumer_slower_than_the_timeout_causes_no_resend(kind, zctx, scene):
    """Answers that arrived while the consumer was busy (past their attempt's deadline) are
    read before any timer is handled: no false retry, no false `IKTimeout`."""

    def script(n: int, req: Any) -> list[Any]:  # chunks 1-3 arrive while slice 0 is consumed
        return [(0.1 if chunk_of(req)[0] else 0, fake_strokebatch(req))]

    with FakeBroker(zctx, script) as broker:
        got, err, _ = run_stream(
            kind,
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 4), max_in_flight=4, chunk_pairs=1),
            each=lambda s, p: time.sleep(0.6) if s == 0 else None,  # blocks (also the loop)
            timeout=0.2,
            retries=0,
        )
    assert err is None, err
    assert_in_order(got, 4)
    assert len(broker.requests) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_leaving_early_forgets_the_held_chunks(kind, zctx, scene):
    """``break`` after the first slice: the chunks still held are forgotten at once (no
    retry, nothing more sent, their late answers dropped) and the client carries on."""

    def script(n: int, req: Any) -> list[Any]:
        if req.service == BROKER_SERVICE:
            return [(0, answer(req))]
        first, _ = chunk_of(req)
        return [(0 if first == 0 else 0.3, fake_strokebatch(req))]

    def after(client: Any) -> Any:
        left = len(client._core.pending)
        time.sleep(0.5)  # the late answers arrive, and attempts' deadlines pass
        if isinstance(client, AsyncIKClient):

            async def go() -> Any:
                await asyncio.sleep(0.2)
                return left, await client.ping()

            return go()
        return left, client.ping()

    with FakeBroker(zctx, script) as broker:
        got, err, (left, ping) = run_stream(
            kind,
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 40), max_in_flight=4, chunk_pairs=2),
            each=lambda s, p: False,
            after=after,
            timeout=0.2,
            retries=3,
        )
    assert err is None and [s for s, _ in got] == [0]
    assert left == 0 and "workers" in ping
    strokebatch = [r for r in broker.requests if r.service != BROKER_SERVICE]
    assert len(strokebatch) == 4  # the window, sent once: no retry, nothing more
    [cancel] = [r for r in broker.requests if r.operation == CANCEL]  # the broker is told
    assert decode_payload(cancel.payload).header["ids"] == [r.request_id for r in strokebatch[1:]]


def test_cancelled_task_forgets_its_chunks(zctx, scene):
    def script(n: int, req: Any) -> list[Any]:
        if req.service == BROKER_SERVICE:  # the cancel of what the task held (#18.11)
            return [(0, answer(req))]
        return [] if chunk_of(req)[0] else [(0, fake_strokebatch(req))]  # only chunk 0

    async def go(endpoint: str) -> tuple[int, int]:
        actx = zmq.asyncio.Context()
        try:
            async with AsyncIKClient(endpoint, context=actx, timeout=5.0) as client:

                async def consume() -> None:
                    async for _ in client.stream(scene, marked_job(scene, 40), max_in_flight=4):
                        pass

                task = asyncio.ensure_future(consume())
                await asyncio.sleep(0.3)
                held = len(client._core.pending)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return held, len(client._core.pending)
        finally:
            actx.destroy(linger=0)

    with FakeBroker(zctx, script) as broker:
        held, left = asyncio.run(go(broker.endpoint))
    assert held == 4 and left == 0
    chunks = [r.request_id for r in broker.requests if r.service != BROKER_SERVICE]
    [cancel] = [r for r in broker.requests if r.operation == CANCEL]
    assert decode_payload(cancel.payload).header["ids"] == chunks[1:]  # the 3 unanswered


# --------------------------------------------------------------------------- real IK worker


@pytest.fixture(scope="module")
def job(scene: Scene) -> tuple[Scene, StrokeList]:
    pytest.importorskip("jax")
    strokes = StrokeList.from_yaml(example_paths()[1], stroke_length=scene.stroke_length)
    return scene, strokes[:12]


@pytest.mark.timeout(600)
def test_stream_equals_compute_to_the_bit(ik_endpoint, job):
    scene, strokes = job
    with IKClient(ik_endpoint, timeout=120) as client:
        whole = client.compute(scene, strokes, chunk_pairs=len(strokes))  # one piece
        computed = client.compute(scene, strokes)
        got = list(client.stream(scene, strokes))

    async def in_async() -> list[tuple[int, StrokeBatch]]:
        async with AsyncIKClient(ik_endpoint, timeout=120) as client:
            return [item async for item in client.stream(scene, strokes)]

    got_async = asyncio.run(in_async())
    assert [(s, len(p)) for s, p in got] == [(0, 1), (1, 2), (3, 4), (7, 5)]
    assert [(s, len(p)) for s, p in got_async] == [(s, len(p)) for s, p in got]
    streamed = StrokeBatch.concat(p for _, p in got)
    assert streamed == computed == whole == StrokeBatch.concat(p for _, p in got_async)
    if scene.first_last_rest:  # the job's first/last rest, not each chunk's
        assert got[0][1] == whole[0:1] and got[-1][1] == whole[7:12]


@pytest.mark.timeout(600)
def test_real_worker_error_in_a_later_chunk(ik_endpoint, job, monkeypatch):
    """The third chunk carries NaN (as if corrupted on the way): the worker refuses it
    (`bad_request`, field coords) and the stream raises there, after slices 0 and 1."""
    scene, strokes = job
    real = ops.strokebatch_request
    built: list[int] = []

    def corrupt(scene: Scene, packed: Any) -> Any:
        header, arrays = real(scene, packed)
        built.append(len(packed))
        if len(built) == 3:
            arrays = {**arrays, "coords": np.full_like(arrays["coords"], np.nan)}
        return header, arrays

    monkeypatch.setattr(ops, "strokebatch_request", corrupt)
    got, err, _ = run_stream("sync", ik_endpoint, lambda c: c.stream(scene, strokes), timeout=120)
    assert isinstance(err, RemoteError) and err.code == "bad_request" and err.field == "coords"
    assert [(s, len(p)) for s, p in got] == [(0, 1), (1, 2)]


@pytest.mark.timeout(600)
def test_leaving_a_real_stream_early(ik_endpoint, job):
    """What stays behind after a ``break``: the chunks in flight are computed or dropped by
    their deadline, the broker's job table empties, and the same client is served at once."""
    scene, strokes = job
    with IKClient(ik_endpoint, timeout=30, retries=0) as client:
        t0 = time.monotonic()
        for _start, _part in client.stream(scene, strokes, max_in_flight=4):
            break
        assert client._core.pending == {}
        drained = None
        while time.monotonic() - t0 < 30:
            if client.status()["open_jobs"] == 0:
                drained = time.monotonic() - t0
                break
            time.sleep(0.02)
        t1 = time.monotonic()
        one = client.compute(scene, strokes[:1])
        after = time.monotonic() - t1
    assert drained is not None and len(one) == 1
    print(
        f"\nMEASURED break after slice 0: broker job table empty {drained:.2f}s later; "
        f"next one-pair compute {after * 1000:.0f} ms"
    )


def test_timeout_error_names_the_chunk_service(zctx, scene):
    """A stream against a broker that never answers ends in `IKTimeout` (no hang)."""
    with FakeBroker(zctx, lambda n, req: []) as broker:
        got, err, _ = run_stream(
            "sync",
            broker.endpoint,
            lambda c: c.stream(scene, marked_job(scene, 3)),
            timeout=0.1,
            retries=1,
        )
    assert got == [] and isinstance(err, IKTimeout) and "strokebatch" in str(err)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_stroke_later_in_the_job_raises_before_any_slice(kind, zctx, scene):
    """The job is checked while its first chunk is computed: a stroke of the wrong length at
    pair 30 raises `InputError` naming it, and no slice reaches the robot."""
    pairs = list(marked_job(scene, 40).pairs)
    pairs[30] = (Stroke(meter_coords=np.zeros((scene.stroke_length + 1, 3))), pairs[30][1])
    with FakeBroker(zctx, lambda n, req: [(0, fake_strokebatch(req))]) as broker:
        got, err, _ = run_stream(
            kind, broker.endpoint, lambda c: c.stream(scene, StrokeList(pairs))
        )
    assert got == [] and isinstance(err, InputError) and err.field is not None
    assert "strokes[30].left" in str(err), err
    assert len(broker.requests) == 1  # only the first chunk went out
