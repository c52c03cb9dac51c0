"""The robot side of zmq-ik: no JAX, just pyzmq, msgpack and numpy."""

from zmq_ik.client._async import AsyncIKClient as AsyncIKClient
from zmq_ik.client._client import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT
from zmq_ik.client._client import Call as Call
from zmq_ik.client._client import IKClient as IKClient

__all__ = ["DEFAULT_ENDPOINT", "AsyncIKClient", "Call", "IKClient"]
