"""`setting`: a settings-dataclass field documented once, for the API and the command line.

The CLI builds each option from the field: its default, its ``doc`` as the help text, and
its text form (``parse``: the option's string(s) → the field's value, raising `InputError`;
``metavar``; ``repeat``: the option may be given several times).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, field
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
