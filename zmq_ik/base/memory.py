"""Handing freed heap back to the operating system."""

from __future__ import annotations

import ctypes


def malloc_trim() -> None:
    """Give freed heap back to the OS (glibc's ``malloc_trim(0)``); a no-op elsewhere.

    Freed memory is reused by the process either way, but without this glibc keeps much of
    it mapped, so RSS stays at its peak after large allocations go.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is still reused, just not returned
        pass
