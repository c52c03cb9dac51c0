"""What tunes a worker: `WorkerSettings` (how it connects to its brokers) and `ServiceSettings`
(what it serves and where it computes), with the text forms the CLI takes. Imports no JAX.

`zmq-ik worker` builds both from its options; `zmq-ik serve` builds a `ServiceSettings` and
hands it to every worker as JSON (``worker --config``) instead of rebuilding their command
lines. The service itself is built by `zmq_ik.worker.settings.build_service`."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from zmq_ik.base.checks import as_bool, as_float, as_int, as_str
from zmq_ik.errors import InputError, ProtocolError
from zmq_ik.protocol import (
    BROKER_SERVICE,
    DEFAULT_ENDPOINT,
    LIMITS,
    RECONNECT_MAX,
    Limits,
    check_text,
    endpoints_setting,
)
from zmq_ik.robots.urdf import check_urdf_file, read_regular_file
from zmq_ik.settings import setting
from zmq_ik.settings.ik import IKSettings

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20
"""Largest ``--config`` file read (1 MiB; a real one is a few hundred bytes)."""


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InputError(f"{name} must be a list", name)
    return value


def _text(value: Any, name: str) -> str:
    return str(as_str(value, name, empty=False))


def _texts(value: Any, name: str) -> tuple[str, ...]:
    items = tuple(_text(v, name) for v in _seq(value, name))
    if not items:
        raise InputError(f"{name}: expected at least one name", name)
    return items


def _finite(value: Any, name: str, label: str | None = None) -> tuple[float, ...]:
    label = label or name
    try:
        values = tuple(float(v) for v in _seq(value, name))
    except (TypeError, ValueError) as e:
        raise InputError(f"{label}: expected numbers: {e}", name) from e
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(f"{label}: values must be finite numbers", name)
    return values


def check_robot_name(name: Any) -> str:
    """A name clients can address as a robot: what the broker accepts as a request's service
    (`protocol`'s rule: 1..128 bytes, printable), and not the broker's own."""
    try:
        check_text(str(name).encode(), "robot", LIMITS.max_name_bytes, ascii_only=False)
    except ProtocolError as e:
        raise InputError(f"{name!r} cannot be a robot name: {e.message}", "robots") from e
    if not isinstance(name, str) or name == BROKER_SERVICE:
        raise InputError(f"{name!r} cannot be a robot name (reserved)", "robots")
    return name


# --------------------------------------------------------------------------- text forms


def _pairs(values: Iterable[str], form: str, name: str) -> Iterator[tuple[str, str]]:
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise InputError(f"expected {form}, got {value!r}", name)
        yield key, rest


def parse_robots(values: Iterable[str]) -> dict[str, str]:
    """``NAME=URDF`` options → {name: path}; the name must be addressable, the file a URDF
    the worker will read (`check_urdf_file`, as for robots from ``--config``)."""
    robots = {}
    for name, path in _pairs(values, "NAME=URDF", "robots"):
        robots[check_robot_name(name)] = check_urdf_file(path)
    return robots


def _per_robot(values: Iterable[str], name: str) -> dict[str, list[str]]:
    out = {}
    for robot, items in _pairs(values, "NAME=A[,B...]", name):
        parts = [p.strip() for p in items.split(",")]
        if not all(parts):
            raise InputError(f"expected NAME=A[,B...], got {robot}={items!r}", name)
        out[robot] = parts
    return out


def parse_ee_links(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``NAME=LINK[,LINK...]`` options → {name: links}."""
    return {k: tuple(v) for k, v in _per_robot(values, "ee_links").items()}


def parse_rest(values: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """``NAME=Q1,Q2,...`` options → {name: finite joint values}."""
    return {k: _finite(v, "rest", k) for k, v in _per_robot(values, "rest").items()}


def parse_buckets(text: str | None) -> tuple[int, ...] | None:
    """``16,64`` → (16, 64) (which buckets exist is checked against the engine's)."""
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError as e:
        raise InputError(f"not a list of integers: {e}", "buckets") from e


def parse_warm(values: Iterable[str]) -> tuple[IKSettings, ...]:
    """``preset=tatbot`` or ``precise=false,seeds=8`` options → IKSettings (values read as
    YAML scalars)."""
    from zmq_ik.base.yaml_files import load_yaml_text

    settings = []
    for value in values:
        fields_: dict[str, Any] = {}
        for item in value.split(","):
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise InputError(f"expected KEY=VALUE[,KEY=VALUE...], got {value!r}", "warm")
            fields_[key.strip()] = load_yaml_text(text, f"warm {key.strip()}")
        try:
            settings.append(IKSettings.from_dict(fields_))
        except InputError as e:
            raise InputError(f"{value!r}: {e}", "warm") from e
    return tuple(settings)


def parse_gpus(values: Iterable[str]) -> tuple[int, ...]:
    """``--gpu 0 --gpu 1`` or ``--gpu 0,1`` → (0, 1): GPU indices, >= 0."""
    try:
        gpus = tuple(int(v) for value in values for v in value.split(",") if v.strip())
    except ValueError as e:
        raise InputError(f"expected GPU indices (0, 1, ... or 0,1), got {e}", "gpu") from e
    if any(g < 0 for g in gpus):
        raise InputError(f"GPU indices are >= 0, got {gpus}", "gpu")
    return gpus


def parse_gpu(value: str | None) -> int | None:
    """``0`` → 0: one GPU index (a worker uses one GPU)."""
    gpus = parse_gpus([value] if value else [])
    if len(gpus) > 1:
        raise InputError("a worker uses one GPU (`zmq-ik serve --gpu 0,1` runs one per GPU)", "gpu")
    return gpus[0] if gpus else None


@dataclass(frozen=True)
class ServiceSettings:
    """Everything `zmq-ik worker` takes besides its connection; each default is here once."""

    gpu: int | None = setting(
        None,
        metavar="N",
        parse=parse_gpu,
        doc="GPU index to pin (CUDA_VISIBLE_DEVICES); default: the CPU.",
    )
    require_gpu: bool = setting(
        False, doc="Exit 78 instead of running on the CPU when JAX sees no GPU."
    )

    robots: Mapping[str, str] = setting(
        factory=dict,
        metavar="NAME=URDF",
        parse=parse_robots,
        repeat=True,
        doc="A robot to serve (repeatable); default: the bundled tatbot.",
    )
    ee_links: Mapping[str, tuple[str, ...]] = setting(
        factory=dict,
        metavar="NAME=LINK[,LINK...]",
        parse=parse_ee_links,
        repeat=True,
        doc="Default end effectors of a robot (repeatable): used when a request names none, "
        "compiled before READY. The bundled tatbot has its two needles.",
    )
    rest: Mapping[str, tuple[float, ...]] = setting(
        factory=dict,
        metavar="NAME=Q1,Q2,...",
        parse=parse_rest,
        repeat=True,
        doc="Default rest pose of a robot, one value per joint of its default end effectors in "
        "chain order (default: tatbot's ready pose; other robots: mid-range).",
    )
    cache_dir: str | None = setting(
        None,
        metavar="DIR",
        doc="JAX compilation cache directory [default: $ZMQ_IK_CACHE_DIR or ~/.cache/zmq-ik/jax].",
    )
    buckets: tuple[int, ...] | None = setting(
        None,
        metavar="N[,N...]",
        parse=parse_buckets,
        doc="Batch buckets to compile, from 1,16,32,...,16384 (default: 1,16..1024 on a CPU, "
        "all on a GPU).",
    )
    warm: tuple[IKSettings, ...] = setting(
        (),
        metavar="SETTINGS",
        parse=parse_warm,
        repeat=True,
        doc="IK settings whose programs are warmed up besides the default one (one bucket "
        "before READY, the others right after), e.g. 'preset=tatbot' (tatbot's own mode) or "
        "'precise=false,seeds=8' (repeatable; only precise and, without it, seeds pick a "
        "program). Others compile on first use (logged, and the client is told).",
    )
    max_extra_compiles: int = setting(
        32,
        doc="Programs compiled (and solvers built) on demand after READY, for client-chosen "
        "settings or end effectors, before all of them are dropped again: bounds the "
        "worker's memory.",
    )
    echo: bool = setting(False, doc="Serve the no-IK echo service (tests, transport benchmarks).")
    echo_warmup: float = setting(
        0.0,
        metavar="SECONDS",
        doc="How long the echo service's warm-up takes, reported in 4 steps like compiled "
        "buckets (tests of warm-up reporting).",
    )

    def __post_init__(self) -> None:
        # Also the check of a config read from JSON: every field is validated here.
        def mapping(value: Any, name: str) -> dict[str, Any]:
            if not isinstance(value, Mapping):
                raise InputError(f"{name} must be a mapping by robot name", name)
            return {check_robot_name(k): v for k, v in value.items()}

        put = object.__setattr__
        robots = mapping(self.robots, "robots").items()
        put(self, "robots", {k: check_urdf_file(_text(v, "robots")) for k, v in robots})
        put(
            self,
            "ee_links",
            {k: _texts(v, "ee_links") for k, v in mapping(self.ee_links, "ee_links").items()},
        )
        put(self, "rest", {k: _finite(v, "rest") for k, v in mapping(self.rest, "rest").items()})
        if self.cache_dir is not None:
            put(self, "cache_dir", _text(self.cache_dir, "cache_dir"))
        if self.buckets is not None:
            put(
                self,
                "buckets",
                tuple(as_int(b, "buckets", 1) for b in _seq(self.buckets, "buckets")),
            )
        warm = _seq(self.warm, "warm")
        put(
            self,
            "warm",
            tuple(w if isinstance(w, IKSettings) else IKSettings.from_dict(w) for w in warm),
        )
        put(self, "max_extra_compiles", as_int(self.max_extra_compiles, "max_extra_compiles", 1))
        put(self, "echo_warmup", as_float(self.echo_warmup, "echo_warmup", 0.0, hi=3600.0))
        for name in ("echo", "require_gpu"):
            put(self, name, as_bool(getattr(self, name), name))
        if self.gpu is not None:
            put(self, "gpu", as_int(self.gpu, "gpu", 0))

    def to_json(self) -> str:
        data = asdict(self)
        data["warm"] = [w.to_dict() for w in self.warm]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServiceSettings:
        """Settings from JSON text, or from a file holding it; unknown keys are refused."""
        source = "--config"
        if not text.lstrip().startswith(("{", "[")):
            source = text
            try:
                text = read_regular_file(text, MAX_CONFIG_BYTES).decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read {source}: {e}", "config") from e
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"{source}: not valid JSON: {e}", "config") from e
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object", "config")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}", "config")
        return cls(**data)


@dataclass(frozen=True)
class WorkerSettings:
    """Everything that tunes a worker's connections; the CLI builds one from its flags."""

    connect: str | Sequence[str] = DEFAULT_ENDPOINT
    """Broker endpoint, or several (a sequence, or one string with commas): the worker
    registers with each and serves them all, one job at a time."""
    heartbeat_interval: float = 0.25
    """Seconds between heartbeats to each broker."""
    liveness: int = 4
    """Heartbeat intervals of silence from a broker before reconnecting to it."""
    reconnect_min: float = 0.25
    """First reconnect delay (seconds); doubles while the broker stays silent, and starts
    afresh once a broker has answered (each outage backs off from the start)."""
    reconnect_max: float = RECONNECT_MAX
    """Cap on the reconnect delay."""
    limits: Limits = field(default_factory=Limits)
    """Protocol limits enforced on requests."""
    curve: Any = None
    """`zmq_ik.security.CurveClient` keys, or None for plaintext."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "connect", endpoints_setting(self.connect, "connect"))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The brokers to serve, from ``connect`` (`protocol.split_endpoints`)."""
        return tuple(self.connect)
