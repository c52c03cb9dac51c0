"""`zmq-ik` command line: thin click wrappers; the work lives in the library modules.

Logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from zmq_ik._version import __version__
from zmq_ik.serve import EXIT_CONFIG

DEFAULT_ENDPOINT = os.environ.get("ZMQ_IK_ENDPOINT", "tcp://127.0.0.1:5555")
logger = logging.getLogger("zmq_ik.cli")


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="zmq-ik")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """zmq-ik: a ZeroMQ broker with persistent GPU workers for robot inverse kinematics."""
    _configure_logging(-1 if quiet else verbose)
    ctx.ensure_object(dict)
    from zmq_ik._os import die_with_parent_from_env

    die_with_parent_from_env()  # a child of `zmq-ik serve` does not outlive it


def _raise_fd_limit() -> int:
    """Soft open-file limit raised to the hard one (the broker holds one per peer); returns it."""
    from zmq_ik._os import raise_fd_limit

    before, after = raise_fd_limit()
    if after != before:
        logger.debug("open-file limit raised from %d to %d", before, after)
    return after


class _ConfigError(click.ClickException):
    """The command cannot run as configured: exit ``EX_CONFIG`` so `serve` does not restart it."""

    exit_code = EXIT_CONFIG


# --------------------------------------------------------------------------- broker


def _curve_options(f: Any) -> Any:
    f = click.option(
        "--curve-server-key",
        type=click.Path(exists=True, dir_okay=False),
        help="Broker public key file (enables CURVE).",
    )(f)
    f = click.option(
        "--curve-secret-key",
        "curve_own",
        type=click.Path(exists=True, dir_okay=False),
        help="This peer's secret key file (from `zmq-ik keygen`).",
    )(f)
    return f


def _client_curve(server_key: str | None, own: str | None) -> Any:
    if not server_key:
        return None
    from zmq_ik.security import CurveClient

    return CurveClient.from_files(server_key, own)


@main.command()
@click.option(
    "--bind",
    default="tcp://127.0.0.1:5555",
    show_default=True,
    help="Endpoint for clients and workers.",
)
@click.option("--worker-bind", default=None, help="Optional separate endpoint for workers.")
@click.option("--heartbeat", default=0.25, show_default=True, help="Heartbeat interval (s).")
@click.option(
    "--liveness", default=4, show_default=True, help="Missed heartbeats before a worker is dead."
)
@click.option(
    "--max-queue",
    default=1024,
    show_default=True,
    help="Waiting requests per robot before 'overloaded'.",
)
@click.option(
    "--max-open-jobs",
    default=16 * 1024,
    show_default=True,
    help="Open jobs over all robots before 'overloaded'.",
)
@click.option(
    "--max-queued-bytes",
    default=1024**3,
    show_default=True,
    help="Payload bytes of open jobs before 'overloaded'.",
)
@click.option(
    "--max-retries", default=2, show_default=True, help="Re-dispatches of a job whose worker died."
)
@click.option(
    "--grace", default=2.0, show_default=True, help="Seconds in-flight work may finish on shutdown."
)
@click.option(
    "--curve-secret-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Broker secret key file (enables CURVE).",
)
@click.option(
    "--allow-keys",
    type=click.Path(exists=True, file_okay=False),
    help="Directory of allowed public keys (CURVE).",
)
def broker(
    bind: str,
    worker_bind: str | None,
    heartbeat: float,
    liveness: int,
    max_queue: int,
    max_open_jobs: int,
    max_queued_bytes: int,
    max_retries: int,
    grace: float,
    curve_secret_key: str | None,
    allow_keys: str | None,
) -> None:
    """Run the broker (Ctrl-C or SIGTERM: drain in-flight work, exit 0)."""
    from zmq_ik.broker import Broker, BrokerSettings

    if curve_secret_key and not allow_keys:
        raise click.UsageError("--curve-secret-key needs --allow-keys DIR")
    settings = BrokerSettings(
        bind=bind,
        worker_bind=worker_bind,
        heartbeat_interval=heartbeat,
        liveness=liveness,
        max_queue=max_queue,
        max_open_jobs=max_open_jobs,
        max_queued_bytes=max_queued_bytes,
        max_retries=max_retries,
        shutdown_grace=grace,
        curve_secret_key=curve_secret_key,
        allow_keys=allow_keys,
    )
    from zmq_ik._os import peer_room

    limit = _raise_fd_limit()
    try:
        b = Broker(settings)
    except OSError as e:  # cannot bind, unreadable keys: the same on every restart
        raise _ConfigError(str(e)) from e
    if limit >= 0:
        room = peer_room(limit)
        log = logger.warning if room < 1000 else logger.info
        log(
            "open-file limit %d: room for about %d peers (clients and workers)%s",
            limit,
            room,
            " (raise the hard limit: LimitNOFILE=, ulimit -Hn)" if room < 1000 else "",
        )
    b.install_signal_handlers()
    b.run()


# --------------------------------------------------------------------------- worker


def _parse_robot(values: tuple[str, ...]) -> dict[str, str]:
    from zmq_ik.protocol import BROKER_SERVICE

    robots: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=URDF, got {value!r}", param_hint="--robot")
        if name == BROKER_SERVICE or not name.isprintable() or len(name.encode()) > 128:
            raise click.BadParameter(
                f"{name!r} cannot be a robot name (printable, at most 128 bytes, not "
                f"{BROKER_SERVICE!r})",
                param_hint="--robot",
            )
        if not Path(path).is_file():
            raise click.BadParameter(f"URDF file not found: {path}", param_hint="--robot")
        robots[name] = path
    return robots


def _parse_per_robot(values: tuple[str, ...], option: str) -> dict[str, list[str]]:
    """``NAME=A,B,...`` options → {name: [A, B, ...]}."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, items = value.partition("=")
        parts = [p.strip() for p in items.split(",")]
        if not sep or not name or not all(parts):
            raise click.BadParameter(f"expected NAME=A[,B...], got {value!r}", param_hint=option)
        out[name] = parts
    return out


def _parse_rest(values: tuple[str, ...]) -> dict[str, list[float]]:
    out = {}
    for name, parts in _parse_per_robot(values, "--rest").items():
        try:
            out[name] = [float(p) for p in parts]
        except ValueError as e:
            raise click.BadParameter(f"{name}: {e}", param_hint="--rest") from e
        if not all(math.isfinite(v) for v in out[name]):
            raise click.BadParameter(f"{name}: values must be finite", param_hint="--rest")
    return out


def _parse_warm(values: tuple[str, ...]) -> list[Any]:
    """``--warm precise=true,seeds=16`` → IKSettings (values read as YAML scalars)."""
    import yaml

    from zmq_ik.errors import InputError
    from zmq_ik.model import IKSettings

    settings = []
    for value in values:
        fields: dict[str, Any] = {}
        for item in value.split(","):
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(
                    f"expected KEY=VALUE[,KEY=VALUE...], got {value!r}", param_hint="--warm"
                )
            fields[key.strip()] = yaml.safe_load(text)
        try:
            settings.append(IKSettings.from_dict(fields))
        except InputError as e:
            raise click.BadParameter(f"{value!r}: {e}", param_hint="--warm") from e
    return settings


@main.command()
@click.option(
    "--connect",
    multiple=True,
    default=[DEFAULT_ENDPOINT],
    show_default=True,
    help="Broker endpoint; repeat it (or give a comma list) to serve several brokers.",
)
@click.option(
    "--gpu", type=int, default=None, help="GPU index to pin (CUDA_VISIBLE_DEVICES); default CPU."
)
@click.option(
    "--robot",
    "robots",
    multiple=True,
    help="NAME=URDF to serve (repeatable); default: bundled tatbot.",
)
@click.option(
    "--ee-links",
    "ee_links",
    multiple=True,
    metavar="NAME=LINK[,LINK...]",
    help="Default end-effector links of a robot (repeatable): used when a request names "
    "none, and compiled before READY. The bundled tatbot has its two needles.",
)
@click.option(
    "--rest",
    "rests",
    multiple=True,
    metavar="NAME=Q1,Q2,...",
    help="Default rest pose of a robot for its default end effectors, one value per joint in "
    "chain order (default: tatbot's ready pose; other robots: mid-range, ik.default_rest).",
)
@click.option("--cache-dir", default=None, help="JAX persistent compilation cache directory.")
@click.option(
    "--buckets",
    default=None,
    help="Comma-separated batch buckets to compile, from 1,16,32,...,16384 "
    "(default: 1,16..1024 on a CPU, all on a GPU).",
)
@click.option(
    "--max-extra-compiles",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Programs compiled (and solvers built) on demand after READY for client-chosen "
    "settings, end effectors or describe requests, before all of them are dropped again: "
    "bounds the worker's memory.",
)
@click.option(
    "--warm",
    multiple=True,
    metavar="SETTINGS",
    help="IK settings whose programs compile before READY besides the default one, e.g. "
    "'precise=true' or 'precise=true,seeds=16' (repeatable; only precise and seeds pick a "
    "program; weights never need one). Other precise/seeds combinations compile on first use.",
)
@click.option(
    "--echo", is_flag=True, help="Serve the no-IK echo service (tests, transport benchmarks)."
)
@click.option("--heartbeat", default=0.25, show_default=True, help="Heartbeat interval (s).")
@click.option(
    "--liveness", default=4, show_default=True, help="Missed broker heartbeats before reconnecting."
)
@_curve_options
def worker(
    connect: tuple[str, ...],
    gpu: int | None,
    robots: tuple[str, ...],
    ee_links: tuple[str, ...],
    rests: tuple[str, ...],
    cache_dir: str | None,
    buckets: str | None,
    max_extra_compiles: int,
    warm: tuple[str, ...],
    echo: bool,
    heartbeat: float,
    liveness: int,
    curve_server_key: str | None,
    curve_own: str | None,
) -> None:
    """Run a worker: load robots, compile, say READY, serve until SIGTERM."""
    from zmq_ik.errors import InputError
    from zmq_ik.protocol import split_endpoints
    from zmq_ik.worker import EchoService, Worker, WorkerSettings

    try:
        split_endpoints(connect)
    except InputError as e:
        raise click.BadParameter(e.message, param_hint="--connect") from e
    _raise_fd_limit()
    robot_paths = _parse_robot(robots)
    default_ee = _parse_per_robot(ee_links, "--ee-links")
    default_rest = _parse_rest(rests)
    warm_settings = _parse_warm(warm)
    service: Any
    if echo:
        service = EchoService(list(robot_paths) or ["echo"])
    else:
        from zmq_ik.worker.ik_service import IKService, pin_device

        pin_device(gpu)  # must happen before JAX is imported
        from zmq_ik.ik import BUCKETS

        try:
            bucket_list = tuple(int(b) for b in buckets.split(",")) if buckets else None
        except ValueError as e:
            raise click.BadParameter(f"not a list of integers: {e}", param_hint="--buckets") from e
        if bucket_list and not set(bucket_list) <= set(BUCKETS):
            raise click.BadParameter(
                f"{buckets} is not a subset of {','.join(map(str, BUCKETS))}",
                param_hint="--buckets",
            )
        try:
            service = IKService(
                robot_paths or None,
                ee_links=default_ee,
                rest=default_rest,
                cache_dir=cache_dir,
                buckets=bucket_list,
                warm=warm_settings,
                max_extra_compiles=max_extra_compiles,
            )
        except InputError as e:
            option = {"ee_links": "--ee-links", "rest": "--rest"}.get(e.field or "", "--robot")
            raise click.BadParameter(e.message, param_hint=option) from e
    settings = WorkerSettings(
        connect=connect,
        heartbeat_interval=heartbeat,
        liveness=liveness,
        curve=_client_curve(curve_server_key, curve_own),
    )
    w = Worker(service, settings)
    w.install_signal_handlers()
    try:
        w.run()
    except InputError as e:  # a robot that cannot be loaded: say which, no traceback
        raise _ConfigError(e.message) from e


# --------------------------------------------------------------------------- ping / status


@main.command()
@click.option("--endpoint", default=DEFAULT_ENDPOINT, show_default=True)
@click.option("--count", default=1, show_default=True, help="Number of pings.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the last answer as JSON.")
@_curve_options
def ping(
    endpoint: str,
    count: int,
    timeout: float,
    as_json: bool,
    curve_server_key: str | None,
    curve_own: str | None,
) -> None:
    """Is the broker there, which workers serve what, how fast. Exit 1 if nothing answers."""
    from zmq_ik.client import IKClient
    from zmq_ik.errors import IKError

    rtts = []
    info: dict[str, Any] = {}
    with IKClient(
        endpoint, timeout=timeout, retries=0, curve=_client_curve(curve_server_key, curve_own)
    ) as client:
        for i in range(count):
            try:
                info = client.ping()
            except IKError as e:
                click.echo(f"{e}; is a broker running there?", err=True)
                sys.exit(1)
            rtts.append(info["rtt_ms"])
            if not as_json:
                click.echo(f"reply from {endpoint}: seq={i} time={info['rtt_ms']:.3f} ms")
            if i + 1 < count:
                time.sleep(0.2)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    rtts.sort()
    click.echo(
        f"broker {info.get('version')} ({info.get('protocol')}), up {info.get('uptime_s', 0):.1f}s; "
        f"rtt min/median/max = {rtts[0]:.3f}/{rtts[len(rtts) // 2]:.3f}/{rtts[-1]:.3f} ms"
    )
    workers = info.get("workers", [])
    omitted = info.get("workers_omitted", 0)
    click.echo(
        f"{len(workers) + omitted} worker(s)" + (f", {omitted} not listed" if omitted else "")
    )
    for w in workers:
        click.echo(
            f"  {w['id'][:8]}  {w['state']:<5} {','.join(w['robots']):<20} {w['device']}  served={w['served']}"
        )


@main.command()
@click.option("--endpoint", default=DEFAULT_ENDPOINT, show_default=True)
@click.option("--timeout", default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
@_curve_options
def status(
    endpoint: str,
    timeout: float,
    as_json: bool,
    watch: bool,
    curve_server_key: str | None,
    curve_own: str | None,
) -> None:
    """Workers, queues, in-flight jobs and counters, as the broker sees them."""
    from zmq_ik.client import IKClient
    from zmq_ik.errors import IKError
    from zmq_ik.report import format_status

    with IKClient(
        endpoint, timeout=timeout, retries=0, curve=_client_curve(curve_server_key, curve_own)
    ) as client:
        while True:
            try:
                info = client.status()
            except IKError as e:
                click.echo(f"{e}; is a broker running there?", err=True)
                sys.exit(1)
            if as_json:
                click.echo(json.dumps(info, default=str))
            else:
                if watch:
                    click.clear()
                click.echo(format_status(info))
            if not watch:
                return
            try:
                time.sleep(1.0)
            except KeyboardInterrupt:
                return


# --------------------------------------------------------------------------- serve / demo / compute


def _gpu_list(value: str | None) -> list[int]:
    if not value:
        return []
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as e:
        raise click.BadParameter(
            f"expected comma-separated GPU indices, got {value!r}", param_hint="--gpu"
        ) from e


@main.command()
@click.option("--bind", default="tcp://127.0.0.1:5555", show_default=True, help="Broker endpoint.")
@click.option(
    "--connect",
    multiple=True,
    help="Another broker the workers also serve, e.g. the one on a second host (repeatable).",
)
@click.option(
    "--workers", default=None, type=int, help="Worker processes (default: one per GPU, or 1)."
)
@click.option(
    "--gpu", "gpus", default=None, help="Comma-separated GPU indices; workers are spread over them."
)
@click.option("--robot", "robots", multiple=True, help="NAME=URDF for every worker (repeatable).")
@click.option(
    "--ee-links",
    "ee_links",
    multiple=True,
    metavar="NAME=LINK[,LINK...]",
    help="Default end effectors of a robot (see `zmq-ik worker --help`).",
)
@click.option(
    "--rest",
    "rests",
    multiple=True,
    metavar="NAME=Q1,Q2,...",
    help="Default rest pose of a robot (see `zmq-ik worker --help`).",
)
@click.option("--cache-dir", default=None, help="JAX compilation cache directory.")
@click.option("--buckets", default=None, help="Comma-separated batch buckets to compile.")
@click.option(
    "--warm",
    multiple=True,
    metavar="SETTINGS",
    help="IK settings every worker compiles before READY (see `zmq-ik worker --help`).",
)
@click.option(
    "--echo", is_flag=True, help="Run echo workers (no IK): for tests and transport benchmarks."
)
def serve(
    bind: str,
    connect: tuple[str, ...],
    workers: int | None,
    gpus: str | None,
    robots: tuple[str, ...],
    ee_links: tuple[str, ...],
    rests: tuple[str, ...],
    cache_dir: str | None,
    buckets: str | None,
    warm: tuple[str, ...],
    echo: bool,
) -> None:
    """A broker and N workers in one command, supervised (Ctrl-C stops all, exit 0)."""
    from zmq_ik.serve import Supervisor

    gpu_ids = _gpu_list(gpus)
    _parse_robot(robots)
    _parse_per_robot(ee_links, "--ee-links")
    _parse_rest(rests)
    worker_args: list[str] = [a for r in robots for a in ("--robot", r)]
    worker_args += [a for e in ee_links for a in ("--ee-links", e)]
    worker_args += [a for r in rests for a in ("--rest", r)]
    if cache_dir:
        worker_args += ["--cache-dir", cache_dir]
    if buckets:
        worker_args += ["--buckets", buckets]
    _parse_warm(warm)
    worker_args += [a for w in warm for a in ("--warm", w)]
    if echo:
        worker_args.append("--echo")
    worker_args += [a for c in connect for a in ("--connect", c)]
    n = workers if workers is not None else max(1, len(gpu_ids))
    _raise_fd_limit()  # the children inherit it
    sup = Supervisor(bind=bind, workers=n, gpus=gpu_ids, worker_args=worker_args)
    sup.install_signal_handlers()
    try:
        sup.start()
    except OSError as e:  # the port is taken: nothing was started
        raise _ConfigError(str(e)) from e
    sup.run()
    if sup.failed:
        raise click.ClickException(sup.failed)


def _load_job(scene_path: str | None, strokes_path: str | None) -> tuple[Any, Any]:
    from zmq_ik.errors import InputError
    from zmq_ik.model import Scene, StrokeList
    from zmq_ik.robots import example_paths

    default_scene, default_strokes = example_paths()
    try:
        scene = Scene.from_yaml(scene_path) if scene_path else Scene.from_yaml(default_scene)
        strokes = StrokeList.from_yaml(
            strokes_path or default_strokes, stroke_length=scene.stroke_length
        )
    except InputError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"cannot read input: {e}") from e
    return scene, strokes


def _run_job(
    endpoint: str,
    scene: Any,
    strokes: Any,
    output: str,
    as_json: bool,
    strict: bool,
    timeout: float,
    chunk_pairs: int,
    curve: Any = None,
    with_errors: bool = False,
    tolerance: tuple[float, float] = (0.1, 1e-3),
) -> None:
    from zmq_ik.errors import IKError, IKTimeout
    from zmq_ik.jobs import ProgressBar, compute_job, summary_table

    try:
        result = compute_job(
            endpoint,
            scene,
            strokes,
            timeout=timeout,
            chunk_pairs=chunk_pairs,
            progress=ProgressBar(),
            curve=curve,
        )
    except IKTimeout as e:
        raise click.ClickException(f"{e}; is `zmq-ik serve` running there?") from e
    except IKError as e:
        raise click.ClickException(str(e)) from e
    # tatbot's StrokeBatch.load refuses extra tensors, so by default write only its five.
    result.batch.save(output, errors=with_errors)
    summary = result.summary(pos_tol=tolerance[0] / 1000, ori_tol=tolerance[1])
    summary["output"] = str(output)
    if as_json:
        click.echo(json.dumps(summary, default=float))
    else:
        click.echo(summary_table(summary, Path(output)))
    if strict and summary["n_over"]:
        raise click.ClickException(f"{summary['n_over']} pose(s) miss tolerance (--strict)")


def _tolerance_options(fn: Any) -> Any:
    fn = click.option(
        "--ori-tol", default=1e-3, show_default=True, help="Orientation tolerance, rad."
    )(fn)
    return click.option(
        "--pos-tol", default=0.1, show_default=True, help="Position tolerance, mm."
    )(fn)


@main.command()
@click.argument("scene_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("strokes_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    default="strokebatch.safetensors",
    show_default=True,
    help="Where to write the StrokeBatch.",
)
@click.option("--endpoint", default=DEFAULT_ENDPOINT, show_default=True)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per chunk attempt.")
@click.option(
    "--chunk-pairs", default=64, show_default=True, help="Stroke pairs per concurrent chunk."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--strict", is_flag=True, help="Exit 1 if any pose misses tolerance.")
@click.option(
    "--with-errors",
    is_flag=True,
    help="Also store pos_err/ori_err tensors (tatbot's loader refuses extra tensors).",
)
@_tolerance_options
@_curve_options
def compute(
    scene_file: str,
    strokes_file: str,
    output: str,
    endpoint: str,
    timeout: float,
    chunk_pairs: int,
    as_json: bool,
    strict: bool,
    with_errors: bool,
    pos_tol: float,
    ori_tol: float,
    curve_server_key: str | None,
    curve_own: str | None,
) -> None:
    """Compute SCENE_FILE + STROKES_FILE (ours or tatbot's format) into a safetensors StrokeBatch."""
    scene, strokes = _load_job(scene_file, strokes_file)
    _run_job(
        endpoint,
        scene,
        strokes,
        output,
        as_json,
        strict,
        timeout,
        chunk_pairs,
        _client_curve(curve_server_key, curve_own),
        with_errors,
        (pos_tol, ori_tol),
    )


@main.command()
@click.option("--endpoint", default=None, help="Use a running broker instead of starting one.")
@click.option("-o", "--output", default="strokebatch.safetensors", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option(
    "--startup-timeout",
    default=300.0,
    show_default=True,
    help="Seconds to wait for the embedded worker.",
)
@click.option(
    "--buckets",
    default=None,
    help="Batch buckets the embedded worker compiles (default: 1,16..1024 on a CPU).",
)
@_tolerance_options
def demo(
    endpoint: str | None,
    output: str,
    as_json: bool,
    startup_timeout: float,
    buckets: str | None,
    pos_tol: float,
    ori_tol: float,
) -> None:
    """Compute the bundled example strokes for the bundled tatbot robot, end to end."""
    scene, strokes = _load_job(None, None)
    tolerance = (pos_tol, ori_tol)
    if endpoint is not None:
        _run_job(endpoint, scene, strokes, output, as_json, False, 30.0, 64, tolerance=tolerance)
        return
    from zmq_ik.serve import Supervisor, free_endpoint, wait_ready

    endpoint = free_endpoint()
    click.echo(
        f"starting a local broker and worker on {endpoint} (first start compiles the IK solver)…",
        err=True,
    )
    with Supervisor(
        bind=endpoint, workers=1, worker_args=["--buckets", buckets] if buckets else []
    ) as sup:
        if not wait_ready(endpoint, 1, startup_timeout, sup):
            raise click.ClickException(
                sup.failed or "the embedded worker did not become ready; run with -v for its log"
            )
        _run_job(endpoint, scene, strokes, output, as_json, False, 60.0, 64, tolerance=tolerance)


# --------------------------------------------------------------------------- keys


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--name",
    "names",
    multiple=True,
    default=("broker", "client", "worker"),
    show_default=True,
    help="Keypair names to create.",
)
def keygen(directory: str, names: tuple[str, ...]) -> None:
    """Write CURVE keypairs (NAME.key public, NAME.key_secret secret) into DIRECTORY."""
    from zmq_ik.security import keygen as make_keys

    for public, _secret in make_keys(directory, names):
        click.echo(f"wrote {public} (+ secret)")


if __name__ == "__main__":  # pragma: no cover
    main()
