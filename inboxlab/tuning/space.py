"""Search spaces over policy files: which dotted keys of a policy TOML vary, and how.

Owns the space file format (``fixtures/tuning/*.toml``), sampling (Latin hypercube,
neighbours for local refinement, both on an injected numpy ``Generator``), applying a point
to a policy's TOML mapping, and writing a policy mapping back as TOML. Must not run
simulations or decide which point wins (``inboxlab.tuning.search``).

Space file::

    description = "..."
    [params."breaker.bounce_review"]          # any scalar key of the policy file
    low = 0.02
    high = 0.08
    [params."shaping.default.messages_per_second"]
    low = 2.0
    high = 20.0
    log = true                                # sample on a log scale
    [params."lanes.lifecycle.weight"]
    choices = [1.0, 3.0, 6.0]
    [params."warmup.conservative.caps_scale"]  # derived: multiply every daily cap
    low = 0.8
    high = 2.0
    [params."warmup.conservative.caps_max"]    # derived: clip every daily cap
    type = "int"
    low = 5000
    high = 50000

Quoted segments name keys holding dots: ``shaping.override."mkt-b.gmail".messages_per_second``.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError

DERIVED = ("caps_scale", "caps_max")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class Param:
    """One searched key: a float/int range (optionally log-scaled) or a list of choices."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def from_unit(self, u: float) -> Any:
        """Map ``u`` in [0, 1] to a value of this parameter."""
        u = min(max(u, 0.0), 1.0)
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return round(v) if self.kind == "int" else round(v, 6)

    def to_unit(self, value: Any) -> float:
        """Inverse of ``from_unit`` (the middle of a choice's cell)."""
        if self.kind == "choice":
            return (self.choices.index(value) + 0.5) / len(self.choices)
        if self.high == self.low:
            return 0.5
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high)
                                                               - math.log(self.low))
        return (float(value) - self.low) / (self.high - self.low)


@dataclass(frozen=True, slots=True)
class Space:
    """A loaded search space."""

    file: str
    description: str
    params: tuple[Param, ...]

    def point(self, unit: np.ndarray) -> dict[str, Any]:
        return {p.key: p.from_unit(float(u)) for p, u in zip(self.params, unit, strict=True)}

    def unit(self, point: dict[str, Any]) -> np.ndarray:
        return np.array([p.to_unit(point[p.key]) for p in self.params])


def split_key(dotted: str) -> list[str]:
    """``a."b.c".d`` -> ``["a", "b.c", "d"]``; raises ``ValueError`` on a bad key."""
    if not dotted or dotted.count('"') % 2:
        raise ValueError(f"bad dotted key {dotted!r}")
    parts = re.findall(r'"([^"]*)"|([^."]+)', dotted)
    out = [q or b for q, b in parts]
    if not out or any(not p for p in out) or ".." in dotted or dotted.endswith("."):
        raise ValueError(f"bad dotted key {dotted!r}")
    return out


def _param(key: str, spec: Any, file: str) -> Param:
    where = f"params.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(file, where, "expected a table with low/high or choices")
    unknown = set(spec) - {"low", "high", "log", "choices", "type"}
    if unknown:
        raise ConfigError(file, f"{where}.{sorted(unknown)[0]}", "unknown key "
                          "(expected low, high, log, choices, type)")
    if "choices" in spec:
        ch = spec["choices"]
        if not isinstance(ch, list) or not ch:
            raise ConfigError(file, f"{where}.choices", "expected a non-empty list")
        return Param(key, "choice", choices=tuple(ch))
    for k in ("low", "high"):
        v = spec.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(file, f"{where}.{k}", f"expected a number, got {v!r}")
    low, high = float(spec["low"]), float(spec["high"])
    if high < low:
        raise ConfigError(file, where, f"high {high} is below low {low}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(file, f"{where}.log", "expected true or false")
    if log and low <= 0:
        raise ConfigError(file, f"{where}.log", "a log scale needs low > 0")
    kind = spec.get("type", "int" if isinstance(spec["low"], int)
                    and isinstance(spec["high"], int) else "float")
    if kind not in ("int", "float"):
        raise ConfigError(file, f"{where}.type", f"expected int or float, got {kind!r}")
    return Param(key, kind, low, high, log)


def load_space(path: str | Path) -> Space:
    """Read and check a space file; raises ``ConfigError(file, key, reason)``."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(file, "", "space file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(file, "params", "expected at least one [params.\"<dotted key>\"]")
    extra = set(raw) - {"params", "description"}
    if extra:
        raise ConfigError(file, sorted(extra)[0], "unknown key (expected params, description)")
    out = []
    for key, spec in params.items():
        try:
            split_key(key)
        except ValueError as exc:
            raise ConfigError(file, f"params.{key}", str(exc)) from None
        out.append(_param(key, spec, file))
    return Space(file, str(raw.get("description", "")), tuple(out))


def latin_hypercube(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points in the unit cube, one per stratum of every dimension."""
    cells = np.stack([rng.permutation(n) for _ in range(dims)], axis=1)
    return (cells + rng.random((n, dims))) / n


def neighbour(unit: np.ndarray, step: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian step of scale ``step`` from ``unit``, kept inside the cube by reflection."""
    x = unit + rng.normal(0.0, step, unit.shape)
    x = np.abs(x)
    return np.where(x > 1.0, 2.0 - x, x).clip(0.0, 1.0)


def check_against(space: Space, policy: dict[str, Any], policy_file: str) -> None:
    """Every key of ``space`` must exist in the base policy (derived keys: their plan)."""
    for p in space.params:
        parts = split_key(p.key)
        derived = len(parts) == 3 and parts[0] == "warmup" and parts[2] in DERIVED
        path = parts[:2] if derived else parts
        node: Any = policy
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(space.file, f"params.{p.key}",
                                  f"{policy_file} has no key {'.'.join(path)}")
            node = node[part]
        if not derived and isinstance(node, (dict, list)):
            raise ConfigError(space.file, f"params.{p.key}", "not a scalar key of the policy")


def apply(policy: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``policy`` with ``point``'s values set (derived keys rewrite caps)."""
    out = copy.deepcopy(policy)
    scales = {k: v for k, v in point.items() if split_key(k)[-1] == "caps_scale"}
    for key, value in sorted(point.items(), key=lambda kv: kv[0] in scales, reverse=True):
        parts = split_key(key)
        if len(parts) == 3 and parts[0] == "warmup" and parts[2] in DERIVED:
            caps = out["warmup"][parts[1]]["caps"]
            for prov, days in caps.items():
                if parts[2] == "caps_scale":
                    caps[prov] = [max(1, round(d * float(value))) for d in days]
                else:
                    caps[prov] = [min(int(d), int(value)) for d in days]
            continue
        node = out
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return out


def _tkey(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _tval(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_tval(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_tkey(k)} = {_tval(x)}" for k, x in v.items()) + " }"
    raise ValueError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict[str, Any], header: str = "") -> str:
    """Write a policy mapping as TOML: scalars first, then one ``[table]`` per nested table;
    tables whose values are all scalars or lists inside a lane (``retry``) stay inline."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []

    def table(node: dict[str, Any], path: list[str]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict) or _inline(path, k)}
        subs = {k: v for k, v in node.items() if k not in scalars}
        if path and (scalars or not subs):
            lines.append("")
            lines.append("[" + ".".join(_tkey(p) for p in path) + "]")
        for k, v in scalars.items():
            lines.append(f"{_tkey(k)} = {_tval(v)}")
        for k, v in subs.items():
            table(v, [*path, k])

    table(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def _inline(path: list[str], key: str) -> bool:
    # ``retry = {...}`` inside a lane and ``caps = {...}`` inside a warmup plan stay inline.
    return (len(path) == 2 and path[0] == "lanes" and key == "retry") or \
        (len(path) == 2 and path[0] == "warmup" and key == "caps")
