"""What the data model's classes share: value equality for classes holding arrays
(`ValueEq`), named dimensions (`Dim`), `init_with` (constructors that also take the two-arm
spellings) and the check of IK errors (YAML reading: `zmq_ik.base.yaml_files`)."""

from __future__ import annotations

import functools
import math
from dataclasses import fields
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from zmq_ik.base.checks import SMALL
from zmq_ik.errors import InputError


def arrays_equal(a: npt.NDArray[Any] | None, b: npt.NDArray[Any] | None) -> bool:
    """Equal shapes and values (NaN == NaN); two ``None`` are equal."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


class ValueEq:
    """Equality of a data-model dataclass by value: fields equal, an array field by
    `arrays_equal` (shape and values, NaN == NaN). Unhashable (numpy arrays are mutable)
    unless the class defines ``__hash__`` itself."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        for f in fields(self):  # type: ignore[arg-type]
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not arrays_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    # Defining __eq__ leaves __hash__ None here, and in subclasses that do not define one.


class Dim:
    """A read-only ``int`` attribute: the length of axis ``axis`` of the array field
    ``array`` (a batch's pairs, poses per stroke, ...), with ``doc`` as its docstring."""

    def __init__(self, array: str, axis: int, doc: str) -> None:
        self.array = array
        self.axis = axis
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Dim: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> int: ...
    def __get__(self, obj: object, owner: type | None = None) -> int | Dim:
        if obj is None:
            return self
        return int(getattr(obj, self.array).shape[self.axis])

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError("read-only: it follows the array's shape")


def init_with(cls: type, fold: Any) -> None:
    """Let ``cls``'s constructor take the two-arm spellings that ``fold`` turns into its
    fields (``Scene(ready_l=...)``, ``StrokeBatch(ee_pos_l=...)``): code written for two arms
    keeps working."""
    init = vars(cls)["__init__"]  # the dataclass's own

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **fold(kwargs))

    cls.__init__ = __init__  # type: ignore[misc]


def check_errors(arr: npt.NDArray[np.float32], name: str) -> None:
    """IK errors are >= 0, or NaN where unknown (never inf)."""
    if arr.size <= SMALL:  # NaN compares False: allowed
        bad = any(v < 0 or v == math.inf for v in arr.ravel().tolist())
    else:
        bad = bool(np.isinf(arr).any() or (arr < 0).any())
    if bad:
        raise InputError(f"{name}: must be >= 0 or NaN (unknown), never inf", field=name)
