"""`zmq-ik` command line: click wiring only (the work lives in the library modules). A
command's settings are one dataclass holding each default once; its options take their names,
defaults, help and text forms from the fields. Logging is configured here and nowhere else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from typing import Any

import click
from click.core import ParameterSource

from zmq_ik._version import __version__
from zmq_ik.apps.report import fk_text, parse_joint_vectors, ping_brokers, status_screens
from zmq_ik.apps.serve import STARTUP_TIMEOUT, Supervisor, local_cluster
from zmq_ik.base.process import EXIT_CONFIG, die_with_parent_from_env, raise_fd_limit_logged
from zmq_ik.client import IKClient, check_timeout
from zmq_ik.errors import ConfigError, IKError, IKTimeout, InputError, NoBroker
from zmq_ik.protocol import ENDPOINT_ENV, check_endpoint, endpoints_setting
from zmq_ik.settings import option_spec, setting_names
from zmq_ik.settings.apps import ComputeSettings, ReportSettings, ServeSettings
from zmq_ik.settings.broker import BrokerSettings
from zmq_ik.settings.worker import ServiceSettings, WorkerSettings
from zmq_ik.worker.settings import build_service

EPILOG = f"""\b
Environment:
  {ENDPOINT_ENV}   default endpoint of every command (--bind, --connect, --endpoint)
  ZMQ_IK_CACHE_DIR  workers' JAX compilation cache (default ~/.cache/zmq-ik/jax)
Shell completion (bash; zsh and fish alike):
  eval "$(_ZMQ_IK_COMPLETE=bash_source zmq-ik)"
"""
EXAMPLES = {
    "broker": "zmq-ik broker --bind tcp://127.0.0.1:5555",
    "worker": "zmq-ik worker --connect tcp://127.0.0.1:5555 --gpu 0",
    "serve": "zmq-ik serve --workers 2 --gpu 0,1",
    "ping": "zmq-ik ping --endpoint tcp://gpu-host:5555",
    "status": "zmq-ik status --watch",
    "fk": "zmq-ik fk tatbot 0,0,0,0,0,0,0,0,0,0,0,0,0,0 --json",
    "compute": "zmq-ik compute scene.yaml strokes.yaml -o strokebatch.safetensors",
    "demo": "zmq-ik demo --plot report.png",
    "report": "zmq-ik report strokebatch.safetensors -o report.png",
    "keygen": "zmq-ik keygen keys --name broker --name gpu-host1",
}
"""One example per command, shown in its --help (and checked against the CLI by
tests/test_docs.py)."""
_LEVEL = "zmq_ik.log_level"
_NO_DEFAULT = (None, getattr(click.core, "UNSET", None))
"""An option's default when it has none (click 8.3+ says `UNSET`)."""
JAX_BACKENDS_LOG = "jax._src.xla_bridge"
"""The logger of JAX's backend probing (quiet unless -v)."""
_FLAGS = {"robots": "--robot", "gpus": "--gpu", "heartbeat_interval": "--heartbeat"}
_FLAGS["shutdown_grace"] = "--grace"
"""Options not spelled as their settings field."""
B, W, C, S, R = BrokerSettings, WorkerSettings, ComputeSettings, ServiceSettings, ReportSettings
KEY = click.Path(exists=True, dir_okay=False)
KEYPAIRS = ("broker", "client", "worker")
SERVE_SEVERAL = "Broker endpoint; repeat it (or comma-separate) to serve several brokers."
COMPUTING = ("output", "errors", "pos_tol", "ori_tol", "strict", "plot")  # demo takes them too


def _verbosity(ctx: click.Context, param: click.Parameter | None, value: Any) -> None:
    """-v / -q, before or after the command name (the last one wins); None: the default.
    JAX's backend probing logs each platform it does not find at INFO (``Unable to initialize
    backend 'tpu'`` on every worker start with ``--gpu``): no fault, so shown only with -v."""
    if value:
        ctx.meta[_LEVEL] = logging.WARNING if param and param.name == "quiet" else logging.DEBUG
    fmt = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
    logging.basicConfig(format=fmt, stream=sys.stderr)
    level = ctx.meta.get(_LEVEL, logging.INFO)
    logging.getLogger().setLevel(level)
    jax_level = logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING)
    logging.getLogger(JAX_BACKENDS_LOG).setLevel(jax_level)


class _Verbosity(click.Command):
    """A command that takes -v/-q (after its name too), shows every option's default in its
    help (``[default: none]`` where there is none and the help names none) and its
    `EXAMPLES` line as its epilog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.name in EXAMPLES:
            self.epilog = f"\b\nExample:\n  {EXAMPLES[self.name]}"
        for p in self.params:
            if not isinstance(p, click.Option) or p.is_flag or p.count:
                continue
            if p.default == () or any(p.default is none for none in _NO_DEFAULT):
                named = "default" in (p.help or "").lower()  # "(default: the CPU)"
                p.show_default = False if named else "none"
            elif not isinstance(p.show_default, str):
                p.show_default = True
        log: dict[str, Any] = {"expose_value": False, "callback": _verbosity}
        verbose = "Debug log (JAX's too)."
        self.params.append(click.Option(["-v", "--verbose"], count=True, help=verbose, **log))
        quiet = "Warnings and errors only."
        self.params.append(click.Option(["-q", "--quiet"], is_flag=True, help=quiet, **log))


class _Group(_Verbosity, click.Group):
    """Ctrl-C exits 130 (a client closes at once), `ConfigError` 78, other library errors 1."""

    command_class = _Verbosity

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(130) from e
        except ConfigError as e:  # EX_CONFIG: `serve` and systemd do not restart it
            click.echo(f"Error: {e}", err=True)
            raise click.exceptions.Exit(EXIT_CONFIG) from e
        except NoBroker as e:  # its message says what to check
            raise click.ClickException(str(e)) from e
        except IKTimeout as e:  # (with a reason, it is there, and refused us)
            hint = "" if e.reason else "; is a broker (`zmq-ik serve`) running there?"
            raise click.ClickException(f"{e}{hint}") from e
        except IKError as e:  # what the library refused: its message, no traceback
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="zmq-ik")
@click.pass_context
def main(ctx: click.Context) -> None:
    """zmq-ik: a ZeroMQ broker with persistent GPU workers for robot inverse kinematics."""
    _verbosity(ctx, None, None)
    die_with_parent_from_env()  # a child of `zmq-ik serve` does not outlive it


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _parsed(parse: Callable[[Any], Any]) -> Any:
    """A click callback running a library parser: its `InputError` is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(value)
        except InputError as e:
            raise click.BadParameter(e.message, ctx, param) from e

    return callback


def _o(cls: Any, name: str, *flags: str, **kw: Any) -> Any:
    """The option of field ``name`` of settings class ``cls`` (its `option_spec`)."""
    spec = option_spec(cls, name)
    parse = spec.pop("parse")
    kw = {**spec, "callback": _parsed(parse) if parse else None, **kw}
    flags = flags or (("-o", "--output") if name == "output" else (_flag(name),))
    return click.option(*flags, name, **kw)


def _options(cls: Any, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Every option of settings class ``cls`` (its fields documented with `setting`)."""

    def decorate(f: Any) -> Any:
        for name in reversed(setting_names(cls, skip)):
            f = _o(cls, name)(f)
        return f

    return decorate


def _checked_endpoints(value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    """An endpoint option's value (None: not given) or a repeatable one's (its entries split
    at commas), each checked by `protocol.check_endpoint` (the ``tcp://host:port`` hint)."""
    if isinstance(value, tuple):
        return endpoints_setting(value, "endpoint")
    return None if value is None else check_endpoint(value)


def _endpoint(*flags: str, help: str = "Broker endpoint.", **kw: Any) -> Any:
    kw = {"default": BrokerSettings.bind, "show_default": True, "help": help, **kw}
    kw.setdefault("callback", _parsed(_checked_endpoints))
    return click.option(*(flags or ("--endpoint",)), envvar=ENDPOINT_ENV, show_envvar=True, **kw)


def _endpoints(**kw: Any) -> Any:
    """``--endpoint``, repeatable or comma-separated: one broker or several (a tuple)."""
    many = "Broker endpoint; repeat it (or comma-separate) for several brokers."
    kw = {"multiple": True, "default": (BrokerSettings.bind,), "help": many, **kw}
    return _endpoint(**kw)


def _curve_options(f: Any) -> Any:
    f = click.option("--curve-server-key", type=KEY, help="Broker public key (enables CURVE).")(f)
    own = "This peer's secret key file (from `zmq-ik keygen`)."
    return click.option("--curve-secret-key", "curve_own", type=KEY, help=own)(f)


def _curve(options: dict[str, Any]) -> Any:
    """The CURVE keys of `_curve_options` (taken out of ``options``), or None."""
    from zmq_ik.security import CurveClient

    server_key, own = options.pop("curve_server_key"), options.pop("curve_own")
    try:
        return CurveClient.from_files(server_key, own) if server_key else None
    except (OSError, ValueError) as e:  # a public key given as the secret one, a bad file
        raise click.BadParameter(str(e), param_hint="--curve-server-key/--curve-secret-key") from e


def _broker_curve_options(f: Any) -> Any:
    """The broker's CURVE options (`broker`, `serve`): its secret key, who may connect."""
    keydir = click.Path(exists=True, file_okay=False)
    f = _o(B, "worker_keys", type=keydir, help="Public keys of workers (they may register).")(f)
    f = _o(B, "allow_keys", type=keydir, help="Public keys of clients (requests only).")(f)
    return _o(B, "curve_secret_key", type=KEY, help="Broker secret key file (enables CURVE).")(f)


def _settings(make: Callable[..., Any], *args: Any, **values: Any) -> Any:
    """``make(*args, **values)``, its `InputError` a usage error naming the option."""
    try:
        return make(*args, **values)
    except InputError as e:
        hint = _flag(e.field) if e.field in values else None
        raise click.BadParameter(e.message, param_hint=hint) from e


# --------------------------------------------------------------------------- commands


@main.command()
@_endpoint("--bind", "bind", help="Endpoint for clients and workers.")
@_o(B, "worker_bind", help="A separate endpoint for workers (default: they use --bind).")
@_o(B, "heartbeat_interval", metavar="SECONDS", help="Heartbeat interval, seconds.")
@_o(B, "liveness", help="Missed heartbeats before a worker is dead.")
@_o(B, "watched_silence", help="Silence (s) before a worker with a watch connection is dead.")
@_o(B, "max_queue", help="Waiting requests per robot before 'overloaded'.")
@_o(B, "max_open_jobs", help="Open requests over all robots before 'overloaded'.")
@_o(B, "max_queued_bytes", help="Bytes of open requests and unread replies before 'overloaded'.")
@_o(B, "max_client_bytes", help="One client's share of --max-queued-bytes.")
@_o(B, "max_workers", help="Registered workers before a new READY gets 'overloaded'.")
@_o(B, "max_retries", help="Re-dispatches of a request whose worker died.")
@_o(B, "shutdown_grace", metavar="SECONDS", help="Seconds in-flight work may finish on shutdown.")
@_broker_curve_options
def broker(**options: Any) -> None:
    """Run the broker (Ctrl-C or SIGTERM: drain in-flight work, exit 0)."""
    from zmq_ik.broker import Broker

    try:
        b = Broker(_settings(BrokerSettings, **options))
    except (OSError, ValueError) as e:  # cannot bind, bad keys: the same on every restart
        raise ConfigError(str(e)) from e
    raise_fd_limit_logged(peers=True)
    b.install_signal_handlers()
    b.run()


@main.command()
@_endpoint("--connect", "connect", multiple=True, default=(W.connect,), help=SERVE_SEVERAL)
@_o(W, "heartbeat_interval", metavar="SECONDS", help="Heartbeat interval, seconds.")
@_o(W, "liveness", help="Missed broker heartbeats before reconnecting.")
@click.option(
    "--config",
    metavar="JSON",
    help="The worker's settings as a JSON object, given as text ('{\"robots\": ...}', as "
    "`serve` passes them) or as a file holding it; its keys are the options' names with "
    "underscores (robots, ee_links, buckets...). Options given as well override it.",
)
@_options(S)
@_curve_options
@click.pass_context
def worker(ctx: click.Context, connect: tuple[str, ...], config: str | None, **opts: Any) -> None:
    """Run a worker: load robots, compile, say READY, serve until SIGTERM."""
    from zmq_ik.worker import Worker, run_as_process

    beat, liveness = opts.pop("heartbeat_interval"), opts.pop("liveness")
    conn = _settings(W, connect=connect, heartbeat_interval=beat, liveness=liveness)
    conn = replace(conn, curve=_curve(opts))
    src = ctx.get_parameter_source
    given = {k: v for k, v in opts.items() if src(k) is ParameterSource.COMMANDLINE}
    settings = _settings(replace, _settings(S.from_json, config) if config else S(), **given)
    try:
        service = build_service(settings)
    except InputError as e:
        raise click.BadParameter(e.message, param_hint=_flag(e.field or "robots")) from e
    code = run_as_process(Worker(service, conn))  # a robot that does not load: 78
    if code:  # 130 after SIGINT
        raise click.exceptions.Exit(code)


def _asking(f: Any, wait: float = 2.0) -> Any:
    """The options of commands that ask the broker: endpoint, timeout (``wait`` seconds by
    default), --json, CURVE."""
    f = _curve_options(click.option("--json", "json_", is_flag=True, help="JSON output.")(f))
    timeout = {"default": wait, "show_default": True, "callback": _parsed(check_timeout)}
    timeout["metavar"] = "SECONDS"
    f = click.option("--timeout", help="Seconds to wait for an answer.", **timeout)(f)
    return _endpoints()(f)


@main.command()
@_asking
@click.option("--count", default=1, type=click.IntRange(min=1), help="Pings per broker.")
def ping(endpoint: tuple[str, ...], timeout: float, json_: bool, count: int, **curve: Any) -> None:
    """Is each broker there, which workers serve what, how fast. Exit 1 if one does not answer."""
    connect = partial(IKClient, timeout=timeout, retries=0, curve=_curve(curve))
    for line, err in ping_brokers(endpoint, count, json_, connect):
        click.echo(line, err=err)


@main.command()
@_asking
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def status(
    endpoint: tuple[str, ...], timeout: float, json_: bool, watch: bool, **curve: Any
) -> None:
    """Workers, queues, in-flight requests and counters, as each broker sees them."""
    connect = partial(IKClient, timeout=timeout, retries=0, curve=_curve(curve))
    try:
        for screen in status_screens(endpoint, watch, json_, connect):
            if watch and not json_:
                click.clear()
            click.echo("\n".join(screen))
    except KeyboardInterrupt:  # the way --watch ends
        if not watch:
            raise


@main.command(context_settings={"ignore_unknown_options": True})  # -0.5,... is a vector
@click.argument("robot")
@click.argument("joints", nargs=-1, required=True, callback=_parsed(parse_joint_vectors))
@click.option("--ee-links", help="End effectors, comma-separated (default: the worker's).")
@partial(_asking, wait=10.0)  # end effectors not warmed up compile on their first request
def fk(
    robot: str,
    joints: list[list[float]],
    ee_links: str | None,
    endpoint: tuple[str, ...],
    timeout: float,
    json_: bool,
    **curve: Any,
) -> None:
    """End-effector poses of ROBOT for JOINTS vectors Q1,Q2,... (chain after chain, root to tip)."""
    links = ee_links.split(",") if ee_links else None
    with IKClient(",".join(endpoint), timeout=timeout, curve=_curve(curve)) as client:
        click.echo(fk_text(client, robot, joints, links, json_))


@main.command()
@_endpoint("--bind", "bind", help="Broker endpoint.")
@_options(ServeSettings, skip=("bind", "curve_secret_key", "allow_keys", "worker_keys"))
@_broker_curve_options
@_options(S, skip=("gpu",))
@click.pass_context
def serve(ctx: click.Context, **options: Any) -> None:
    """A broker and N workers in one command, supervised (Ctrl-C stops all, exit 0)."""
    settings = _settings(ServeSettings.from_options, **options)
    raise_fd_limit_logged()  # the children inherit it
    verbose = {logging.DEBUG: 1, logging.WARNING: -1}.get(ctx.meta.get(_LEVEL, 0), 0)
    sup = Supervisor(settings, verbose=verbose)
    sup.install_signal_handlers()
    try:
        sup.start()
    except OSError as e:  # the port is taken: nothing was started
        raise ConfigError(str(e)) from e
    sup.run()
    if sup.failed:  # a child's configuration (or usage) error: ours too
        raise ConfigError(sup.failed)


def _computing(f: Any) -> Any:
    """The options `compute` and `demo` share."""
    f = click.option("--json", "json_", is_flag=True, help="Print a machine-readable summary.")(f)
    for name in reversed(COMPUTING):
        f = _o(C, name)(f)
    return f


def _compute(where: Any, opts: dict[str, Any], json_: bool, *inputs: Any, **kw: Any) -> None:
    """Settings and output path checked before ``where`` (the endpoint's context) is entered."""
    from zmq_ik.apps.compute import check_outputs, run_reported

    settings: ComputeSettings = _settings(ComputeSettings, **opts)
    _settings(check_outputs, output=settings.output, plot=settings.plot)
    run_reported(where, settings, *inputs, as_json=json_, echo=click.echo, **kw)


@main.command()
@click.argument("scene_file", type=KEY)
@click.argument("strokes_file", type=KEY)
@_endpoints(help="Broker endpoint; repeat it (or comma-separate): the job fails over.")
@_options(C, skip=COMPUTING)
@_computing
@_curve_options
def compute(
    scene_file: str, strokes_file: str, endpoint: tuple[str, ...], json_: bool, **opts: Any
) -> None:
    """Compute SCENE_FILE + STROKES_FILE (ours or tatbot's format) into a safetensors StrokeBatch."""
    curve = _curve(opts)
    where = nullcontext(",".join(endpoint))  # several: the client fails over between them
    _compute(where, opts, json_, scene_file, strokes_file, curve=curve)


@main.command()
@_endpoint(default=None, help="Use a running broker instead of starting one.")
@_computing
@click.option(
    "--startup-timeout",
    default=STARTUP_TIMEOUT,
    metavar="SECONDS",
    help="Seconds to wait for the local worker to say READY (a cold cache compiles: 10 min "
    "measured on a busy 2-vCPU host).",
)
@_o(S, "buckets", help="Batch buckets the local worker compiles (default: 1,16..1024 on a CPU).")
def demo(endpoint: str | None, json_: bool, startup_timeout: float, **opts: Any) -> None:
    """Compute the bundled example strokes for the bundled tatbot robot, end to end."""
    from zmq_ik.apps.compute import DEMO_TIMEOUT

    local = local_cluster(S(buckets=opts.pop("buckets")), startup_timeout)  # started if used
    _compute(nullcontext(endpoint) if endpoint else local, {"timeout": DEMO_TIMEOUT, **opts}, json_)


@main.command()
@click.argument("strokebatch_file", type=KEY)
@_options(R)
def report(strokebatch_file: str, **opts: Any) -> None:
    """Plot a StrokeBatch file: per-stroke errors against the tolerances, joints against limits."""
    from zmq_ik.apps.plot import report as write_report

    click.echo(write_report(strokebatch_file, _settings(ReportSettings, **opts)))


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--name",
    "names",
    multiple=True,
    default=KEYPAIRS,
    show_default=True,
    help="A keypair to write, NAME.key and NAME.key_secret (repeatable), e.g. one per host.",
)
def keygen(directory: str, names: tuple[str, ...]) -> None:
    """Write CURVE keypairs (NAME.key public, NAME.key_secret secret) into DIRECTORY."""
    from zmq_ik.security import keygen as make_keys

    try:
        pairs = make_keys(directory, names)
    except (OSError, ValueError) as e:  # a key that exists (never replaced), a bad name
        raise click.ClickException(str(e)) from e
    for public, _secret in pairs:
        click.echo(f"wrote {public} (+ secret)")


if __name__ == "__main__":  # pragma: no cover
    main()
