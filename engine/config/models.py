"""Pydantic models of the two config file kinds: the lab config and a policy file.

Owns the *shape* of each TOML table (types, ranges, unknown keys, one-field rules such
as "an API key is stored hashed"). Cross-references between tables (unknown pool,
overlapping IPs, TTL vs retry schedule, ...) are checked by ``engine.config.loader``; the
resolved frozen dataclasses the core reads live in ``engine.policy.params``. Nothing here
reads files or the environment.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from engine.policy.types import Lane

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
    r"(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
SECRET_REF_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a string like ``"90s"``, ``"15m"``, ``"1h30m"``.

    Raises ``ValueError`` for anything else (pydantic turns it into a located error).
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '15m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, total = 0, 0.0
        for match in _DURATION_RE.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
        raise ValueError(
            f"'{value}' is not a duration (use e.g. '30s', '15m', '4h', '1h30m', '3d')"
        )
    raise ValueError("a duration is a number of seconds or a string like '15m'")


def format_duration(seconds: float) -> str:
    """The compact form of a duration: ``5400`` -> ``"1h30m"``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    rest = round(seconds)
    if rest == 0:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def _check_domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a domain name is a string")
    lowered = value.strip().lower().rstrip(".")
    if not DOMAIN_RE.match(lowered):
        raise ValueError(f"'{value}' is not a valid domain name")
    return lowered


def _check_hash(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an API key hash is a string 'sha256:<64 hex digits>'")
    if HASH_RE.match(value):
        return value
    if value.startswith("sha256:"):
        raise ValueError("not 'sha256:' followed by 64 lowercase hex digits")
    # Never echo the value: it is probably a live secret.
    raise ValueError(
        "looks like a plain API key: store its hash instead "
        "(`inboxlab config hash-key KEY` prints the sha256: form)"
    )


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
ApiKeyHash = Annotated[str, BeforeValidator(_check_hash)]
DomainName = Annotated[str, BeforeValidator(_check_domain)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Rate = Annotated[float, Field(gt=0.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- lab config -------------------------------------------------------------------------


class RouteConstraintModel(_Model):
    """Where a tenant's mail (or one lane of it) may go."""

    pools: list[str] = []
    dedicated_only: bool = False
    ipv4_only: bool = False


class BucketModel(_Model):
    """A rate limit: ``rate`` messages per second, bursts up to ``burst``."""

    rate: Rate
    burst: Annotated[float, Field(gt=0.0)]


class TenantModel(_Model):
    """A tenant: who may submit (hashed API keys), where events go, and where mail may go."""

    api_keys: list[ApiKeyHash] = []
    webhook_url: str | None = None
    webhook_secret: str | None = None
    suppression_scope: Literal["global", "tenant", "domain"] = "tenant"
    lanes: list[Lane] = ["transactional", "lifecycle", "prospecting"]
    route: RouteConstraintModel = RouteConstraintModel()
    lane_routes: dict[Lane, RouteConstraintModel] = {}
    limit: BucketModel | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"'{url}' is not an http(s) URL")
        return url

    @field_validator("webhook_secret")
    @classmethod
    def _secret_ref(cls, ref: str | None) -> str | None:
        if ref is not None and not SECRET_REF_RE.match(ref):
            raise ValueError(
                "store a reference to the secret ('env:NAME' or 'file:PATH'), not the secret"
            )
        return ref


class DkimModel(_Model):
    """One DKIM selector of a sending domain; ``key_file`` is relative to the config file."""

    selector: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    key_file: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"


class DomainModel(_Model):
    """A sending domain: its tenant, DKIM keys, bounce domain and list-unsubscribe base."""

    tenant: str
    dkim: list[DkimModel] = []
    return_path: DomainName | None = None
    feedback_id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,40}$")] | None = None
    unsubscribe_base_url: str | None = None
    limit: BucketModel | None = None

    @field_validator("unsubscribe_base_url")
    @classmethod
    def _https(cls, url: str | None) -> str | None:
        # RFC 8058 one-click unsubscribe needs an HTTPS URI in List-Unsubscribe.
        if url is not None and not re.match(r"^https://[^/\s]+", url):
            raise ValueError(f"'{url}' is not an https:// URL (RFC 8058 one-click needs HTTPS)")
        return url


class PoolModel(_Model):
    """An IP pool: source addresses, dedicated or shared, its policy and warmup."""

    source_ips: Annotated[list[str], Field(min_length=1)]  # checked by the loader
    dedicated: bool = True
    policy: str | None = None
    warmup: str | None = None
    warmup_start: dt.date | None = None
    overflow: str | None = None


def _route_shorthand(value: Any) -> Any:
    return {"to": value} if isinstance(value, str) else value


class RouteModel(_Model):
    """Where mail for a recipient domain goes: a fixed ``host:port`` or DNS MX (``mx``)."""

    to: str | None = None
    mx: bool = False
    pools: list[str] = []


RouteValue = Annotated[RouteModel, BeforeValidator(_route_shorthand)]

SHAPING_FIELDS: tuple[str, ...] = (
    "max_connections",
    "max_messages_per_connection",
    "messages_per_second",
    "burst",
    "connect_rate_per_minute",
    "tls",
)


class ShapingPatch(_Model):
    """Some fields of ``engine.policy.types.Shaping``; unset fields leave lower layers be."""

    max_connections: Annotated[int, Field(gt=0)] | None = None
    max_messages_per_connection: Annotated[int, Field(gt=0)] | None = None
    messages_per_second: Rate | None = None
    burst: Annotated[int, Field(gt=0)] | None = None
    connect_rate_per_minute: Rate | None = None
    tls: Literal["opportunistic", "required"] | None = None

    def fields_set(self) -> dict[str, Any]:
        """The fields this layer sets, by name."""
        return {k: getattr(self, k) for k in SHAPING_FIELDS if getattr(self, k) is not None}


class ShapingModel(_Model):
    """``[shaping]``: ``default``, per recipient ``domain`` and ``override."pool.provider"``."""

    default: ShapingPatch = ShapingPatch()
    domain: dict[str, ShapingPatch] = {}
    override: dict[str, ShapingPatch] = {}


# --- [serve]: where `inboxlab serve` listens ---------------------------------------------


def _check_host(value: Any) -> str:
    import ipaddress

    if not isinstance(value, str):
        raise ValueError("a listen host is an IP address string or 'localhost'")
    if value == "localhost":
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address or 'localhost'") from None


ListenHost = Annotated[str, BeforeValidator(_check_host)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: an ephemeral port, printed at start


class InboundModel(_Model):
    """``[serve.inbound]``: the SMTP receiver of bounces and feedback-loop reports. It
    accepts mail for every sending domain's ``return_path`` plus ``feedback_domains``
    (the domains of the addresses registered with provider feedback loops)."""

    enabled: bool = True
    host: ListenHost = "127.0.0.1"
    port: Port = 0
    hostname: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")] = (
        "inbound.local")
    feedback_domains: list[DomainName] = []


class SubmissionModel(_Model):
    """``[serve.submission]``: SMTP submission (STARTTLS then AUTH). ``cert_file`` and
    ``key_file`` (PEM, relative to the lab file) are given together; without them a
    self-signed certificate is made once under the serve home."""

    enabled: bool = True
    host: ListenHost = "127.0.0.1"
    port: Port = 0
    hostname: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")] = (
        "submission.local")
    cert_file: str | None = None
    key_file: str | None = None


class WebhooksModel(_Model):
    """``[serve.webhooks]``: the dispatcher of tenant events. ``require_secrets``: a tenant
    whose ``webhook_secret`` cannot be resolved stops the start (otherwise that endpoint is
    skipped with a warning); ``drain``: how long SIGTERM waits for the last batches."""

    enabled: bool = True
    require_secrets: bool = False
    batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    poll: PositiveDuration = 0.5
    base_backoff: PositiveDuration = 1.0
    max_backoff: PositiveDuration = 3600.0
    timeout: PositiveDuration = 10.0
    drain: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 5.0


class ServeModel(_Model):
    """``[serve]``: the HTTP intake's address (``--port`` overrides ``http_port``) and the
    other listeners of ``inboxlab serve``. ``spool``: a SQLite file (relative to the lab
    file) or a ``postgresql://user:${PGPASSWORD}@host/db?schema=NAME`` URL (``${ENV}``
    expanded by the loader; default ``<home>/spool.db``); ``nodes``: how many ``inboxlab
    serve`` processes share that spool (each runs 1/nodes of every pool's capacity)."""

    host: ListenHost = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8025
    spool: Annotated[str, Field(min_length=1)] | None = None
    nodes: Annotated[int, Field(ge=1, le=1000)] = 1
    # PEM certificates the engine trusts when it verifies a receiver's STARTTLS certificate,
    # instead of the system store (a private relay's CA, the sandbox's tls-cert.pem);
    # relative to the lab file, ``${ENV}`` expanded. None: the system store.
    tls_ca_file: Annotated[str, Field(min_length=1)] | None = None
    inbound: InboundModel = InboundModel()
    submission: SubmissionModel = SubmissionModel()
    webhooks: WebhooksModel = WebhooksModel()


# --- policy file ------------------------------------------------------------------------


class RetryModel(_Model):
    """A lane's retry schedule: delays in order (the last repeats), jitter, attempts."""

    delays: Annotated[list[PositiveDuration], Field(min_length=1)]
    jitter: Fraction = 0.2
    max_attempts: Annotated[int, Field(ge=1)] = 30


class LaneModel(_Model):
    """One lane of a policy."""

    weight: Rate
    reserved_share: Fraction = 0.0
    ttl: PositiveDuration
    max_wait: PositiveDuration
    retry: RetryModel
    send_window: list[Annotated[int, Field(ge=0, le=24)]] | None = None

    @field_validator("send_window")
    @classmethod
    def _window(cls, window: list[int] | None) -> list[int] | None:
        if window is not None and (len(window) != 2 or window[0] == window[1]):
            raise ValueError("a send window is [start hour, end hour] with start != end")
        return window


class BreakerModel(_Model):
    """Breaker thresholds (fractions); defaults are Amazon SES's review/pause levels."""

    window: PositiveDuration = 3600.0
    min_volume: Annotated[int, Field(ge=1)] = 200
    bounce_review: Fraction = 0.05
    bounce_pause: Fraction = 0.10
    complaint_review: Fraction = 0.001
    complaint_pause: Fraction = 0.005
    deferral_review: Fraction = 0.20
    deferral_pause: Fraction = 0.50
    open: PositiveDuration = 1800.0
    slow_start_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    additive_increase: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    multiplicative_decrease: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    step: PositiveDuration = 300.0


class AutomationModel(_Model):
    """How response-driven automation recovers (see ``engine.policy.params.AutomationSpec``)."""

    recovery_step: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    recovery_step_interval: PositiveDuration = 300.0
    default_duration: PositiveDuration = 3600.0
    pause_pool: PositiveDuration = 900.0
    resume_spread: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 600.0


class WarmupModel(_Model):
    """A warmup plan: daily caps per provider per IP (``"*"`` = any other provider)."""

    caps: dict[str, Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)]]
    jitter: Fraction = 0.1
    lane_order: list[Lane] = ["transactional", "lifecycle", "prospecting"]
    source: str = ""


class PolicyModel(_Model):
    """A versioned policy file (``fixtures/policies/*.toml``)."""

    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str = ""
    lanes: dict[Lane, LaneModel]
    breaker: BreakerModel = BreakerModel()
    automation: AutomationModel = AutomationModel()
    warmup_default: str | None = None
    warmup: dict[str, WarmupModel] = {}
    shaping: ShapingModel = ShapingModel()


LAB_SECTIONS: dict[str, Any] = {
    "tenants": TenantModel,
    "domains": DomainModel,
    "pools": PoolModel,
    "routes": RouteValue,
}
