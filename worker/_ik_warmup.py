"""The IK service's start-up: the device, the JAX cache, robots loaded once with their
solvers cached, one bucket of each warmed program compiled before READY and the others
right after (`IKWarmup`; requests meanwhile use the compiled ones). Imports JAX when it
runs, so only GPU/worker hosts call it."""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zmq_ik.base.process import lower_thread_priority
from zmq_ik.errors import InputError
from zmq_ik.model import IKSettings, ops
from zmq_ik.robots.urdf import parse_urdf, read_urdf_text
from zmq_ik.worker._compile_notice import compiles_so_far, listen_for_compiles
from zmq_ik.worker._ik_robots import RobotEntry, robot_entries
from zmq_ik.worker._service import WarmupHook

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


class IKWarmup:
    """The robots an `IKService` serves, their solvers (built once, cached) and their
    warm-up; `IKService` adds the requests."""

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
        return compiles_so_far()

    # ------------------------------------------------------------------ start-up

    def warmup(self, progress: WarmupHook | None = None) -> dict[str, Any]:
        """Load every robot with its default end effectors and compile one bucket of each
        warmed program (`FIRST_BUCKET`) and FK's smallest: any request can then be served,
        in chunks, without compiling. The other buckets compile after READY
        (`finish_warmup`). ``progress`` is told ``(buckets done, total)`` over every robot
        and program as each bucket is compiled (the worker logs it and announces it).

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
            info = pool.submit(self._warmup, progress).result()
            gc.freeze()
        finally:
            pool.shutdown(wait=False)
            if collecting:
                gc.enable()
        return info

    def _warmup(self, progress: WarmupHook | None) -> dict[str, Any]:
        import jax

        from zmq_ik import ik

        ik.run_inline_on_cpu()
        cache_dir = usable_cache_dir(self.cache_dir)
        if cache_dir is not None:
            ik.enable_compilation_cache(cache_dir)
        listen_for_compiles()
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
            if progress is not None:
                progress(done + n, total)

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
