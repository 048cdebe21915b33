"""Scenario files: what a simulated run contains, read from ``fixtures/scenarios/*.toml``.

Owns ``Scenario`` (audience, traffic streams, incidents, duration, lab config and policy
files) and ``load_scenario``, which checks every key and raises ``ConfigError(file, key,
reason)`` for the first problem. ``scale`` multiplies volumes (list size, arrival rates,
blast sizes), never durations, so tests can run a scenario small.
Must not touch the world, the policy core or any file but the scenario it reads.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config.models import parse_duration
from engine.errors import ConfigError
from engine.policy.types import LANES

SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"
TRAFFIC_KINDS = ("transactional", "newsletter", "lifecycle", "cold")
INCIDENT_KINDS = ("brownout", "dnsbl", "dkim_break", "dns_outage")


@dataclass(frozen=True, slots=True, kw_only=True)
class Audience:
    """The recipient list: size, provider mix and the share of each kind of address."""

    size: int
    mix: Mapping[str, float]
    engaged: float = 0.2
    invalid: float = 0.004
    role: float = 0.01
    role_complaint: float = 0.05
    pristine_traps: float = 0.0
    recycled_traps: float = 0.0
    trap_clusters: int = 0
    catch_all: float = 0.0
    decay_per_month: float = 0.0
    # UTC offset (minutes) -> share of recipients; empty: time zones unknown, so send
    # windows never hold mail back (the core's rule for an unknown offset)
    timezones: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stream:
    """One traffic stream (see ``sim.traffic`` for what each kind does)."""

    kind: str
    tenant: str
    sending_domain: str
    lane: str
    rate_per_hour: float = 0.0
    size: int = 0
    start_s: float = 0.0
    end_s: float | None = None
    every_s: float = 3600.0
    spread_s: float = 0.0
    bursts: tuple[tuple[float, float, float], ...] = ()  # (start_s, duration_s, factor)
    batch: tuple[int, int] = (10, 50)
    growth: float = 1.0
    campaign: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """A fault injected into the world at ``start_s`` for ``duration_s``."""

    kind: str
    start_s: float
    duration_s: float
    provider: str | None = None
    pool: str | None = None
    sending_domain: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole simulated run, as loaded (volumes already multiplied by ``scale``)."""

    name: str
    file: str
    description: str
    lab: Path
    policy: Path | None
    start: float
    duration_s: float
    step_s: float
    audience: Audience
    streams: tuple[Stream, ...]
    incidents: tuple[Incident, ...] = ()
    scale: float = 1.0
    ip_age_days: Mapping[str, float] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def with_policy(self, policy: Path | None) -> Scenario:
        """The same scenario running another policy file (None: the scenario's own)."""
        return self if policy is None else replace(self, policy=policy)


def resolve(name_or_path: str | Path) -> Path:
    """A scenario name of ``fixtures/scenarios`` or a path; raises ``ConfigError``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(str(path), "", "scenario file not found")
        return path
    cand = SCENARIOS_DIR / f"{name_or_path}.toml"
    if not cand.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml")))
        raise ConfigError(str(name_or_path), "", f"unknown scenario (known: {known})")
    return cand


def read_raw(path: Path) -> dict[str, Any]:
    """The scenario file as a TOML mapping (``ConfigError`` on unreadable or bad TOML)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping (lists indexed by number: ``traffic.0.size``)."""
    node: Any = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


class _R:
    """Typed reads of one table with errors naming file and key."""

    def __init__(self, data: Mapping[str, Any], file: str, prefix: str,
                 allowed: tuple[str, ...]) -> None:
        self.data, self.file, self.prefix = data, file, prefix
        if not isinstance(data, Mapping):
            raise ConfigError(file, prefix, "must be a table")
        for key in data:
            if key not in allowed:
                raise ConfigError(file, self.key(key),
                                  f"unknown key (expected one of: {', '.join(allowed)})")

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def has(self, k: str) -> bool:
        return k in self.data

    def num(self, k: str, default: float | None = None, lo: float = 0.0,
            hi: float = float("inf")) -> float:
        v = self.data.get(k, default)
        if v is None:
            raise ConfigError(self.file, self.key(k), "missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.file, self.key(k), f"expected a number, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(self.file, self.key(k), f"{v} is outside [{lo}, {hi}]")
        return float(v)

    def dur(self, k: str, default: float | None = None) -> float:
        v = self.data.get(k, default)
        if v is None:
            raise ConfigError(self.file, self.key(k), "missing")
        try:
            s = float(parse_duration(v))
        except (ValueError, TypeError) as exc:
            raise ConfigError(self.file, self.key(k), f"bad duration {v!r}: {exc}") from None
        if s < 0:
            raise ConfigError(self.file, self.key(k), f"negative duration {v!r}")
        return s

    def str_(self, k: str, default: str | None = None,
             choices: tuple[str, ...] = ()) -> str:
        v = self.data.get(k, default)
        if not isinstance(v, str) or (choices and v not in choices):
            want = " or ".join(choices) if choices else "a string"
            raise ConfigError(self.file, self.key(k), f"expected {want}, got {v!r}")
        return v


def _start(r: _R) -> float:
    v = r.data.get("start", "2026-03-02T00:00:00Z")
    if isinstance(v, dt.datetime):
        when = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
    elif isinstance(v, dt.date):
        when = dt.datetime.combine(v, dt.time(), tzinfo=dt.UTC)
    elif isinstance(v, str):
        try:
            when = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(r.file, "start", f"expected an ISO date-time, got {v!r}") from None
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    else:
        raise ConfigError(r.file, "start", f"expected an ISO date-time, got {v!r}")
    return when.timestamp()


def _audience(data: Any, file: str, scale: float) -> Audience:
    r = _R(data, file, "audience", ("size", "mix", "engaged", "invalid", "role",
                                     "role_complaint", "pristine_traps", "recycled_traps",
                                     "trap_clusters", "catch_all", "decay_per_month",
                                     "timezones"))
    mix = r.data.get("mix")
    if not isinstance(mix, Mapping) or not mix:
        raise ConfigError(file, "audience.mix", "expected a table provider = weight")
    for k, v in mix.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(file, f"audience.mix.{k}", f"expected a weight >= 0, got {v!r}")
    if sum(mix.values()) <= 0:
        raise ConfigError(file, "audience.mix", "weights sum to zero")
    shares = {k: r.num(k, d, 0.0, 1.0) for k, d in (
        ("engaged", 0.2), ("invalid", 0.004), ("role", 0.01), ("role_complaint", 0.05),
        ("pristine_traps", 0.0), ("recycled_traps", 0.0), ("catch_all", 0.0),
        ("decay_per_month", 0.0))}
    if shares["engaged"] + shares["invalid"] + shares["role"] + shares["pristine_traps"] + \
            shares["recycled_traps"] + shares["catch_all"] > 1.0:
        raise ConfigError(file, "audience", "address shares add up to more than 1")
    return Audience(size=max(1, round(r.num("size", lo=1) * scale)),
                    mix={str(k): float(v) for k, v in mix.items()},
                    trap_clusters=int(r.num("trap_clusters", 0)),
                    timezones=_timezones(r.data.get("timezones", {}), file), **shares)


def _timezones(raw: Any, file: str) -> dict[int, float]:
    """``{"-300" = 0.47, ...}``: UTC offsets in minutes (-720..840) -> shares (> 0 in sum)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(file, "audience.timezones", "expected a table \"offset minutes\" = share")
    out: dict[int, float] = {}
    for k, v in raw.items():
        key = f"audience.timezones.{k}"
        try:
            offset = int(str(k))
        except ValueError:
            raise ConfigError(file, key, "expected a UTC offset in minutes, e.g. \"-300\"") \
                from None
        if not -720 <= offset <= 840:
            raise ConfigError(file, key, f"UTC offset {offset} is outside -720..840 minutes")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(file, key, f"expected a share >= 0, got {v!r}")
        out[offset] = float(v)
    if out and sum(out.values()) <= 0:
        raise ConfigError(file, "audience.timezones", "shares sum to zero")
    return out


def _stream(data: Any, file: str, i: int, scale: float) -> Stream:
    r = _R(data, file, f"traffic[{i}]", ("kind", "tenant", "sending_domain", "lane",
                                         "rate_per_hour", "size", "start", "end", "every",
                                         "spread", "bursts", "batch", "growth", "campaign"))
    kind = r.str_("kind", choices=TRAFFIC_KINDS)
    default_lane = {"transactional": "transactional", "newsletter": "lifecycle",
                    "lifecycle": "lifecycle", "cold": "prospecting"}[kind]
    lane = r.str_("lane", default_lane, LANES)
    bursts: list[tuple[float, float, float]] = []
    for j, b in enumerate(r.data.get("bursts", [])):
        br = _R(b, file, f"traffic[{i}].bursts[{j}]", ("start", "duration", "factor"))
        bursts.append((br.dur("start"), br.dur("duration"), br.num("factor", lo=0.0)))
    batch = r.data.get("batch", [10, 50])
    if not (isinstance(batch, list) and len(batch) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in batch)
            and batch[0] <= batch[1]):
        raise ConfigError(file, r.key("batch"), "expected [min, max] positive integers")
    if kind in ("transactional", "lifecycle") and not r.has("rate_per_hour"):
        raise ConfigError(file, r.key("rate_per_hour"), f"missing (needed by a {kind} stream)")
    if kind == "newsletter" and not r.has("size"):
        raise ConfigError(file, r.key("size"), "missing (needed by a newsletter stream)")
    end = r.dur("end") if r.has("end") else None
    return Stream(
        kind=kind, tenant=r.str_("tenant"), sending_domain=r.str_("sending_domain"),
        lane=lane, rate_per_hour=r.num("rate_per_hour", 0.0) * scale,
        size=round(r.num("size", 0) * scale), start_s=r.dur("start", 0), end_s=end,
        every_s=r.dur("every", 3600.0), spread_s=r.dur("spread", 0.0), bursts=tuple(bursts),
        batch=(max(1, round(batch[0] * scale)), max(1, round(batch[1] * scale))),
        growth=r.num("growth", 1.0, 0.0), campaign=r.str_("campaign", kind),
    )


def _incident(data: Any, file: str, i: int) -> Incident:
    r = _R(data, file, f"incidents[{i}]", ("kind", "start", "duration", "provider", "pool",
                                           "sending_domain"))
    kind = r.str_("kind", choices=INCIDENT_KINDS)
    opt = {k: r.str_(k) if r.has(k) else None for k in ("provider", "pool", "sending_domain")}
    if kind in ("brownout", "dns_outage", "dnsbl") and opt["provider"] is None and \
            kind != "dnsbl":
        raise ConfigError(file, r.key("provider"), f"missing (needed by a {kind} incident)")
    if kind == "dnsbl" and opt["pool"] is None:
        raise ConfigError(file, r.key("pool"), "missing (a listing names the pool it hits)")
    if kind == "dkim_break" and opt["sending_domain"] is None:
        raise ConfigError(file, r.key("sending_domain"), "missing (the domain whose key broke)")
    return Incident(kind=kind, start_s=r.dur("start"), duration_s=r.dur("duration"), **opt)


def parse_scenario(raw: Mapping[str, Any], file: str, *, scale: float | None = None
                   ) -> Scenario:
    """Check a scenario mapping read from ``file``; raises ``ConfigError``."""
    r = _R(raw, file, "", ("name", "description", "lab", "policy", "start", "duration", "step",
                           "scale", "audience", "traffic", "incidents", "ip_age_days"))
    base = Path(file).parent
    sc = scale if scale is not None else r.num("scale", 1.0)
    if sc <= 0:
        raise ConfigError(file, "scale", f"must be > 0, got {sc}")
    lab = base / r.str_("lab")
    if not lab.is_file():
        raise ConfigError(file, "lab", f"lab config {lab} not found")
    policy = base / r.str_("policy") if r.has("policy") else None
    if policy is not None and not policy.is_file():
        raise ConfigError(file, "policy", f"policy file {policy} not found")
    if "audience" not in raw:
        raise ConfigError(file, "audience", "missing")
    traffic = raw.get("traffic", [])
    if not isinstance(traffic, list) or not traffic:
        raise ConfigError(file, "traffic", "expected at least one [[traffic]] stream")
    incidents = raw.get("incidents", [])
    if not isinstance(incidents, list):
        raise ConfigError(file, "incidents", "expected [[incidents]] tables")
    ages = raw.get("ip_age_days", {})
    if not isinstance(ages, Mapping):
        raise ConfigError(file, "ip_age_days", "expected a table pool = days")
    duration = r.dur("duration")
    if duration <= 0:
        raise ConfigError(file, "duration", "must be > 0")
    step = r.dur("step", 60.0)
    if step <= 0:
        raise ConfigError(file, "step", "must be > 0")
    return Scenario(
        name=r.str_("name", Path(file).stem), file=file,
        description=r.str_("description", ""), lab=lab, policy=policy, start=_start(r),
        duration_s=duration, step_s=step, audience=_audience(raw["audience"], file, sc),
        streams=tuple(_stream(s, file, i, sc) for i, s in enumerate(traffic)),
        incidents=tuple(_incident(x, file, i) for i, x in enumerate(incidents)),
        scale=sc, ip_age_days={str(k): float(v) for k, v in ages.items()}, raw=dict(raw),
    )


def load_scenario(name_or_path: str | Path, *, scale: float | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Load a scenario by name or path, with dotted-key ``overrides``; ``ConfigError``."""
    path = resolve(name_or_path)
    raw = read_raw(path)
    for key, value in (overrides or {}).items():
        try:
            set_key(raw, key, value)
        except (KeyError, IndexError, ValueError, TypeError):
            raise ConfigError(str(path), key, "cannot override this key") from None
    return parse_scenario(raw, str(path), scale=scale)
