"""The zmq-ik worker: loads robots once, compiles before READY, heartbeats, serves one job at a time."""

from zmq_ik.settings.worker import WorkerSettings as WorkerSettings
from zmq_ik.worker._service import EchoService as EchoService
from zmq_ik.worker._service import Service as Service
from zmq_ik.worker._service import ServiceCall as ServiceCall
from zmq_ik.worker._service import ServiceError as ServiceError
from zmq_ik.worker._worker import Worker as Worker
from zmq_ik.worker._worker import run_as_process as run_as_process

__all__ = [
    "EchoService",
    "Service",
    "ServiceCall",
    "ServiceError",
    "Worker",
    "WorkerSettings",
    "run_as_process",
]
