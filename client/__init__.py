"""The robot side of zmq-ik: no JAX, just pyzmq, msgpack and numpy."""

from zmq_ik.client._async import AsyncIKClient as AsyncIKClient
from zmq_ik.client._checks import check_timeout as check_timeout
from zmq_ik.client._checks import default_endpoint as default_endpoint
from zmq_ik.client._client import IKClient as IKClient
from zmq_ik.client._core import Call as Call
from zmq_ik.protocol import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT

__all__ = [
    "DEFAULT_ENDPOINT",
    "AsyncIKClient",
    "Call",
    "IKClient",
    "check_timeout",
    "default_endpoint",
]
