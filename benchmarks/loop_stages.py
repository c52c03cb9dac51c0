"""Where a control-loop request's time goes: per-stage µs of one single-pose `solve` through
client → broker → IK worker → broker → client, from timestamps taken in all three processes.

    python -m benchmarks.loop_stages                 # 5 rounds of 400 warm-started calls
    python -m benchmarks.loop_stages --rounds 2 --poses 200

The broker and the worker run as ``python -m benchmarks.loop_stages --serve ...``: the CLI
with its socket helpers and the worker's steps wrapped to record ``time.perf_counter_ns``
(CLOCK_MONOTONIC, one clock for every process on the host), written out at exit. The client
is `benchmarks.control_loop.Broker` in this process, wrapped the same way. Calls are
sequential, so each event falls within one call's start and end; per call the stages are
differences of consecutive events (the hand-offs between processes include the receiving
side's wake-up). Each wrapper costs ~0.3 µs, ~20 per call.

Nothing here changes what runs: the same code, timed from outside (`benchmarks.control_loop`
measures the untimed loop).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_EVENTS: list[tuple[int, str]] = []
_clock = time.perf_counter_ns


def mark(label: str) -> None:
    _EVENTS.append((_clock(), label))


def _timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _EVENTS.append((_clock(), label + "<"))
        try:
            return fn(*args, **kwargs)
        finally:
            _EVENTS.append((_clock(), label + ">"))

    return wrapper


def _command(frames: Any, index: int) -> bytes:
    try:
        return bytes(frames[index].bytes if hasattr(frames[index], "bytes") else frames[index])
    except (IndexError, TypeError):
        return b""


def _wrap_sockets(module: Any, who: str, command_at: int) -> None:
    """Time ``module``'s `recv_frames` (return) and `send_frames` (start, end) of REQUEST and
    FINAL messages; heartbeats are not recorded."""
    recv, send = module.recv_frames, module.send_frames

    def recv_frames(sock: Any, flags: int = 0) -> Any:
        frames = recv(sock, flags)
        cmd = _command(frames, command_at)
        if cmd in (b"REQUEST", b"FINAL"):
            _EVENTS.append((_clock(), f"{who}.recv.{cmd.decode()}"))
        return frames

    def send_frames(sock: Any, frames: Any, flags: int = 0) -> None:
        cmd = _command(frames, command_at)
        if cmd not in (b"REQUEST", b"FINAL"):
            send(sock, frames, flags)
            return
        _EVENTS.append((_clock(), f"{who}.send.{cmd.decode()}<"))
        send(sock, frames, flags)
        _EVENTS.append((_clock(), f"{who}.send.{cmd.decode()}>"))

    module.recv_frames, module.send_frames = recv_frames, send_frames


def install(role: str) -> None:
    """Wrap what ``role`` (broker, worker, client) runs per request."""
    if role == "broker":
        from zmq_ik.broker import _broker

        _wrap_sockets(_broker, "b", 2)  # frames[0] is the ROUTER identity
        core = _broker.BrokerCore
        core.handle = _timed(core.handle, "b.handle")  # type: ignore[method-assign]
    elif role == "worker":
        from zmq_ik import ik, ops
        from zmq_ik.ik import _solve
        from zmq_ik.worker import _job, _worker, ik_service

        _wrap_sockets(_worker, "w", 1)
        _time_all(
            (_job, "decode_payload", "w.decode"),
            (_job, "encode_payload", "w.encode"),
            (ops, "read_solve_request", "w.read_request"),
            (ops, "solve_reply", "w.solve_reply"),
            (ik, "solve_until", "w.solve_until"),
        )
        program = _solve.solve_program

        def solve_program(*args: Any, **kwargs: Any) -> Any:
            return _timed(program(*args, **kwargs), "w.program")

        _solve.solve_program = solve_program
        svc = ik_service.IKService
        svc.handle = _timed(svc.handle, "w.service")  # type: ignore[method-assign]
        _job.run_job = _timed(_job.run_job, "w.run_job")
        _worker.run_job = _job.run_job
    elif role == "client":
        from zmq_ik import ops
        from zmq_ik.client import _client, _core

        _wrap_sockets(_client, "c", 1)
        _time_all(
            (ops, "solve_request", "c.solve_request"),
            (ops, "read_solve_reply", "c.read_reply"),
            (_core, "request_message", "c.frame"),
            (_core, "decode_payload", "c.decode"),
        )
    else:
        raise ValueError(role)


def _time_all(*targets: tuple[Any, str, str]) -> None:
    """Replace each ``module.name`` by `_timed` of it, recorded under ``label``."""
    for module, name, label in targets:
        setattr(module, name, _timed(getattr(module, name), label))


def serve(role: str, out: str, argv: list[str]) -> None:
    """Run the zmq-ik CLI (``argv``) with ``role``'s wrappers; events to ``out`` at exit."""
    install(role)
    atexit.register(lambda: Path(out).write_text(json.dumps(_EVENTS)))
    from zmq_ik.cli import main

    sys.argv = ["zmq-ik", *argv]
    try:
        main()
    except SystemExit:
        pass


# --------------------------------------------------------------------------- analysis

STAGES = (
    # (name, from event, to event)
    ("client: check + encode (ops.solve_request)", "call<", "c.solve_request>"),
    ("client: frame the request (request_message)", "c.frame<", "c.frame>"),
    ("client: core → send starts", "c.frame>", "c.send.REQUEST<"),
    ("client: send (10 frames)", "c.send.REQUEST<", "c.send.REQUEST>"),
    ("client send starts → broker has the request", "c.send.REQUEST<", "b.recv.REQUEST"),
    ("broker: handle REQUEST (parse, queue, dispatch)", "b.recv.REQUEST", "b.handle>"),
    ("broker: handle → send starts", "b.handle>", "b.send.REQUEST<"),
    ("broker: send (11 frames)", "b.send.REQUEST<", "b.send.REQUEST>"),
    ("broker send starts → worker has the job", "b.send.REQUEST<", "w.recv.REQUEST"),
    ("worker: receive → run_job", "w.recv.REQUEST", "w.run_job<"),
    ("worker: decode payload", "w.decode<", "w.decode>"),
    ("worker: read_solve_request (checks)", "w.read_request<", "w.read_request>"),
    ("worker: solve_until around the program", "w.solve_until<", "w.program<"),
    ("worker: compiled program", "w.program<", "w.program>"),
    ("worker: after the program (copies, IKSolution)", "w.program>", "w.solve_until>"),
    ("worker: service after solve (reply, compiles)", "w.solve_until>", "w.service>"),
    ("worker: encode reply", "w.encode<", "w.encode>"),
    ("worker: run_job end → send starts", "w.encode>", "w.send.FINAL<"),
    ("worker: send (7 frames)", "w.send.FINAL<", "w.send.FINAL>"),
    ("worker send starts → broker has the reply", "w.send.FINAL<", "b.recv.FINAL"),
    ("broker: handle FINAL", "b.recv.FINAL", "b.send.FINAL<"),
    ("broker: send (8 frames)", "b.send.FINAL<", "b.send.FINAL>"),
    ("broker send starts → client has the reply", "b.send.FINAL<", "c.recv.FINAL"),
    ("client: core (match, decode)", "c.recv.FINAL", "c.read_reply<"),
    ("client: read_solve_reply (IKSolution)", "c.read_reply<", "c.read_reply>"),
    ("client: return", "c.read_reply>", "call>"),
)


def per_call(events: list[tuple[int, str]]) -> list[dict[str, int]]:
    """Events grouped by call: the client's between its ``call<`` and ``call>``; the broker's
    and the worker's from their receipt of the REQUEST sent during that call until their
    next one (a process may finish its part after the client has moved on). First time of
    each label per call."""
    calls: list[dict[str, int]] = []
    current: dict[str, int | None] = {"c": None, "b": None, "w": None}
    for t, label in sorted(events):
        proc = label[0] if label[1:2] == "." else "c"
        if label == "call<":
            current["c"] = len(calls)
            calls.append({})
        elif label in ("b.recv.REQUEST", "w.recv.REQUEST"):
            current[proc] = current["c"]
        index = current[proc]
        if index is None:
            continue
        calls[index].setdefault(label, t)
        if label == "call>":
            current["c"] = None
    return [c for c in calls if "call>" in c]


def stage_table(calls: list[dict[str, int]]) -> list[tuple[str, float, float]]:
    """(stage, median µs, p90 µs) per stage over the calls that have both events."""
    rows = []
    for name, a, b in STAGES:
        d = [(c[b] - c[a]) / 1000 for c in calls if a in c and b in c]
        if d:
            rows.append((name, float(np.median(d)), float(np.percentile(d, 90))))
    total = [(c["call>"] - c["call<"]) / 1000 for c in calls]
    rows.append(("whole call", float(np.median(total)), float(np.percentile(total, 90))))
    return rows


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--serve"]:
        serve(args_in[1], args_in[2], args_in[3:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_stages", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poses", type=int, default=400)
    parser.add_argument("--ready", action="store_true", help="rest = the ready pose")
    args = parser.parse_args(args_in)

    from benchmarks import control_loop
    from benchmarks._harness import JAX_CACHE, Procs, free_endpoint

    ep = free_endpoint()
    wxyz, pos = control_loop.path(args.poses * (args.rounds + 1))
    with Procs() as procs:
        files = {r: str(procs.log_dir / f"{r}.json") for r in ("broker", "worker")}
        me = "benchmarks.loop_stages"
        procs.module(
            "broker", me, "--serve", "broker", files["broker"], "-q", "broker", "--bind", ep
        )
        procs.module(
            "worker",
            me,
            "--serve",
            "worker",
            files["worker"],
            "-q",
            "worker",
            "--connect",
            ep,
            "--cache-dir",
            str(JAX_CACHE),
            "--buckets",
            "1",
        )
        procs.wait_workers(ep, 1, robot="tatbot")
        install("client")
        client = control_loop.Broker(ep)
        timed = _timed(client, "call")
        try:
            control_loop.loop(timed, wxyz[:50], pos[:50], not args.ready)
            _EVENTS.clear()
            for r in range(args.rounds):
                seg = slice((r + 1) * args.poses, (r + 2) * args.poses)
                control_loop.loop(timed, wxyz[seg], pos[seg], not args.ready)
        finally:
            client.close()
            procs.close()
        events = list(_EVENTS)
        for f in files.values():
            events += [(t, label) for t, label in json.loads(Path(f).read_text())]
    calls = per_call(events)
    print(
        f"| stage ({len(calls)} calls, {'ready' if args.ready else 'warm'} rest) "
        "| median µs | p90 µs |\n|---|---:|---:|"
    )
    for name, med, p90 in stage_table(calls):
        print(f"| {name} | {med:.1f} | {p90:.1f} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())
