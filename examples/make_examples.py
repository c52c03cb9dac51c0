"""Regenerate the example scene and strokes (deterministic; safe to re-run).

    python examples/make_examples.py

Writes, next to this script:

- ``scene.yaml``: the bundled tatbot robot's default scene (``zmq_ik.model.Scene()``).
- ``strokes.yaml``: 36 (left, right) stroke pairs of 16 points, arrays inline: lines,
  arcs and circles in a 4 x 4 cm patch around the design origin (z = 0, design frame),
  the left arm on the +y half and the right arm on the -y half; pair 0 is a left-arm ink dip
  into the ``inkcap_left_large`` cap (world frame) while the right arm rests.
- ``zmq_ik/robots/tatbot_scene.yaml`` and ``zmq_ik/robots/tatbot_strokes.yaml``: the same
  two files shipped inside the package (``zmq_ik.robots.example_paths()``, used by the CLI).
- ``tatbot_format/strokes.yaml`` + ``tatbot_format/arrays/*.npy``: the same strokes in
  tatbot's own on-disk layout (one ``.npy`` per array, extra tatbot keys), a fixture for
  ``StrokeList.from_yaml``.
- ``panda/scene.yaml`` + ``panda/strokes.yaml``: one arm (a Franka Panda,
  ``tests/robots/panda.urdf``, served as ``panda``) drawing a 6 cm square and a circle on a
  table with a pen held 10.34 cm below its hand (the fingertips), pointing down.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

try:
    import zmq_ik  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmq_ik.model import ARMS, Scene, Stroke, StrokeList
from zmq_ik.robots import fixed_link_pose

HERE = Path(__file__).resolve().parent
PACKAGE_ROBOTS = HERE.parent / "zmq_ik" / "robots"
N = 16  # points per stroke (Scene().stroke_length)
HALF = 0.02  # the patch is [-2 cm, 2 cm] in x and y
INKCAP = "inkcap_left_large"


def _r(points: np.ndarray) -> np.ndarray:
    """Round to 1 micrometre so that the YAML stays readable (and exact on re-read)."""
    return np.round(points.astype(np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def line(p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, N)[:, None]
    xy = (1 - t) * np.array(p0) + t * np.array(p1)
    return _r(np.hstack([xy, np.zeros((N, 1))]))


def arc(center: tuple[float, float], radius: float, a0: float, a1: float) -> np.ndarray:
    a = np.linspace(a0, a1, N)
    xy = np.stack([center[0] + radius * np.cos(a), center[1] + radius * np.sin(a)], axis=1)
    return _r(np.hstack([xy, np.zeros((N, 1))]))


def inkdip(cap_pos: np.ndarray, depth: float = 0.005, clearance: float = 0.015) -> np.ndarray:
    """Straight down into the cap (``depth`` below its rim) and back up, world frame."""
    t = np.linspace(0.0, 1.0, N)
    z = cap_pos[2] + clearance - (clearance + depth) * np.sin(math.pi * t)
    pts = np.stack([np.full(N, cap_pos[0]), np.full(N, cap_pos[1]), z], axis=1)
    return _r(pts)


def shapes(side: str) -> list[tuple[str, np.ndarray]]:
    """35 design-frame strokes for one arm, inside its half of the patch."""
    sgn = 1.0 if side == "left" else -1.0
    y0, y1 = sgn * 0.002, sgn * HALF  # this arm's half: |y| in [2 mm, 20 mm]
    ymid = 0.5 * (y0 + y1)
    out: list[tuple[str, np.ndarray]] = []
    for k in range(8):  # horizontal hatching
        x = -HALF + 0.002 + k * 0.005
        out.append((f"hatch line {k}", line((x, y0), (x, y1))))
    for k in range(6):  # lines along x
        y = y0 + sgn * (0.002 + k * 0.003)
        out.append((f"rule line {k}", line((-HALF, y), (HALF, y))))
    for k in range(5):  # diagonals
        d = -0.015 + k * 0.0075
        out.append((f"diagonal {k}", line((d - 0.004, y0), (d + 0.004, y1))))
    for k in range(8):  # arcs (half circles) of growing radius
        r = 0.002 + 0.001 * k
        a0 = 0.0 if k % 2 == 0 else math.pi
        out.append(
            (f"arc r={r * 1000:.0f}mm", arc((-0.005 + 0.0015 * k, ymid), r, a0, a0 + math.pi))
        )
    for k in range(6):  # full circles (closed: last point = first point)
        r = 0.0015 + 0.0007 * k
        cx = -0.014 + 0.0055 * k
        out.append((f"circle r={r * 1000:.1f}mm", arc((cx, ymid), r, 0.0, 2 * math.pi)))
    for k in range(2):  # spirals
        a = np.linspace(0.0, 4 * math.pi, N)
        rad = 0.001 + 0.0006 * a
        cx = -0.006 + 0.012 * k
        xy = np.stack([cx + rad * np.cos(a), ymid + rad * np.sin(a)], axis=1)
        out.append((f"spiral {k}", _r(np.hstack([xy, np.zeros((N, 1))]))))
    assert len(out) == 35, len(out)
    return out


def build() -> StrokeList:
    cap_pos, _ = fixed_link_pose("tatbot", INKCAP)
    pairs: list[tuple[Stroke, Stroke]] = [
        (
            Stroke(
                ee_pos=inkdip(cap_pos),
                is_inkdip=True,
                description=f"dip the left needle into {INKCAP}",
                arm="left",
                color="black",
            ),
            Stroke(is_rest=True, description="right arm rests during the ink dip", arm="right"),
        )
    ]
    left, right = shapes("left"), shapes("right")
    for (dl, pl), (dr, pr) in zip(left, right, strict=True):
        pairs.append(
            (
                Stroke(meter_coords=pl, description=dl, arm="left", color="black"),
                Stroke(meter_coords=pr, description=dr, arm="right", color="black"),
            )
        )
    strokes = StrokeList(tuple(pairs))
    for pair in strokes:
        for s in pair:
            if s.meter_coords is not None:
                assert np.abs(s.meter_coords[:, :2]).max() <= HALF + 1e-9
    return strokes


def write_tatbot_format(strokes: StrokeList, root: Path) -> None:
    """tatbot's layout: YAML of file references + one float32 .npy per array, extra keys."""
    if root.exists():
        shutil.rmtree(root)
    (root / "arrays").mkdir(parents=True)
    doc = []
    for i, pair in enumerate(strokes):
        entry = []
        for side, s in zip(ARMS, pair, strict=True):
            d: dict[str, object] = {
                "description": s.description,
                "arm": side,
                "gcode_text": None if s.is_rest or s.is_inkdip else f"G1 ; stroke {i} {side}",
                "frame_path": None,
                "is_rest": s.is_rest,
                "is_inkdip": s.is_inkdip,
                "inkcap": INKCAP if s.is_inkdip else None,
                "color": s.color,
            }
            arrays = {"meter_coords": s.meter_coords, "ee_pos": s.ee_pos}
            if s.meter_coords is not None:  # tatbot also stores pixel coordinates
                arrays["pixel_coords"] = (s.meter_coords[:, :2] + HALF) / (2 * HALF) * 1000.0
            for name, arr in arrays.items():
                if arr is None:
                    continue
                rel = f"arrays/stroke_{i}_{side}_{name}.npy"
                np.save(root / rel, np.asarray(arr, dtype=np.float32))
                d[f"{name}_file"] = rel
            entry.append(d)
        doc.append(entry)
    text = yaml.safe_dump({"strokes": doc}, sort_keys=False, default_flow_style=False)
    (root / "strokes.yaml").write_text(text, encoding="utf-8")


PANDA_READY = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
"""The Panda's usual ready pose (franka_ros), rad."""
PANDA_PEN = 0.1034
"""The pen's tip below the hand's origin (the Panda's fingertips), metres."""


def panda() -> tuple[Scene, StrokeList]:
    """One arm: a Panda draws a square and a circle (design frame: the table at 0.45 m in
    front of its base, 5 cm up), hand pointing down; one stroke per group."""
    scene = Scene(
        robot="panda",
        ee_links=("panda_hand",),
        stroke_length=N,
        offset_num=3,
        offset_range=(-0.001, 0.001),
        ready=PANDA_READY,
        ee_rot=[(0.0, 1.0, 0.0, 0.0)],  # 180 degrees about x: the hand's z axis down
        ee_offset=[(0.0, 0.0, PANDA_PEN)],  # the hand's origin above the pen's tip
        design_pos=(0.45, 0.0, 0.05),
        name="panda square and circle",
    )
    side = 0.03
    corners = [(-side, -side), (side, -side), (side, side), (-side, side), (-side, -side)]
    strokes = [(f"square side {k}", line(corners[k], corners[k + 1])) for k in range(4)]
    strokes.append(("circle, first half", arc((0.0, 0.0), 0.02, 0.0, math.pi)))
    strokes.append(("circle, second half", arc((0.0, 0.0), 0.02, math.pi, 2 * math.pi)))
    groups = tuple(
        (Stroke(meter_coords=pts, description=d, arm="panda_hand", color="black"),)
        for d, pts in strokes
    )
    return scene, StrokeList(groups)


def main() -> None:
    scene = Scene()
    scene.to_yaml(HERE / "scene.yaml")
    strokes = build()
    strokes.to_yaml(HERE / "strokes.yaml")
    write_tatbot_format(strokes, HERE / "tatbot_format")
    shutil.copyfile(HERE / "scene.yaml", PACKAGE_ROBOTS / "tatbot_scene.yaml")
    shutil.copyfile(HERE / "strokes.yaml", PACKAGE_ROBOTS / "tatbot_strokes.yaml")
    # Self-check: everything reads back.
    assert Scene.from_yaml(HERE / "scene.yaml") == scene
    assert StrokeList.from_yaml(HERE / "strokes.yaml", stroke_length=scene.stroke_length) == strokes
    back = StrokeList.from_yaml(HERE / "tatbot_format" / "strokes.yaml", stroke_length=N)
    assert back.pack(N) == strokes.pack(N)
    one_scene, one_arm = panda()
    (HERE / "panda").mkdir(exist_ok=True)
    one_scene.to_yaml(HERE / "panda" / "scene.yaml")
    one_arm.to_yaml(HERE / "panda" / "strokes.yaml")
    assert Scene.from_yaml(HERE / "panda" / "scene.yaml") == one_scene
    assert StrokeList.from_yaml(HERE / "panda" / "strokes.yaml") == one_arm
    print(f"wrote {HERE / 'scene.yaml'}, {HERE / 'strokes.yaml'} ({len(strokes)} pairs) and ")
    print(f"      {HERE / 'tatbot_format'} (tatbot's .npy layout); copied the scene and")
    print(f"      strokes to {PACKAGE_ROBOTS} (package data); {HERE / 'panda'}: one arm")


if __name__ == "__main__":
    main()
