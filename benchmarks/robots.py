"""Reach over real arms: does the default solve meet every reachable target, and how fast?

    python -m benchmarks.robots                        # every robot, this tree's default
    python -m benchmarks.robots --base /tmp/base       # + the base tree's precise=True, seeds=16
    python -m benchmarks.robots --robots panda,ur5 --targets 256 --json out.json
    python -m benchmarks.robots --near-limits 0.3       # 30 % of joints near a limit

Targets, per robot (the fair test of any arm, ``tests/robots/README.md``): FK of joint
vectors drawn uniformly inside the joint limits (continuous joints in [-pi, pi)), solved from
the robot's default rest pose (mid-range), with no settings. Per robot and method: reached %
(every end effector within 0.01 mm and 1e-4 rad), position and orientation error p50/p99,
answers with a joint outside its limits, poses/s at batch 1 (sequential single-pose calls),
16 and 1,024, and the first call's time (compiling the batch-1,024 program).

Methods, each in its own process, robot after robot (so load from the rest of the machine
falls on all alike):

- ``zmq-ik``: this tree's default (`IKSettings()`);
- ``base``: the ``--base`` tree's ``precise=True, seeds=16`` (before the reaching mode: every
  target from 16 starting points);
- ``pinocchio``: Pinocchio's damped-least-squares loop in Python (its documented IK
  example: ``J·Jᵀ + λI``, ``integrate``, 1,000 iterations, then clamped to the limits), one
  target after another from the same rest pose, when ``pin`` is installed (the ``pin``
  extra; CI does not install it, and the table says when it is absent).

``--startup``: instead, how soon a new robot is served: seconds from ``zmq-ik worker`` (this
tree's, and ``--base``'s, interleaved) to READY with an empty compilation cache (cold), then
again with what it filled (warm), the worker's CPU seconds to READY (less sensitive to a busy
machine than the wall clock), and right after READY a default solve of 1 and of 1,000 targets:
their seconds and the worker's ``compiles_since_ready`` (0: nothing waited for a compile).

TRAC-IK's published table (KDL chains, 1e-5 tolerance, one core) is quoted in
docs/benchmarks.md for reference: 99.3-100 % solved, 0.22-0.67 ms per solve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import Table, fmt, median, time_calls
from benchmarks._harness import JAX_CACHE, ROOT, Procs, tree_env

HERE = Path(__file__).resolve().parent
ROBOT_DIR = HERE.parent / "tests" / "robots"
ROBOTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "panda": ("panda.urdf", ("panda_hand",)),
    "ur5": ("ur5.urdf", ("tool0",)),
    "so100": ("so100.urdf", ("gripper",)),
    "tatbot": (None, ("left/tattoo_needle", "right/tattoo_needle")),
    "tiago-left": ("tiago_dual.urdf", ("arm_left_tool_link",)),
    "tiago-dual": ("tiago_dual.urdf", ("arm_left_tool_link", "arm_right_tool_link")),
    "panda-fingers": ("panda.urdf", ("panda_leftfinger", "panda_rightfinger")),
}
"""name → (URDF in tests/robots, None: the bundled tatbot; end-effector links). TIAGo++ with
one arm: its torso lift and left arm as one 8-joint chain; with both, the two arms share the
lift: one 15-joint problem, both hands at once. The Panda's two fingers: the second finger's
joint mimics the first's, so 8 joints move two end effectors that share all of them."""
POS_TOL, ORI_TOL = 1e-5, 1e-4
"""What "reached" means here (the Reach issue's goal): 0.01 mm and 1e-4 rad."""
BUCKETS = (1, 16, 64, 256, 1024)
COLUMNS = tuple(
    (
        "robot|joints|method|reached %|pos p50 (mm)|pos p99 (mm)|ori p50 (rad)|ori p99 (rad)|"
        "outside limits %|poses/s @1|poses/s @16|poses/s @1,024|first call (s)"
    ).split("|")
)


def robot_path(name: str) -> str:
    """The URDF of the benchmark's robot ``name``."""
    from zmq_ik.robots import bundled_robot_path

    urdf = ROBOTS[name][0]
    return str(bundled_robot_path("tatbot") if urdf is None else ROBOT_DIR / urdf)


def load_robot(name: str) -> Any:
    """The benchmark's robot ``name`` (no rest pose: mid-range, as a new user's arm)."""
    from zmq_ik import ik

    return ik.Robot.from_urdf(robot_path(name), ROBOTS[name][1])


def make_targets(robot: Any, n: int, seed: int = 0, near: float = 0.0) -> dict[str, np.ndarray]:
    """FK of ``n`` joint vectors uniform inside the limits (continuous: [-pi, pi)); ``near``:
    the share of limited joints drawn within 3 % of their range from a limit instead."""
    rng = np.random.default_rng(seed)
    lo = np.where(robot.limited, robot.lower, -np.pi)
    hi = np.where(robot.limited, robot.upper, np.pi)
    q = rng.uniform(lo, hi, (n, robot.n_joints))
    edge = rng.uniform(0, 0.03, q.shape) * (hi - lo)
    edge = np.where(rng.random(q.shape) < 0.5, lo + edge, hi - edge)
    q = np.where((rng.random(q.shape) < near) & robot.limited, edge, q).astype(np.float32)
    T = robot.fk(q)
    return {
        "wxyz": np.asarray(T.rotation().wxyz, np.float32),
        "pos": np.asarray(T.translation(), np.float32),
        "lower": np.asarray(robot.lower),
        "upper": np.asarray(robot.upper),
        "limited": np.asarray(robot.limited),
    }


def judge(t: dict[str, np.ndarray], joints: Any, pos_err: Any, ori_err: Any) -> dict[str, float]:
    """Accuracy columns of one method's answers to targets ``t``."""
    pe, oe, q = np.asarray(pos_err), np.asarray(ori_err), np.asarray(joints)
    ok = ((pe <= POS_TOL) & (oe <= ORI_TOL)).all(axis=1)
    outside = ((q < t["lower"] - 1e-5) | (q > t["upper"] + 1e-5)) & t["limited"]
    worst_p, worst_o = pe.max(axis=1), oe.max(axis=1)
    return {
        "reached %": 100 * float(ok.mean()),
        "pos p50 (mm)": 1e3 * float(np.median(worst_p)),
        "pos p99 (mm)": 1e3 * float(np.percentile(worst_p, 99)),
        "ori p50 (rad)": float(np.median(worst_o)),
        "ori p99 (rad)": float(np.percentile(worst_o, 99)),
        "outside limits %": 100 * float(outside.any(axis=1).mean()),
    }


def large_batches(
    names: list[str], n: int, buckets: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """This process's default solve of ``n`` targets per robot in one call (a GPU's batch
    sizes; ``buckets``: the engine's, default all): reached %, worst errors, poses/s (median
    of 3 calls after the first) and the first call's time (its compiles)."""
    from zmq_ik import ik

    rows = []
    for name in names:
        robot = load_robot(name)
        t = make_targets(robot, n)
        t0 = time.perf_counter()
        sol = ik.solve_ik(robot, t["wxyz"], t["pos"], buckets=buckets)
        first = time.perf_counter() - t0
        ms = time_calls(partial(ik.solve_ik, robot, t["wxyz"], t["pos"], buckets=buckets), 3)
        row = {"robot": name, "joints": robot.n_joints, "targets": n}
        row.update(judge(t, sol.joints, sol.pos_err, sol.ori_err))
        row.update({"poses/s": 1000 * n / median(ms), "first call (s)": first})
        rows.append(row)
    return rows


def _rates(solve: Any, t: dict[str, np.ndarray], singles: int) -> dict[str, float]:
    """poses/s at batch 1 (p50 of ``singles`` calls), 16 (median of calls) and all targets."""
    w, p = t["wxyz"], t["pos"]
    lat = []
    for i in range(singles):
        t0 = time.perf_counter()
        solve(w[i : i + 1], p[i : i + 1])
        lat.append(time.perf_counter() - t0)
    sixteen = []
    for i in range(0, min(len(w), 16 * 8), 16):
        t0 = time.perf_counter()
        solve(w[i : i + 16], p[i : i + 16])
        sixteen.append(time.perf_counter() - t0)
    full = []
    for _ in range(3):
        t0 = time.perf_counter()
        solve(w, p)
        full.append(time.perf_counter() - t0)
    return {
        "poses/s @1": 1 / median(lat),
        "poses/s @16": 16 / median(sixteen),
        "poses/s @1,024": len(w) / median(full),
    }


def _measure_jax(
    name: str, targets: Path, settings: dict[str, Any], singles: int, buckets: tuple[int, ...]
) -> dict:
    """One robot with this process's ``zmq_ik`` (this tree or ``--base``'s): first call,
    accuracy and rates."""
    from zmq_ik import IKSettings, ik

    ik.enable_compilation_cache(JAX_CACHE)
    robot = load_robot(name)
    t = dict(np.load(targets))
    cfg = IKSettings(**settings)

    def solve(w: np.ndarray, p: np.ndarray) -> Any:
        return ik.solve_ik(robot, w, p, ik=cfg, buckets=buckets)

    t0 = time.perf_counter()
    sol = solve(t["wxyz"], t["pos"])
    first = time.perf_counter() - t0
    solve(t["wxyz"][:1], t["pos"][:1])  # compile the small buckets before timing them
    solve(t["wxyz"][:16], t["pos"][:16])
    out = judge(t, sol.joints, sol.pos_err, sol.ori_err)
    out.update(_rates(solve, t, singles))
    out["first call (s)"] = first
    return out


def _measure_pinocchio(name: str, targets: Path, singles: int) -> dict:
    """Pinocchio's damped least squares (its documented IK loop), target after target."""
    import pinocchio as pin

    path, ee = robot_path(name), ROBOTS[name][1]
    if any(j.driver != j.name for c in load_robot(name).chains for j in c.chain.joints):
        raise RuntimeError("mimic joints: this DLS loop treats them as free joints")
    model = pin.buildModelFromUrdf(path)
    data = model.createData()
    frames = [model.getFrameId(link, pin.BODY) for link in ee]
    robot = load_robot(name)  # for the joint order of the answer (zmq-ik's)
    index = [model.getJointId(j) for j in robot.joint_names]
    idx_q = [model.joints[i].idx_q for i in index]
    t = dict(np.load(targets))
    lo, hi = t["lower"].astype(float), t["upper"].astype(float)
    rest = (np.where(t["limited"], lo, -np.pi) + np.where(t["limited"], hi, np.pi)) / 2
    q_rest = pin.neutral(model)
    q_rest[idx_q] = rest

    def one(wxyz: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        goals = [
            pin.SE3(pin.Quaternion(float(w[0]), *map(float, w[1:])).matrix(), p.astype(float))
            for w, p in zip(wxyz, pos, strict=True)
        ]
        q = q_rest.copy()
        for _ in range(1000):
            pin.forwardKinematics(model, data, q)
            pin.updateFramePlacements(model, data)
            errs = [
                pin.log6(data.oMf[f].actInv(g)).vector for f, g in zip(frames, goals, strict=True)
            ]
            err = np.concatenate(errs)
            if np.linalg.norm(err) < 1e-6:
                break
            J = np.vstack(
                [
                    -pin.Jlog6(data.oMf[f].actInv(g))
                    @ pin.computeFrameJacobian(model, data, q, f, pin.LOCAL)
                    for f, g in zip(frames, goals, strict=True)
                ]
            )
            v = -J.T @ np.linalg.solve(J @ J.T + 1e-12 * np.eye(len(err)), err)
            q = pin.integrate(model, q, v * 0.1)
        q_out = np.clip(
            q[idx_q], np.where(t["limited"], lo, -np.inf), np.where(t["limited"], hi, np.inf)
        )
        q = q.copy()
        q[idx_q] = q_out
        pin.forwardKinematics(model, data, q)
        pin.updateFramePlacements(model, data)
        pe, oe = [], []
        for f, g in zip(frames, goals, strict=True):
            d = data.oMf[f].actInv(g)
            pe.append(np.linalg.norm(data.oMf[f].translation - g.translation))
            oe.append(np.linalg.norm(pin.log3(d.rotation)))
        return q_out, np.array(pe), np.array(oe)

    def solve(w: np.ndarray, p: np.ndarray) -> Any:
        return [one(w[i], p[i]) for i in range(len(w))]

    n = min(len(t["wxyz"]), 256)  # a Python loop: the first 256 targets are plenty
    t_small = {k: (v[:n] if k in ("wxyz", "pos") else v) for k, v in t.items()}
    t0 = time.perf_counter()
    answers = solve(t_small["wxyz"], t_small["pos"])
    elapsed = time.perf_counter() - t0
    out = judge(
        t_small,
        np.stack([a[0] for a in answers]),
        np.stack([a[1] for a in answers]),
        np.stack([a[2] for a in answers]),
    )
    rate = n / elapsed  # one target at a time: the same rate at every batch size
    out.update({"poses/s @1": rate, "poses/s @16": rate, "poses/s @1,024": rate})
    out["first call (s)"] = float("nan")
    return out


def _child(args: argparse.Namespace) -> None:
    if args.child == "pinocchio":
        result = _measure_pinocchio(args.robot, Path(args.targets_file), args.singles)
    else:
        settings = json.loads(args.settings)
        buckets = tuple(int(b) for b in args.buckets.split(","))
        result = _measure_jax(args.robot, Path(args.targets_file), settings, args.singles, buckets)
    print(json.dumps(result), flush=True)


def _run_child(
    tree: Path,
    kind: str,
    robot: str,
    targets: Path,
    singles: int,
    settings: dict,
    buckets: tuple[int, ...] = BUCKETS,
) -> dict:
    env = {**tree_env(tree), "JAX_PLATFORMS": "cpu"}
    # This file as a script, so every tree runs the same measuring code with its own zmq_ik.
    flags = {"--child": kind, "--robot": robot, "--targets-file": str(targets)}
    flags |= {"--singles": str(singles), "--settings": json.dumps(settings)}
    flags["--buckets"] = ",".join(map(str, buckets))
    cmd = [sys.executable, str(HERE / "robots.py"), *(x for kv in flags.items() for x in kv)]
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " / ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(
    robots: list[str],
    n_targets: int,
    base: Path | None = None,
    singles: int = 64,
    buckets: tuple[int, ...] = BUCKETS,
    verbose: bool = True,
    near: float = 0.0,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the table (one per robot and method) and notes (what was skipped and why)."""
    methods: list[tuple[str, Path, str, dict[str, Any]]] = [("zmq-ik default", ROOT, "jax", {})]
    if base is not None:
        methods.append(("base precise, seeds=16", base, "jax", {"precise": True, "seeds": 16}))
    notes = []
    try:
        import pinocchio  # noqa: F401

        methods.append(("pinocchio DLS", ROOT, "pinocchio", {}))
    except ImportError:
        notes.append(
            'Pinocchio\'s rows are absent: `pin` is not installed (`pip install -e ".[pin]"`).'
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in robots:
            robot = load_robot(name)
            path = Path(tmp) / f"{name}.npz"
            np.savez(path, **make_targets(robot, n_targets, near=near))
            for label, tree, kind, settings in methods:
                if verbose:
                    print(f"{name}: {label} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                result = _run_child(tree, kind, name, path, singles, settings, buckets)
                if verbose:
                    print(
                        f"{name}: {label} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr
                    )
                rows.append({"robot": name, "joints": robot.n_joints, "method": label, **result})
    return rows, notes


STARTUP_COLUMNS = tuple(
    "robot|tree|cache|READY (s)|CPU to READY (s)|solve 1 (s)|solve 1,000 (s)|compiles since READY".split(
        "|"
    )
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _startup_once(tree: Path, name: str, cache: Path, t: dict[str, np.ndarray]) -> dict:
    """One `zmq-ik` worker of ``tree`` for robot ``name`` with compilation cache ``cache``:
    seconds and CPU seconds to READY, then a solve of 1 and of 1,000 targets ``t``."""
    from zmq_ik.client import IKClient

    urdf, ee = ROBOTS[name]
    robot = [] if urdf is None else ["--robot", f"{name}={ROBOT_DIR / urdf}"]
    robot += ["--ee-links", f"{name}={','.join(ee)}"] if urdf is not None else []
    with Procs() as procs:
        endpoint = procs.broker().endpoint
        args = ["--cache-dir", str(cache), *robot]
        worker, ready = procs.timed_worker(endpoint, *args, env=tree_env(tree), cwd=tree)
        row: dict[str, Any] = {"READY (s)": ready, "CPU to READY (s)": _cpu_seconds(worker.pid)}
        with IKClient(endpoint, timeout=600) as client:
            for n, column in ((1, "solve 1 (s)"), (1000, "solve 1,000 (s)")):
                arrays = {"target_wxyz": t["wxyz"][:n], "target_pos": t["pos"][:n]}
                t1 = time.monotonic()
                header = client.request(name, "solve", {}, arrays).header
                row[column] = time.monotonic() - t1
                row["compiles since READY"] = header.get("compiles_since_ready")
        worker.terminate()  # a busy machine may take longer than `Procs` waits
        worker.wait(120)
    return row


def startup(robots: list[str], base: Path | None, repeat: int = 1) -> list[dict[str, Any]]:
    """Rows of the start-up table: per robot, repeat and tree (interleaved), cold then warm."""
    trees = [("this", ROOT)] + ([("base", base)] if base is not None else [])
    rows = []
    for name in robots:
        t = make_targets(load_robot(name), 1000, seed=3)
        for _ in range(repeat):
            for label, tree in trees:
                with tempfile.TemporaryDirectory() as cache:
                    for kind in ("cold", "warm"):
                        row = _startup_once(tree, name, Path(cache), t)
                        rows.append({"robot": name, "tree": label, "cache": kind, **row})
                        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    """The rows as a markdown table; a failed method shows its error in place of numbers."""
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["robot"], r["joints"], r["method"], f"failed: {r['error']}"] + [""] * 9)
        else:
            out.append([fmt(r.get(c)) if c not in ("robot", "method") else r[c] for c in COLUMNS])
    return Table(
        "Reach on real arms (FK of random joints in the limits, from mid-range)", list(COLUMNS), out
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.robots", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--robots", default=",".join(ROBOTS), help="comma-separated names")
    parser.add_argument("--targets", type=int, default=1024, help="targets per robot")
    parser.add_argument("--singles", type=int, default=64, help="single-pose calls timed")
    near = "share of joints drawn within 3%% of a limit (hard targets; default 0)"
    parser.add_argument("--near-limits", type=float, default=0.0, help=near)
    parser.add_argument("--base", type=Path, help="another tree (git archive) for the old mode")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--buckets", default=",".join(map(str, BUCKETS)), help="the engine's batch buckets"
    )
    parser.add_argument(
        "--startup", action="store_true", help="time a worker's start instead (cold, warm cache)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="--startup runs per robot and tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--targets-file", help=argparse.SUPPRESS)
    parser.add_argument("--robot", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    names = [n for n in args.robots.split(",") if n]
    unknown = [n for n in names if n not in ROBOTS]
    if unknown:
        parser.error(f"unknown robot(s) {unknown}; known: {list(ROBOTS)}")
    if args.startup:
        rows = startup(names, args.base, args.repeat)
        cells = [
            [r[c] if c in STARTUP_COLUMNS[:3] else fmt(r.get(c)) for c in STARTUP_COLUMNS]
            for r in rows
        ]
        print(Table("Worker start", list(STARTUP_COLUMNS), cells).markdown())
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=1))
        return 0
    buckets = tuple(int(b) for b in args.buckets.split(","))
    rows, notes = run(names, args.targets, args.base, args.singles, buckets, near=args.near_limits)
    print(table(rows).markdown())
    ours = [
        r["poses/s @1,024"] for r in rows if r["method"] == "zmq-ik default" and "error" not in r
    ]
    print(f"\nmedian over the robots, zmq-ik default at batch 1,024: {fmt(median(ours))} poses/s")
    for note in notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
