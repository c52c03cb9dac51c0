"""zmq-ik data model (client side, numpy only — no JAX).

Frozen dataclasses, validated at construction; every validation failure raises
:class:`zmq_ik.errors.InputError` whose ``field`` names the culprit (``"ready_l"``,
``"strokes[3].left.meter_coords"``...) and, for files, whose message names the file.

- :class:`IKSettings`, :class:`Scene` — solve settings, 1..N end effectors; defaults = the
  bundled tatbot robot.
  ``to_dict``/``from_dict``, ``to_wire`` (requests: `ADDED_SETTINGS`), ``to_yaml``/``from_yaml``. A scene's ``pos_tol`` /
  ``ori_tol`` (metres, radians; defaults :data:`POS_TOL`, :data:`ORI_TOL`) judge answers.
- :class:`Stroke`, :class:`StrokeList` — stroke groups, one stroke per end effector ((left,
  right) pairs for tatbot); YAML in our format
  (inline arrays or ``.npy`` sidecars) and in tatbot's on-disk format.
- :class:`PackedStrokes` — a StrokeList as dense arrays for the wire;
  :func:`apply_first_last_rest` — tatbot's first/last rest as its flags.
- :class:`StrokeBatch` — stroke-batch IK results, any number of end effectors; safetensors
  with exactly tatbot's tensors for two (``errors=True`` adds the achieved errors).
- :class:`IKSolution` — plain IK results, each pose judged ``reached`` or not;
  :class:`EEPoses` — end-effector poses (FK).
"""

from __future__ import annotations

from zmq_ik.model.scene import Scene as Scene
from zmq_ik.model.solution import EEPoses as EEPoses
from zmq_ik.model.solution import IKSolution as IKSolution
from zmq_ik.model.stroke import ARMS as ARMS
from zmq_ik.model.stroke import Stroke as Stroke
from zmq_ik.model.strokebatch import ARM_TENSORS as ARM_TENSORS
from zmq_ik.model.strokebatch import ERROR_TENSORS as ERROR_TENSORS
from zmq_ik.model.strokebatch import TATBOT_TENSORS as TATBOT_TENSORS
from zmq_ik.model.strokebatch import StrokeBatch as StrokeBatch
from zmq_ik.model.strokes import STROKES_FORMAT as STROKES_FORMAT
from zmq_ik.model.strokes import PackedStrokes as PackedStrokes
from zmq_ik.model.strokes import StrokeList as StrokeList
from zmq_ik.model.strokes import apply_first_last_rest as apply_first_last_rest
from zmq_ik.settings.ik import ADDED_SETTINGS as ADDED_SETTINGS
from zmq_ik.settings.ik import MAX_IK_ITERATIONS as MAX_IK_ITERATIONS
from zmq_ik.settings.ik import MAX_IK_LAMBDA as MAX_IK_LAMBDA
from zmq_ik.settings.ik import MAX_IK_WEIGHT as MAX_IK_WEIGHT
from zmq_ik.settings.ik import ORI_TOL as ORI_TOL
from zmq_ik.settings.ik import POS_TOL as POS_TOL
from zmq_ik.settings.ik import IKSettings as IKSettings

__all__ = [
    "ADDED_SETTINGS",
    "ARMS",
    "ARM_TENSORS",
    "ERROR_TENSORS",
    "MAX_IK_ITERATIONS",
    "MAX_IK_LAMBDA",
    "MAX_IK_WEIGHT",
    "ORI_TOL",
    "POS_TOL",
    "STROKES_FORMAT",
    "TATBOT_TENSORS",
    "EEPoses",
    "IKSettings",
    "IKSolution",
    "PackedStrokes",
    "Scene",
    "Stroke",
    "StrokeBatch",
    "StrokeList",
    "apply_first_last_rest",
]
