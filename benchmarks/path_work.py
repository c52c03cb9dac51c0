"""The Python work one single-pose `solve` costs each party, without sockets or the solve.

    python -m benchmarks.path_work
    cd /tmp/base && PYTHONPATH=/tmp/base python /path/to/benchmarks/path_work.py   # another tree

What each process does with one control-loop request, on the frames it would receive (as
`zmq.Frame` objects), its sockets and the compiled program left out:

- client: ``ops.solve_request`` (checks), `ClientCore.submit` (ids, framing, encoding), the
  reply through `ClientCore.handle` (matching, decoding), ``ops.check_solve_reply``;
- broker: `BrokerCore.handle` of the REQUEST (parse, queue, dispatch) and of the FINAL;
- worker: the REQUEST parsed, `run_job` through `IKService` (decode, checks, `solve_until`
  around its program, encode), the program replaced by its precomputed result.

µs per request, two ways: ``hot``, the best of 40 repeats of 200 calls in a row (what the
code costs with everything in the CPU caches; a busy machine only adds to it), and ``cold``,
the median of 300 calls each made right after the real bucket-1 solve program ran and a
0.3 ms sleep, as in the loop, where every process runs after the others and the program
have had the CPUs (numpy's code, in particular, is then out of the caches). Imports only
``zmq_ik``, so it runs against any tree on ``PYTHONPATH`` (the JAX cache is this file's
tree's): an A/B of the per-request work that latency on a loaded machine cannot resolve.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq


def best_us(fn: Callable[[int], Any], n: int = 200, repeats: int = 40) -> float:
    """Minimum over ``repeats`` of the mean µs per call of ``fn(i)``, ``n`` calls each."""
    fn(0)
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(r * n + i + 1)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def cold_us(fn: Callable[[int], Any], pollute: Callable[[], Any], n: int = 300) -> float:
    """Median µs of ``fn(i)``, each call right after ``pollute()`` and a 0.3 ms sleep."""
    times = []
    for i in range(n):
        pollute()
        time.sleep(0.0003)
        t0 = time.perf_counter()
        fn(100_000 + i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def received(frames: list[Any]) -> list[zmq.Frame]:
    """``frames`` as a receiver gets them."""
    return [zmq.Frame(bytes(memoryview(f).cast("B"))) for f in frames]


def main() -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    logging.disable(logging.WARNING)  # the broker's stall notice: this loop is no stall
    from zmq_ik import ik, ops
    from zmq_ik.broker._core import BrokerCore
    from zmq_ik.client._core import Call, ClientCore, settle
    from zmq_ik.ik import _solve
    from zmq_ik.model import IKSettings
    from zmq_ik.protocol import (
        LIMITS,
        Command,
        encode_payload,
        heartbeat_frames,
        parse_message,
        ready_frames,
    )
    from zmq_ik.worker._job import Job, run_job
    from zmq_ik.worker.ik_service import IKService

    ik.run_inline_on_cpu()
    ik.enable_compilation_cache(Path(__file__).resolve().parent.parent / ".jax_cache")
    wxyz = np.array([[1.0, 0, 0, 0], [0.0, 1, 0, 0]], np.float32)
    pos = np.array([[0.1, 0.2, 0.3], [0.1, -0.2, 0.3]], np.float32)
    rest = np.zeros(14, np.float32)
    robot = ik.Robot.bundled("tatbot")
    ik.warmup(robot, buckets=(1,))
    program = _solve.solve_program(robot, False, 1)
    program_args = (
        np.ascontiguousarray(wxyz[:, :, None]),
        np.ascontiguousarray(pos[:, :, None]),
        rest,
        _solve.device_params(IKSettings()),
    )

    def pollute() -> None:
        np.asarray(program(*program_args)[0])

    joints = np.zeros((14, 1), np.float32)
    errs = np.zeros((2, 1), np.float32)
    real = _solve.solve_program
    _solve.solve_program = lambda *a, **k: lambda *x: (joints, errs, errs)
    svc = IKService(buckets=(1,))
    svc.entries = {"tatbot": svc.entries["tatbot"]}
    svc.buckets = (1,)
    svc._solvers[("tatbot", svc.entries["tatbot"].ee_links)] = robot

    # The frames of one request and its answer, as each party receives them.
    header, arrays = ops.solve_request(wxyz, pos, rest)
    sol = ops.read_solve_reply({"joints": joints.T, "pos_err": errs.T, "ori_err": errs.T})
    reply_header = {"compiles_since_ready": 0, "compute_ms": 1.234}
    reply_payload = received(encode_payload(reply_header, ops.solve_reply(sol)[1]))

    client = ClientCore(["tcp://127.0.0.1:1"])
    client.outbox.clear()
    bounds = ops.JointBounds.from_describe(  # what IKClient learns once from `describe`
        {
            "joint_names": robot.joint_names,
            "lower": robot.lower,
            "upper": robot.upper,
            "limited": robot.limited,
        }
    )

    def client_work(i: int) -> None:
        h, a = ops.solve_request(wxyz, pos, rest)
        events: deque[Any] = deque()
        rid = client.submit(Call("tatbot", ops.SOLVE, h, a), 5.0, 0.0, events.append)
        client.outbox.popleft()
        final = [zmq.Frame(b"ZIK/1"), zmq.Frame(b"FINAL"), zmq.Frame(rid), *reply_payload]
        client.handle(final, 0.0)
        answer = settle(events, None)
        assert answer is not None
        ops.check_solve_reply(answer.arrays, 1, 2, bounds, False)

    events: deque[Any] = deque()
    client.submit(Call("tatbot", ops.SOLVE, header, arrays), 5.0, 0.0, events.append)
    request = received(client.outbox.popleft()[1])

    def new_broker() -> BrokerCore:
        core = BrokerCore(now=time.monotonic())
        for frames in (ready_frames({"robots": ["tatbot"]}), heartbeat_frames()):
            core.handle(worker_id, received(frames), time.monotonic())  # (jobs after the
        core.outbox.clear()  # first message that follows READY)
        return core

    worker_id, client_id = b"\x01worker1", b"\x01client1"
    broker = new_broker()
    broker.handle(client_id, request, time.monotonic())
    dispatched = received(broker.outbox.popleft()[1])
    broker = new_broker()

    def broker_work(i: int) -> None:
        t = time.monotonic()
        frames = list(request)
        frames[2] = zmq.Frame(i.to_bytes(12, "big"))
        broker.handle(client_id, frames, t)
        job_id = broker.outbox.popleft()[1][2]
        final = [zmq.Frame(b"ZIK/1"), zmq.Frame(b"FINAL"), zmq.Frame(job_id), *reply_payload]
        broker.handle(worker_id, final, t)
        broker.outbox.popleft()

    def worker_work(i: int) -> None:
        msg = parse_message(dispatched)
        frames = run_job(svc, Job.from_request(msg), LIMITS, lambda f: None)
        assert frames[1] == Command.FINAL.value, frames

    works = {"client": client_work, "broker": broker_work, "worker": worker_work}
    rows = {name: (best_us(fn), cold_us(fn, pollute)) for name, fn in works.items()}
    _solve.solve_program = real
    print("| µs per request | hot | cold |\n|---|---:|---:|")
    for name, (hot, cold) in rows.items():
        print(f"| {name} | {hot:.1f} | {cold:.1f} |")
    total = [sum(r[j] for r in rows.values()) for j in (0, 1)]
    print(f"| total | {total[0]:.1f} | {total[1]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
