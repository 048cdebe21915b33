"""The sandbox's configuration file (``fixtures/sandbox.toml`` is the default).

Owns ``SandboxConfig`` / ``ProviderServer`` / ``FaultSpec`` and ``load_config``: which
providers run, on which ports, with which model file and overrides, where feedback goes,
which DKIM keys, SPF records and DMARC records exist (no real DNS), and the seeded fault injection.
Bad files raise ``ConfigError(file, key, reason)``. No sockets here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from sim.providers.params import MODELS_DIR, ModelParams, load_params, read_toml


@dataclass(frozen=True, slots=True)
class Storm:
    """A window of 421 replies: from ``start_s`` (real seconds after start) for ``duration_s``."""

    start_s: float
    duration_s: float
    probability: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    seed: int = 0
    disconnect_at_connect: float = 0.0
    disconnect_after_mail: float = 0.0
    disconnect_mid_data: float = 0.0
    stall_probability: float = 0.0
    stall_s: float = 0.0
    tls_failure: float = 0.0
    storms: tuple[Storm, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderServer:
    name: str
    port: int
    params: ModelParams
    tls: bool
    ip_ages: dict[str, float]
    listed: tuple[str, ...]
    faults: FaultSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    file: str
    host: str = "127.0.0.1"
    hostname: str = "sandbox.inboxlab.test"
    seed: int = 0
    time_scale: float = 1.0
    providers: tuple[ProviderServer, ...] = ()
    feedback_host: str = "127.0.0.1"
    feedback_port: int = 0  # 0: no feedback is sent back
    arf_to: str = "fbl@feedback.inboxlab.test"
    dsn_to: str = ""  # empty: the original MAIL FROM (the return path)
    feedback_from: str = "mailer-daemon@sandbox.inboxlab.test"
    dkim_keys: dict[str, str] = field(default_factory=dict)
    spf: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dmarc: dict[str, str] = field(default_factory=dict)  # domain -> "v=DMARC1; p=..."
    strict_domains: bool = False
    dns: str = ""  # "host:port" of a DNS server: auth facts from real lookups, not the tables


def _num(file: str, key: str, value: Any, lo: float = 0.0, hi: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(file, key, f"expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _faults(file: str, key: str, raw: Any) -> FaultSpec:
    if not isinstance(raw, dict):
        raise ConfigError(file, key, "expected a table")
    known = {"seed", "disconnect_at_connect", "disconnect_after_mail", "disconnect_mid_data",
             "stall_probability", "stall_s", "tls_failure", "storms"}
    for k in raw:
        if k not in known:
            raise ConfigError(file, f"{key}.{k}", "unknown fault setting")
    storms = []
    for i, s in enumerate(raw.get("storms", [])):
        sk = f"{key}.storms[{i}]"
        if not isinstance(s, dict):
            raise ConfigError(file, sk, "expected a table")
        storms.append(Storm(_num(file, f"{sk}.start_s", s.get("start_s")),
                            _num(file, f"{sk}.duration_s", s.get("duration_s")),
                            _num(file, f"{sk}.probability", s.get("probability", 1.0), 0, 1)))
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(file, f"{key}.seed", "expected an integer")
    probs = {k: _num(file, f"{key}.{k}", raw.get(k, 0.0), 0, 1)
             for k in ("disconnect_at_connect", "disconnect_after_mail", "disconnect_mid_data",
                       "stall_probability", "tls_failure")}
    return FaultSpec(seed=seed, stall_s=_num(file, f"{key}.stall_s", raw.get("stall_s", 0.0)),
                     storms=tuple(storms), **probs)


def load_config(
    path: str | Path, *, only: list[str] | None = None, time_scale: float | None = None,
    dns: str | None = None,
) -> SandboxConfig:
    """Read and check a sandbox config; ``only`` keeps a subset of its providers; ``dns``
    (host:port) overrides the config's ``dns`` key."""
    path = Path(path)
    file = str(path)
    raw = read_toml(path)
    models_dir = Path(raw.get("models_dir", str(MODELS_DIR)))
    if not models_dir.is_absolute():
        models_dir = (path.parent / models_dir).resolve()
    providers_raw = raw.get("providers", {})
    if not isinstance(providers_raw, dict) or not providers_raw:
        raise ConfigError(file, "providers", "expected at least one [providers.NAME] table")
    if only:
        unknown = [n for n in only if n not in providers_raw]
        if unknown:
            raise ConfigError(file, "providers", f"not in this config: {', '.join(unknown)}")
    servers = []
    for name, spec in providers_raw.items():
        if only and name not in only:
            continue
        key = f"providers.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(file, key, "expected a table")
        port = spec.get("port", 0)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(file, f"{key}.port", f"expected a port number, got {port!r}")
        model = spec.get("model", f"{name}.toml")
        model_file = Path(model) if Path(model).is_absolute() else models_dir / model
        overrides = spec.get("overrides", {})
        if not isinstance(overrides, dict):
            raise ConfigError(file, f"{key}.overrides", "expected a table")
        params = load_params(model_file, overrides=overrides)
        ages = spec.get("ip_age_days", {})
        if not isinstance(ages, dict):
            raise ConfigError(file, f"{key}.ip_age_days", "expected a table of ip = days")
        listed = spec.get("listed", [])
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            raise ConfigError(file, f"{key}.listed", "expected a list of netblocks")
        servers.append(ProviderServer(
            name=name, port=port, params=params, tls=bool(spec.get("tls", True)),
            ip_ages={ip: _num(file, f"{key}.ip_age_days.{ip}", d) for ip, d in ages.items()},
            listed=tuple(listed), faults=_faults(file, f"{key}.faults", spec.get("faults", {})),
        ))
    fb = raw.get("feedback", {})
    if not isinstance(fb, dict):
        raise ConfigError(file, "feedback", "expected a table")
    fport = fb.get("port", 0)
    if isinstance(fport, bool) or not isinstance(fport, int) or not 0 <= fport <= 65535:
        raise ConfigError(file, "feedback.port", f"expected a port number, got {fport!r}")
    spf_raw = raw.get("spf", {})
    spf = {}
    for domain, ips in spf_raw.items():
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise ConfigError(file, f"spf.{domain}", "expected a list of IP addresses")
        spf[domain.lower()] = tuple(ips)
    keys = raw.get("dkim_keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(file, "dkim_keys", "expected selector._domainkey.domain = \"v=DKIM1; ...\"")
    dmarc = raw.get("dmarc", {})
    if not isinstance(dmarc, dict) or not all(
            isinstance(v, str) and v.startswith("v=DMARC1") for v in dmarc.values()):
        raise ConfigError(file, "dmarc", 'expected domain = "v=DMARC1; p=none|quarantine|reject"')
    scale = time_scale if time_scale is not None else raw.get("time_scale", 1.0)
    dns_server = dns if dns is not None else raw.get("dns", "")
    if not isinstance(dns_server, str):
        raise ConfigError(file, "dns", f"expected \"host:port\", got {dns_server!r}")
    if dns_server:
        from engine.errors import InputError
        from sim.dns.auth import parse_server

        try:
            parse_server(dns_server)
        except InputError as exc:
            raise ConfigError(file, "dns", str(exc)) from None
    return SandboxConfig(
        file=file,
        host=str(raw.get("host", "127.0.0.1")),
        hostname=str(raw.get("hostname", "sandbox.inboxlab.test")),
        seed=int(raw.get("seed", 0)),
        time_scale=_num(file, "time_scale", scale, 1e-6),
        providers=tuple(servers),
        feedback_host=str(fb.get("host", "127.0.0.1")),
        feedback_port=fport,
        arf_to=str(fb.get("arf_to", "fbl@feedback.inboxlab.test")),
        dsn_to=str(fb.get("dsn_to", "")),
        feedback_from=str(fb.get("from", "mailer-daemon@sandbox.inboxlab.test")),
        dkim_keys={k.lower().rstrip("."): v for k, v in keys.items()},
        spf=spf,
        dmarc={k.lower().rstrip("."): v for k, v in dmarc.items()},
        strict_domains=bool(raw.get("strict_domains", False)),
        dns=dns_server,
    )
