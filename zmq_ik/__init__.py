"""zmq-ik: a ZeroMQ request-reply broker with persistent GPU workers for robot inverse kinematics.

The robot side needs no JAX: ``from zmq_ik import IKClient, Scene, StrokeList``. The IK
engine (``zmq_ik.ik``) and the worker's IK service import JAX and need the ``worker`` extra.

The clients and the data model are imported on first use (PEP 562): a worker or the
broker, which start through this package, do not pay for the asyncio client or the
model's YAML and safetensors support before they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zmq_ik._version import __version__ as __version__
from zmq_ik.errors import ErrorCode as ErrorCode
from zmq_ik.errors import IKError as IKError
from zmq_ik.errors import IKTimeout as IKTimeout
from zmq_ik.errors import InputError as InputError
from zmq_ik.errors import Overloaded as Overloaded
from zmq_ik.errors import ProtocolError as ProtocolError
from zmq_ik.errors import RemoteError as RemoteError

if TYPE_CHECKING:
    from zmq_ik.client import AsyncIKClient as AsyncIKClient
    from zmq_ik.client import IKClient as IKClient
    from zmq_ik.model import EEPoses as EEPoses
    from zmq_ik.model import IKSettings as IKSettings
    from zmq_ik.model import IKSolution as IKSolution
    from zmq_ik.model import PackedStrokes as PackedStrokes
    from zmq_ik.model import Scene as Scene
    from zmq_ik.model import Stroke as Stroke
    from zmq_ik.model import StrokeBatch as StrokeBatch
    from zmq_ik.model import StrokeList as StrokeList

_MODEL = "EEPoses IKSettings IKSolution PackedStrokes Scene Stroke StrokeBatch StrokeList"
_LAZY = {
    **dict.fromkeys(("AsyncIKClient", "IKClient"), "zmq_ik.client"),
    **dict.fromkeys(_MODEL.split(), "zmq_ik.model"),
}
"""Public names imported on first use, and the module each comes from."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zmq_ik' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AsyncIKClient",
    "EEPoses",
    "ErrorCode",
    "IKClient",
    "IKError",
    "IKSettings",
    "IKSolution",
    "IKTimeout",
    "InputError",
    "Overloaded",
    "PackedStrokes",
    "ProtocolError",
    "RemoteError",
    "Scene",
    "Stroke",
    "StrokeBatch",
    "StrokeList",
    "__version__",
]
