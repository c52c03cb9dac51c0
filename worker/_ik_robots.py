"""The robots a worker serves: names, URDFs and their default end effectors and rest poses
(a bundled robot's name brings its own), checked before any JAX import."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zmq_ik.errors import InputError
from zmq_ik.robots import BUNDLED
from zmq_ik.robots.urdf import ACTUATED_TYPES, parse_urdf

logger = logging.getLogger(__name__)


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
