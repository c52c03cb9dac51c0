"""zmq-ik's IK engine: URDF kinematics and batched JAX inverse kinematics (needs JAX).

- :class:`Robot` — end-effector chains from a URDF; ``fk`` → ``T_world_ee`` (jaxlie SE3).
- :func:`solve_ik`, :class:`IKConfig` — batched Levenberg–Marquardt with tatbot's cost.
- :func:`strokebatch_from_strokes`, :func:`strokebatch_from_arrays` — tatbot's strokebatch.
- :data:`BUCKETS`, :func:`chunk_size`, :func:`warmup`, :func:`enable_compilation_cache` — a
  fixed set of compiled programs per worker.
"""

from ._robot import Robot as Robot
from ._solve import BUCKETS as BUCKETS
from ._solve import IKConfig as IKConfig
from ._solve import check_rest as check_rest
from ._solve import chunk_size as chunk_size
from ._solve import default_rest as default_rest
from ._solve import enable_compilation_cache as enable_compilation_cache
from ._solve import run_inline_on_cpu as run_inline_on_cpu
from ._solve import seed_points as seed_points
from ._solve import solve_ik as solve_ik
from ._solve import warmup as warmup
from ._solve import working_range as working_range
from ._strokebatch import strokebatch_from_arrays as strokebatch_from_arrays
from ._strokebatch import strokebatch_from_strokes as strokebatch_from_strokes

__all__ = [
    "BUCKETS",
    "IKConfig",
    "Robot",
    "check_rest",
    "chunk_size",
    "default_rest",
    "enable_compilation_cache",
    "run_inline_on_cpu",
    "seed_points",
    "solve_ik",
    "strokebatch_from_arrays",
    "strokebatch_from_strokes",
    "warmup",
    "working_range",
]
