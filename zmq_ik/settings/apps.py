"""What tunes the applications (`zmq_ik.apps`), each default here once and each option of
their subcommands built from these fields: `ComputeSettings` (``zmq-ik compute``/``demo``),
`ReportSettings` (``zmq-ik report``), `ServeSettings` (``zmq-ik serve``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from zmq_ik.base.checks import as_int, check_output
from zmq_ik.errors import InputError
from zmq_ik.protocol import endpoints_setting
from zmq_ik.settings import setting
from zmq_ik.settings.broker import BrokerSettings, check_bind_endpoint
from zmq_ik.settings.ik import ORI_TOL, POS_TOL, check_tolerance
from zmq_ik.settings.worker import ServiceSettings, parse_gpus

PLOT_INSTALL = 'pip install matplotlib (in a checkout: pip install -e ".[plot]")'
"""How to get matplotlib, the one optional dependency of plots."""


@dataclass(frozen=True)
class ComputeSettings:
    """Everything `zmq-ik compute` takes besides its inputs; each default is here once."""

    output: str = setting("strokebatch.safetensors", doc="Where to write the StrokeBatch.")
    timeout: float = setting(
        30.0, doc="Seconds per chunk attempt (each request's deadline at the broker and worker)."
    )
    chunk_pairs: int = setting(64, doc="Stroke pairs per concurrent chunk request.")
    max_in_flight: int = setting(8, doc="Chunk requests outstanding at once.")
    resample: bool = setting(
        False, doc="Resample strokes of another length to the scene's stroke_length (linear)."
    )
    errors: bool = setting(
        False,
        doc="Also write the pos_err/ori_err tensors, as StrokeBatch.save(errors=True) "
        "(tatbot's StrokeBatch.load refuses a file with them).",
    )
    strict: bool = setting(
        False,
        doc="Exit 1 unless every pose is within tolerance (unknown errors count as misses) "
        "and every joint within its limits; the file is then written to OUTPUT.rejected "
        "instead, never to OUTPUT.",
    )
    pos_tol: float | None = setting(
        None,
        doc=f"Position tolerance, metres (default: the scene's pos_tol, {POS_TOL:g} = 0.1 mm).",
    )
    ori_tol: float | None = setting(
        None, doc=f"Orientation tolerance, radians (default: the scene's ori_tol, {ORI_TOL:g})."
    )
    stream: str | None = setting(
        None,
        doc="Also write each slice as soon as it and every earlier one are computed, for a "
        "robot process to execute while the rest computes: DIR/slice-START.safetensors "
        "(tatbot's tensors, renamed into place whole) and one JSON line per slice appended to "
        "DIR/slices.jsonl. Chunks then start at one pair and grow to 64.",
        metavar="DIR",
    )
    plot: str | None = setting(
        None,
        doc="Also write a PNG report (per-stroke errors against the tolerances, joints "
        "against their limits, the verdict) and print the strokes to look at, as `zmq-ik "
        f"report` does (needs matplotlib: {PLOT_INSTALL}).",
        metavar="PNG",
    )

    def __post_init__(self) -> None:
        from zmq_ik.base.checks import as_bool, as_int
        from zmq_ik.client import check_timeout

        put = object.__setattr__
        put(self, "timeout", check_timeout(self.timeout))
        for name in ("chunk_pairs", "max_in_flight"):
            put(self, name, as_int(getattr(self, name), name, 1))
        for name in ("pos_tol", "ori_tol"):
            if getattr(self, name) is not None:
                put(self, name, check_tolerance(getattr(self, name), name))
        for name in ("resample", "errors", "strict"):
            put(self, name, as_bool(getattr(self, name), name))


@dataclass(frozen=True)
class ReportSettings:
    """Everything `zmq-ik report` takes besides the file; each default is here once."""

    output: str = setting("report.png", doc="Where to write the PNG report.")
    scene: str | None = setting(
        None,
        doc="The scene the file was computed for: its robot, end effectors, tolerances and "
        "solve mode.",
        metavar="YAML",
    )
    robot: str | None = setting(
        None,
        doc="Where the joint limits come from: a bundled robot's name or a URDF file, with "
        "the scene's end effectors (default: the scene's robot, which must then be bundled).",
        metavar="NAME|URDF",
    )
    pos_tol: float | None = setting(
        None, doc=f"Position tolerance, metres (default: the scene's; {POS_TOL:g} = 0.1 mm)."
    )
    ori_tol: float | None = setting(
        None, doc=f"Orientation tolerance, radians (default: the scene's; {ORI_TOL:g})."
    )

    def __post_init__(self) -> None:
        for name in ("pos_tol", "ori_tol"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_tolerance(getattr(self, name), name))
        check_output(self.output, example="report.png")  # before any work: a typo costs none


def parse_count(value: str | None) -> int | None:
    """``2`` → 2 (checked by `ServeSettings`)."""
    try:
        return None if value is None else int(value)
    except ValueError as e:
        raise InputError(f"expected a whole number, got {value!r}", "workers") from e


@dataclass(frozen=True)
class ServeSettings:
    """Everything `zmq-ik serve` takes: the broker's endpoint, how many workers on which GPUs,
    and the `ServiceSettings` every worker gets (as JSON, ``worker --config``)."""

    bind: str = setting(BrokerSettings.bind, doc="Broker endpoint; the workers connect to it.")
    workers: int | None = setting(
        None, metavar="N", parse=parse_count, doc="Worker processes [default: one per GPU, or 1]."
    )
    gpus: tuple[int, ...] = setting(
        (),
        metavar="N[,N...]",
        parse=parse_gpus,
        repeat=True,
        doc="GPU indices (repeat or comma-separate); workers are spread over them. "
        "Default: the CPU.",
    )
    connect: tuple[str, ...] = setting(
        (),
        metavar="ENDPOINT",
        repeat=True,
        doc="Another broker the workers also serve, e.g. the one on a second host "
        "(repeat or comma-separate).",
    )
    curve_secret_key: str | None = setting(
        None, metavar="FILE", doc="Broker secret key file (enables CURVE)."
    )
    allow_keys: str | None = setting(None, metavar="DIR", doc="Public keys of clients.")
    worker_keys: str | None = setting(None, metavar="DIR", doc="Public keys of workers.")
    worker_secret_key: str | None = setting(
        None,
        metavar="FILE",
        doc="The local workers' secret key (with CURVE; its NAME.key must be in --worker-keys).",
    )
    worker: ServiceSettings = field(default_factory=ServiceSettings)
    """What every worker serves (its ``gpu`` is set per worker from ``gpus``)."""

    def __post_init__(self) -> None:
        check_bind_endpoint(self.bind)
        # The broker's own checks (CURVE options that need each other), before anything starts.
        BrokerSettings(
            self.bind,
            curve_secret_key=self.curve_secret_key,
            allow_keys=self.allow_keys,
            worker_keys=self.worker_keys,
        )
        if bool(self.curve_secret_key) != bool(self.worker_secret_key):
            raise InputError(
                "the local workers' key (--worker-secret-key FILE) goes with the broker's "
                "(--curve-secret-key FILE): with CURVE, give both; without, neither",
                "worker_secret_key",
            )
        if self.bind.rpartition(":")[2] in ("*", "0") or self.bind == "ipc://*":
            raise InputError(
                f"serve needs a fixed port, got {self.bind!r}: its workers connect to it "
                f"(a wildcard port is for `zmq-ik broker`, which logs the port it got)",
                "bind",
            )
        if self.workers is not None:
            object.__setattr__(self, "workers", as_int(self.workers, "workers", 1))
        if self.connect:
            object.__setattr__(self, "connect", endpoints_setting(self.connect, "connect"))
        object.__setattr__(self, "gpus", tuple(as_int(g, "gpus", 0) for g in self.gpus))
        if self.worker.require_gpu and not self.gpus:
            raise InputError("require_gpu needs GPU indices (--gpu 0,1)", "require_gpu")

    @classmethod
    def from_options(cls, **options: Any) -> ServeSettings:
        """Settings from `zmq-ik serve`'s flat options: its own fields, and those of the
        workers' `ServiceSettings`."""
        own = {f.name for f in fields(cls)} - {"worker"}
        worker = ServiceSettings(**{k: v for k, v in options.items() if k not in own})
        return cls(**{k: v for k, v in options.items() if k in own}, worker=worker)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else max(1, len(self.gpus))
