"""A robot control loop through the broker: one bimanual pose per request, side by side with
the same loop in-process and the raw two-hop floor.

    python -m benchmarks.control_loop                  # 9 rounds of 400 poses per system
    python -m benchmarks.control_loop --rounds 3 --poses 200
    python -m benchmarks.control_loop --tiny           # smoke test (seconds, not numbers)
    python -m benchmarks.control_loop --base /tmp/base # + the same loop on another tree

``--base TREE`` (e.g. ``git archive 0bfd594 | tar -x -C /tmp/base``) adds a fourth system,
``base broker + worker``: that tree's client, broker and worker (its own processes, its
``PYTHONPATH``), interleaved with the others in every round: an A/B of the whole path.

The path is smooth: each arm's needle circles (1 cm radius) in the example scene's design
plane in 0.5 mm steps, with the scene's needle orientations, as a controller tracking a
stroke would ask. Each pose is one request, sent after the previous answer came back. Two
rest modes: ``warm`` (rest = the previous answer, the README's control loop) and ``ready``
(rest = the robot's ready pose every time, i.e. ``rest=None`` through the broker).

Systems, each run in every round, in a rotating order (so load from the rest of the machine
falls on all of them alike):

- ``in-process``: `zmq_ik.ik.solve_ik` in this process (bucket 1), as a worker compiles it;
- ``two-hop floor``: a raw pyzmq DEALER → ``zmq.proxy`` (ROUTER/DEALER) → DEALER echo of a
  request-sized frame (benchmarks/_raw.py): what any broker in between costs at least;
- ``broker + worker``: `IKClient` → zmq-ik broker → one CPU IK worker (``--buckets 1``: single poses use bucket 1):
  ``solve``'s own steps (``ops.solve_request``, ``IKClient.request``,
  ``ops.check_solve_reply``), so the worker's ``compute_ms`` can be read off each reply.

Per round and system: p50 and p99 of the loop's per-call latency, and for the broker systems
the CPU time per call of the client, broker and worker processes (all threads, from
``/proc``: steadier than latency when other jobs load the machine); tables give the median
over rounds. The goal (issue #17): broker p50 ≤ 1.3 × (in-process p50 + floor p50), taken
within each round, and broker p99 ≤ 2 × its p50.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Config, Section, Table, log, median, pct, ratio
from benchmarks._harness import JAX_CACHE, Procs, tree_env
from zmq_ik.apps.serve import free_endpoint

MODES = ("warm", "ready")
SYSTEMS = ("in-process", "two-hop floor", "broker + worker")
BROKER = SYSTEMS[2]
BASE = "base broker + worker"
"""The fourth system with ``--base``: another tree's client, broker and worker."""
STEP_M = 0.0005
"""Distance between consecutive targets of one arm (metres)."""
RADIUS_M = 0.01


def path(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bimanual targets, (n, 2, 4) wxyz and (n, 2, 3) metres: each needle on a 1 cm
    circle around its stroke-like origin (design origin + the arm's offset), ``STEP_M``
    apart, the scene's needle orientations."""
    from benchmarks import _data

    wxyz1, pos1 = _data.single_pose()
    angle = np.arange(n) * (STEP_M / RADIUS_M)
    circle = RADIUS_M * np.stack([np.cos(angle) - 1.0, np.sin(angle), np.zeros(n)], -1)
    pos = pos1 + circle[:, None, :]  # both arms trace the same circle, each at its origin
    wxyz = np.broadcast_to(wxyz1, (n, 2, 4))
    return np.ascontiguousarray(wxyz, np.float32), np.ascontiguousarray(pos, np.float32)


Solver = Callable[[np.ndarray, np.ndarray, Any], tuple[np.ndarray, float | None]]
"""(wxyz (2, 4), pos (2, 3), rest or None) → (joints (14,), the worker's compute_ms or None)."""


def loop(
    solve: Solver, wxyz: np.ndarray, pos: np.ndarray, warm: bool
) -> tuple[list[float], list[float]]:
    """One pose per call along the path: (latencies ms, worker compute ms)."""
    rest = None
    lat: list[float] = []
    computed: list[float] = []
    clock = time.perf_counter
    for i in range(len(wxyz)):
        t0 = clock()
        joints, compute_ms = solve(wxyz[i], pos[i], rest)
        lat.append((clock() - t0) * 1000)
        if compute_ms is not None:
            computed.append(compute_ms)
        if warm:
            rest = joints
    return lat, computed


class InProcess:
    """`solve_ik` in this process, the worker's compile settings (inline CPU dispatch)."""

    def __init__(self) -> None:
        from zmq_ik import ik

        ik.run_inline_on_cpu()
        ik.enable_compilation_cache(JAX_CACHE)
        self.ik = ik
        self.robot = ik.Robot.bundled("tatbot")  # default rest: the ready pose, as a worker's
        self.buckets = (1,)
        ik.warmup(self.robot, buckets=self.buckets)

    def __call__(self, wxyz: np.ndarray, pos: np.ndarray, rest: Any) -> tuple[np.ndarray, None]:
        sol = self.ik.solve_ik(self.robot, wxyz, pos, rest, buckets=self.buckets)
        return sol.joints[0], None


class Floor:
    """A request-sized frame through the raw proxy to a DEALER echo and back."""

    def __init__(self, endpoint: str, nbytes: int) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.data = np.zeros(nbytes, np.uint8)
        self.joints = np.zeros(14, np.float32)

    def __call__(self, wxyz: np.ndarray, pos: np.ndarray, rest: Any) -> tuple[np.ndarray, None]:
        self.sock.send(self.data, copy=False)
        self.sock.recv(copy=False)
        return self.joints, None

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class Broker:
    """``IKClient.solve``'s steps, keeping the reply header for ``compute_ms``."""

    def __init__(self, endpoint: str) -> None:
        from zmq_ik.client import IKClient
        from zmq_ik.model import ops

        self.ops = ops
        self.client = IKClient(endpoint, timeout=5.0, retries=0)
        self.bounds: Any = None  # the robot's joints, from one `describe` (as IKClient)

    def __call__(
        self, wxyz: np.ndarray, pos: np.ndarray, rest: Any
    ) -> tuple[np.ndarray, float | None]:
        if self.bounds is None:
            self.bounds = self.ops.JointBounds.from_describe(self.client.describe("tatbot"))
        header, arrays = self.ops.solve_request(wxyz, pos, rest)
        reply = self.client.request("tatbot", self.ops.SOLVE, header, arrays)
        n_poses, n_ee = arrays["target_wxyz"].shape[:2]
        sol = self.ops.check_solve_reply(reply.arrays, n_poses, n_ee, self.bounds, False)
        return sol.joints[0], reply.header.get("compute_ms")

    def close(self) -> None:
        self.client.close()


BASE_CLIENT = """
import sys, time, numpy as np
try:
    from zmq_ik.model import ops
except ImportError:  # a tree before the layers (zmq_ik/ops.py)
    from zmq_ik import ops
from zmq_ik.client import IKClient
data = np.load(sys.argv[1])
wxyz, pos = data["wxyz"], data["pos"]
client = IKClient(sys.argv[2], timeout=5.0, retries=0)
print("ready", flush=True)
for line in sys.stdin:
    start, stop, warm = (int(x) for x in line.split())
    rest, lat, computed = None, [], []
    for i in range(start, stop):
        t0 = time.perf_counter()
        header, arrays = ops.solve_request(wxyz[i], pos[i], rest)
        reply = client.request("tatbot", ops.SOLVE, header, arrays)
        sol = ops.read_solve_reply(reply.arrays)
        lat.append((time.perf_counter() - t0) * 1000)
        computed.append(reply.header.get("compute_ms", float("nan")))
        if warm:
            rest = sol.joints[0]
    print(" ".join(map(repr, lat)), flush=True)
    print(" ".join(map(repr, computed)), flush=True)
client.close()
"""
"""The base tree's client: `Broker`'s steps, one loop per line ``start stop warm`` on stdin,
answered with two lines (latencies ms, compute_ms)."""


class BaseTree:
    """Another source tree's client, broker and worker (``--base``): the same loop, run by a
    child process that imports that tree's ``zmq_ik``."""

    def __init__(self, procs: Procs, tree: Path, wxyz: np.ndarray, pos: np.ndarray) -> None:
        import subprocess

        self.endpoint = free_endpoint()
        env = tree_env(tree)
        self.broker = procs.start("broker", "--bind", self.endpoint, env=env, cwd=tree)
        cache = ("--cache-dir", str(JAX_CACHE), "--buckets", "1")
        self.worker = procs.start("worker", "--connect", self.endpoint, *cache, env=env, cwd=tree)
        self.targets = procs.log_dir / "targets.npz"
        np.savez(self.targets, wxyz=wxyz, pos=pos)
        self.env, self.tree = env, tree
        self.child: subprocess.Popen[str] | None = None

    def start(self) -> None:
        import subprocess

        self.child = subprocess.Popen(
            [sys.executable, "-c", BASE_CLIENT, str(self.targets), self.endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=self.tree,
            env=self.env,
        )
        assert self.child.stdout is not None
        if self.child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the base tree's client ({self.tree}) did not start")

    def pids(self) -> list[int]:
        """Client, broker, worker."""
        assert self.child is not None
        return [self.child.pid, self.broker.pid, self.worker.pid]

    def loop(self, seg: slice, warm: bool) -> tuple[list[float], list[float]]:
        assert self.child is not None and self.child.stdin and self.child.stdout
        self.child.stdin.write(f"{seg.start} {seg.stop} {int(warm)}\n")
        self.child.stdin.flush()
        lat = [float(x) for x in self.child.stdout.readline().split()]
        computed = [float(x) for x in self.child.stdout.readline().split()]
        return lat, computed

    def close(self) -> None:
        if self.child is not None and self.child.stdin:
            self.child.stdin.close()
            self.child.wait(10)


def cpu_ns(pid: int) -> int:
    """CPU time (ns) of every thread of process ``pid`` so far (``/proc/PID/task/*/schedstat``;
    0 where there is no /proc). Per-call CPU time is steadier than latency on a busy machine:
    what other jobs take delays the loop but is not counted."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


ROLES = ("client", "broker", "worker")


def request_bytes() -> int:
    """Bytes of a single-pose ``solve`` request's frames (the floor echoes as many)."""
    from zmq_ik.model import ops
    from zmq_ik.protocol import encode_payload

    wxyz, pos = path(1)
    header, arrays = ops.solve_request(wxyz[0], pos[0], np.zeros(14, np.float32))
    frames = encode_payload(header, arrays)
    return sum(len(f) if isinstance(f, bytes) else int(np.asarray(f).nbytes) for f in frames) + 40


def measure(cfg: Config, rounds: int, poses: int, base: Path | None = None) -> dict[str, Any]:
    """Every system and rest mode, ``rounds`` rounds of ``poses`` calls each. Returns
    ``{mode: {system: [(p50, p99, compute p50 or nan), ...]}}`` and the setup."""
    wxyz, pos = path(poses * (rounds + 1))
    front, back = free_endpoint(), free_endpoint()
    systems: dict[str, Any] = {}
    names = SYSTEMS if base is None else (*SYSTEMS, BASE)
    results: dict[str, dict[str, list[tuple[float, float, float]]]] = {
        mode: {s: [] for s in names} for mode in MODES
    }

    cpu: dict[str, dict[str, list[list[float]]]] = {
        mode: {s: [] for s in names if s in (BROKER, BASE)} for mode in MODES
    }
    pids: dict[str, list[int]] = {}

    def run_loop(
        name: str, seg: slice, warm: bool, mode: str | None = None
    ) -> tuple[list[float], list[float]]:
        watched = pids.get(name, []) if mode is not None else []
        before = [cpu_ns(pid) for pid in watched]
        if name == BASE:
            out: tuple[list[float], list[float]] = systems[BASE].loop(seg, warm)
        else:
            out = loop(systems[name], wxyz[seg], pos[seg], warm)
        if watched and mode is not None:
            calls = seg.stop - seg.start
            cpu[mode][name].append(
                [(cpu_ns(pid) - b) / 1000 / calls for pid, b in zip(watched, before, strict=True)]
            )
        return out

    with Procs() as procs:
        if base is not None:
            systems[BASE] = BaseTree(procs, base, wxyz, pos)
        procs.module("proxy", "benchmarks._raw", "proxy", "--frontend", front, "--backend", back)
        procs.module("dealer-echo", "benchmarks._raw", "dealer-echo", "--connect", back)
        broker = procs.broker()
        zik_ep = broker.endpoint
        pids[BROKER] = [os.getpid(), broker.pid, procs.ik_worker(zik_ep, buckets="1").pid]
        log(cfg, "control loop: compiling in-process, starting the worker...")
        systems["in-process"] = InProcess()
        procs.wait_workers(zik_ep, 1, robot="tatbot")
        systems["two-hop floor"] = Floor(front, request_bytes())
        systems["broker + worker"] = Broker(zik_ep)
        try:
            if base is not None:
                procs.wait_workers(systems[BASE].endpoint, 1, robot="tatbot")
                systems[BASE].start()
                pids[BASE] = systems[BASE].pids()
            procs.check_alive()
            warmup = max(20, poses // 10)
            for name in names:  # warm-up: first calls, connections, caches
                for mode in MODES:
                    run_loop(name, slice(0, warmup), mode == "warm")
            for r in range(rounds):
                seg = slice((r + 1) * poses, (r + 2) * poses)
                k = r % len(names)
                order = list(names[k:] + names[:k])  # rotate who goes first
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    for name in order:
                        lat, computed = run_loop(name, seg, mode == "warm", mode)
                        results[mode][name].append((pct(lat, 50), pct(lat, 99), pct(computed, 50)))
                procs.check_alive()
                log(
                    cfg,
                    f"  round {r + 1}/{rounds}: "
                    + "; ".join(
                        f"{mode} " + ", ".join(f"{s} {results[mode][s][-1][0]:.3f}" for s in names)
                        for mode in MODES
                    )
                    + " (p50 ms)",
                )
        finally:
            for name in ("two-hop floor", "broker + worker", BASE):
                if name in systems:
                    systems[name].close()
    return {"results": results, "cpu_us": cpu, "rounds": rounds, "poses": poses}


def summary(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per mode: medians over rounds, and the goal ratios taken within each round."""
    out = {}
    for mode, per in data["results"].items():
        inproc, floor, broker = (per[s] for s in SYSTEMS)
        goal = [ratio(b[0], i[0] + f[0]) for i, f, b in zip(inproc, floor, broker, strict=True)]
        out[mode] = {
            **{f"{s} p50": median([x[0] for x in per[s]]) for s in per},
            **{f"{s} p99": median([x[1] for x in per[s]]) for s in per},
            "compute_ms p50": median([x[2] for x in broker]),
            "goal ratio": median(goal),
            "p99 / p50": median([ratio(b[1], b[0]) for b in broker]),
        }
        if BASE in per:
            old = per[BASE]
            out[mode]["base compute_ms p50"] = median([x[2] for x in old])
            out[mode]["base goal ratio"] = median(
                [ratio(b[0], i[0] + f[0]) for i, f, b in zip(inproc, floor, old, strict=True)]
            )
            out[mode]["new / base p50"] = median(
                [ratio(n[0], b[0]) for n, b in zip(broker, old, strict=True)]
            )
    return out


def table(data: dict[str, Any]) -> Table:
    s = summary(data)
    t = Table(
        "Control loop: one bimanual pose per call along a smooth path (ms)",
        (
            "rest|in-process p50|two-hop floor p50|broker + worker p50|broker p99|"
            "worker compute_ms p50|broker ÷ (in-process + floor)|broker p99 ÷ p50"
        ).split("|"),
        note=(
            f"Median over {data['rounds']} rounds of {data['poses']} calls per system and rest "
            "mode (systems interleaved, order rotating); ratios are taken within each round. "
            "warm: rest = the previous answer; ready: rest = the ready pose. Goals: ratio "
            "≤ 1.3, p99 ÷ p50 ≤ 2."
        ),
    )
    base = [
        ("base broker + worker p50", f"{BASE} p50"),
        ("base broker p99", f"{BASE} p99"),
        ("base compute_ms p50", "base compute_ms p50"),
        ("base ÷ (in-process + floor)", "base goal ratio"),
        ("broker ÷ base broker p50", "new / base p50"),
    ]
    with_base = "new / base p50" in next(iter(s.values()))
    if with_base:
        t.headers += [label for label, _ in base]
    for mode, v in s.items():
        row = [
            mode,
            v["in-process p50"],
            v["two-hop floor p50"],
            v["broker + worker p50"],
            v["broker + worker p99"],
            v["compute_ms p50"],
            v["goal ratio"],
            v["p99 / p50"],
        ]
        if with_base:
            row += [v[key] for _, key in base]
        t.rows.append(row)
    return t


def cpu_table(data: dict[str, Any]) -> Table | None:
    """CPU µs per call of each process (all its threads), median over rounds."""
    cpu = data.get("cpu_us", {})
    if not any(cpu.get(mode) for mode in MODES):
        return None
    t = Table(
        "Control loop: CPU time per call of each process (µs, all threads)",
        ["rest", "system", *ROLES, "total"],
        note=(
            "From /proc/PID/task/*/schedstat around each loop, median over rounds. The "
            "client process is this benchmark's (it also runs the other systems, in turn)."
        ),
    )
    for mode in MODES:
        for name, rows in cpu.get(mode, {}).items():
            if rows:
                cols = [median([r[j] for r in rows]) for j in range(len(ROLES))]
                t.rows.append([mode, name, *cols, median([sum(r) for r in rows])])
    return t


def run(cfg: Config, size: tuple[int, int] | None = None, base: Path | None = None) -> Section:
    """The control-loop section: ``size`` (rounds, poses; default by ``cfg``), ``base``:
    another tree beside (``python -m benchmarks --only`` does not include it: it is run on
    its own, ``python -m benchmarks.control_loop``)."""
    from benchmarks import _data

    section = _data.ik_section("control_loop", "Control loop through the broker")
    if section.skipped:
        return section
    rounds, poses = size or cfg.pick((9, 400), (3, 200), (1, 20))
    data = measure(cfg, rounds, poses, base)
    section.tables.append(table(data))
    extra = cpu_table(data)
    if extra is not None:
        section.tables.append(extra)
    section.data = {**data, "summary": summary(data)}
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_loop", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--poses", type=int, default=400, help="calls per round and system")
    parser.add_argument("--tiny", action="store_true", help="smoke-test size (seconds)")
    parser.add_argument(
        "--base", type=Path, help="another source tree, run side by side (A/B of the path)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.poses < 2:
        parser.error("--rounds must be >= 1 and --poses >= 2")
    cfg = Config(tiny=args.tiny)
    t0 = time.perf_counter()
    size = None if args.tiny else (args.rounds, args.poses)
    section = run(cfg, size, args.base.resolve() if args.base else None)
    print(section.markdown())
    log(cfg, f"control_loop: {time.perf_counter() - t0:.0f}s")
    return 0 if section.tables else 1


if __name__ == "__main__":
    sys.exit(main())
