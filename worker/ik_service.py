"""The IK service a worker runs: robots loaded once, solvers cached, one bucket of each
warmed program compiled before READY and the others right after (requests meanwhile use the
compiled ones), compiles on demand logged and told. Imports JAX, so only GPU/worker hosts
import this module.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zmq_ik.base.memory import malloc_trim
from zmq_ik.base.process import lower_thread_priority
from zmq_ik.errors import ErrorCode, IKTimeout, InputError
from zmq_ik.model import IKSettings, ops
from zmq_ik.robots import BUNDLED
from zmq_ik.robots.urdf import ACTUATED_TYPES, parse_urdf, read_urdf_text
from zmq_ik.worker._service import ServiceCall, ServiceError, ServiceReply, WarmupHook

logger = logging.getLogger(__name__)

CPU_BUCKETS: tuple[int, ...] = (1, 16, 32, 64, 128, 256, 512, 1024)
"""Buckets a CPU worker compiles unless told otherwise. On a CPU a pose costs the same
(~35 µs) in batches of 1024 as of 16,384, so bigger batches are solved in chunks of 1024;
each bucket left out saves ~7 s of a cold start and ~0.5 s of a warm one (2 CPUs). GPU keeps
all of ``ik.BUCKETS`` (bigger batches pay off there; not measured here)."""

FIRST_BUCKET = 16
"""A warmed program compiles one bucket before READY: the smallest of at least this many
targets (else its largest), the others after READY. Requests meanwhile go in chunks of it:
a batch of 16 costs about twice a single pose on a CPU, but a miss's re-solve rounds (8 to
64 starts each) take 16 times fewer calls than with bucket 1 (1,000 panda targets right
after READY: 13 s with bucket 1 on the loaded 2-CPU VM; `benchmarks.robots --startup`)."""

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
"""XLA compilations (or loads from the persistent cache) in this process since
`_listen_for_compiles`, on every thread (one counter: compiles are a process-wide event, and
a listener per service would never be unregistered)."""
_COMPILED = "/jax/core/compile/backend_compile_duration"
"""JAX's event after each compile, or load from the persistent cache (its duration)."""
_COMPILING = "/jax/compilation_cache/compile_requests_use_cache"
"""JAX's event before each compile (only while the persistent cache is on: without one, a
client is not told before, only the log after)."""


class _OnDemand:
    """What one request compiled on the thread serving it (`IKService.handle`): counted and
    timed for the log and ``compiles_since_ready``; the client is told at the first compile
    (a PARTIAL ``{"compiling": message}``), so that a timeout is not silent."""

    def __init__(self, call: ServiceCall) -> None:
        self.call = call
        self.what = call.operation
        """The request's setting, for the log and the notice (`IKService._explain`)."""
        self.hint = ""
        """What would have compiled it before READY (a ``--warm`` or ``--ee-links``)."""
        self.compiles = 0
        self.seconds = 0.0
        self.told = False

    def starting(self) -> None:
        if self.told:
            return
        self.told = True
        message = (
            f"the worker is compiling a program for this request ({self.call.robot} "
            f"{self.what}), once: seconds to minutes on a CPU"
            + (f"; {self.hint}" if self.hint else "")
        )
        logger.info("robot %s: compiling on demand for %s", self.call.robot, self.what)
        try:
            self.call.progress({"compiling": message}, None)
        except Exception:  # telling is best effort: the compile and the answer go on
            logger.debug("compile notice not sent", exc_info=True)


_serving = threading.local()
"""``.job``: the `_OnDemand` of the request this thread serves (None: not serving, e.g. the
warm-up threads, whose compiles are expected)."""


def _count_compile(event: str, duration_secs: float, **kwargs: str | int) -> None:
    global _compiles
    if event == _COMPILED:
        _compiles += 1
        job: _OnDemand | None = getattr(_serving, "job", None)
        if job is not None:
            job.compiles += 1
            job.seconds += duration_secs


def _compile_starts(event: str, **kwargs: str | int) -> None:
    if event == _COMPILING:
        job: _OnDemand | None = getattr(_serving, "job", None)
        if job is not None:
            job.starting()


_listening = False


def _listen_for_compiles() -> None:
    """Start counting compilations (once per process)."""
    global _listening
    if not _listening:
        import jax

        jax.monitoring.register_event_duration_secs_listener(_count_compile)
        jax.monitoring.register_event_listener(_compile_starts)
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
        background: bool = True,
    ) -> None:
        self.entries = {e.name: e for e in robot_entries(robots, ee_links, rest)}
        self.robots = list(self.entries)
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
        self.buckets = tuple(buckets) if buckets else None
        """Buckets to compile (None: ``CPU_BUCKETS`` on a CPU, else all; set at warm-up)."""
        self.warm = tuple(warm)
        """Settings whose solve programs are warmed up besides the default one (``precise``
        / ``seeds`` pick the program; weights never matter). Each costs about as much as
        the default program; any other program compiles on its first request."""
        self.warmup_threads = warmup_threads
        """Threads compiling buckets before READY (None: one per CPU, at most 4)."""
        self.warmup_progress = warmup_progress
        """Called ``(buckets done, total)`` over every robot and program as each bucket is
        compiled before READY (the worker logs it and announces it to its brokers)."""
        self.background = background
        """`warmup` compiles one bucket of each warmed program (and FK's smallest), enough to
        serve any request, and starts `finish_warmup` in a thread for the other buckets
        (False: the caller runs it, e.g. a test)."""
        self._solvers: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._urdf_text: dict[str, str] = {}
        self.max_extra_compiles = max_extra_compiles
        """Programs compiled on demand after READY (other settings, end effectors, stroke
        lengths: all chosen by clients) that may pile up before they are all dropped. Each
        holds ~150 MiB of host memory on a CPU, so without a bound a client could grow the
        worker until it is killed; dropped ones are compiled (or cache-loaded) again on use.
        Solvers built on demand (one per end-effector set a client names) count the same way,
        even before they compile anything."""
        self._warm: dict[tuple[str, tuple[str, ...]], frozenset[Any]] = {}
        """Solvers built at warm-up and the program keys they held then: never dropped."""
        self.compiles_on_demand = 0
        """Compiles requests waited for since READY (replies carry it as
        ``compiles_since_ready``): none for the warmed programs, whatever the batch size."""
        self._compiles_at_trim = 0
        self._ready: dict[tuple[Any, ...], tuple[int, ...]] = {}
        """Buckets compiled so far of each warmed program still being compiled after READY,
        by (solver key, program key, or ``"fk"``): requests use only these meanwhile (a
        bigger batch goes in chunks). A program not listed is complete, or not warmed."""
        self._later: list[tuple[tuple[Any, ...], Any, IKSettings | None, tuple[int, ...]]] = []
        """What `finish_warmup` compiles: (key as in ``_ready``, solver, settings or None for
        FK, buckets in order)."""
        self._stop_background = threading.Event()
        self.background_thread: threading.Thread | None = None

    @property
    def compiles(self) -> int:
        """XLA compilations in this process so far, on any thread (the warm-up's included)."""
        return _compiles

    # ------------------------------------------------------------------ start-up

    def warmup(self) -> dict[str, Any]:
        """Load every robot with its default end effectors and compile one bucket of each
        warmed program (`FIRST_BUCKET`) and FK's smallest: any request can then be served,
        in chunks, without compiling. The other buckets compile after READY
        (`finish_warmup`).

        All of it runs on a thread of its own, which lowers itself to `_os.COMPILE_NICE`
        once JAX's backend exists (tracing and compiling from then on), so that serving
        workers on the host keep their CPU (and their heartbeats); this thread only waits,
        and keeps its priority for serving (a thread's niceness cannot be lowered back
        without privilege; nor can the backend's threads', which serve every request). A signal's exception
        here returns at once (the compiles finish in their threads; `exit_now`).

        Python's garbage collector is paused meanwhile: importing JAX and loading programs
        make millions of objects that live as long as the process, and collecting them over
        and over cost ~0.2 s of a warm restart's ~3 s of CPU. They are then frozen (never
        scanned again), so that no collection while serving walks them either."""
        collecting = gc.isenabled()
        gc.disable()
        pool = ThreadPoolExecutor(1, thread_name_prefix="zmq-ik-warmup-ready")
        try:
            info = pool.submit(self._warmup).result()
            gc.freeze()
        finally:
            pool.shutdown(wait=False)
            if collecting:
                gc.enable()
        return info

    def _warmup(self) -> dict[str, Any]:
        import jax

        from zmq_ik import ik

        ik.run_inline_on_cpu()
        cache_dir = usable_cache_dir(self.cache_dir)
        if cache_dir is not None:
            ik.enable_compilation_cache(cache_dir)
        _listen_for_compiles()
        t0 = time.monotonic()
        # The backend and its thread pools, which run every request later, are made at this
        # thread's priority: threads inherit their creator's niceness, and one made here at
        # COMPILE_NICE would serve at it for good. Only then is this thread reniced.
        dev = jax.devices()[0]
        lower_thread_priority()
        if self.buckets is None:
            self.buckets = CPU_BUCKETS if dev.platform == "cpu" else tuple(ik.BUCKETS)
        fk_first = self.buckets[:1]  # FK's shapes are the smallest and the largest bucket
        # One settings per program: only precise and seeds pick one.
        program_settings = [IKSettings()]
        for settings in self.warm:
            picked = [ik.program_key(p) for p in program_settings]
            if ik.program_key(settings) not in picked:
                program_settings.append(settings)
        # Robots without default end effectors compile nothing here.
        total = len(program_settings) * sum(
            1 for e in self.entries.values() if e.ee_links is not None
        )
        done = 0

        def compiled(n: int, _: int) -> None:
            if self.warmup_progress is not None:
                self.warmup_progress(done + n, total)

        fk_pool = ThreadPoolExecutor(1, thread_name_prefix="zmq-ik-warmup-fk")
        try:
            for entry in self.entries.values():
                robot = self._load(entry)
                if robot is None:
                    continue
                key = (entry.name, entry.ee_links)
                t1 = time.monotonic()
                # FK compiles beside the solver's tracing (which holds the GIL).
                fk = fk_pool.submit(ik.warmup_fk, robot, fk_first)
                later: list[tuple[tuple[Any, ...], Any, IKSettings | None, tuple[int, ...]]] = []
                for settings in program_settings:
                    sizes = ik.warmup_buckets(settings, self.buckets)
                    first = next((b for b in sizes if b >= FIRST_BUCKET), sizes[-1])
                    ik.warmup(
                        robot,
                        settings,
                        buckets=(first,),
                        threads=self.warmup_threads,
                        progress=compiled,
                    )
                    done += 1
                    rest = [b for b in sizes if b != first]
                    if rest:  # the largest first: the chunk size of big batches
                        program = (*key, ik.program_key(settings))
                        self._ready[program] = (first,)
                        later.append((program, robot, settings, (rest[-1], *rest[:-1])))
                fk.result()
                if len(self.buckets) > 1:  # FK's other shape: the largest bucket
                    fk_key = (*key, "fk")
                    self._ready[fk_key] = fk_first
                    later.insert(1, (fk_key, robot, None, self.buckets[-1:]))
                self._later += later
                logger.info(
                    "robot %s: compiled %d program(s) and FK for READY in %.2fs (their other "
                    "buckets compile after READY)",
                    entry.name,
                    len(program_settings),
                    time.monotonic() - t1,
                )
        finally:
            fk_pool.shutdown(wait=False)
        device = (
            "cpu"
            if dev.platform == "cpu"
            else f"{dev.platform}:{dev.id} {getattr(dev, 'device_kind', '')}".strip()
        )
        if dev.platform == "cpu":
            logger.info("running on the CPU (no --gpu given, or no GPU visible to JAX)")
        self._warm = {key: ik.programs_of(solver).keys() for key, solver in self._solvers.items()}
        if self.background and self._later:
            self.background_thread = threading.Thread(
                target=self._finish_warmup_in_background, name="zmq-ik-warmup-later", daemon=True
            )
            self.background_thread.start()
        return {
            "device": device,
            "operations": [ops.SOLVE, ops.FK, ops.STROKEBATCH, ops.DESCRIBE, "echo"],
            "buckets": list(self.buckets),
            "programs": [{"precise": p.precise, "seeds": p.seeds} for p in program_settings],
            "compile_s": round(time.monotonic() - t0, 3),
            "versions": {"jax": jax.__version__},
        }

    def finish_warmup(self) -> None:
        """Compile the warmed programs' other buckets, one at a time (the other CPUs serve
        requests meanwhile), each used as soon as it is compiled; `warmup` starts this in a
        thread. A failure is logged: requests go on in the buckets compiled."""
        from zmq_ik import ik

        t0 = time.monotonic()
        try:
            while self._later and not self._stop_background.is_set():
                program, robot, settings, buckets = self._later[0]
                for bucket in buckets:
                    if self._stop_background.is_set():
                        return
                    if settings is None:
                        ik.warmup_fk(robot, self.buckets)
                    else:
                        ik.warmup(robot, settings, buckets=(bucket,), threads=1)
                    self._ready[program] = tuple(sorted({*self._ready[program], bucket}))
                del self._ready[program]  # complete: requests use every bucket
                self._later.pop(0)
        except Exception:
            logger.exception("compiling after READY failed; serving the buckets compiled")
            return
        if not self._stop_background.is_set():
            logger.info("every bucket compiled, %.1fs after READY", time.monotonic() - t0)

    def _finish_warmup_in_background(self) -> None:
        """`finish_warmup` at `_os.COMPILE_NICE`: this worker's own requests (and heartbeats)
        and any other worker's on the host go first."""
        lower_thread_priority()
        self.finish_warmup()

    def stop_background(self) -> None:
        """Start no other bucket after the one compiling now (XLA cannot be interrupted)."""
        self._stop_background.set()

    def _buckets(self, key: tuple[Any, ...], program: Any) -> tuple[int, ...]:
        """The buckets a request for ``program`` (a program key, ``"fk"``) of the solver
        ``key`` may use now: those compiled, while the rest compile after READY."""
        assert self.buckets is not None
        return self._ready.get((*key, program), self.buckets)

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
        job = _serving.job = _OnDemand(call)
        try:
            header, arrays = self._handle(call, job)
        except IKTimeout as e:
            if not job.compiles:
                raise
            raise IKTimeout(
                f"{e} after {job.seconds:.1f}s compiling for {job.what}"
                + (f" ({job.hint})" if job.hint else "")
            ) from e
        finally:
            _serving.job = None
            if job.compiles:
                self.compiles_on_demand += job.compiles
                logger.warning(
                    "robot %s: %s compiled %d program(s) on demand in %.1fs%s",
                    call.robot,
                    job.what,
                    job.compiles,
                    job.seconds,
                    f"; {job.hint}" if job.hint else "",
                )
            extra_solvers = len(self._solvers) - len(self._warm)
            if (
                self.compiles_on_demand - self._compiles_at_trim > self.max_extra_compiles
                or extra_solvers > self.max_extra_compiles
            ):
                self._drop_extra_programs()
        # Steady state compiles nothing; if it ever does, every reply says so.
        return {**header, "compiles_since_ready": self.compiles_on_demand}, arrays

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
            self.compiles_on_demand - self._compiles_at_trim,
            dropped,
        )
        self._compiles_at_trim = self.compiles_on_demand

    def _handle(self, call: ServiceCall, job: _OnDemand) -> ServiceReply:
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
            wxyz, pos, rest, ee_links, settings, active = ops.read_solve_request(header, arrays)
            ee = self._ee_links(entry, ee_links)
            settings = settings or IKSettings()
            self._explain(job, entry, ee, settings)
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
                    buckets=self._buckets((robot, ee), ik.program_key(settings)),
                    checked=True,
                    active=active,
                )
            )
        if operation == ops.FK:
            joints, ee_links = ops.read_fk_request(header, arrays)
            ee = self._ee_links(entry, ee_links)
            self._explain(job, entry, ee, None)
            solver = self._robot(robot, ee)
            poses = ik.fk_poses(
                solver,
                joints,
                buckets=self._buckets((robot, ee), "fk"),
                deadline=deadline,
                checked=True,
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
            ee = tuple(scene.ee_links)
            self._explain(job, entry, ee, scene.ik)
            solver = self._robot(robot, ee)
            # First/last rest is in the flags already: the client applied it before splitting.
            program = None if scene.ik.continuous else ik.program_key(scene.ik)
            batch = ik.strokebatch_from_packed(
                scene,
                packed,
                solver,
                buckets=self._buckets((robot, ee), program),
                deadline=deadline,
            )
            return ops.strokebatch_reply(batch)
        raise ServiceError(
            ErrorCode.UNKNOWN_OPERATION,
            f"unknown operation {operation!r}; this worker serves solve, fk, strokebatch, "
            "describe, echo",
            "operation",
        )

    def _explain(
        self, job: _OnDemand, entry: RobotEntry, ee: tuple[str, ...], settings: IKSettings | None
    ) -> None:
        """Say in ``job`` what the request asks for and what would have compiled its programs
        before READY, in case it compiles any (the log and the client's notice)."""
        what = [job.call.operation]
        if ee != entry.ee_links:
            what.append(f"ee_links={','.join(ee)}")
            job.hint = (
                f"only the default end effectors are compiled before READY (--ee-links "
                f"{entry.name}={','.join(ee)} to make these the default)"
            )
        if settings is not None:
            what.append(f"precise={settings.precise}")
            if not settings.precise:
                what.append(f"seeds={settings.seeds}")
            if settings.continuous:
                what.append("continuous=True")
                job.hint = job.hint or "continuous stroke programs compile on first use"
            else:
                warm = f"precise={str(settings.precise).lower()}"
                if not settings.precise:
                    warm += f",seeds={settings.seeds}"
                job.hint = (
                    job.hint or f"start the worker with --warm {warm} to compile it before READY"
                )
        job.what = " ".join(what)

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
