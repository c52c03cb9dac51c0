"""Every YAML read goes through here: libyaml's C loader when PyYAML has it (`YAML_LOADER`),
and a file of `BIG_YAML_BYTES` or more is logged with its size, then its reading time."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from zmq_ik.errors import InputError

logger = logging.getLogger(__name__)

YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""The safe loader every YAML input goes through: libyaml's C one when PyYAML has it (about
4x faster on a big strokes file), else the pure-Python one; both build the same objects."""
BIG_YAML_BYTES = 1 << 20
"""Files at least this big are logged (size, then seconds) at INFO: loading takes seconds."""


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """A YAML file's document (`YAML_LOADER`); missing/unreadable/invalid files raise
    InputError naming it. A big file is logged before and after (size, seconds)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read file: {exc}") from None
    size = len(text)
    if size < BIG_YAML_BYTES:
        return load_yaml_text(text, str(p))
    logger.info("reading %s (%.1f MB of YAML)...", p, size / 1e6)
    t0 = time.monotonic()
    data = load_yaml_text(text, str(p))
    logger.info("read %s in %.1f s", p, time.monotonic() - t0)
    return data


def load_yaml_text(text: str, source: str) -> Any:
    """``text``'s YAML document (`YAML_LOADER`); invalid YAML raises InputError naming
    ``source``."""
    try:
        return yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {exc}") from None
