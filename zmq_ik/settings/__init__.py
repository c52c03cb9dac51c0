"""Every settings class lives here, one module per part, each field documented once for the
API and the command line:

- `zmq_ik.settings.ik`: `IKSettings`, how a solve runs (sent with each request);
- `zmq_ik.settings.broker`: `BrokerSettings`, what tunes a broker;
- `zmq_ik.settings.worker`: `ServiceSettings`, what a worker serves and where it computes;
- `zmq_ik.settings.apps`: `ComputeSettings`, `ReportSettings`, `ServeSettings`.

This module holds `setting`, the field helper. The CLI builds each option from the field:
its default, its ``doc`` as the help text, and its text form (``parse``: the option's
string(s) → the field's value, raising `InputError`; ``metavar``; ``repeat``: the option may
be given several times). It imports nothing, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Any


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    metavar: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    repeat: bool = False,
) -> Any:
    """A dataclass field with ``default`` (or ``factory``) and its documentation."""
    metadata = {"doc": doc, "metavar": metavar, "parse": parse, "repeat": repeat}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def option_spec(cls: Any, name: str) -> dict[str, Any]:
    """What the command-line option of field ``name`` of settings dataclass ``cls`` takes from
    the field: its default, help, metavar, whether it repeats, is a flag (a bool default) or
    shows its default, its type (``float | None``: a float, unset by default) and its
    ``parse`` (None: none)."""
    f = cls.__dataclass_fields__[name]
    m, default = f.metadata, None if f.default is MISSING else f.default
    return {
        "default": default,
        "help": m.get("doc"),
        "metavar": m.get("metavar"),
        "multiple": m.get("repeat"),
        "show_default": default is not None and not isinstance(default, bool),
        "is_flag": isinstance(default, bool) or None,
        "type": float if str(f.type) == "float | None" else None,
        "parse": m.get("parse"),
    }


def setting_names(cls: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """The fields of settings dataclass ``cls`` declared with `setting` (each has an option),
    in order, but those in ``skip``."""
    return [f.name for f in fields(cls) if "doc" in f.metadata and f.name not in skip]
