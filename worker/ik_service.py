"""The IK service a worker runs (`IKService`): requests decoded and served by the engine,
compiles on demand logged and told (`_compile_notice`) and bounded. Start-up (robots, the
warm-up before and after READY) is `_ik_warmup`; robot entries are `_ik_robots`. Imports JAX
when it serves, so only GPU/worker hosts use it.
"""

from __future__ import annotations

import gc
import logging

from zmq_ik.base.memory import malloc_trim
from zmq_ik.errors import ErrorCode, IKTimeout, InputError
from zmq_ik.model import IKSettings, ops
from zmq_ik.worker._compile_notice import OnDemand, serving
from zmq_ik.worker._ik_robots import RobotEntry as RobotEntry
from zmq_ik.worker._ik_robots import robot_entries as robot_entries
from zmq_ik.worker._ik_warmup import CPU_BUCKETS as CPU_BUCKETS
from zmq_ik.worker._ik_warmup import DEFAULT_CACHE_DIR as DEFAULT_CACHE_DIR
from zmq_ik.worker._ik_warmup import FIRST_BUCKET as FIRST_BUCKET
from zmq_ik.worker._ik_warmup import IKWarmup
from zmq_ik.worker._ik_warmup import pin_device as pin_device
from zmq_ik.worker._ik_warmup import usable_cache_dir as usable_cache_dir
from zmq_ik.worker._service import ServiceCall, ServiceError, ServiceReply

logger = logging.getLogger(__name__)


class IKService(IKWarmup):
    """Serves ``solve``, ``fk``, ``describe`` and ``strokebatch`` (and ``echo``) for a set of
    robots (loaded, cached and warmed up by `IKWarmup`)."""

    def handle(self, call: ServiceCall) -> ServiceReply:
        job = serving.job = OnDemand(call)
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
            serving.job = None
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

    def _handle(self, call: ServiceCall, job: OnDemand) -> ServiceReply:
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
        self, job: OnDemand, entry: RobotEntry, ee: tuple[str, ...], settings: IKSettings | None
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
