"""A small TOML writer for calibrated model files (nested tables of plain values).

Owns ``dumps``: a mapping of str -> (bool | int | float | str | list | mapping) as TOML text,
scalars first in each table, sub-tables as ``[a.b]`` headers, lists of tables inline.
Must not touch files or know anything about models.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _table(data: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    subs = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    plain = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    if path and (plain or not subs):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for k, v in plain:
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in subs:
        _table(v, (*path, k), lines)


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """``data`` as TOML text, preceded by ``header`` as ``#`` comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"
