"""zmq-ik: a ZeroMQ request-reply broker with persistent GPU workers for robot inverse kinematics.

The robot side needs no JAX: ``from zmq_ik import IKClient, Scene, StrokeList``. The IK
engine (``zmq_ik.ik``) and the worker's IK service import JAX and need the ``worker`` extra.
"""

from zmq_ik._version import __version__ as __version__
from zmq_ik.client import AsyncIKClient as AsyncIKClient
from zmq_ik.client import IKClient as IKClient
from zmq_ik.errors import ErrorCode as ErrorCode
from zmq_ik.errors import IKError as IKError
from zmq_ik.errors import IKTimeout as IKTimeout
from zmq_ik.errors import InputError as InputError
from zmq_ik.errors import Overloaded as Overloaded
from zmq_ik.errors import ProtocolError as ProtocolError
from zmq_ik.errors import RemoteError as RemoteError
from zmq_ik.model import EEPoses as EEPoses
from zmq_ik.model import IKSettings as IKSettings
from zmq_ik.model import IKSolution as IKSolution
from zmq_ik.model import PackedStrokes as PackedStrokes
from zmq_ik.model import Scene as Scene
from zmq_ik.model import Stroke as Stroke
from zmq_ik.model import StrokeBatch as StrokeBatch
from zmq_ik.model import StrokeList as StrokeList

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
