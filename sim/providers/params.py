"""Provider model parameters: loading, merging and checking ``fixtures/models/*.toml``.

Owns ``ModelParams`` (the numbers one provider model runs with) and ``load_params``.
Every model file is laid over ``generic.toml`` (a deep merge), so a provider file only
states what differs; calibration may rewrite these files, never the reviewed reply rules
in ``fixtures/providers/``. Bad files raise ``ConfigError(file, key, reason)``.
Must not touch model state or do anything but read files.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from sim.providers.facts import Reply

MODELS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "models"
RATE_SCOPES = ("ip", "netblock", "dkim_domain", "spf_domain", "link_domain")
LANES = ("transactional", "lifecycle", "prospecting")
REPLY_KINDS = (
    "banner",
    "ok",
    "accepted",
    "too_many_connections",
    "too_many_messages",
    "too_many_recipients",
    "tls_required",
    "bad_address",
    "relay_denied",
    "unknown_user",
    "inactive_user",
    "mailbox_full",
    "greylisted",
    "unauthenticated",
    "reputation_block",
    "rate_ip",
    "rate_netblock",
    "rate_dkim_domain",
    "rate_spf_domain",
    "rate_link_domain",
    "rate_message_id",
    "daily_cap",
    "dnsbl_listed",
    "brownout",
    "too_large",
    "bounce_unknown",
    "bulk_spf",
    "bulk_dkim",
    "bulk_dmarc",
)
BULK_REQUIRE = ("none", "spf_and_dkim", "spf_dkim_dmarc")


@dataclass(frozen=True, slots=True)
class Brownout:
    """A scheduled window of 421s, in seconds from the model's start."""

    start_s: float
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelParams:
    """Everything one provider model needs; see ``fixtures/models/generic.toml``."""

    name: str
    title: str
    domains: tuple[str, ...]
    banner_host: str
    max_message_bytes: int
    # connections
    max_connections_per_ip: int
    max_messages_per_connection: int
    max_recipients_per_message: int
    tls_required: bool
    auth_require: str  # "none" | "spf_or_dkim" | "spf_and_dkim"
    # bulk senders: above ``bulk_threshold`` messages per ``bulk_window_s`` from one
    # organizational sending domain, ``bulk_require`` applies (0 = no bulk rule)
    bulk_threshold: int
    bulk_window_s: float
    bulk_permanent: bool
    bulk_require: str  # one of BULK_REQUIRE
    # reputation
    rep_initial: float
    rep_tiers: tuple[float, float]
    rep_block_below: float
    rep_recovery_s: float
    rep_engagement_gain: float
    rep_complaint_penalty: float
    rep_unknown_penalty: float
    rep_trap_penalty: float
    # rates: per scope the limit in the window for tier low/medium/high
    rate_window_s: float
    rate_limits: Mapping[str, tuple[int, int, int]]
    message_id_limit: int
    # young IPs
    young_days: int
    young_day0_cap: float
    young_growth: float
    young_assume_new: bool
    # greylisting
    greylist_enabled: bool
    greylist_delay_s: float
    greylist_retry_window_s: float
    greylist_whitelist_s: float
    # DNSBL
    dnsbl_trap_threshold: int
    dnsbl_window_s: float
    dnsbl_listing_s: float
    dnsbl_repeat_count: int
    dnsbl_repeat_listing_s: float
    # feedback
    fbl: bool
    complaint_rate: Mapping[str, float]
    complaint_delay_median_s: float
    complaint_delay_sigma: float
    engagement_rate: Mapping[str, float]
    engagement_delay_median_s: float
    engagement_delay_sigma: float
    unknown_fraction: float
    full_fraction: float
    async_bounce_fraction: float
    async_bounce_delay_s: float
    brownouts: tuple[Brownout, ...]
    replies: Mapping[str, Reply]


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: tables merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning every failure into a ``ConfigError``."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None


def model_path(name: str, models_dir: Path | None = None) -> Path:
    return (models_dir or MODELS_DIR) / f"{name}.toml"


def load_params(
    name_or_path: str | Path,
    *,
    models_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ModelParams:
    """Load a model by provider name or file path, over ``generic.toml``, plus overrides."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = model_path(str(name_or_path), models_dir)
    base_path = path.with_name("generic.toml")
    raw = read_toml(base_path) if base_path.exists() else {}
    if path.resolve() != base_path.resolve():
        raw = deep_merge(raw, read_toml(path))
    if overrides:
        raw = deep_merge(raw, overrides)
    return params_from_dict(raw, str(path))


class _Reader:
    def __init__(self, data: Mapping[str, Any], file: str) -> None:
        self.data = data
        self.file = file

    def get(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(self.file, key, "missing")
            node = node[part]
        return node

    def num(self, key: str, lo: float = 0.0, hi: float = float("inf")) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.file, key, f"expected a number, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(self.file, key, f"{value} is outside [{lo}, {hi}]")
        return float(value)

    def int_(self, key: str, lo: int = 0) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(self.file, key, f"expected an integer >= {lo}, got {value!r}")
        return value

    def bool_(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise ConfigError(self.file, key, f"expected true or false, got {value!r}")
        return value

    def str_(self, key: str, choices: tuple[str, ...] = ()) -> str:
        value = self.get(key)
        if not isinstance(value, str) or (choices and value not in choices):
            want = " or ".join(choices) if choices else "a string"
            raise ConfigError(self.file, key, f"expected {want}, got {value!r}")
        return value

    def per_lane(self, key: str) -> dict[str, float]:
        return {lane: self.num(f"{key}.{lane}", 0.0, 1.0) for lane in LANES}


def _reply(r: _Reader, kind: str) -> Reply:
    key = f"replies.{kind}"
    code = r.int_(f"{key}.code")
    if not 200 <= code <= 599:
        raise ConfigError(r.file, f"{key}.code", f"SMTP code out of range: {code}")
    enhanced = r.str_(f"{key}.enhanced") if "enhanced" in r.get(key) else ""
    if enhanced and enhanced[0] != str(code)[0]:
        raise ConfigError(r.file, f"{key}.enhanced", f"{enhanced} does not match code {code}")
    return Reply(code, enhanced, r.str_(f"{key}.text"), kind)


def params_from_dict(raw: Mapping[str, Any], file: str) -> ModelParams:
    """Check a merged model mapping and build ``ModelParams`` (raises ``ConfigError``)."""
    r = _Reader(raw, file)
    limits: dict[str, tuple[int, int, int]] = {}
    for scope in RATE_SCOPES:
        value = r.get(f"rates.{scope}")
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        )
        if not ok:
            raise ConfigError(file, f"rates.{scope}", "expected [low, medium, high] positive ints")
        limits[scope] = (value[0], value[1], value[2])
    tiers = r.get("reputation.tiers")
    if not (isinstance(tiers, list) and len(tiers) == 2 and 0 <= tiers[0] <= tiers[1] <= 1):
        raise ConfigError(file, "reputation.tiers", "expected [low_below, high_above] in [0, 1]")
    brownouts = []
    for i, b in enumerate(r.get("brownouts")):
        br = _Reader(b, file)
        try:
            brownouts.append(Brownout(br.num("start_s"), br.num("duration_s")))
        except ConfigError as exc:
            raise ConfigError(file, f"brownouts[{i}].{exc.key}", exc.reason) from None
    domains = r.get("domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ConfigError(file, "domains", "expected a list of domain names")
    return ModelParams(
        name=r.str_("name"),
        title=r.str_("title"),
        domains=tuple(d.lower() for d in domains),
        banner_host=r.str_("banner_host"),
        max_message_bytes=r.int_("max_message_bytes", 1024),
        max_connections_per_ip=r.int_("connections.max_per_ip", 1),
        max_messages_per_connection=r.int_("connections.max_messages", 1),
        max_recipients_per_message=r.int_("connections.max_recipients", 1),
        tls_required=r.bool_("tls.required"),
        auth_require=r.str_("auth.require", ("none", "spf_or_dkim", "spf_and_dkim")),
        bulk_threshold=r.int_("bulk.threshold"),
        bulk_window_s=r.num("bulk.window_s", 1),
        bulk_permanent=r.bool_("bulk.permanent"),
        bulk_require=r.str_("bulk.require", BULK_REQUIRE),
        rep_initial=r.num("reputation.initial", 0, 1),
        rep_tiers=(float(tiers[0]), float(tiers[1])),
        rep_block_below=r.num("reputation.block_below", 0, 1),
        rep_recovery_s=r.num("reputation.recovery_s", 1),
        rep_engagement_gain=r.num("reputation.engagement_gain", 0, 1),
        rep_complaint_penalty=r.num("reputation.complaint_penalty", 0, 1),
        rep_unknown_penalty=r.num("reputation.unknown_penalty", 0, 1),
        rep_trap_penalty=r.num("reputation.trap_penalty", 0, 1),
        rate_window_s=r.num("rates.window_s", 1),
        rate_limits=limits,
        message_id_limit=r.int_("rates.message_id", 1),
        young_days=r.int_("young_ip.days"),
        young_day0_cap=r.num("young_ip.day0_cap", 1),
        young_growth=r.num("young_ip.growth", 1),
        young_assume_new=r.bool_("young_ip.assume_new"),
        greylist_enabled=r.bool_("greylist.enabled"),
        greylist_delay_s=r.num("greylist.delay_s"),
        greylist_retry_window_s=r.num("greylist.retry_window_s"),
        greylist_whitelist_s=r.num("greylist.whitelist_s"),
        dnsbl_trap_threshold=r.int_("dnsbl.trap_threshold", 1),
        dnsbl_window_s=r.num("dnsbl.window_s", 1),
        dnsbl_listing_s=r.num("dnsbl.listing_s", 1),
        dnsbl_repeat_count=r.int_("dnsbl.repeat_count", 1),
        dnsbl_repeat_listing_s=r.num("dnsbl.repeat_listing_s", 1),
        fbl=r.bool_("feedback.fbl"),
        complaint_rate=r.per_lane("feedback.complaint_rate"),
        complaint_delay_median_s=r.num("feedback.complaint_delay_median_s"),
        complaint_delay_sigma=r.num("feedback.complaint_delay_sigma"),
        engagement_rate=r.per_lane("feedback.engagement_rate"),
        engagement_delay_median_s=r.num("feedback.engagement_delay_median_s"),
        engagement_delay_sigma=r.num("feedback.engagement_delay_sigma"),
        unknown_fraction=r.num("mailboxes.unknown_fraction", 0, 1),
        full_fraction=r.num("mailboxes.full_fraction", 0, 1),
        async_bounce_fraction=r.num("mailboxes.async_bounce_fraction", 0, 1),
        async_bounce_delay_s=r.num("mailboxes.async_bounce_delay_s"),
        brownouts=tuple(brownouts),
        replies={kind: _reply(r, kind) for kind in REPLY_KINDS},
    )
