"""Batches and stroke jobs over a `ClientCore`: `Exchange` schedules a batch of calls (a
window held at once, answers as they come or in order); `StrokeJob` cuts a stroke job into
chunks (`plan_chunks`) and reads their answers; `Assembly` joins a stream's slices.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from zmq_ik.client._checks import check_count, check_timeout
from zmq_ik.client._core import FAILED, PARTIAL, Call, ClientCore, Event
from zmq_ik.errors import InputError, ProtocolError
from zmq_ik.model import (
    ORI_TOL,
    POS_TOL,
    EEPoses,
    IKSettings,
    IKSolution,
    PackedStrokes,
    Scene,
    StrokeBatch,
    StrokeList,
    ops,
)
from zmq_ik.model.solution import check_judging
from zmq_ik.protocol import BROKER_SERVICE, Payload

DEFAULT_MAX_IN_FLIGHT = 8
"""Requests (chunks) a batch or stream holds at once by default."""
DEFAULT_CHUNK_PAIRS = 64
"""Largest automatic chunk of a stroke job, in stroke pairs: big enough that every worker
stays busy and per-message costs vanish, small enough to spread over workers."""
Progress = Callable[[int, int], None]
"""Called with (poses done, poses total) as a job's chunks come back."""


# --------------------------------------------------------------------------- calls
# What `IKClient` and `AsyncIKClient` send and read for each method: pure functions, so that
# each client's method is only its I/O (``request``, awaited or not).

Request = tuple[str, str, Mapping[str, Any], Mapping[str, np.ndarray]]
"""A call's ``request`` arguments: service, operation, header, arrays."""

Judging = tuple[float, float, bool]
"""A solve's ``(pos_tol, ori_tol, strict)``, checked (`check_judging`)."""

F = TypeVar("F", bound=Callable[..., Any])


def doc_from(source: Callable[..., Any], note: str = "") -> Callable[[F], F]:
    """Give the decorated method ``source``'s docstring (after ``note``, when given): the
    async client's methods document themselves as the sync ones do."""

    def copy(target: F) -> F:
        doc = inspect.cleandoc(source.__doc__ or "")
        target.__doc__ = f"{note}\n\n{doc}" if note else doc
        return target

    return copy


def solve_call(
    robot: str,
    target_wxyz: Any,
    target_pos: Any,
    rest: Any,
    ee_links: Sequence[str] | None,
    ik: IKSettings | None,
    pos_tol: Any = POS_TOL,
    ori_tol: Any = ORI_TOL,
    strict: Any = False,
    active: Any = None,
) -> tuple[Request, Judging]:
    """`solve`'s request and how its answer is judged (its inputs checked here, before
    anything is sent)."""
    judging = check_judging(pos_tol, ori_tol, strict)
    header, arrays = ops.solve_request(target_wxyz, target_pos, rest, ee_links, ik, active)
    return (robot, ops.SOLVE, header, arrays), judging


def read_solve(
    payload: Payload, call: Request, bounds: ops.JointBounds, judging: Judging
) -> IKSolution:
    """`solve`'s answer to ``call``, checked (`ops.check_solve_reply`) against the robot's
    joints (``bounds``, from `BoundsCache`) and the targets sent, its ``reached`` judged here
    by the call's tolerances (a worker never sees them); ``strict``:
    `IKSolution.require_reached` (of the end effectors with a target: the call's
    ``active``)."""
    n_poses, n_ee = call[3]["target_wxyz"].shape[:2]
    precise = bool(call[2].get("ik", {}).get("precise", False))
    pos_tol, ori_tol, strict = judging
    solution = ops.check_solve_reply(
        payload.arrays, n_poses, n_ee, bounds, precise, pos_tol, ori_tol, call[3].get("active")
    )
    if strict:
        solution.require_reached()
    return solution


class BoundsCache:
    """A client's `ops.JointBounds` per (robot, end effectors): `describe` is asked once,
    then every `solve` answer is checked against it (bounded: the oldest go first)."""

    SIZE = 256

    def __init__(self) -> None:
        self._bounds: dict[tuple[str, tuple[str, ...] | None], ops.JointBounds] = {}

    @staticmethod
    def key(robot: str, ee_links: Sequence[str] | str | None) -> tuple[str, tuple[str, ...] | None]:
        if ee_links is None:
            return robot, None
        return robot, (ee_links,) if isinstance(ee_links, str) else tuple(ee_links)

    def get(self, robot: str, ee_links: Sequence[str] | None) -> ops.JointBounds | None:
        return self._bounds.get(self.key(robot, ee_links))

    def put(
        self, robot: str, ee_links: Sequence[str] | None, info: Mapping[str, Any]
    ) -> ops.JointBounds:
        """Bounds from a `describe` answer ``info``, kept for next time."""
        bounds = ops.JointBounds.from_describe(info)
        if len(self._bounds) >= self.SIZE:
            del self._bounds[next(iter(self._bounds))]
        self._bounds[self.key(robot, ee_links)] = bounds
        return bounds


def fk_call(robot: str, joints: Any, ee_links: Sequence[str] | None) -> Request:
    """`fk`'s request (its joints checked here, before anything is sent)."""
    header, arrays = ops.fk_request(joints, ee_links)
    return robot, ops.FK, header, arrays


def read_fk(payload: Payload, request: Request) -> EEPoses:
    """The poses of an `fk` reply: as many as ``request`` (its `fk_call`) sent vectors."""
    return ops.read_fk_reply(payload.header, payload.arrays, len(request[3]["joints"]))


def describe_call(robot: str, ee_links: Sequence[str] | None) -> Request:
    return robot, ops.DESCRIBE, ops.describe_request(ee_links), {}


def read_describe(payload: Payload) -> dict[str, Any]:
    return ops.read_describe_reply(payload.header, payload.arrays)


PING: Request = (BROKER_SERVICE, "ping", {}, {})
STATUS: Request = (BROKER_SERVICE, "status", {}, {})


def read_ping(payload: Payload, t0: float) -> dict[str, Any]:
    """The broker's ping answer plus ``rtt_ms``, the round trip since ``t0``
    (`time.perf_counter`)."""
    return {**payload.header, "rtt_ms": (time.perf_counter() - t0) * 1000}


def read_status(payload: Payload) -> dict[str, Any]:
    return dict(payload.header)


# --------------------------------------------------------------------------- batches


class Exchange:
    """A batch of calls through a `ClientCore`, at most ``window`` held at once.

    Held = sent and unanswered, plus answered but not yet taken: a slow taker holds at most
    ``window`` answers in memory. ``ordered``: answers are taken in call order, and a failed
    call raises when its turn comes (after every earlier answer was taken; no call after it
    is sent). Unordered: answers are taken as they come and a failure raises at once.

    The loop: ``fill(now)``, send the core's outbox, then `take` until it returns None,
    then wait for a message or the core's timer; ``done`` when every call was taken.
    ``abandon`` (in a ``finally``) forgets whatever is still held.
    """

    def __init__(
        self,
        core: ClientCore,
        calls: Iterable[Call],
        *,
        timeout: float,
        window: int = DEFAULT_MAX_IN_FLIGHT,
        ordered: bool = False,
    ) -> None:
        self.core = core
        self.timeout = check_timeout(timeout)
        self.window = check_count(window, "max_in_flight")
        self.ordered = ordered
        self._calls = iter(calls)
        self._exhausted = False
        self._stopped = False  # a call failed (ordered): send no more
        self._sent = 0
        self._taken = 0
        self._in_flight: dict[int, tuple[bytes, Call]] = {}
        self._events: deque[Event] = deque()
        self._done: dict[int, tuple[int, Any]] = {}  # ordered: answers waiting their turn

    @property
    def done(self) -> bool:
        return self._exhausted and self._taken == self._sent

    @property
    def held(self) -> int:
        """Calls sent and not yet taken (in flight or answered)."""
        return self._sent - self._taken

    def append(self, event: Event) -> None:
        """The core's sink for this batch's calls."""
        self._events.append(event)

    def fill(self, now: float, sent: Callable[[], None] | None = None) -> None:
        """Submit calls until ``window`` are held or none are left; ``sent()`` after each (a
        loop sends the outbox there: the next call may take a while to build)."""
        while not self._exhausted and not self._stopped and self._sent - self._taken < self.window:
            index = self._sent
            try:
                call = next(self._calls)
            except StopIteration:
                self._exhausted = True
                return
            except Exception as e:
                if not self.ordered:
                    raise
                self._fail_here(index, e)
                return
            try:
                rid = self.core.submit(call, self.timeout, now, self.append, index)
            except Exception as e:
                if not self.ordered:
                    raise
                self._fail_here(index, e)
                return
            self._in_flight[index] = (rid, call)
            self._sent += 1
            if sent is not None:
                sent()

    def take(self) -> tuple[int, Payload] | None:
        """The next answer ``(index, payload)`` (None: none ready); runs ``on_partial``
        callbacks; raises a failed call's error."""
        events = self._events
        while events:
            index, kind, value = events.popleft()
            if kind == PARTIAL:
                entry = self._in_flight.get(index)
                if entry is not None and entry[1].on_partial is not None:
                    entry[1].on_partial(value)
                continue
            self._in_flight.pop(index, None)
            if self.ordered:
                self._done[index] = (kind, value)
                if kind == FAILED:
                    self._stopped = True
                continue
            self._taken += 1
            if kind == FAILED:
                raise value
            return index, value
        if self.ordered:
            result = self._done.pop(self._taken, None)
            if result is not None:
                index = self._taken
                self._taken += 1
                if result[0] == FAILED:
                    raise result[1]
                return index, result[1]
        return None

    def abandon(self) -> None:
        """Forget every call still held (the taker left): no retries, late answers dropped,
        and a cancel for them in the core's outbox (the loop sends it)."""
        self.core.forget(*(rid for rid, _ in self._in_flight.values()))
        self._in_flight.clear()
        self._events.clear()
        self._done.clear()
        self._exhausted = True
        self._sent = self._taken

    def _fail_here(self, index: int, error: Exception) -> None:
        """Building or sending call ``index`` failed: it fails in its turn, nothing after it."""
        self._done[index] = (FAILED, error)
        self._sent += 1
        self._stopped = True


# --------------------------------------------------------------------------- stroke jobs


def plan_chunks(
    pairs: int, chunk_pairs: int | None = None, largest: int = DEFAULT_CHUNK_PAIRS
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk of a job of ``pairs`` stroke pairs.

    ``chunk_pairs`` None: the first chunk is one pair (the first slice arrives as fast as a
    one-pair job), each next one twice as big, up to ``largest`` (throughput). An integer:
    fixed chunks of that size. An empty job is one empty chunk (its answer still says the
    shape of the result).
    """
    if chunk_pairs is not None:
        size = check_count(chunk_pairs, "chunk_pairs")
        return [(s, min(s + size, pairs)) for s in range(0, pairs, size)] or [(0, 0)]
    largest = check_count(largest, "largest")
    chunks = []
    start, size = 0, 1
    while start < pairs:
        stop = min(start + size, pairs)
        chunks.append((start, stop))
        start, size = stop, min(2 * size, largest)
    return chunks or [(0, 0)]


class StrokeJob:
    """A stroke job ready to stream: cut into chunks (`plan_chunks`), tatbot's first/last
    rest applied to the whole job (`ops.apply_first_last_rest`: chunks are independent, and
    the result equals one-piece computing), answers checked and turned into
    ``(start, StrokeBatch)``.

    Each chunk is packed as it is sent, and the job's strokes are checked while its first
    chunk is computed (packing 10,000 pairs at once takes longer than a one-pair round trip):
    a bad stroke further on raises before any slice is yielded all the same (`part` raises
    it).
    """

    def __init__(
        self,
        scene: Scene,
        strokes: StrokeList | PackedStrokes,
        chunk_pairs: int | None = None,
    ) -> None:
        if not isinstance(scene, Scene):
            raise InputError(f"scene must be a Scene, got {type(scene).__name__}", "scene")
        self._strokes: StrokeList | None = None
        self._packed: PackedStrokes | None = None
        if isinstance(strokes, StrokeList):
            strokes.check_arms(scene.arms)
            self._strokes = strokes
        elif isinstance(strokes, PackedStrokes):
            if len(strokes) and strokes.n_ee != scene.n_ee:
                raise InputError(
                    f"strokes: {strokes.n_ee} stroke(s) per group for a scene of "
                    f"{scene.n_ee} end effector(s)",
                    "strokes",
                )
            self._packed = ops.apply_first_last_rest(strokes, scene)
        else:
            raise InputError(
                f"strokes must be a StrokeList, got {type(strokes).__name__}", "strokes"
            )
        self.scene = scene
        self.pairs = len(strokes)
        self.poses_per_pair = scene.stroke_length * scene.offset_num
        # Largest automatic chunk: also within one request's pose limit.
        largest = ops.MAX_POSES_PER_REQUEST // max(1, self.poses_per_pair)
        self.chunks = plan_chunks(
            self.pairs, chunk_pairs, max(1, min(DEFAULT_CHUNK_PAIRS, largest))
        )
        self.invalid: InputError | None = None
        """Why the job cannot be computed, found after its first chunk was sent."""
        self._ends: PackedStrokes | None = None

    @property
    def poses(self) -> int:
        return self.pairs * self.poses_per_pair

    def calls(self) -> Iterator[Call]:
        """One `strokebatch` request per chunk, built as it is sent."""
        for index, (start, stop) in enumerate(self.chunks):
            if index == 1:
                self._check()
            if self._packed is not None:
                yield self._call(ops.slice_packed(self._packed, start, stop))
            else:
                yield self._call(self._pack(start, stop))

    def _check(self) -> None:
        """Every stroke packable (what `StrokeList.pack` refuses: a stroke of another length),
        with the common length found in one pass; `pack` names the culprit when not."""
        strokes = self._strokes
        if strokes is None or strokes.stroke_length == self.scene.stroke_length:
            return
        try:
            strokes.pack(self.scene.stroke_length)  # all coordinate-less strokes pack too
        except InputError as e:
            self.invalid = e
            raise

    def _pack(self, start: int, stop: int) -> PackedStrokes:
        """Pairs ``start:stop`` with the whole job's rest flags. The rule marks the job's
        first and last pairs only: it is applied once to those two (`_ends`) and their rows
        are copied into the chunks holding them."""
        assert self._strokes is not None
        packed = self._strokes[start:stop].pack(self.scene.stroke_length)
        if stop == start or (start > 0 and stop < self.pairs):
            return packed
        if self._ends is None:
            pairs = self._strokes.pairs
            ends = StrokeList((pairs[0], pairs[-1]) if self.pairs > 1 else (pairs[0],))
            self._ends = ops.apply_first_last_rest(ends.pack(self.scene.stroke_length), self.scene)
        is_rest = packed.is_rest.copy()
        if start == 0:
            is_rest[0] = self._ends.is_rest[0]
        if stop == self.pairs:
            is_rest[-1] = self._ends.is_rest[-1]
        return PackedStrokes(coords=packed.coords, is_inkdip=packed.is_inkdip, is_rest=is_rest)

    def _call(self, packed: PackedStrokes) -> Call:
        header, arrays = ops.strokebatch_request(self.scene, packed)
        return Call(self.scene.robot, ops.STROKEBATCH, header, arrays)

    def part(self, index: int, payload: Payload) -> tuple[int, StrokeBatch]:
        """Chunk ``index``'s answer as ``(start, StrokeBatch)``; a worker's answer of the
        wrong size is refused (`ProtocolError`), never passed on as the robot's motion."""
        if self.invalid is not None:
            raise self.invalid
        start, stop = self.chunks[index]
        try:
            batch = ops.read_strokebatch_reply(payload.arrays)
        except InputError as e:
            raise ProtocolError(f"strokebatch reply for pairs {start}:{stop}: {e}") from e
        want = (stop - start, self.scene.stroke_length, self.scene.offset_num, self.scene.n_ee)
        got = (*batch.joints.shape[:3], batch.n_ee)
        if got != want:
            raise ProtocolError(
                f"strokebatch reply for pairs {start}:{stop} has shape {got}, expected "
                f"(pairs, stroke_length, offsets, end effectors) = {want}",
                field="joints",
            )
        return start, batch


class Assembly:
    """`compute` from a stream: the slices joined in order, ``progress(done, total)`` in poses
    called at the start and after each slice."""

    def __init__(self, job: StrokeJob, progress: Progress | None = None) -> None:
        self.job = job
        self.progress = progress
        self.parts: list[StrokeBatch] = []
        self.done = 0
        if progress is not None:
            progress(0, job.poses)

    def add(self, part: StrokeBatch) -> None:
        self.parts.append(part)
        self.done += len(part) * self.job.poses_per_pair
        if self.progress is not None:
            self.progress(self.done, self.job.poses)

    def result(self) -> StrokeBatch:
        return StrokeBatch.concat(self.parts)


__all__ = [
    "DEFAULT_CHUNK_PAIRS",
    "DEFAULT_MAX_IN_FLIGHT",
    "PING",
    "STATUS",
    "Assembly",
    "Exchange",
    "Progress",
    "Request",
    "StrokeJob",
    "describe_call",
    "doc_from",
    "fk_call",
    "plan_chunks",
    "read_describe",
    "read_fk",
    "read_ping",
    "read_solve",
    "read_status",
    "solve_call",
]
