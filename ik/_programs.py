"""Compiled programs: each robot's :class:`ProgramCache`, batch buckets, warm-up, JAX settings.

A program is compiled per (robot, kind, static settings) and per batch bucket, never per
request: batches are padded to a bucket or split into chunks, and the weights are traced
parameters (:func:`~zmq_ik.ik._lm.solver_params`), so a warmed-up worker compiles nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

import zmq_ik
from zmq_ik.base.process import lower_thread_priority
from zmq_ik.model import IKSettings
from zmq_ik.settings.ik import BUCKETS as BUCKETS
from zmq_ik.settings.ik import check_buckets as check_buckets

from ._lm import N_PARAMS, solve_planes, takes_mask
from ._robot import Robot

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ProgramCache:
    """One robot's jitted programs (solve programs per ``(precise, seeds)``, FK...), by key.

    Each holds its compiled executables (a solve program's buckets take ~150 MiB of host
    memory on a CPU), so whoever lets clients pick settings bounds them with :meth:`drop`
    (a worker keeps the programs it warmed up)."""

    def __init__(self) -> None:
        self._programs: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The program under ``key``; ``build()`` makes it on first use."""
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = build()
        return program  # type: ignore[no-any-return]

    def keys(self) -> frozenset[Hashable]:
        """Keys of the programs built so far."""
        return frozenset(self._programs)

    def drop(self, keep: Iterable[Hashable] = ()) -> int:
        """Forget every program whose key is not in ``keep`` (it is built again on its next
        use); returns how many were dropped."""
        kept = set(keep)
        dropped = [key for key in self._programs if key not in kept]
        for key in dropped:
            del self._programs[key]
        return len(dropped)

    def __len__(self) -> int:
        return len(self._programs)


_PROGRAMS: weakref.WeakKeyDictionary[Robot, ProgramCache] = weakref.WeakKeyDictionary()


def programs_of(robot: Robot) -> ProgramCache:
    """``robot``'s compiled programs (made on first use, gone with the robot): the robot is
    immutable kinematics, its programs a cache kept here, so the engine reads one way,
    kinematics → robot → solver → programs → the public solve."""
    cache = _PROGRAMS.get(robot)
    if cache is None:
        cache = _PROGRAMS[robot] = ProgramCache()
    return cache


_export_dir: Path | None = None
"""Where traced solve programs are kept (`_any_batch`): beside the compilation cache."""


def enable_compilation_cache(path: str | os.PathLike[str]) -> None:
    """Use JAX's persistent compilation cache in ``path`` for every program, small ones too
    (so a restarted worker or test run loads compiled programs instead of compiling them),
    and keep the traced solve programs there (a restart then skips tracing, ~0.6-2 s)."""
    global _export_dir
    p = Path(path).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _export_dir = p / "zmq-ik-traced"


def run_inline_on_cpu() -> None:
    """Run CPU programs on the calling thread instead of handing them to JAX's dispatch
    thread. A worker waits for every result at once, so asynchronous dispatch only adds a
    thread hand-off per call (single-pose solves take ~0.8× the time without it on a 2-CPU
    VM). No effect on GPUs."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


_LAPACK_FREE = contextvars.ContextVar("zmq_ik_lapack_free", default=False)
"""Set while `warmup` lowers a solve program (`_lowering_without_lapack`)."""


def _install_lapack_skip() -> bool:
    """Let `warmup` lower the traced solve programs without JAX's LAPACK set-up.

    Before lowering any exported call on a CPU, JAX registers its LAPACK handlers in case the
    module calls LAPACK; that imports SciPy: ~0.3 s of a ~2.8 s warm restart, on the path to
    READY. The solve programs never call LAPACK (their Cholesky is written out; a test checks
    the exported module), so `warmup` skips it; every other lowering in the process (a
    user's own exported calls included) keeps JAX's behaviour. A JAX without this private
    hook is left alone (restarts are only slower). Returns whether the skip is installed."""
    try:
        from jax._src.export import _export
    except ImportError:
        return False
    ensure = getattr(_export, "_ensure_backends_initialized", None)
    if ensure is None or getattr(ensure, "zmq_ik_original", None) is not None:
        return ensure is not None

    def ensure_unless_lapack_free(platforms: tuple[str, ...]) -> None:
        if not _LAPACK_FREE.get():
            ensure(platforms)

    ensure_unless_lapack_free.zmq_ik_original = ensure  # type: ignore[attr-defined]
    _export._ensure_backends_initialized = ensure_unless_lapack_free
    return True


@contextlib.contextmanager
def _lowering_without_lapack() -> Iterator[None]:
    """Lower a solve program (no LAPACK calls) without JAX's LAPACK set-up: `_install_lapack_skip`."""
    token = _LAPACK_FREE.set(_install_lapack_skip())
    try:
        yield
    finally:
        _LAPACK_FREE.reset(token)


def chunk_size(buckets: Sequence[int], seeds: int = 1) -> int:
    """Targets per program call: the largest bucket whose ``bucket × seeds`` problems fit in
    the largest bucket (else the smallest bucket). Bounds the memory and the duration of
    one call (a deadline is only checked between calls) whatever ``seeds`` a client asks."""
    fitting = [b for b in buckets if b * seeds <= buckets[-1]]
    return fitting[-1] if fitting else buckets[0]


def bucket_for(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The bucket a batch of ``n`` (≤ the largest bucket) is padded to."""
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


def program_specs(
    robot: Robot, batch: Any, precise: bool = False
) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Argument shapes of a solve program for ``batch`` targets (an int or a symbol); the
    reaching program (``precise``) takes each problem's starting point too, and a robot
    whose end effectors share joints (`takes_mask`) which end effectors have a target."""
    f32 = np.float32
    targets = (
        jax.ShapeDtypeStruct((robot.n_ee, 4, batch), f32),
        jax.ShapeDtypeStruct((robot.n_ee, 3, batch), f32),
    )
    starts = (jax.ShapeDtypeStruct((robot.n_joints, batch), f32),) if precise else ()
    active = (jax.ShapeDtypeStruct((robot.n_ee, batch), np.bool_),) if takes_mask(robot) else ()
    return (
        *targets,
        *starts,
        *active,
        jax.ShapeDtypeStruct((robot.n_joints,), f32),
        jax.ShapeDtypeStruct((N_PARAMS,), f32),
    )


def program_key(settings: IKSettings) -> tuple[str, bool, int]:
    """The program ``settings`` run: only ``precise`` and (without it) ``seeds`` pick one
    (the reaching mode handles its starting points outside the program)."""
    return ("solve", settings.precise, 1 if settings.precise else settings.seeds)


def solve_program(robot: Robot, precise: bool, seeds: int) -> Any:
    """The jitted solve for (robot, precise, seeds), one compile per bucket. Tatbot's mode:
    ``(target_wxyz (n_ee, 4, B), target_pos (n_ee, 3, B), rest (n,), params) → (joints (n,
    B), pos_err, ori_err (n_ee, B))``, from the rest pose. Reaching mode (``precise``; seeds
    do not matter): ``(target_wxyz, target_pos, starts (n, B), rest, params)``, each problem
    from its own start (see ``_reach``). A robot whose end effectors share joints
    (`takes_mask`) takes ``active`` (n_ee, B) bool before ``rest``: which have a target."""
    key = program_key(IKSettings(precise=precise, seeds=seeds))

    def build() -> Any:
        solve: Callable[..., Any]
        if precise:

            def solve(w: Any, p: Any, starts: Any, *rest_params: Any) -> Any:
                *active, rest, params = rest_params
                return solve_planes(robot, True, 1, w, p, rest, params, starts, *active)

        else:

            def solve(w: Any, p: Any, *rest_params: Any) -> Any:
                *active, rest, params = rest_params
                return solve_planes(robot, False, seeds, w, p, rest, params, None, *active)

        return _any_batch(solve, robot, f"solve{key[1:]}", precise)

    return programs_of(robot).get(key, build)


def continuous_program(robot: Robot, precise: bool) -> Any:
    """The jitted solve of pose sequences, each pose warm-started from the previous answer:
    ``(target_wxyz (n_ee, 4, l, M), target_pos (n_ee, 3, l, M), rest, params) → (joints
    (l, n, M), pos_err, ori_err (l, n_ee, M))``; as `solve_program`, ``active`` (n_ee, l, M)
    before ``rest`` for a robot that `takes_mask`."""

    def build() -> Any:
        def run(target_wxyz: Any, target_pos: Any, *rest_params: Any) -> Any:
            *active, rest, params = rest_params
            m = target_wxyz.shape[-1]
            q0 = jnp.broadcast_to(rest[:, None], (robot.n_joints, m))

            def step(q: Any, target: Any) -> Any:
                wxyz, pos, *on = target
                out = solve_planes(robot, precise, 1, wxyz, pos, rest, params, q, *on)
                return out[0], out

            xs = tuple(
                jnp.moveaxis(a, 2 if a.ndim == 4 else 1, 0)
                for a in (target_wxyz, target_pos, *active)
            )
            _, (q, pos_err, ori_err) = jax.lax.scan(step, q0, xs)
            return q, pos_err, ori_err

        return jax.jit(run)

    return programs_of(robot).get(("continuous", precise), build)


def _any_batch(fun: Any, robot: Robot, name: str, precise: bool) -> Any:
    """``jax.jit(fun)``, but traced and lowered once for a symbolic batch size.

    Tracing the unrolled solver costs ~0.6 s; with ``jax.jit(fun)`` it is paid again for
    every bucket (shapes are part of the trace). The exported module is only specialised
    per bucket (~0.05 s), and compiles to the same program. With a compilation cache, the
    exported module is kept there too (`_traced_path`): a restart skips tracing (``name``
    must tell ``fun`` apart from every other program of ``robot``). If the export fails (a
    shape the symbolic batch cannot express), fall back to tracing per bucket."""
    path = _traced_path(robot, name)
    if path is not None and path.is_file():
        try:
            return jax.jit(jax.export.deserialize(bytearray(path.read_bytes())).call)
        except Exception as exc:  # unreadable or from elsewhere: trace it again
            logger.warning("%s: cannot load the traced program %s (%s)", name, path, exc)
    (batch,) = jax.export.symbolic_shape("batch")
    try:
        exported = jax.export.export(jax.jit(fun))(*program_specs(robot, batch, precise))
    except Exception as exc:  # any tracing error: the plain jit still works
        logger.warning("%s: no batch-polymorphic export (%s); tracing per bucket", name, exc)
        return jax.jit(fun)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(exported.serialize())
            os.replace(tmp, path)  # whole or absent, whoever reads it meanwhile
        except (OSError, ImportError) as exc:  # (no flatbuffers) only a restart is slower
            logger.warning("%s: cannot keep the traced program in %s (%s)", name, path, exc)
    return jax.jit(exported.call)


def _traced_path(robot: Robot, name: str) -> Path | None:
    """Where program ``name`` of ``robot`` is kept traced, named by everything its trace
    may depend on: every field of the robot, the package's source, JAX's version and
    backend (None: no compilation cache, or a robot that cannot be fingerprinted)."""
    if _export_dir is None:
        return None
    try:
        robot_bytes = pickle.dumps(_canonical(robot))
    except Exception:  # an unpicklable field: trace it every time
        return None
    digest = hashlib.sha256(robot_bytes)
    versions = (jax.__version__, jax.default_backend(), jax.config.read("jax_enable_x64"))
    digest.update(f"{name}|{versions}".encode())
    digest.update(_package_source())
    return _export_dir / f"{digest.hexdigest()[:40]}.jaxexport"


def _canonical(obj: Any) -> Any:
    """``obj`` as plain tuples, sets sorted: the same robot pickles to the same bytes in
    every process (string hashes, and so set order, differ from process to process)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)
        return type(obj).__name__, tuple((f.name, _canonical(getattr(obj, f.name))) for f in fields)
    if isinstance(obj, set | frozenset):
        return "set", tuple(sorted((_canonical(x) for x in obj), key=repr))
    if isinstance(obj, dict):
        return "dict", tuple((_canonical(k), _canonical(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return tuple(_canonical(x) for x in obj)
    if isinstance(obj, np.ndarray):
        return obj.dtype.str, obj.shape, obj.tobytes()
    return obj


@functools.cache
def _package_source() -> bytes:
    """The hash of the engine's and the package's source (a change to any file traces the
    programs afresh: a stale trace would be a wrong answer)."""
    digest = hashlib.sha256()
    package = Path(zmq_ik.__file__).resolve().parent
    for path in sorted([*Path(__file__).resolve().parent.glob("*.py"), *package.rglob("*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


def _cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def warmup_buckets(
    ik: IKSettings | None = None, buckets: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The buckets `warmup` compiles for ``ik`` out of ``buckets`` (None: all): those up to
    its chunk size (larger ones are never called: batches are solved in chunks)."""
    sizes = check_buckets(buckets)
    chunk = chunk_size(sizes, program_key(ik or IKSettings())[2])
    return tuple(b for b in sizes if b <= chunk)


def warmup(
    robot: Robot,
    ik: IKSettings | None = None,
    buckets: Sequence[int] | None = None,
    *,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Compile the solve program of ``ik`` (default: tatbot's settings; only ``precise`` and
    ``seeds`` pick a program) for every bucket, so that later solves with any batch size and
    any weights compile nothing.

    Buckets are lowered here and compiled (or loaded from the persistent cache) by
    ``threads`` threads (default: one per CPU, at most 4) at `_os.COMPILE_NICE`: XLA releases
    the GIL, so they overlap. Nothing is run: compiling fills the same cache a call would. ``progress(done,
    total)`` is called on this thread as each bucket is ready, in `warmup_buckets` order
    (bucket ``done`` is ``warmup_buckets(ik, buckets)[done - 1]``): compiling can take
    minutes. An exception here (from ``progress``, or a signal handler's) returns at once."""
    settings = ik or IKSettings()
    sizes = warmup_buckets(settings, buckets)
    fn = solve_program(robot, settings.precise, settings.seeds)
    if threads is None:
        threads = min(len(sizes), _cpus(), 4)
    name = f"precise={settings.precise}, seeds={settings.seeds}"

    def compile_one(lowered: Any, bucket: int) -> None:
        t0 = time.monotonic()
        lowered.compile()
        logger.debug("bucket %d (%s) ready in %.2fs", bucket, name, time.monotonic() - t0)

    pool = ThreadPoolExecutor(
        max(1, threads), thread_name_prefix="zmq-ik-warmup", initializer=lower_thread_priority
    )
    try:
        # Lowering holds the GIL, so it stays on this thread, overlapping earlier compiles.
        specs = [program_specs(robot, b, settings.precise) for b in sizes]
        with _lowering_without_lapack():
            futures = [
                pool.submit(compile_one, fn.lower(*spec), b)
                for spec, b in zip(specs, sizes, strict=True)
            ]
        for done, future in enumerate(futures, 1):
            future.result()
            if progress is not None:
                progress(done, len(sizes))
    except BaseException:
        # Stopped (a signal; ``progress`` raising) or failed: start no other bucket and
        # return at once; buckets compiling now finish in their threads (XLA cannot be
        # interrupted), which a process exiting at once (`_os.exit_now`) need not wait for.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
