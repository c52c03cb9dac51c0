"""URDF → kinematic tree, with the standard library only (meshes are never loaded).

Only what forward kinematics needs is read: links, and per joint its type, parent and child
links, origin (xyz, rpy), axis and limits. Every problem that would make the kinematics wrong
is an :class:`~zmq_ik.errors.InputError` naming the joint or link (field ``"urdf"``); nothing
is silently treated as fixed.

Part of the base package (numpy only, no JAX): the IK engine builds its chains from it, and
`zmq_ik.robots` reads fixed link poses (design origins, ink caps) with it on robot hosts.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import stat
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np
import numpy.typing as npt

from zmq_ik.errors import InputError

logger = logging.getLogger(__name__)

SUPPORTED_TYPES = frozenset({"revolute", "continuous", "prismatic", "fixed"})
"""Joint types the IK engine handles."""
KNOWN_TYPES = SUPPORTED_TYPES | {"floating", "planar"}
"""Joint types URDF defines; floating and planar parse but cannot be on a solved chain."""
ACTUATED_TYPES = frozenset({"revolute", "continuous", "prismatic"})
MAX_URDF_BYTES = 8 << 20
"""Largest URDF accepted (8 MiB): big robots' files are well under 1 MiB (meshes are
separate files), and a robot file is read whole into memory."""
MAX_URDF_ELEMENTS = 2048
"""Most links, and most joints, a URDF may have: a humanoid with hands and sensors has a few
hundred. Parsing is linear, so a file at the limits loads in well under a second."""


@dataclass(frozen=True)
class Joint:
    """One URDF joint, as read (SI units, parent-link frame)."""

    name: str
    type: str
    parent: str
    child: str
    xyz: tuple[float, float, float]
    """Origin translation of the joint frame in the parent link frame, metres."""
    rpy: tuple[float, float, float]
    """Origin rotation (fixed-axis roll, pitch, yaw), radians."""
    axis: tuple[float, float, float]
    """Unit joint axis in the joint frame (URDF default x)."""
    lower: float
    upper: float
    limited: bool
    """False for continuous joints (lower/upper then report one turn, -π..π)."""
    mimic: Mimic | None = None
    """Set when this joint follows another (``<mimic>``): it is then not a variable of its own."""


@dataclass(frozen=True)
class Mimic:
    """A ``<mimic>`` element: the joint's value is ``multiplier · q[joint] + offset``."""

    joint: str
    """The joint followed (after `parse_urdf`: a joint that is not itself a mimic one)."""
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class URDFModel:
    """A parsed URDF: its links and joints, indexed by child link."""

    name: str
    links: frozenset[str]
    joints: dict[str, Joint]
    """By joint name, in file order."""
    parent_joint: dict[str, Joint]
    """By child link name."""
    root: str
    broken_mimics: dict[str, str] = dataclasses.field(default_factory=dict)
    """Joint name → why its ``<mimic>`` cannot be followed (an unknown joint, a cycle...):
    refused by `path_to` for a chain through it only, so a broken finger's mimic (a xacro
    prefix missed) does not bar the arm's IK."""

    def path_to(self, link: str) -> list[Joint]:
        """Joints from the root to ``link``, root first."""
        if link not in self.links:
            raise InputError(
                f"URDF {self.name!r}: no link named {link!r}{self.closest_links(link)}",
                field="ee_links",
            )
        path: list[Joint] = []
        current = link
        while current in self.parent_joint:
            joint = self.parent_joint[current]
            if joint.name in self.broken_mimics:
                raise InputError(
                    f"URDF {self.name!r}: {self.broken_mimics[joint.name]} (on the chain to "
                    f"link {link!r})",
                    field="urdf",
                )
            path.append(joint)
            current = joint.parent
        path.reverse()
        return path

    def closest_links(self, name: str, n: int = 5) -> str:
        """``"; did you mean 'a', 'b'?"``: the links closest to ``name`` (difflib), or a few
        of them when none is close."""
        close = difflib.get_close_matches(name, self.links, n=n, cutoff=0.5)
        if close:
            return f"; did you mean {', '.join(map(repr, close))}?"
        return f" (links include {', '.join(sorted(self.links)[:n])}...)"


def _floats(text: str | None, n: int, default: float, what: str) -> tuple[float, ...]:
    if text is None or not text.strip():
        return (default,) * n
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        raise InputError(f"URDF: bad numbers in {what}: {text!r}", field="urdf") from None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise InputError(f"URDF: {what} needs {n} finite numbers, got {text!r}", field="urdf")
    return values


def read_urdf_text(path_or_xml: str | os.PathLike[str]) -> tuple[str, str]:
    """(xml text, name for messages) from a path or from the XML itself: the one way every
    robot file is read (``--robot``, ``--config``, bundled robots, `Robot.from_urdf`). A file
    must be a regular file (not a FIFO, which would block, or a device such as /dev/zero,
    which never ends) of at most `MAX_URDF_BYTES`. A UTF-8 byte-order mark (some editors
    write one) is dropped, so the text still reads as XML."""
    if isinstance(path_or_xml, str) and path_or_xml.lstrip("\ufeff \t\r\n").startswith("<"):
        if len(path_or_xml) > MAX_URDF_BYTES:
            raise InputError(
                f"URDF text of {len(path_or_xml)} characters, over the {_mib(MAX_URDF_BYTES)} "
                "limit",
                field="urdf",
            )
        return path_or_xml.lstrip("\ufeff"), "<string>"
    path = Path(path_or_xml).expanduser()
    try:
        data = read_regular_file(path, MAX_URDF_BYTES)
        return data.decode("utf-8-sig"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read URDF {str(path)!r}: {exc}", field="urdf") from None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; else an
    `OSError` saying why. Opened without blocking and checked on the open file, so a FIFO
    (or a file swapped for one) never blocks and a device is never read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise OSError(f"{info.st_size / 1e6:.1f} MB, over the {_mib(limit)} limit")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while read
        raise OSError(f"over the {_mib(limit)} limit")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def check_urdf_file(path: str | os.PathLike[str], field: str = "robots") -> str:
    """``path`` if it names a URDF `read_urdf_text` will read (exists, regular, not too big):
    settings check their robot files with it before anything else starts."""
    p = Path(path).expanduser()
    try:
        info = p.stat()
    except OSError as exc:
        raise InputError(f"URDF file not found: {path} ({exc.strerror})", field) from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"URDF {path}: not a regular file ({_file_kind(info.st_mode)})", field)
    if info.st_size > MAX_URDF_BYTES:
        raise InputError(
            f"URDF {path}: {info.st_size / 1e6:.1f} MB, over the {_mib(MAX_URDF_BYTES)} limit",
            field,
        )
    return str(path)


def parse_urdf(path_or_xml: str | os.PathLike[str]) -> URDFModel:
    """Parse a URDF file path or XML string into a :class:`URDFModel` (a tree, checked)."""
    text, source = read_urdf_text(path_or_xml)
    try:
        root_el = _xml_tree(text)
    except expat.ExpatError as exc:
        raise InputError(f"URDF {source}: not valid XML: {exc}", field="urdf") from None
    if root_el.tag != "robot":
        raise InputError(
            f"URDF {source}: root element is <{root_el.tag}>, expected <robot>", field="urdf"
        )
    _refuse_xacro(root_el, source)
    link_els, joint_els = root_el.findall("link"), root_el.findall("joint")
    if not link_els:
        raise InputError(f"URDF {source}: no <link> in <robot>: an empty robot", field="urdf")
    for kind, els in (("links", link_els), ("joints", joint_els)):
        if len(els) > MAX_URDF_ELEMENTS:
            raise InputError(
                f"URDF {source}: {len(els)} {kind}, more than the {MAX_URDF_ELEMENTS} the IK "
                "engine takes",
                field="urdf",
            )
    links = [el.get("name") for el in link_els]
    if any(not n for n in links):
        raise InputError(f"URDF {source}: a <link> has no name", field="urdf")
    link_set = frozenset(n for n in links if n)
    if len(link_set) != len(links):
        dup = sorted(n for n, count in Counter(links).items() if n and count > 1)
        raise InputError(f"URDF {source}: duplicate link name(s) {dup}", field="urdf")
    parents = {p.get("link") for el in joint_els if (p := el.find("parent")) is not None}
    if "world" in parents:
        link_set |= {"world"}  # Drake's URDFs: "world" needs no <link> of its own
    joints: dict[str, Joint] = {}
    parent_joint: dict[str, Joint] = {}
    for el in joint_els:
        name = el.get("name") or ""
        if not name:
            raise InputError(f"URDF {source}: a <joint> has no name", field="urdf")
        if name in joints:
            raise InputError(f"URDF {source}: duplicate joint name {name!r}", field="urdf")
        jtype = el.get("type") or ""
        if jtype not in KNOWN_TYPES:
            raise InputError(
                f"URDF {source}: joint {name!r} has unknown type {jtype!r}", field="urdf"
            )
        parent_el, child_el = el.find("parent"), el.find("child")
        parent = parent_el.get("link", "") if parent_el is not None else ""
        child = child_el.get("link", "") if child_el is not None else ""
        for role, link in (("parent", parent), ("child", child)):
            if link not in link_set:
                raise InputError(
                    f"URDF {source}: joint {name!r} names unknown {role} link {link!r}",
                    field="urdf",
                )
        origin = el.find("origin")
        xyz = _floats(origin.get("xyz") if origin is not None else None, 3, 0.0, f"{name} xyz")
        rpy = _floats(origin.get("rpy") if origin is not None else None, 3, 0.0, f"{name} rpy")
        axis_el = el.find("axis")
        axis = (1.0, 0.0, 0.0)
        if axis_el is not None and axis_el.get("xyz") is not None:  # <axis/>: the default
            axis = _floats(axis_el.get("xyz"), 3, 0.0, f"{name} axis")  # type: ignore[assignment]
        lower, upper, limited = 0.0, 0.0, jtype in ("revolute", "prismatic")
        if jtype in ACTUATED_TYPES:
            norm = math.sqrt(sum(a * a for a in axis))
            if norm < 1e-9:
                raise InputError(f"URDF {source}: joint {name!r} has a zero axis", field="urdf")
            axis = tuple(a / norm for a in axis)  # type: ignore[assignment]
        if limited:
            limit = el.find("limit")
            if limit is None:
                raise InputError(
                    f"URDF {source}: {jtype} joint {name!r} has no <limit> (lower/upper)",
                    field="urdf",
                )
            (lower,) = _floats(limit.get("lower"), 1, 0.0, f"{name} limit lower")
            (upper,) = _floats(limit.get("upper"), 1, 0.0, f"{name} limit upper")
            if lower > upper:
                raise InputError(
                    f"URDF {source}: joint {name!r} has lower limit {lower} > upper {upper}",
                    field="urdf",
                )
            if lower == upper:
                logger.warning(
                    "URDF %s: %s joint %r has lower == upper (%g; an absent lower or upper is 0): it cannot move",
                    source,
                    jtype,
                    name,
                    lower,
                )
        elif jtype == "continuous":
            lower, upper = -math.pi, math.pi
        joint = Joint(
            name=name,
            type=jtype,
            parent=parent,
            child=child,
            xyz=xyz,  # type: ignore[arg-type]
            rpy=rpy,  # type: ignore[arg-type]
            axis=axis,
            lower=lower,
            upper=upper,
            limited=limited,
            mimic=_mimic(el, name, source),
        )
        if child in parent_joint:
            raise InputError(
                f"URDF {source}: link {child!r} has several parents (joints "
                f"{parent_joint[child].name!r} and {name!r})",
                field="urdf",
            )
        joints[name] = joint
        parent_joint[child] = joint
    roots = sorted(link_set - set(parent_joint))
    if not roots:
        raise InputError(f"URDF {source}: every link has a parent (a cycle)", field="urdf")
    # Walk up from every link: a cycle never reaches a root. A link whose walk reached a
    # root is remembered, so later walks stop there: linear in the number of links (walking
    # each to the root would be quadratic in a long chain's depth).
    rooted: set[str] = set()
    for link in link_set:
        walk = []
        seen: set[str] = set()
        current = link
        while current not in rooted and current in parent_joint:
            if current in seen:
                raise InputError(
                    f"URDF {source}: kinematic cycle through link {current!r}", field="urdf"
                )
            seen.add(current)
            walk.append(current)
            current = parent_joint[current].parent
        rooted.update(walk)
    joints, broken_mimics = _resolve_mimics(joints, source)
    parent_joint = {j.child: j for j in joints.values()}
    if len(roots) > 1:
        logger.warning("URDF %s has several root links %s; using %s", source, roots, roots[0])
    return URDFModel(
        name=root_el.get("name") or source,
        links=link_set,
        joints=joints,
        parent_joint=parent_joint,
        root=roots[0],
        broken_mimics=broken_mimics,
    )


def _xml_tree(text: str) -> ET.Element:
    """The XML element tree of ``text``, without namespace processing, as ROS's and
    Pinocchio's URDF parsers (TinyXML) read it: a prefix that is never declared
    (``<sensor:camera>`` in a ``<gazebo>`` block, as in Fetch's URDF) is part of the tag's
    name, not an error, and ``<robot xmlns="...">`` is still ``<robot>``."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.Parse(text, True)
    return builder.close()


KINEMATIC_TAGS = frozenset({"link", "joint", "parent", "child", "origin", "axis", "limit", "mimic"})
XACRO_DEFINITIONS = frozenset({"xacro:macro", "xacro:include", "xacro:property", "xacro:arg"})
XACRO_HINT = "expand it first (`xacro robot.urdf.xacro > robot.urdf`, in a ROS environment)"


def _refuse_xacro(root_el: ET.Element, source: str) -> None:
    """A xacro file (macros, includes, ``${...}`` in names) is not a URDF: read as one, its
    links in macros would be missing and its names unexpanded, so the error would name a
    link the user can see in the file. Say what it is instead. A xacro element left in a
    generated URDF (``<xacro:grey/>`` in a visual, Valkyrie's call of a macro xacro did not
    know) does not matter, as for ROS."""
    for el in root_el:
        what = f"<{el.tag}>" if el.tag in XACRO_DEFINITIONS else None
        if el.tag in ("link", "joint"):
            unexpanded = (
                f"{value!r} in a <{sub.tag}>"
                for sub in (el, *el)
                if sub.tag in KINEMATIC_TAGS
                for value in sub.attrib.values()
                if "${" in value or "$(" in value
            )
            what = next(unexpanded, None)
        if what:
            raise InputError(
                f"URDF {source}: a xacro file ({what}), not a URDF: {XACRO_HINT}", "urdf"
            )


def _mimic(el: ET.Element, name: str, source: str) -> Mimic | None:
    mimic_el = el.find("mimic")
    if mimic_el is None:
        return None
    master = mimic_el.get("joint") or ""
    if not master:
        raise InputError(f"URDF {source}: joint {name!r} has a <mimic> without a joint", "urdf")
    (multiplier,) = _floats(mimic_el.get("multiplier"), 1, 1.0, f"{name} mimic multiplier")
    (offset,) = _floats(mimic_el.get("offset"), 1, 0.0, f"{name} mimic offset")
    return Mimic(master, multiplier, offset)


def _resolve_mimics(
    joints: dict[str, Joint], source: str
) -> tuple[dict[str, Joint], dict[str, str]]:
    """Every mimic joint made to follow a joint that is not a mimic one (a mimic of a mimic
    composes: ``a·(b·q + c) + d``), checking the joint followed exists, moves, and is of the
    same kind (a revolute joint cannot follow a prismatic one's metres). A mimic that fails
    a check is returned apart (joint name → why, logged): only a chain through it is refused
    (`URDFModel.path_to`), as a robot with a broken finger still has arms."""
    out = dict(joints)
    broken: dict[str, str] = {}
    for name, joint in joints.items():
        if joint.mimic is None:
            continue
        if joint.type not in ACTUATED_TYPES:
            out[name] = dataclasses.replace(joint, mimic=None)  # a fixed joint's mimic: inert
            continue
        try:
            out[name] = dataclasses.replace(joint, mimic=_followed(joints, name))
        except ValueError as exc:
            broken[name] = str(exc)
    if broken:
        logger.warning(
            "URDF %s: %d mimic joint(s) %s cannot be followed (%s); chains through them are "
            "refused",
            source,
            len(broken),
            sorted(broken),
            next(iter(broken.values())),
        )
    return out, broken


def _followed(joints: dict[str, Joint], name: str) -> Mimic:
    """Joint ``name``'s mimic, made to follow a joint that is not a mimic one; a
    `ValueError` saying why it cannot be followed."""
    joint = joints[name]
    assert joint.mimic is not None
    multiplier, offset, master = joint.mimic.multiplier, joint.mimic.offset, joint.mimic.joint
    seen = {name}
    while True:
        followed = joints.get(master)
        if followed is None:
            raise ValueError(f"joint {name!r} mimics unknown joint {master!r}")
        if master in seen:
            raise ValueError(f"mimic joints {sorted(seen)} follow each other in a cycle")
        if followed.type not in ACTUATED_TYPES:
            raise ValueError(f"joint {name!r} mimics {master!r}, a {followed.type} joint")
        if (followed.type == "prismatic") != (joint.type == "prismatic"):
            raise ValueError(
                f"joint {name!r} ({joint.type}) mimics {master!r} ({followed.type}): a mimic "
                "joint must be of its joint's kind"
            )
        if followed.mimic is None:
            return Mimic(master, multiplier, offset)
        seen.add(master)
        multiplier, offset = (
            multiplier * followed.mimic.multiplier,
            multiplier * followed.mimic.offset + offset,
        )
        master = followed.mimic.joint


def origin_matrix(joint: Joint) -> npt.NDArray[np.float64]:
    """4×4 homogeneous transform of the joint origin (parent link → joint frame)."""
    out = np.eye(4)
    out[:3, :3] = rpy_matrix(joint.rpy)
    out[:3, 3] = joint.xyz
    return out


def rpy_matrix(rpy: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """URDF fixed-axis roll/pitch/yaw to a rotation matrix (Rz(y) @ Ry(p) @ Rx(r))."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = (
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
        math.cos(y),
        math.sin(y),
    )
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]], dtype=np.float64)
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]], dtype=np.float64)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], dtype=np.float64)
    return rz @ ry @ rx
