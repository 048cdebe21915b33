"""Read a lab config and its policy files, and report EVERY problem in one pass.

Owns file reading (``tomllib``), turning pydantic errors into located ``ConfigError``s
(``file``, key path like ``pools.bulk-b.source_ips[2]``, reason) and the semantic checks
that span tables: unknown pools/tenants/plans/providers, overlapping source IPs,
duplicated names, lane TTL vs retry schedule, reserved shares, DKIM key files, policy
files (whose own problems are located in THAT file). Each table entry is validated on
its own, so one bad pool does not hide problems elsewhere. Must not resolve policy
parameters (``engine.config.lab``) nor print anything (the CLI does).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.config.lab import LabConfig, LoadedPolicy, Route
from engine.config.models import (
    DOMAIN_RE,
    LAB_SECTIONS,
    NAME_RE,
    DomainModel,
    PolicyModel,
    PoolModel,
    RouteModel,
    ServeModel,
    ShapingModel,
    TenantModel,
    format_duration,
)
from engine.errors import ConfigError, ConfigErrors
from engine.policy.types import LANES, ProviderProfile

LAB_TOP_KEYS = ("name", "description", "policy", *LAB_SECTIONS, "shaping", "serve")
_SECRET_KEYS = {"api_keys", "webhook_secret"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")  # the password of a URL's user:password@
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Loc = tuple[str | int, ...]


def key_path(loc: Sequence[str | int]) -> str:
    """A dotted key path, TOML-quoted where needed: ``domains."a.example".dkim[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.match(part) else '"' + part.replace('"', '\\"') + '"'
        out += ("." if out else "") + text
    return out


class _Problems:
    """Collects problems in the order found; each (file, key, reason) once."""

    def __init__(self) -> None:
        self.items: list[ConfigError] = []
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, file: str, loc: Sequence[str | int], reason: str) -> None:
        key = key_path(loc)
        if (file, key, reason) not in self._seen:
            self._seen.add((file, key, reason))
            self.items.append(ConfigError(file, key, reason))

    def pydantic(self, file: str, prefix: Loc, exc: ValidationError) -> None:
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if p != "[key]"]
            kind, msg = err["type"], err["msg"]
            if kind == "extra_forbidden":
                reason = "unknown key"
            elif kind == "missing":
                reason = "required key missing"
            elif kind == "value_error":
                reason = msg.removeprefix("Value error, ")
            else:
                reason = msg[:1].lower() + msg[1:]
                value = err.get("input")
                secret = any(p in _SECRET_KEYS for p in (*prefix, *loc))
                if not secret and isinstance(value, str | int | float | bool) and kind != "missing":
                    reason += f" (got {value!r})"
                if "[key]" in err["loc"]:
                    reason = f"bad key: {reason}"
            self.add(file, (*prefix, *loc), reason)


def _validate(adapter: TypeAdapter[Any], data: Any, file: str, loc: Loc, probs: _Problems) -> Any:
    """Validate ``data``; report its errors under ``loc``; return the model or ``None``.

    On errors the bad parts are pruned and the rest validated again (unreported), so the
    semantic checks still see the valid remainder: one bad field hides nothing else.
    The returned partial model is only ever used for checks, never handed out.
    """
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        probs.pydantic(file, loc, exc)
        errors = exc.errors(include_url=False)
    work = copy.deepcopy(data)
    for _ in range(6):
        pruned = False
        for err in errors:
            where = [p for p in err["loc"] if p != "[key]"]
            if err["type"] == "missing":
                where = where[:-1]
            pruned = _prune(work, where) or pruned
        if not pruned:
            return None
        try:
            return adapter.validate_python(work)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
    return None


def _prune(data: Any, loc: Sequence[str | int]) -> bool:
    """Remove the value at ``loc`` from nested dicts/lists; ``False`` if there is none."""
    if not loc:
        return False
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    if isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
        del node[last]
        return True
    return False


def _read_toml(path: Path, file: str) -> dict[str, Any]:
    """Parse one TOML file; raise a single located ``ConfigError`` if it cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(file, "", "is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text (byte {exc.start}): not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"TOML syntax error: {exc}") from None


_ADAPTERS: dict[str, TypeAdapter[Any]] = {k: TypeAdapter(v) for k, v in LAB_SECTIONS.items()}
_SHAPING = TypeAdapter(ShapingModel)
_SERVE = TypeAdapter(ServeModel)
_POLICY = TypeAdapter(PolicyModel)
_STR = TypeAdapter(str)


def load_config(
    path: str | os.PathLike[str],
    *,
    profiles: Mapping[str, ProviderProfile] | None = None,
    env: Mapping[str, str] | None = None,
) -> LabConfig:
    """Load and check a lab config and every policy file it names.

    ``profiles`` are the known providers (default: ``engine.profiles.load_profiles()``
    when that module exists; provider names are then unchecked if it does not). ``env``
    expands ``${NAME:-default}`` in route targets (default: ``os.environ``).
    Raises ``ConfigErrors`` holding every problem found, each located by file and key.
    """
    file = os.fspath(path)
    probs = _Problems()
    try:
        doc = _read_toml(Path(file), file)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    if profiles is None:
        profiles = _default_profiles(probs)
    env = os.environ if env is None else env
    base = Path(file).parent

    for key in doc:
        if key not in LAB_TOP_KEYS:
            probs.add(file, (key,), f"unknown key (expected one of: {', '.join(LAB_TOP_KEYS)})")
    name = doc.get("name", Path(file).stem)
    if not isinstance(name, str):
        probs.add(file, ("name",), "must be a string")
        name = Path(file).stem

    sections: dict[str, dict[str, Any]] = {}
    for section, adapter in _ADAPTERS.items():
        sections[section] = {}
        table = doc.get(section, {})
        if not isinstance(table, dict):
            probs.add(file, (section,), "must be a table")
            continue
        for item, data in table.items():
            model = _validate(adapter, data, file, (section, item), probs)
            if model is not None:
                sections[section][item] = model
    tenants: dict[str, TenantModel] = sections["tenants"]
    domains: dict[str, DomainModel] = sections["domains"]
    pools: dict[str, PoolModel] = sections["pools"]
    routes_raw: dict[str, RouteModel] = sections["routes"]
    all_pools = set(doc.get("pools", {})) if isinstance(doc.get("pools"), dict) else set()
    all_tenants = set(doc.get("tenants", {})) if isinstance(doc.get("tenants"), dict) else set()
    shaping = _validate(_SHAPING, doc.get("shaping", {}), file, ("shaping",), probs)
    serve = _validate(_SERVE, doc.get("serve", {}), file, ("serve",), probs)
    if serve is not None:
        _check_serve(file, base, serve, probs)
        serve = _serve_spool(file, serve, env, probs)
        serve = _serve_tls_ca(file, base, serve, env, probs)

    # --- policy files ---------------------------------------------------------------
    policies: dict[str, LoadedPolicy] = {}
    failed: set[str] = set()

    def policy_ref(loc: Loc, ref: Any) -> str | None:
        if not isinstance(ref, str):
            probs.add(file, loc, "must be a string (a policy file path)")
            return None
        shown = os.path.normpath(os.path.join(os.path.dirname(file), ref))
        if shown in policies:
            return shown
        if shown in failed:
            return None
        target = base / ref
        if not target.is_file():
            probs.add(file, loc, f"policy file {ref} does not exist (looked for {shown})")
            return None
        loaded = _load_policy(target, shown, probs, profiles)
        if loaded is None:
            failed.add(shown)
            return None
        policies[shown] = loaded
        return shown

    default_policy = policy_ref(("policy",), doc["policy"]) if "policy" in doc else None
    pool_policy: dict[str, str] = {}
    for pname, pool in pools.items():
        if pool.policy is not None:
            ref = policy_ref(("pools", pname, "policy"), pool.policy)
        else:
            ref = default_policy
            if "policy" not in doc:
                probs.add(
                    file,
                    ("pools", pname, "policy"),
                    "no policy: set `policy` here or a default `policy` at the top level",
                )
        if ref is not None:
            pool_policy[pname] = ref

    # --- names ----------------------------------------------------------------------
    for section in ("tenants", "pools"):
        table = doc.get(section)
        if isinstance(table, dict):
            _check_names(file, section, list(table), probs)
    if isinstance(doc.get("domains"), dict):
        seen: dict[str, str] = {}
        for dname in doc["domains"]:
            norm = dname.lower().rstrip(".")
            if not DOMAIN_RE.match(norm):
                probs.add(file, ("domains", dname), f"'{dname}' is not a valid domain name")
            elif norm in seen:
                probs.add(file, ("domains", dname), f"duplicated domain (also as '{seen[norm]}')")
            seen.setdefault(norm, dname)

    # --- tenants --------------------------------------------------------------------
    key_owner: dict[str, str] = {}
    for tname, tenant in tenants.items():
        for i, digest in enumerate(tenant.api_keys):
            if digest in key_owner:
                probs.add(
                    file,
                    ("tenants", tname, "api_keys", i),
                    f"duplicated API key hash (also a key of tenant {key_owner[digest]})",
                )
            key_owner.setdefault(digest, tname)
        if len(set(tenant.lanes)) != len(tenant.lanes):
            probs.add(file, ("tenants", tname, "lanes"), "a lane is listed twice")
        rcs: list[tuple[Loc, Any]] = [(("tenants", tname, "route"), tenant.route)]
        rcs += [
            (("tenants", tname, "lane_routes", ln), rc) for ln, rc in tenant.lane_routes.items()
        ]
        for lane in tenant.lane_routes:
            if lane not in tenant.lanes:
                probs.add(
                    file,
                    ("tenants", tname, "lane_routes", lane),
                    f"lane {lane} is not among the tenant's lanes ({', '.join(tenant.lanes)})",
                )
        for loc, rc in rcs:
            for i, pref in enumerate(rc.pools):
                if pref not in all_pools:
                    probs.add(file, (*loc, "pools", i), _unknown("pool", pref, all_pools))
                elif pref in pools:
                    pool = pools[pref]
                    if rc.dedicated_only and not pool.dedicated:
                        probs.add(
                            file,
                            (*loc, "pools", i),
                            f"pool {pref} is shared but dedicated_only is set",
                        )
                    if rc.ipv4_only and not any(":" not in ip for ip in pool.source_ips):
                        probs.add(
                            file,
                            (*loc, "pools", i),
                            f"pool {pref} has no IPv4 source address but ipv4_only is set",
                        )

    # --- sending domains ------------------------------------------------------------
    for dname, dom in domains.items():
        loc0: Loc = ("domains", dname)
        if dom.tenant not in all_tenants:
            probs.add(file, (*loc0, "tenant"), _unknown("tenant", dom.tenant, all_tenants))
        selectors: set[str] = set()
        for i, dk in enumerate(dom.dkim):
            if dk.selector in selectors:
                probs.add(
                    file, (*loc0, "dkim", i, "selector"), f"duplicated selector {dk.selector}"
                )
            selectors.add(dk.selector)
            _check_dkim_key(
                file, (*loc0, "dkim", i, "key_file"), base, dk.key_file, dk.algorithm, probs
            )

    # --- pools ----------------------------------------------------------------------
    ip_owner: dict[str, tuple[str, int]] = {}
    for pname, pool in pools.items():
        for i, text in enumerate(pool.source_ips):
            ip = _ip(text)
            if ip is None:
                probs.add(
                    file,
                    ("pools", pname, "source_ips", i),
                    f"{text!r} is not a valid IPv4 or IPv6 address",
                )
                continue
            if ipaddress.ip_address(ip).is_unspecified or ipaddress.ip_address(ip).is_multicast:
                probs.add(file, ("pools", pname, "source_ips", i), f"{ip} is not a usable source")
                continue
            owner = ip_owner.get(ip)
            if owner is not None and owner[0] == pname:
                probs.add(file, ("pools", pname, "source_ips", i), f"{ip} is listed twice")
            elif owner is not None:
                probs.add(
                    file,
                    ("pools", pname, "source_ips", i),
                    f"{ip} is also in pool {owner[0]} (source_ips[{owner[1]}]): "
                    "pools must not overlap",
                )
            else:
                ip_owner[ip] = (pname, i)
        if pool.overflow is not None:
            if pool.overflow == pname:
                probs.add(file, ("pools", pname, "overflow"), "a pool cannot overflow to itself")
            elif pool.overflow not in all_pools:
                probs.add(
                    file, ("pools", pname, "overflow"), _unknown("pool", pool.overflow, all_pools)
                )
        ref = pool_policy.get(pname)
        if ref is not None:
            plans = policies[ref].model.warmup
            if pool.warmup is not None and pool.warmup not in plans:
                probs.add(
                    file,
                    ("pools", pname, "warmup"),
                    f"{_unknown('warmup plan', pool.warmup, set(plans))} in policy {ref}",
                )
            if pool.warmup is not None and pool.warmup_start is None:
                probs.add(
                    file, ("pools", pname, "warmup_start"), "a warmup plan needs a start date"
                )
            if (
                pool.warmup is None
                and pool.warmup_start is not None
                and policies[ref].model.warmup_default is None
            ):
                probs.add(
                    file,
                    ("pools", pname, "warmup"),
                    f"warmup_start is set but policy {ref} has no warmup_default: name a plan",
                )
    _check_overflow_cycles(file, pools, probs)

    # --- routes ---------------------------------------------------------------------
    routes: dict[str, Route] = {}
    for rkey, route in routes_raw.items():
        norm = rkey.lower().rstrip(".")
        bare = norm[2:] if norm.startswith("*.") else norm
        if norm != "*" and not DOMAIN_RE.match(bare):
            probs.add(file, ("routes", rkey), f"'{rkey}' is not a domain, '*.suffix' or '*'")
            continue
        for i, pref in enumerate(route.pools):
            if pref not in all_pools:
                probs.add(file, ("routes", rkey, "pools", i), _unknown("pool", pref, all_pools))
        if route.mx == (route.to is not None):
            probs.add(
                file, ("routes", rkey), 'give exactly one of `to = "host:port"` or `mx = true`'
            )
            continue
        if route.mx:
            routes[norm] = Route(norm, mx=True, pools=tuple(route.pools))
            continue
        target = _expand_env(file, ("routes", rkey, "to"), str(route.to), env, probs)
        if target is None:
            continue
        hostport = _host_port(target)
        if hostport is None:
            probs.add(file, ("routes", rkey, "to"), f"'{target}' is not host:port (port 1-65535)")
            continue
        routes[norm] = Route(norm, hostport[0], hostport[1], pools=tuple(route.pools))

    # --- lab-level shaping ----------------------------------------------------------
    if shaping is not None:
        _check_shaping_keys(file, shaping, all_pools, profiles, probs)
    for ref, loaded in policies.items():
        _check_shaping_keys(ref, loaded.model.shaping, all_pools, profiles, probs, pools_only=True)

    if probs.items:
        raise ConfigErrors(probs.items)
    return LabConfig(
        file=file,
        name=name,
        tenants=tenants,
        domains={d.lower().rstrip("."): m for d, m in domains.items()},
        pools=pools,
        routes=routes,
        shaping=shaping if shaping is not None else ShapingModel(),
        serve=serve if serve is not None else ServeModel(),
        policies=policies,
        pool_policy=pool_policy,
        default_policy=default_policy,
        profiles=dict(profiles or {}),
    )


def load_policy(
    path: str | os.PathLike[str], *, profiles: Mapping[str, ProviderProfile] | None = None
) -> PolicyModel:
    """Load and check one policy file on its own. Raises ``ConfigErrors``."""
    file = os.fspath(path)
    probs = _Problems()
    loaded = _load_policy(Path(file), file, probs, profiles or {})
    if probs.items or loaded is None:
        raise ConfigErrors(probs.items or [ConfigError(file, "", "cannot load")])
    return loaded.model


# --- helpers ------------------------------------------------------------------------


def _default_profiles(probs: _Problems) -> Mapping[str, ProviderProfile]:
    try:
        from engine.profiles import load_profiles  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    try:
        result: Mapping[str, ProviderProfile] = load_profiles()
    except ConfigErrors as exc:
        for p in exc.problems:
            probs.add(p.file, (p.key,) if p.key else (), p.reason)
        return {}
    except ConfigError as exc:
        probs.add(exc.file, (exc.key,) if exc.key else (), exc.reason)
        return {}
    return result


def _load_policy(
    path: Path, file: str, probs: _Problems, profiles: Mapping[str, ProviderProfile]
) -> LoadedPolicy | None:
    try:
        doc = _read_toml(path, file)
    except ConfigError as exc:
        probs.items.append(exc)
        return None
    before = len(probs.items)
    model: PolicyModel | None = _validate(_POLICY, doc, file, (), probs)
    if model is None:
        return None
    lanes_raw = doc.get("lanes")
    raw_lanes: dict[str, Any] = lanes_raw if isinstance(lanes_raw, dict) else {}
    missing = [lane for lane in LANES if lane not in raw_lanes]
    if missing:
        probs.add(file, ("lanes",), f"missing lane(s): {', '.join(missing)}")
    total = sum(lane.reserved_share for lane in model.lanes.values())
    if total > 1.0 + 1e-9:
        probs.add(file, ("lanes",), f"reserved shares sum to {total:g}, more than 1")
    for name, lane in model.lanes.items():
        cumulative = sum(lane.retry.delays)
        if lane.ttl < cumulative:
            probs.add(
                file,
                ("lanes", name, "ttl"),
                f"TTL {format_duration(lane.ttl)} is {format_duration(cumulative - lane.ttl)} "
                f"shorter than the retry schedule's cumulative delays "
                f"({format_duration(cumulative)})",
            )
        if lane.max_wait > lane.ttl:
            probs.add(
                file,
                ("lanes", name, "max_wait"),
                f"max_wait {format_duration(lane.max_wait)} exceeds the TTL "
                f"{format_duration(lane.ttl)}",
            )
    b = model.breaker
    for metric in ("bounce", "complaint", "deferral"):
        review, pause = getattr(b, f"{metric}_review"), getattr(b, f"{metric}_pause")
        if review >= pause:
            probs.add(
                file,
                ("breaker", f"{metric}_review"),
                f"review threshold {review:g} must be below the pause threshold {pause:g}",
            )
    if model.warmup_default is not None and model.warmup_default not in model.warmup:
        probs.add(
            file,
            ("warmup_default",),
            _unknown("warmup plan", model.warmup_default, set(model.warmup)),
        )
    for pname, plan in model.warmup.items():
        if not NAME_RE.match(pname):
            probs.add(file, ("warmup", pname), "a plan name is lowercase letters, digits, - or _")
        if len(set(plan.lane_order)) != len(plan.lane_order):
            probs.add(file, ("warmup", pname, "lane_order"), "a lane is listed twice")
        for provider in plan.caps:
            if provider != "*" and profiles and provider not in profiles:
                probs.add(
                    file,
                    ("warmup", pname, "caps", provider),
                    _unknown("provider", provider, set(profiles)),
                )
    if len(probs.items) > before:
        return None
    return LoadedPolicy(file, model)


def _check_shaping_keys(
    file: str,
    shaping: ShapingModel,
    pools: set[str],
    profiles: Mapping[str, ProviderProfile] | None,
    probs: _Problems,
    *,
    pools_only: bool = False,
) -> None:
    for dkey in shaping.domain:
        if not DOMAIN_RE.match(dkey):
            probs.add(file, ("shaping", "domain", dkey), f"'{dkey}' is not a lowercase domain name")
    for okey in shaping.override:
        pool, dot, provider = okey.partition(".")
        loc = ("shaping", "override", okey)
        if not dot or not pool or not provider:
            probs.add(
                file, loc, "an override key is 'pool.provider' ('*' for any pool or provider)"
            )
            continue
        if pool != "*" and pool not in pools:
            probs.add(file, loc, _unknown("pool", pool, pools))
        if provider != "*" and profiles and provider not in profiles:
            probs.add(file, loc, _unknown("provider", provider, set(profiles)))
        if pool == "*" and provider == "*" and not pools_only:
            probs.add(file, loc, "'*.*' overrides everything: use [shaping.default]")


def _check_names(file: str, section: str, names: list[str], probs: _Problems) -> None:
    seen: dict[str, str] = {}
    for name in names:
        if not NAME_RE.match(name):
            probs.add(
                file,
                (section, name),
                "a name is 1-63 lowercase letters, digits, '-' or '_' (starting alphanumeric)",
            )
        norm = name.lower().replace("_", "-")
        if norm in seen:
            probs.add(file, (section, name), f"duplicated name (clashes with '{seen[norm]}')")
        seen.setdefault(norm, name)


def _check_overflow_cycles(file: str, pools: Mapping[str, PoolModel], probs: _Problems) -> None:
    for start in pools:
        seen = [start]
        nxt = pools[start].overflow
        while nxt is not None and nxt in pools and nxt != start:
            if nxt in seen:
                break
            seen.append(nxt)
            nxt = pools[nxt].overflow
        if nxt == start and len(seen) > 1 and start == min(seen):
            cycle = " -> ".join([*seen, start])
            probs.add(file, ("pools", start, "overflow"), f"overflow cycle: {cycle}")


def _check_dkim_key(
    file: str, loc: Loc, base: Path, key_file: str, algorithm: str, probs: _Problems
) -> None:
    path = base / key_file
    if not path.is_file():
        probs.add(file, loc, f"DKIM key file {key_file} does not exist (looked for {path})")
        return
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        probs.add(file, loc, f"{key_file} is not an unencrypted PEM private key ({exc})")
        return
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            probs.add(file, loc, f"{key_file} is not an RSA key but algorithm is rsa-sha256")
        elif key.key_size < 1024:
            # RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits.
            probs.add(
                file, loc, f"{key_file}: RSA key of {key.key_size} bits, RFC 8301 needs >= 1024"
            )
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        probs.add(file, loc, f"{key_file} is not an Ed25519 key but algorithm is ed25519-sha256")


def _expand_env(
    file: str, loc: Loc, text: str, env: Mapping[str, str], probs: _Problems
) -> str | None:
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV_REF.sub(sub, text)
    if missing:
        probs.add(file, loc, f"environment variable {missing[0]} is not set and has no default")
        return None
    return out


def _check_serve(file: str, base: Path, serve: ServeModel, probs: _Problems) -> None:
    """``[serve]`` across its tables: certificate files, ports that collide, domains."""
    sub = serve.submission
    loc: Loc = ("serve", "submission")
    if (sub.cert_file is None) != (sub.key_file is None):
        missing = "key_file" if sub.key_file is None else "cert_file"
        probs.add(file, (*loc, missing), "cert_file and key_file are given together")
    for key in ("cert_file", "key_file"):
        name = getattr(sub, key)
        if name is None:
            continue
        path = base / name
        if not path.is_file():
            probs.add(file, (*loc, key), f"{name} does not exist (looked for {path})")
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            probs.add(file, (*loc, key), f"cannot read {path}: {exc.strerror}")
            continue
        want = "CERTIFICATE" if key == "cert_file" else "PRIVATE KEY"
        if f"-----BEGIN {want}" not in text and not (
                key == "key_file" and "PRIVATE KEY-----" in text):
            probs.add(file, (*loc, key), f"{name} is not a PEM {want.lower()} file")
    listeners: dict[tuple[str, int], str] = {(serve.host, serve.http_port): "http_port"}
    for name, model in (("inbound", serve.inbound), ("submission", serve.submission)):
        if not model.enabled or model.port == 0:
            continue
        other = listeners.get((model.host, model.port))
        if other is not None:
            probs.add(file, ("serve", name, "port"),
                      f"port {model.port} on {model.host} is also serve.{other}")
        listeners.setdefault((model.host, model.port), f"{name}.port")
    seen: set[str] = set()
    for dom in serve.inbound.feedback_domains:  # no index: a bad entry may be pruned
        if dom in seen:
            probs.add(file, ("serve", "inbound", "feedback_domains"), f"{dom} is listed twice")
        seen.add(dom)


def _serve_tls_ca(file: str, base: Path, serve: ServeModel, env: Mapping[str, str],
                  probs: _Problems) -> ServeModel:
    """``[serve] tls_ca_file`` with ``${ENV}`` expanded and made absolute; it must be a
    readable file of PEM certificates."""
    import ssl

    if serve.tls_ca_file is None:
        return serve
    loc: Loc = ("serve", "tls_ca_file")
    value = _expand_env(file, loc, serve.tls_ca_file, env, probs)
    if not value:  # unset, or a ``${VAR:-}`` that expanded to nothing: the system store
        return serve.model_copy(update={"tls_ca_file": None})
    path = Path(value) if Path(value).is_absolute() else base / value
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        probs.add(file, loc, f"{path}: not a readable PEM certificate file ({exc})")
        return serve.model_copy(update={"tls_ca_file": None})
    return serve.model_copy(update={"tls_ca_file": str(path)})


def _serve_spool(file: str, serve: ServeModel, env: Mapping[str, str],
                 probs: _Problems) -> ServeModel:
    """``[serve] spool`` with ``${ENV}`` expanded (so a password need not be in the file),
    checked: a ``postgresql://`` URL with a valid port and schema, or a plain path. Problems
    are reported without the password."""
    from urllib.parse import urlsplit

    from engine.spool import is_pg_target
    from engine.spool.pg import split_url

    def redact(url: str) -> str:  # also for a URL too broken to parse
        return _PASSWORD.sub(r"\1***@", url)

    if serve.spool is None:
        return serve
    loc: Loc = ("serve", "spool")
    value = _expand_env(file, loc, serve.spool, env, probs)
    if value is None:
        return serve.model_copy(update={"spool": None})
    if is_pg_target(value):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises ValueError for a bad port)
            split_url(value)
        except ValueError as exc:
            probs.add(file, loc, f"{redact(value)}: {exc}")
            return serve.model_copy(update={"spool": None})
        except ConfigError as exc:
            probs.add(file, loc, exc.reason)
            return serve.model_copy(update={"spool": None})
        if not (parts.path.strip("/") or parts.hostname):
            probs.add(file, loc, f"{redact(value)}: names no host and no database")
    elif "://" in value:
        probs.add(file, loc, f"{redact(value).split('://', 1)[0]}:// is not a spool: give a "
                  "postgresql:// URL or a SQLite file path")
    return serve.model_copy(update={"spool": value})


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]")
    return host, int(port)


def _unknown(kind: str, name: str, known: set[str]) -> str:
    listing = ", ".join(sorted(known)) if known else "none defined"
    return f"unknown {kind} {name!r} (known: {listing})"
