"""Benchmark inputs: the bundled example scene and strokes, tiled to any number of pairs."""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import Section
from zmq_ik.model import Scene, StrokeList


def ik_missing() -> str | None:
    """Why the IK engine cannot be used here, or None when it can."""
    try:
        from zmq_ik import ik
    except Exception as e:
        return f"zmq_ik.ik does not import ({type(e).__name__}: {e})"
    needed = ("Robot", "solve_ik", "strokebatch_from_strokes", "IKSettings", "warmup")
    lacking = [name for name in needed if not hasattr(ik, name)]
    if lacking:
        return f"zmq_ik.ik is not finished yet (lacks {', '.join(lacking)})"
    return None


def ik_section(key: str, title: str) -> Section:
    """A report section that needs the IK engine: ``skipped`` (why not) when it cannot run."""
    return Section(key, title, skipped=ik_missing())


@functools.cache
def example() -> tuple[Scene, StrokeList]:
    from zmq_ik.robots import example_paths

    scene_path, strokes_path = example_paths()
    scene = Scene.from_yaml(scene_path)
    return scene, StrokeList.from_yaml(strokes_path, stroke_length=scene.stroke_length)


def strokes(n: int) -> StrokeList:
    """``n`` stroke pairs: the example's pairs, repeated."""
    _, base = example()
    return StrokeList(pairs=tuple(itertools.islice(itertools.cycle(base.pairs), n)))


def yaml_files(n: int) -> tuple[bytes, bytes]:
    """(scene.yaml, strokelist.yaml) file contents for an ``n``-pair job (what HTTP uploads)."""
    scene, _ = example()
    with tempfile.TemporaryDirectory() as tmp:
        text = strokes(n).to_yaml(Path(tmp) / "strokes.yaml")
    return scene.to_yaml().encode(), text.encode()


def single_pose() -> tuple[np.ndarray, np.ndarray]:
    """One bimanual stroke-like target, (1, 2, 4) wxyz and (1, 2, 3) metres: each needle at
    the design origin plus its arm's offset, with the scene's fixed needle orientations."""
    scene, _ = example()
    design = np.asarray(scene.design_pos, np.float64)
    pos = np.stack([design + np.asarray(scene.ee_offset_l), design + np.asarray(scene.ee_offset_r)])
    wxyz = np.stack([np.asarray(scene.ee_rot_l), np.asarray(scene.ee_rot_r)])
    return wxyz[None].astype(np.float32), pos[None].astype(np.float32)
