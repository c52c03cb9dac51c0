"""The two ways a robot asks for IK, as callables the HTTP comparison times side by side.

Each call returns the server's own compute time in ms (zmq-ik: the worker's ``compute_ms``
FINAL header; HTTP: the ``X-Compute-Ms`` response header), so round trip minus it is the
transport's overhead. Module-level so that `concurrent` can run them in spawned processes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import _data
from benchmarks._common import time_calls


class ZikSide:
    """`IKClient` through a broker: IK worker (robot ``tatbot``) and echo worker (``echo``)."""

    name = "zmq-ik"

    def __init__(self, endpoint: str, pairs: int = 100) -> None:
        from zmq_ik.client import IKClient
        from zmq_ik.model import ops

        self.ops = ops
        self.client = IKClient(endpoint, timeout=600.0)
        self.scene, _ = _data.example()
        self.one = _data.strokes(1)
        self.job = _data.strokes(pairs)
        packed = ops.apply_first_last_rest(self.one.pack(self.scene.stroke_length), self.scene)
        self.pair_header, self.pair_arrays = ops.strokebatch_request(self.scene, packed)
        self.solve_header, self.solve_arrays = ops.solve_request(*_data.single_pose())

    def noop(self) -> float:
        """The one-pair request's payload (header + arrays) to the echo worker and back."""
        reply = self.client.request("echo", "echo", self.pair_header, self.pair_arrays)
        return float(reply.header["compute_ms"])

    def solve(self) -> float:
        reply = self.client.request("tatbot", self.ops.SOLVE, self.solve_header, self.solve_arrays)
        self.ops.read_solve_reply(reply.arrays)
        return float(reply.header["compute_ms"])

    def pair(self) -> float:
        """One stroke pair as one `strokebatch` request (what `compute` sends for it)."""
        reply = self.client.request(
            "tatbot", self.ops.STROKEBATCH, self.pair_header, self.pair_arrays
        )
        self.ops.read_strokebatch_reply(reply.arrays)
        return float(reply.header["compute_ms"])

    def pair_compute(self) -> float:
        """One stroke pair through the public `IKClient.compute` (packing and assembly included)."""
        self.client.compute(self.scene, self.one)
        return float("nan")

    def run_job(self) -> float:
        self.client.compute(self.scene, self.job)
        return float("nan")

    def close(self) -> None:
        self.client.close()


class HttpSide:
    """python-requests against `benchmarks._http_server` (FastAPI+uvicorn or Flask)."""

    def __init__(self, name: str, port: int, pairs: int = 100, session: bool = True) -> None:
        import requests
        import safetensors.numpy

        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.http: Any = requests.Session() if session else requests
        self.load = safetensors.numpy.load
        self.one = _data.yaml_files(1)
        self.job = _data.yaml_files(pairs)
        wxyz, pos = _data.single_pose()
        self.targets = safetensors.numpy.save({"target_wxyz": wxyz, "target_pos": pos})

    def _post(self, path: str, files: dict[str, tuple[str, bytes]]) -> tuple[bytes, float]:
        r = self.http.post(self.url + path, files=files, timeout=600)
        r.raise_for_status()
        return r.content, float(r.headers["X-Compute-Ms"])

    def _files(self, yaml: tuple[bytes, bytes]) -> dict[str, tuple[str, bytes]]:
        return {"scene": ("scene.yaml", yaml[0]), "strokelist": ("strokelist.yaml", yaml[1])}

    def noop(self) -> float:
        body, ms = self._post("/noop", self._files(self.one))
        self.load(body)
        return ms

    def solve(self) -> float:
        body, ms = self._post("/solve", {"targets": ("targets.safetensors", self.targets)})
        self.load(body)
        return ms

    def pair(self) -> float:
        from zmq_ik.model import StrokeBatch

        body, ms = self._post("/compute_strokebatch", self._files(self.one))
        StrokeBatch.from_bytes(body)
        return ms

    pair_compute = pair

    def run_job(self) -> float:
        from zmq_ik.model import StrokeBatch

        body, ms = self._post("/compute_strokebatch", self._files(self.job))
        StrokeBatch.from_bytes(body)
        return ms

    def close(self) -> None:
        if hasattr(self.http, "close"):
            self.http.close()


def make_side(kind: str, target: str | int) -> ZikSide | HttpSide:
    if kind == "zmq-ik":
        return ZikSide(str(target), pairs=1)
    return HttpSide(kind, int(target), pairs=1)


def _concurrent_client(
    kind: str, target: str | int, op: str, n: int, barrier: Any, out: Any
) -> None:
    side = make_side(kind, target)
    try:
        fn = getattr(side, op)
        fn()  # warm-up (connection, first request)
        barrier.wait()
        t0 = time.monotonic()
        lat = time_calls(fn, n)
        out.put((t0, time.monotonic(), lat))
    except BaseException as e:
        out.put(e)
        raise
    finally:
        side.close()


def concurrent(
    kind: str, target: str | int, op: str, clients: int, n: int
) -> tuple[float, list[float]]:
    """``clients`` processes each making ``n`` calls of ``op`` at once: (calls/s, latencies)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_client, args=(kind, target, op, n, barrier, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=900) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    lat = [x for r in results for x in r[2]]
    return clients * n / (end - start), lat


def overhead(rt_ms: list[float], compute_ms: list[float]) -> list[float]:
    return list(np.asarray(rt_ms) - np.asarray(compute_ms))
