"""`documented`: a class decorator that makes attribute docstrings visible to ``help()``.

A string literal right after a field is what editors show on hover, but ``help()`` and
``pydoc`` never see it. The decorator reads the class's source once and appends those
docstrings to the class docstring as its ``Attributes:`` section, so each field stays
documented in one place (beside the field) and reads everywhere. Without source (a frozen
app, a zip without ``.py`` files) the docstring is left as it is.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import sys
import textwrap
from functools import cache
from typing import TypeVar

T = TypeVar("T", bound=type)


@cache
def _module_field_docs(module_name: str) -> dict[str, dict[str, str]]:
    """Per top-level class of ``module_name``: its fields' docstrings, in source order."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    except (OSError, TypeError, KeyError, SyntaxError):
        return {}
    out: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        for field, doc in itertools.pairwise(node.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(doc.value.value)
        out[node.name] = docs
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings of ``cls``'s fields (a string literal right after the field)."""
    return dict(_module_field_docs(cls.__module__).get(cls.__qualname__, {}))


def documented(cls: T) -> T:
    """Append ``cls``'s field docstrings to its docstring as an ``Attributes:`` section."""
    docs = field_docs(cls)
    if docs:
        lines = [inspect.cleandoc(cls.__doc__ or cls.__name__), "", "Attributes:"]
        for name, doc in docs.items():
            head, sub = f"    {name}: ", " " * 8
            lines.append(
                textwrap.fill(" ".join(doc.split()), 92, initial_indent=head, subsequent_indent=sub)
            )
        cls.__doc__ = "\n".join(lines)
    return cls
