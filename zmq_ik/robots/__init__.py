"""Robots bundled with zmq-ik (URDF + licence shipped as package data), without JAX.

``BUNDLED`` maps a robot name to its :class:`RobotDefaults`: the URDF path, the two
end-effector links (left, right) and the rest (ready) pose used by default scenes.
``fixed_link_pose`` reads the pose of a link that hangs off the URDF root through fixed
joints only (tatbot's ``lasercross`` design origin, its ink caps...) with plain numpy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zmq_ik.errors import InputError
from zmq_ik.robots.urdf import origin_matrix, parse_urdf

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLED",
    "TATBOT_EE_LINKS",
    "TATBOT_READY_L",
    "TATBOT_READY_R",
    "RobotDefaults",
    "bundled_robot_path",
    "example_paths",
    "fixed_link_pose",
]

_HERE = Path(__file__).resolve().parent

TATBOT_READY_L: tuple[float, ...] = (-0.333, 0.639, 0.667, -1.034, 0.541, 2.240, 0.04)
"""tatbot's left-arm ready pose (6 revolute joints in rad, then the gripper carriage in m)."""
TATBOT_READY_R: tuple[float, ...] = (0.333, 0.639, 0.667, -1.034, -0.541, -2.240, 0.04)
"""tatbot's right-arm ready pose (6 revolute joints in rad, then the gripper carriage in m)."""
TATBOT_EE_LINKS: tuple[str, str] = ("left/tattoo_needle", "right/tattoo_needle")
"""tatbot's end-effector links, left then right."""


@dataclass(frozen=True, eq=False)
class RobotDefaults:
    """What zmq-ik knows about a bundled robot without loading it into an IK engine."""

    name: str
    """Robot (service) name, as clients and workers call it."""
    urdf_path: Path
    """Absolute path of the bundled URDF file."""
    ee_links: tuple[str, str]
    """End-effector link names, (left, right)."""
    rest: npt.NDArray[np.float64]
    """Rest / ready joint configuration, shape (n_joints,) (14 for tatbot: left 7 then right 7).
    Read-only."""

    def __post_init__(self) -> None:
        rest = np.array(self.rest, dtype=np.float64)
        if rest.ndim != 1 or not np.all(np.isfinite(rest)):
            raise InputError("rest must be a finite 1-D array", field="rest")
        rest.setflags(write=False)
        object.__setattr__(self, "rest", rest)
        object.__setattr__(self, "urdf_path", Path(self.urdf_path))
        object.__setattr__(self, "ee_links", tuple(self.ee_links))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RobotDefaults):
            return NotImplemented
        return (
            self.name == other.name
            and self.urdf_path == other.urdf_path
            and self.ee_links == other.ee_links
            and np.array_equal(self.rest, other.rest)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.urdf_path, self.ee_links))


BUNDLED: dict[str, RobotDefaults] = {
    "tatbot": RobotDefaults(
        name="tatbot",
        urdf_path=_HERE / "tatbot.urdf",
        ee_links=TATBOT_EE_LINKS,
        rest=np.array(TATBOT_READY_L + TATBOT_READY_R),
    ),
}
"""Bundled robots by name."""


def bundled_robot_path(name: str = "tatbot") -> Path:
    """Path of the URDF of bundled robot ``name``; :class:`InputError` (field ``robot``) if unknown."""
    try:
        return BUNDLED[name].urdf_path
    except KeyError:
        known = ", ".join(sorted(BUNDLED))
        raise InputError(
            f"no bundled robot named {name!r} (bundled: {known})", field="robot"
        ) from None


def example_paths(name: str = "tatbot") -> tuple[Path, Path]:
    """``(scene.yaml, strokes.yaml)`` shipped in the package for bundled robot ``name``
    (copies of ``examples/scene.yaml`` and ``examples/strokes.yaml``, written by
    ``examples/make_examples.py``); :class:`InputError` (field ``robot``) if there are none."""
    bundled_robot_path(name)  # unknown robot -> InputError
    scene, strokes = _HERE / f"{name}_scene.yaml", _HERE / f"{name}_strokes.yaml"
    if not (scene.is_file() and strokes.is_file()):
        raise InputError(f"no bundled example scene/strokes for robot {name!r}", field="robot")
    return scene, strokes


def _matrix_to_wxyz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rotation matrix to a unit quaternion (w, x, y, z) with w >= 0."""
    trace = float(np.trace(m))
    if trace > 0.0:
        s = math.sqrt(trace + 1.0) * 2.0
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    out = np.array(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[0] < 0 else out


def fixed_link_pose(
    robot: str | Path, link: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """World pose ``(xyz, wxyz)`` of ``link``, reached from the root through fixed joints only.

    ``robot`` is a bundled robot name or a URDF path. Raises :class:`InputError` if the link
    is unknown or any joint on its chain to the root is not ``fixed`` (then its pose depends
    on the joint configuration and needs forward kinematics).
    """
    path = robot if isinstance(robot, Path) else bundled_robot_path(robot)
    model = parse_urdf(path)
    if link not in model.links:
        raise InputError(f"{path}: no link named {link!r}", field="link")
    transform = np.eye(4)
    for joint in model.path_to(link):
        if joint.type != "fixed":
            raise InputError(
                f"{path}: link {link!r} hangs off non-fixed joint {joint.name!r}", field="link"
            )
        transform = transform @ origin_matrix(joint)
    return transform[:3, 3].copy(), _matrix_to_wxyz(transform[:3, :3])
