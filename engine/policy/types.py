"""Vocabulary shared by every part of the policy core.

Owns the fixed words of reply classification (category, action, scope), the verdict a
classification returns, and the provider profile the core decides with. Pure data: no IO.
The profile loader (``engine.profiles``) builds these from ``fixtures/providers/*.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Category = Literal[
    "throttled",
    "reputation_block",
    "auth_failure",
    "mailbox_unknown",
    "mailbox_full",
    "content_spam",
    "policy",
    "greylist",
    "tls_required",
    "dnsbl_listed",
    "message_too_large",
    "relay_denied",
    "dns_failure",
    "connection",
    "other",
]
CATEGORIES: tuple[Category, ...] = (
    "throttled",
    "reputation_block",
    "auth_failure",
    "mailbox_unknown",
    "mailbox_full",
    "content_spam",
    "policy",
    "greylist",
    "tls_required",
    "dnsbl_listed",
    "message_too_large",
    "relay_denied",
    "dns_failure",
    "connection",
    "other",
)

Action = Literal[
    "retry_soon",
    "retry_slow_down",
    "retry_later",
    "pause_pool",
    "suppress_recipient",
    "fix_auth",
    "fix_content",
    "dead_letter",
]
ACTIONS: tuple[Action, ...] = (
    "retry_soon",
    "retry_slow_down",
    "retry_later",
    "pause_pool",
    "suppress_recipient",
    "fix_auth",
    "fix_content",
    "dead_letter",
)

Scope = Literal["ip", "domain", "recipient", "message", "connection"]
SCOPES: tuple[Scope, ...] = ("ip", "domain", "recipient", "message", "connection")

Lane = Literal["transactional", "lifecycle", "prospecting"]
LANES: tuple[Lane, ...] = ("transactional", "lifecycle", "prospecting")

# What an automation rule does to a pool x provider when its threshold is reached.
AutomationEffect = Literal["none", "throttle", "suspend"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyRule:
    """One reply rule of a provider profile: a match and what it means.

    A rule matches when every given matcher matches: ``code`` (basic SMTP code),
    ``enhanced`` (prefix of the enhanced status code, e.g. "4.7.28" or "5.7.")
    and ``pattern`` (a case-insensitive regex searched in the reply text).
    ``threshold_per_hour`` and ``effect`` drive response automation: after that many
    matches in an hour for one pool x provider the effect applies for ``duration_s``.
    """

    id: str
    provider: str
    category: Category
    action: Action
    scope: Scope
    code: int | None = None
    enhanced: str | None = None
    pattern: str | None = None
    retry_after_s: int | None = None
    duration_s: int | None = None
    threshold_per_hour: int | None = None
    effect: AutomationEffect = "none"
    throttle_factor: float = 0.5
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Shaping:
    """How we are allowed to send to one provider (per source IP unless said)."""

    max_connections: int = 10
    max_messages_per_connection: int = 100
    messages_per_second: float = 10.0
    burst: int = 50
    connect_rate_per_minute: float = 100.0
    tls: Literal["opportunistic", "required"] = "opportunistic"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderProfile:
    """A mailbox provider as the core knows it: matching, shaping, feedback, reply rules."""

    name: str
    title: str = ""
    mx_suffixes: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    shaping: Shaping = field(default_factory=Shaping)
    feedback_loop: bool = False
    rules: tuple[ReplyRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a reply means and what to do about it, with the reasons that led there."""

    temporary: bool
    category: Category
    action: Action
    scope: Scope
    retry_after_s: int | None
    rule: str
    code: int | None = None
    enhanced: str | None = None
    provider: str = "generic"
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The JSON form printed by ``inboxlab classify``."""
        return {
            "temporary": self.temporary,
            "category": self.category,
            "action": self.action,
            "scope": self.scope,
            "retry_after_s": self.retry_after_s,
            "rule": self.rule,
            "code": self.code,
            "enhanced": self.enhanced,
            "provider": self.provider,
            "reasons": list(self.reasons),
        }
