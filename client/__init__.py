"""The robot side of zmq-ik: no JAX, just pyzmq, msgpack and numpy.

`AsyncIKClient` is imported on first use (PEP 562): asyncio is not needed by the sync
client, the CLI or a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zmq_ik.client._checks import check_timeout as check_timeout
from zmq_ik.client._checks import default_endpoint as default_endpoint
from zmq_ik.client._client import IKClient as IKClient
from zmq_ik.client._core import Call as Call
from zmq_ik.protocol import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from zmq_ik.client._async import AsyncIKClient as AsyncIKClient


def __getattr__(name: str) -> Any:
    if name != "AsyncIKClient":
        raise AttributeError(f"module 'zmq_ik.client' has no attribute {name!r}")
    from zmq_ik.client._async import AsyncIKClient

    globals()[name] = AsyncIKClient
    return AsyncIKClient


__all__ = [
    "DEFAULT_ENDPOINT",
    "AsyncIKClient",
    "Call",
    "IKClient",
    "check_timeout",
    "default_endpoint",
]
