"""zmq-ik's IK engine: URDF kinematics and batched JAX inverse kinematics (needs JAX).

The in-process twin of the client: :func:`solve_ik` takes what ``IKClient.solve`` takes
(one pose or N, ``rest=None`` for the robot's default, ``ik=`` :class:`IKSettings`,
``timeout=`` seconds, ``pos_tol``/``ori_tol``/``strict``) and returns the same
:class:`~zmq_ik.model.IKSolution` (``reached`` per pose);
:func:`strokebatch_from_strokes` is ``IKClient.compute``.

- :class:`Robot` — end-effector chains from a URDF; ``fk`` → ``T_world_ee`` (jaxlie SE3);
  its compiled programs are :func:`programs_of` (a :class:`ProgramCache`).
- :func:`solve_ik` (and :func:`solve_until`, the worker's, with a deadline) — batched
  Levenberg–Marquardt (module ``_lm``) with tatbot's cost (``_cost``).
- :func:`fk_poses` (and :func:`warmup_fk`) — ``Robot.fk`` as the worker serves it: an
  :class:`~zmq_ik.model.EEPoses`, batches padded to fixed shapes (``IKClient.fk``'s twin).
- :func:`strokebatch_from_strokes`, :func:`strokebatch_from_packed` — tatbot's strokebatch.
- :func:`default_rest`, :func:`working_range`, :func:`seed_points`, :func:`check_rest` —
  joint-space helpers.
- :data:`BUCKETS`, :func:`check_buckets`, :func:`chunk_size`, :func:`warmup`, :func:`warmup_buckets`, :func:`enable_compilation_cache`,
  :func:`run_inline_on_cpu` — a fixed set of compiled programs per worker.

``IKConfig`` is another name for :class:`zmq_ik.IKSettings` (one settings class everywhere).
"""

from zmq_ik.model import IKSettings as IKSettings

from ._fk import fk_poses as fk_poses
from ._fk import warmup_fk as warmup_fk
from ._joints import check_rest as check_rest
from ._joints import default_rest as default_rest
from ._joints import seed_points as seed_points
from ._joints import working_range as working_range
from ._lm import REACH_ORI_TOL as REACH_ORI_TOL
from ._lm import REACH_POS_TOL as REACH_POS_TOL
from ._lm import solver_params as solver_params
from ._programs import BUCKETS as BUCKETS
from ._programs import ProgramCache as ProgramCache
from ._programs import check_buckets as check_buckets
from ._programs import chunk_size as chunk_size
from ._programs import enable_compilation_cache as enable_compilation_cache
from ._programs import program_key as program_key
from ._programs import programs_of as programs_of
from ._programs import run_inline_on_cpu as run_inline_on_cpu
from ._programs import warmup as warmup
from ._programs import warmup_buckets as warmup_buckets
from ._reach import NEAR_ROUNDS as NEAR_ROUNDS
from ._reach import RESOLVE_ROUNDS as RESOLVE_ROUNDS
from ._robot import Robot as Robot
from ._solve import solve_ik as solve_ik
from ._solve import solve_until as solve_until
from ._strokebatch import strokebatch_from_packed as strokebatch_from_packed
from ._strokebatch import strokebatch_from_strokes as strokebatch_from_strokes

IKConfig = IKSettings
"""The settings class under its old engine name: the same class as :class:`IKSettings`."""

__all__ = [
    "BUCKETS",
    "NEAR_ROUNDS",
    "REACH_ORI_TOL",
    "REACH_POS_TOL",
    "RESOLVE_ROUNDS",
    "IKConfig",
    "IKSettings",
    "ProgramCache",
    "Robot",
    "check_buckets",
    "check_rest",
    "chunk_size",
    "default_rest",
    "enable_compilation_cache",
    "fk_poses",
    "program_key",
    "programs_of",
    "run_inline_on_cpu",
    "seed_points",
    "solve_ik",
    "solve_until",
    "solver_params",
    "strokebatch_from_packed",
    "strokebatch_from_strokes",
    "warmup",
    "warmup_buckets",
    "warmup_fk",
    "working_range",
]
