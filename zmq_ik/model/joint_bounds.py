"""Where the joints of a robot's `solve` answer may lie (`JointBounds`, from its `describe`) and
the allowances past a limit; `zmq_ik.model.ops.check_solve_reply` checks answers against them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zmq_ik.errors import ProtocolError

PRECISE_TOL = 1e-3
"""How far past a limit (rad or m) a ``precise`` answer's joint may be (its steps are clamped
to the limits; float32 rounding and the client's float64 limits differ by far less)."""
SOFT_SLACK_MIN = math.pi
"""Least allowance past a limit for a soft-limit answer (``precise`` false): the joint-limit
residual is a penalty, so a hard-to-reach target may pull a joint past its limit. Allowed: a
whole joint range, at least this (half a turn; as much, in metres, for a prismatic joint,
which the client cannot tell apart), as for a ``rest`` pose (`ik._joints.check_rest`)."""
UNLIMITED = 1e3
"""Bound on any joint of an answer, limited or not (rad or m): as for a ``rest`` pose."""


@dataclass(frozen=True)
class JointBounds:
    """Where the joints of a robot's `solve` answer may lie, from its `describe` (a client
    fetches it once per robot and end effectors): per joint, ``soft`` (settings with soft
    limits) and ``hard`` (``precise``) intervals."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    soft: tuple[np.ndarray, np.ndarray]
    hard: tuple[np.ndarray, np.ndarray]
    lists: tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]
    """``soft`` and ``hard`` as lists: small answers are checked in Python (`SMALL`)."""

    @classmethod
    def from_describe(cls, info: Mapping[str, Any]) -> JointBounds:
        lower = np.asarray(info["lower"], np.float64)
        upper = np.asarray(info["upper"], np.float64)
        limited = np.asarray(info["limited"], bool)
        names = tuple(info["joint_names"])
        if not lower.shape == upper.shape == limited.shape == (len(names),):
            raise ProtocolError("describe reply: lower, upper, limited and joint_names differ")

        def window(slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lo = np.where(limited, np.maximum(lower - slack, -UNLIMITED), -UNLIMITED)
            hi = np.where(limited, np.minimum(upper + slack, UNLIMITED), UNLIMITED)
            return lo.astype(np.float32), hi.astype(np.float32)

        soft = window(np.maximum(upper - lower, SOFT_SLACK_MIN))
        hard = window(np.full_like(lower, PRECISE_TOL))
        lists = tuple((lo.tolist(), hi.tolist()) for lo, hi in (soft, hard))
        return cls(names, lower, upper, soft, hard, lists)  # type: ignore[arg-type]
