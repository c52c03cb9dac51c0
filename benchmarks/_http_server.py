"""The HTTP way, as the seed strokebatch servers do it, for side-by-side comparison:

    python -m benchmarks._http_server fastapi --port P [--buckets 16,64] [--no-ik]
    python -m benchmarks._http_server flask   --port P [--buckets 16,64] [--no-ik]

Endpoints (the seed's ``/compute_strokebatch`` plus two for the other comparisons):

* ``GET /health``;
* ``POST /noop``: a multipart upload of two small files (``scene``, ``strokelist``), read and
  answered with a tiny safetensors body — no compute (transport cost only);
* ``POST /solve``: a multipart ``targets`` file (safetensors: ``target_wxyz``, ``target_pos``)
  → safetensors ``joints``, ``pos_err``, ``ori_err`` from `zmq_ik.ik.solve_ik`;
* ``POST /compute_strokebatch``: multipart ``scene`` + ``strokelist`` YAML files, written to
  temporary files and loaded (as the seed does) → `zmq_ik.ik.strokebatch_from_strokes` →
  the StrokeBatch safetensors body.

Every answer carries ``X-Compute-Ms``: the time spent inside the IK function alone, so the
client can subtract it (the zmq-ik worker reports ``compute_ms`` the same way). The robot
is loaded and every bucket compiled before ``/health`` answers, as a zmq-ik worker does
before READY. Benchmark-only dependencies: fastapi, uvicorn, python-multipart, flask.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import argparse
import inspect
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from benchmarks._harness import JAX_CACHE

TINY = safetensors.numpy.save({"ok": np.ones(1, np.float32)})


class IKBackend:
    """The very functions a zmq-ik worker calls, loaded once, compiled before serving."""

    def __init__(self, buckets: tuple[int, ...] | None) -> None:
        from zmq_ik import ik
        from zmq_ik.model import IKSettings
        from zmq_ik.robots import BUNDLED

        self.ik = ik
        tatbot = BUNDLED["tatbot"]
        ik.run_inline_on_cpu()  # as a worker runs it
        ik.enable_compilation_cache(JAX_CACHE)
        self.robot = ik.Robot.from_urdf(Path(tatbot.urdf_path).read_text(), tuple(tatbot.ee_links))
        ik.warmup(self.robot, buckets=buckets)
        self.rest = np.asarray(tatbot.rest, np.float32)
        self.config, self.buckets = IKSettings(), buckets  # a worker's buckets (None: all)
        params = inspect.signature(ik.strokebatch_from_strokes).parameters  # (older trees)
        self._sb = {k: v for k, v in (("robot", self.robot), ("buckets", buckets)) if k in params}

    def solve(self, body: bytes) -> tuple[bytes, float]:
        arrays = safetensors.numpy.load(body)
        t0 = time.perf_counter()
        w, p = arrays["target_wxyz"], arrays["target_pos"]
        sol = self.ik.solve_ik(self.robot, w, p, self.rest, ik=self.config, buckets=self.buckets)
        ms = (time.perf_counter() - t0) * 1000
        out = {"joints": sol.joints, "pos_err": sol.pos_err, "ori_err": sol.ori_err}
        return safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in out.items()}), ms

    def strokebatch(self, scene_yaml: bytes, strokes_yaml: bytes) -> tuple[bytes, float]:
        from zmq_ik.model import Scene, StrokeList

        with tempfile.TemporaryDirectory() as tmp:  # the seed saves uploads to files
            scene_path = os.path.join(tmp, "scene.yaml")
            strokes_path = os.path.join(tmp, "strokelist.yaml")
            Path(scene_path).write_bytes(scene_yaml)
            Path(strokes_path).write_bytes(strokes_yaml)
            scene = Scene.from_yaml(scene_path)
            strokes = StrokeList.from_yaml(strokes_path, stroke_length=scene.stroke_length)
            t0 = time.perf_counter()
            batch = self.ik.strokebatch_from_strokes(scene, strokes, **self._sb)
            ms = (time.perf_counter() - t0) * 1000
            out_path = os.path.join(tmp, "strokebatch.safetensors")
            batch.save(out_path)
            return Path(out_path).read_bytes(), ms


OCTETS = "application/octet-stream"


def health(backend: IKBackend | None) -> dict[str, str]:
    """``GET /health``'s answer (both servers)."""
    return {"status": "healthy", "ik": "yes" if backend else "no"}


def compute_ms(ms: float) -> dict[str, str]:
    """The ``X-Compute-Ms`` header: time spent inside the IK function alone."""
    return {"X-Compute-Ms": f"{ms:.4f}"}


def fastapi_app(backend: IKBackend | None) -> Any:
    from fastapi import FastAPI, File, Response, UploadFile

    app = FastAPI()
    app.add_api_route("/health", lambda: health(backend))

    def reply(body: bytes, ms: float) -> Response:
        return Response(body, media_type=OCTETS, headers=compute_ms(ms))

    @app.post("/noop")
    def noop(scene: UploadFile = File(...), strokelist: UploadFile = File(...)) -> Response:  # noqa: B008
        scene.file.read()
        strokelist.file.read()
        return reply(TINY, 0.0)

    @app.post("/solve")
    def solve(targets: UploadFile = File(...)) -> Response:  # noqa: B008
        assert backend is not None
        return reply(*backend.solve(targets.file.read()))

    @app.post("/compute_strokebatch")
    def compute(scene: UploadFile = File(...), strokelist: UploadFile = File(...)) -> Response:  # noqa: B008
        assert backend is not None
        return reply(*backend.strokebatch(scene.file.read(), strokelist.file.read()))

    return app


def flask_app(backend: IKBackend | None) -> Any:
    from flask import Flask, Response, request

    app = Flask(__name__)
    app.add_url_rule("/health", "health", lambda: health(backend))

    def reply(body: bytes, ms: float) -> Response:
        return Response(body, mimetype=OCTETS, headers=compute_ms(ms))

    @app.post("/noop")
    def noop() -> Response:
        request.files["scene"].read()
        request.files["strokelist"].read()
        return reply(TINY, 0.0)

    @app.post("/solve")
    def solve() -> Response:
        assert backend is not None
        return reply(*backend.solve(request.files["targets"].read()))

    @app.post("/compute_strokebatch")
    def compute() -> Response:
        assert backend is not None
        return reply(
            *backend.strokebatch(request.files["scene"].read(), request.files["strokelist"].read())
        )

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._http_server")
    parser.add_argument("framework", choices=["fastapi", "flask"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--buckets", default=None)
    parser.add_argument("--no-ik", action="store_true")
    args = parser.parse_args(argv)
    buckets = tuple(int(b) for b in args.buckets.split(",")) if args.buckets else None
    backend = None if args.no_ik else IKBackend(buckets)
    if args.framework == "fastapi":
        import uvicorn

        uvicorn.run(fastapi_app(backend), host="127.0.0.1", port=args.port, log_level="warning")
    else:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        flask_app(backend).run(host="127.0.0.1", port=args.port)  # the seed's app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
