"""The IK service a worker runs: robots loaded once, solvers cached, every bucket compiled
before READY. Imports JAX, so only GPU/worker hosts import this module.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zmq_ik import ops
from zmq_ik._memory import malloc_trim
from zmq_ik._urdf import ACTUATED_TYPES, parse_urdf, read_urdf_text
from zmq_ik.errors import ErrorCode, InputError
from zmq_ik.model import IKSettings
from zmq_ik.robots import BUNDLED
from zmq_ik.worker._service import ServiceCall, ServiceError, ServiceReply, WarmupHook

logger = logging.getLogger(__name__)

CPU_BUCKETS: tuple[int, ...] = (1, 16, 32, 64, 128, 256, 512, 1024)
"""Buckets a CPU worker compiles unless told otherwise. On a CPU a pose costs the same
(~35 µs) in batches of 1024 as of 16,384, so bigger batches are solved in chunks of 1024;
each bucket left out saves ~7 s of a cold start and ~0.5 s of a warm one (2 CPUs). GPU keeps
all of ``ik.BUCKETS`` (bigger batches pay off there; not measured here)."""

DEFAULT_CACHE_DIR = Path(
    os.environ.get("ZMQ_IK_CACHE_DIR") or Path.home() / ".cache" / "zmq-ik" / "jax"
)


def usable_cache_dir(path: str | os.PathLike[str]) -> Path | None:
    """``path``, created if need be, or None (with a warning) if it cannot hold the JAX cache
    (a regular file, not writable): without a cache a worker only starts slower, so that is
    no reason to fail, and failing would have `serve` or systemd restart it in a loop."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        logger.warning(
            "JAX compilation cache disabled: cannot use %s (%s); every start compiles afresh",
            p,
            e,
        )
        return None
    return p


def pin_device(gpu: int | None) -> None:
    """Choose the device before JAX is imported: one GPU, or the CPU when ``gpu`` is None.

    JAX is also told not to grab most of the GPU's memory up front, so several workers can
    share one GPU and nothing looks leaked.
    """
    if gpu is None:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@dataclass(frozen=True)
class RobotEntry:
    """A robot a worker serves."""

    name: str
    """Service name clients use."""
    urdf: str
    """URDF file path."""
    ee_links: tuple[str, ...] | None
    """End effectors used when a request names none (None: requests must name them)."""
    rest: np.ndarray | None
    """Rest pose of the default end effectors, used when a request gives none (None: the
    middle of the joints' working ranges; see `ik.default_rest`)."""


def robot_entries(
    robots: Mapping[str, str] | None,
    ee_links: Mapping[str, Sequence[str]] | None = None,
    rest: Mapping[str, Sequence[float]] | None = None,
) -> list[RobotEntry]:
    """Entries for ``{name: urdf}`` (default: the bundled robots). ``ee_links`` / ``rest``
    (by robot name) set a robot's defaults. A bundled robot's name brings its own defaults
    unless they are set: its end effectors if the URDF has those links (the bundled file, or
    a copy or recalibrated version of it), its rest pose if the chains to them have as many
    joints. Another URDF under a bundled name inherits nothing."""
    if not robots:
        robots = {name: str(d.urdf_path) for name, d in BUNDLED.items()}
    ee_links, rest = dict(ee_links or {}), dict(rest or {})
    for option, given in (("ee_links", ee_links), ("rest", rest)):
        unknown = sorted(set(given) - set(robots))
        if unknown:
            raise InputError(f"{option} for robot(s) {unknown} not served here", field=option)
    entries = []
    for name, urdf in robots.items():
        ee = tuple(ee_links[name]) if name in ee_links else None
        entry_rest = np.asarray(rest[name], np.float32) if name in rest else None
        bundled = BUNDLED.get(name)
        if bundled is not None and (ee is None or ee == tuple(bundled.ee_links)):
            inherited = _bundled_defaults(name, urdf)
            if inherited is not None:
                ee = ee or inherited[0]
                entry_rest = entry_rest if entry_rest is not None else inherited[1]
        if entry_rest is not None and ee is None:
            raise InputError(
                f"rest for robot {name!r} needs its default end effectors (ee_links) too",
                field="rest",
            )
        entries.append(RobotEntry(name=name, urdf=str(urdf), ee_links=ee, rest=entry_rest))
    return entries


def _bundled_defaults(name: str, urdf: str) -> tuple[tuple[str, ...], np.ndarray | None] | None:
    """(ee_links, rest or None) a URDF served under a bundled robot's name inherits, or None
    (logged) when it does not have the bundled end-effector links."""
    bundled = BUNDLED[name]
    if Path(urdf).resolve() == Path(bundled.urdf_path).resolve():
        return tuple(bundled.ee_links), np.asarray(bundled.rest, np.float32)
    model = parse_urdf(urdf)
    if not all(link in model.links for link in bundled.ee_links):
        logger.warning(
            "robot %s: %s lacks the bundled %s end effectors %s; it inherits no defaults",
            name,
            urdf,
            name,
            ", ".join(bundled.ee_links),
        )
        return None
    joints = sum(j.type in ACTUATED_TYPES for link in bundled.ee_links for j in model.path_to(link))
    rest = np.asarray(bundled.rest, np.float32) if joints == len(bundled.rest) else None
    return tuple(bundled.ee_links), rest


_compiles = 0
"""XLA compilations in this process since `_listen_for_compiles` (one counter: compiles are
a process-wide event, and a listener per service would never be unregistered)."""


def _count_compile(event: str, duration_secs: float, **kwargs: str | int) -> None:
    global _compiles
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles += 1


_listening = False


def _listen_for_compiles() -> None:
    """Start counting compilations (once per process)."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_count_compile)
        _listening = True


class IKService:
    """Serves ``solve``, ``fk``, ``describe`` and ``strokebatch`` (and ``echo``) for a set of
    robots."""

    def __init__(
        self,
        robots: Mapping[str, str] | None = None,
        *,
        ee_links: Mapping[str, Sequence[str]] | None = None,
        rest: Mapping[str, Sequence[float]] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        buckets: Sequence[int] | None = None,
        warm: Sequence[IKSettings] = (),
        warmup_threads: int | None = None,
        max_extra_compiles: int = 32,
        warmup_progress: WarmupHook | None = None,
    ) -> None:
        self.entries = {e.name: e for e in robot_entries(robots, ee_links, rest)}
        self.robots = list(self.entries)
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self.buckets = tuple(buckets) if buckets else None
        """Buckets to compile (None: ``CPU_BUCKETS`` on a CPU, else all; set at warm-up)."""
        self.warm = tuple(warm)
        """Settings whose solve programs are compiled before READY besides the default one
        (``precise`` / ``seeds`` pick the program; weights never matter). Each costs about as
        much as the default program; any other program compiles on its first request."""
        self.warmup_threads = warmup_threads
        """Threads compiling buckets at warm-up (None: one per CPU, at most 4)."""
        self.warmup_progress = warmup_progress
        """Called ``(buckets done, total)`` over every robot and program as each bucket is
        compiled at warm-up (the worker logs it and announces it to its brokers)."""
        self._solvers: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._urdf_text: dict[str, str] = {}
        self.compiles_at_ready = 0
        self.max_extra_compiles = max_extra_compiles
        """Programs compiled on demand after READY (other settings, end effectors, stroke
        lengths: all chosen by clients) that may pile up before they are all dropped. Each
        holds ~150 MiB of host memory on a CPU, so without a bound a client could grow the
        worker until it is killed; dropped ones are compiled (or cache-loaded) again on use.
        Solvers built on demand (one per end-effector set a client names) count the same way,
        even before they compile anything."""
        self._warm: dict[tuple[str, tuple[str, ...]], frozenset[Any]] = {}
        """Solvers built at warm-up and the program keys they held then: never dropped."""
        self._compiles_at_trim = 0

    @property
    def compiles(self) -> int:
        """XLA compilations in this process so far; after warm-up it should never move
        (replies carry it)."""
        return _compiles

    # ------------------------------------------------------------------ start-up

    def warmup(self) -> dict[str, Any]:
        """Load every robot with its default end effectors and compile every bucket."""
        import jax

        from zmq_ik import ik

        ik.run_inline_on_cpu()
        cache_dir = usable_cache_dir(self.cache_dir)
        if cache_dir is not None:
            ik.enable_compilation_cache(cache_dir)
        _listen_for_compiles()
        t0 = time.monotonic()
        dev = jax.devices()[0]
        if self.buckets is None:
            self.buckets = CPU_BUCKETS if dev.platform == "cpu" else tuple(ik.BUCKETS)
        # One settings per program: only precise and seeds pick one.
        program_settings = [IKSettings()]
        for settings in self.warm:
            picked = [ik.program_key(p) for p in program_settings]
            if ik.program_key(settings) not in picked:
                program_settings.append(settings)
        # Robots without default end effectors compile nothing here.
        per_robot = sum(len(ik.warmup_buckets(p, self.buckets)) for p in program_settings)
        total = per_robot * sum(1 for e in self.entries.values() if e.ee_links is not None)
        done = 0

        def compiled(n: int, _: int) -> None:
            if self.warmup_progress is not None:
                self.warmup_progress(done + n, total)

        for entry in self.entries.values():
            robot = self._load(entry)
            if robot is None:
                continue
            t1 = time.monotonic()
            ik.warmup_fk(robot, self.buckets)
            logger.info("robot %s: compiled FK in %.2fs", entry.name, time.monotonic() - t1)
            for settings in program_settings:
                t1 = time.monotonic()
                ik.warmup(
                    robot,
                    settings,
                    buckets=self.buckets,
                    threads=self.warmup_threads,
                    progress=compiled,
                )
                done += len(ik.warmup_buckets(settings, self.buckets))
                logger.info(
                    "robot %s: compiled buckets %s (precise=%s, seeds=%d) in %.2fs",
                    entry.name,
                    ",".join(map(str, self.buckets)),
                    settings.precise,
                    settings.seeds,
                    time.monotonic() - t1,
                )
        device = (
            "cpu"
            if dev.platform == "cpu"
            else f"{dev.platform}:{dev.id} {getattr(dev, 'device_kind', '')}".strip()
        )
        if dev.platform == "cpu":
            logger.info("running on the CPU (no --gpu given, or no GPU visible to JAX)")
        self.compiles_at_ready = self._compiles_at_trim = self.compiles
        self._warm = {key: ik.programs_of(solver).keys() for key, solver in self._solvers.items()}
        return {
            "device": device,
            "operations": [ops.SOLVE, ops.FK, ops.STROKEBATCH, ops.DESCRIBE, "echo"],
            "buckets": list(self.buckets),
            "programs": [{"precise": p.precise, "seeds": p.seeds} for p in program_settings],
            "compile_s": round(time.monotonic() - t0, 3),
            "versions": {"jax": jax.__version__},
        }

    def _load(self, entry: RobotEntry) -> Any:
        """Read and check a robot's URDF (and default end effectors and rest pose) at start-up,
        so a bad file stops the worker before READY with a message naming it. Returns the
        default solver, or None when the robot has no default end effectors."""
        try:
            parse_urdf(entry.urdf)  # messages name the file
            self._urdf_text[entry.urdf], _ = read_urdf_text(entry.urdf)
        except InputError as e:
            raise InputError(f"robot {entry.name!r}: {e.message}", e.field) from e
        if entry.ee_links is None:
            logger.warning(
                "robot %s: no default end effectors (--ee-links), so requests must name them "
                "and each new set compiles on its first request (seconds)",
                entry.name,
            )
            return None
        try:
            robot = self._robot(entry.name, entry.ee_links)  # checks entry.rest too
        except InputError as e:
            raise InputError(f"robot {entry.name!r} ({entry.urdf}): {e.message}", e.field) from e
        return robot

    # ------------------------------------------------------------------ requests

    def handle(self, call: ServiceCall) -> ServiceReply:
        try:
            header, arrays = self._handle(call)
        finally:
            extra_solvers = len(self._solvers) - len(self._warm)
            if (
                self.compiles - self._compiles_at_trim > self.max_extra_compiles
                or extra_solvers > self.max_extra_compiles
            ):
                self._drop_extra_programs()
        # Steady state compiles nothing; if it ever does, every reply says so.
        return {**header, "compiles_since_ready": self.compiles - self.compiles_at_ready}, arrays

    def _drop_extra_programs(self) -> None:
        """Forget every solver and program not built at warm-up (a bound on memory)."""
        from zmq_ik import ik

        dropped = 0
        for key in list(self._solvers):
            warm_keys = self._warm.get(key)
            if warm_keys is None:
                del self._solvers[key]
                dropped += 1
                continue
            dropped += ik.programs_of(self._solvers[key]).drop(keep=warm_keys)
        gc.collect()  # compiled executables go with their jitted functions
        malloc_trim()  # dropped executables otherwise stay in RSS
        logger.info(
            "%d programs compiled on demand since the last trim: dropped %d solver(s)/program(s)",
            self.compiles - self._compiles_at_trim,
            dropped,
        )
        self._compiles_at_trim = self.compiles

    def _handle(self, call: ServiceCall) -> ServiceReply:
        from zmq_ik import ik

        robot, operation, header, arrays = call.robot, call.operation, call.header, call.arrays
        deadline = call.deadline

        entry = self.entries.get(robot)
        if entry is None:
            raise ServiceError(
                ErrorCode.UNKNOWN_ROBOT, f"this worker does not serve robot {robot!r}", "robot"
            )
        if operation == "echo":
            return dict(header), dict(arrays)
        if operation == ops.SOLVE:
            wxyz, pos, rest, ee_links, settings = ops.read_solve_request(header, arrays)
            ee = self._ee_links(entry, ee_links)
            solver = self._robot(robot, ee)
            if wxyz.shape[1] != len(ee):
                raise InputError(
                    f"targets have {wxyz.shape[1]} end effectors, robot {robot!r} has {len(ee)}",
                    "target_pos",
                )
            # read_solve_request checked the targets: the engine checks only what needs the
            # robot (rest against its limits), not the same arrays again.
            return ops.solve_reply(
                ik.solve_until(
                    solver,
                    wxyz,
                    pos,
                    rest,
                    settings,
                    deadline=deadline,
                    buckets=self.buckets,
                    checked=True,
                )
            )
        if operation == ops.FK:
            joints, ee_links = ops.read_fk_request(header, arrays)
            solver = self._robot(robot, self._ee_links(entry, ee_links))
            poses = ik.fk_poses(
                solver, joints, buckets=self.buckets, deadline=deadline, checked=True
            )
            return ops.fk_reply(poses)
        if operation == ops.DESCRIBE:
            requested = ops.read_ee_links(header)
            ee = self._ee_links(entry, requested)
            solver = self._robot(robot, ee)
            return ops.describe_reply(
                ee,
                solver.joint_names,
                solver.lower,
                solver.upper,
                solver.limited,
                ik.default_rest(solver),
                solver.prismatic,
            )
        if operation == ops.STROKEBATCH:
            scene, packed = ops.read_strokebatch_request(header, arrays)
            solver = self._robot(robot, tuple(scene.ee_links))
            # First/last rest is in the flags already: the client applied it before splitting.
            batch = ik.strokebatch_from_packed(
                scene, packed, solver, buckets=self.buckets, deadline=deadline
            )
            return ops.strokebatch_reply(batch)
        raise ServiceError(
            ErrorCode.UNKNOWN_OPERATION,
            f"unknown operation {operation!r}; this worker serves solve, fk, strokebatch, "
            "describe, echo",
            "operation",
        )

    def _ee_links(self, entry: RobotEntry, requested: tuple[str, ...] | None) -> tuple[str, ...]:
        if requested is not None:
            return requested
        if entry.ee_links is None:
            raise InputError(
                f"robot {entry.name!r} has no default end effectors: name ee_links", "ee_links"
            )
        return entry.ee_links

    def _robot(self, name: str, ee_links: tuple[str, ...]) -> Any:
        """The kinematic model for (robot, end effectors), built once and cached; with the
        default end effectors it carries the robot's default rest pose."""
        from zmq_ik import ik

        key = (name, ee_links)
        solver = self._solvers.get(key)
        if solver is None:
            entry = self.entries[name]
            if entry.urdf not in self._urdf_text:
                self._urdf_text[entry.urdf], _ = read_urdf_text(entry.urdf)
            rest = entry.rest if ee_links == entry.ee_links else None
            solver = ik.Robot.from_urdf(self._urdf_text[entry.urdf], ee_links, rest)
            self._solvers[key] = solver
            logger.info("robot %s: built solver for %s", name, ", ".join(ee_links))
        return solver
