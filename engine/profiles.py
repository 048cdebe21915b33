"""Load provider profiles and the reply corpus from ``fixtures/``.

Owns the TOML schema of ``fixtures/providers/*.toml`` and ``fixtures/replies/*.toml`` (see
``fixtures/providers/README.md``) and turns it into ``engine.policy.types`` objects. It checks
every key, vocabulary word and regex, and raises ``ConfigError(file, key_path, reason)`` for the
first problem in a file. It must not decide anything: classification lives in
``engine.policy.classify``, provider matching in ``engine.policy.providers``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from engine.errors import ConfigError
from engine.policy.types import (
    ACTIONS,
    CATEGORIES,
    SCOPES,
    Action,
    AutomationEffect,
    Category,
    ProviderProfile,
    ReplyRule,
    Scope,
    Shaping,
)

__all__ = [
    "CorpusReply",
    "default_fixtures_dir",
    "load_profile_file",
    "load_profiles",
    "load_replies",
]

_PROFILE_KEYS = {"name", "title", "mx_suffixes", "domains", "shaping", "feedback_loop", "rules"}
_SHAPING_KEYS = {
    "max_connections",
    "max_messages_per_connection",
    "messages_per_second",
    "burst",
    "connect_rate_per_minute",
    "tls",
}
_RULE_REQUIRED = {"id", "category", "action", "scope"}
_RULE_KEYS = _RULE_REQUIRED | {
    "code",
    "enhanced",
    "pattern",
    "retry_after_s",
    "duration_s",
    "threshold_per_hour",
    "effect",
    "throttle_factor",
    "note",
}
_REPLY_REQUIRED = {"code", "text", "source", "category", "action"}
_REPLY_KEYS = _REPLY_REQUIRED | {"enhanced", "scope", "provider", "note"}
_EFFECTS = ("none", "throttle", "suspend")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def default_fixtures_dir() -> Path:
    """The ``fixtures/`` folder: ``$INBOXLAB_FIXTURES`` if set, else the repo's, next to ``engine``."""
    env = os.environ.get("INBOXLAB_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "fixtures"


@dataclass(frozen=True, slots=True, kw_only=True)
class CorpusReply:
    """One real reply of the corpus with the verdict it must get."""

    provider: str
    code: int | None
    text: str
    source: str
    category: Category
    action: Action
    enhanced: str | None = None
    scope: Scope | None = None
    file: str = ""
    index: int = 0


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from exc


def _check_keys(file: str, key: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(file, where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _typed(file: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and (kind in (int, float) or (isinstance(kind, tuple) and bool not in kind))
    ):
        raise ConfigError(file, key, f"expected {what}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(file, key, f"expected {what}, got {type(value).__name__}")
    return value


def _str_list(file: str, key: str, value: Any) -> tuple[str, ...]:
    _typed(file, key, value, list, "a list of strings")
    for i, item in enumerate(value):
        _typed(file, f"{key}[{i}]", item, str, "a string")
    return tuple(s.lower() for s in value)


def _word(file: str, key: str, value: Any, vocab: tuple[str, ...]) -> str:
    _typed(file, key, value, str, "a string")
    if value not in vocab:
        raise ConfigError(file, key, f"{value!r} is not one of {', '.join(vocab)}")
    return cast(str, value)


def _opt_int(file: str, key: str, value: Any, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    _typed(file, key, value, int, "an integer")
    if value < minimum:
        raise ConfigError(file, key, f"must be >= {minimum}, got {value}")
    return cast(int, value)


def _parse_shaping(file: str, raw: Any) -> Shaping:
    _typed(file, "shaping", raw, dict, "a table")
    _check_keys(file, "shaping", raw, _SHAPING_KEYS)
    kwargs: dict[str, Any] = {}
    for key in ("max_connections", "max_messages_per_connection", "burst"):
        if key in raw:
            kwargs[key] = _opt_int(file, f"shaping.{key}", raw[key], minimum=1)
    for key in ("messages_per_second", "connect_rate_per_minute"):
        if key in raw:
            val = _typed(file, f"shaping.{key}", raw[key], (int, float), "a number")
            if val <= 0:
                raise ConfigError(file, f"shaping.{key}", f"must be > 0, got {val}")
            kwargs[key] = float(val)
    if "tls" in raw:
        kwargs["tls"] = _word(file, "shaping.tls", raw["tls"], ("opportunistic", "required"))
    return Shaping(**kwargs)


def _parse_rule(file: str, provider: str, i: int, raw: Any) -> ReplyRule:
    key = f"rules[{i}]"
    _typed(file, key, raw, dict, "a table")
    _check_keys(file, key, raw, _RULE_KEYS)
    missing = sorted(_RULE_REQUIRED - set(raw))
    if missing:
        raise ConfigError(file, f"{key}.{missing[0]}", "missing required field")
    rule_id = _typed(file, f"{key}.id", raw["id"], str, "a string")
    if not rule_id.startswith(provider + "."):
        raise ConfigError(file, f"{key}.id", f"rule id {rule_id!r} must start with '{provider}.'")
    code = _opt_int(file, f"{key}.code", raw.get("code"), minimum=200)
    if code is not None and code > 599:
        raise ConfigError(file, f"{key}.code", f"SMTP code must be 200..599, got {code}")
    enhanced = raw.get("enhanced")
    if enhanced is not None:
        _typed(file, f"{key}.enhanced", enhanced, str, "a string")
        if not re.fullmatch(r"[245]?(\.\d{1,3}){0,3}\.?|[245](\.\d{1,3}){0,2}\.?", enhanced) or (
            enhanced in ("", ".")
        ):
            raise ConfigError(
                file, f"{key}.enhanced", f"{enhanced!r} is not an enhanced status code prefix"
            )
    pattern = raw.get("pattern")
    if pattern is not None:
        _typed(file, f"{key}.pattern", pattern, str, "a string")
        if not pattern:
            raise ConfigError(file, f"{key}.pattern", "empty pattern matches everything")
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(file, f"{key}.pattern", f"bad regex: {exc}") from exc
    if code is None and enhanced is None and pattern is None and provider != "generic":
        raise ConfigError(file, key, "a rule needs at least one of code, enhanced, pattern")
    effect = _word(file, f"{key}.effect", raw.get("effect", "none"), _EFFECTS)
    factor = raw.get("throttle_factor", 0.5)
    _typed(file, f"{key}.throttle_factor", factor, (int, float), "a number")
    if not 0 < factor <= 1:
        raise ConfigError(file, f"{key}.throttle_factor", f"must be in (0, 1], got {factor}")
    note = raw.get("note", "")
    _typed(file, f"{key}.note", note, str, "a string")
    return ReplyRule(
        id=rule_id,
        provider=provider,
        category=cast(Category, _word(file, f"{key}.category", raw["category"], CATEGORIES)),
        action=cast(Action, _word(file, f"{key}.action", raw["action"], ACTIONS)),
        scope=cast(Scope, _word(file, f"{key}.scope", raw["scope"], SCOPES)),
        code=code,
        enhanced=enhanced,
        pattern=pattern,
        retry_after_s=_opt_int(file, f"{key}.retry_after_s", raw.get("retry_after_s")),
        duration_s=_opt_int(file, f"{key}.duration_s", raw.get("duration_s")),
        threshold_per_hour=_opt_int(
            file, f"{key}.threshold_per_hour", raw.get("threshold_per_hour"), minimum=1
        ),
        effect=cast(AutomationEffect, effect),
        throttle_factor=float(factor),
        note=note,
    )


def load_profile_file(path: Path) -> ProviderProfile:
    """Parse one ``fixtures/providers/<name>.toml``; raises ``ConfigError`` when malformed."""
    file = str(path)
    raw = _read_toml(path)
    _check_keys(file, "", raw, _PROFILE_KEYS)
    if "name" not in raw:
        raise ConfigError(file, "name", "missing required field")
    name = _typed(file, "name", raw["name"], str, "a string")
    if not _NAME.match(name):
        raise ConfigError(file, "name", f"{name!r} must be lower-case letters, digits, - or _")
    if name != path.stem:
        raise ConfigError(file, "name", f"{name!r} must equal the file name {path.stem!r}")
    title = _typed(file, "title", raw.get("title", ""), str, "a string")
    feedback = _typed(file, "feedback_loop", raw.get("feedback_loop", False), bool, "true/false")
    shaping = _parse_shaping(file, raw["shaping"]) if "shaping" in raw else Shaping()
    rules_raw = raw.get("rules", [])
    _typed(file, "rules", rules_raw, list, "an array of tables ([[rules]])")
    rules = tuple(_parse_rule(file, name, i, r) for i, r in enumerate(rules_raw))
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise ConfigError(file, f"rules[{i}].id", f"duplicate rule id {rule.id!r}")
        seen[rule.id] = i
    return ProviderProfile(
        name=name,
        title=title,
        mx_suffixes=_str_list(file, "mx_suffixes", raw.get("mx_suffixes", [])),
        domains=_str_list(file, "domains", raw.get("domains", [])),
        shaping=shaping,
        feedback_loop=feedback,
        rules=rules,
    )


def load_profiles(directory: Path | None = None) -> dict[str, ProviderProfile]:
    """All provider profiles of ``directory`` (default ``<fixtures>/providers``), by name.

    Raises ``ConfigError`` for a malformed file, a missing directory, or a missing ``generic``
    profile (every classification falls back to it).
    """
    folder = directory if directory is not None else default_fixtures_dir() / "providers"
    if not folder.is_dir():
        raise ConfigError(str(folder), "", "provider profile directory not found")
    profiles: dict[str, ProviderProfile] = {}
    for path in sorted(folder.glob("*.toml")):
        profile = load_profile_file(path)
        profiles[profile.name] = profile
    if "generic" not in profiles:
        raise ConfigError(str(folder), "generic", "a generic.toml profile is required")
    return profiles


def _parse_reply(file: str, provider: str, i: int, raw: Any) -> CorpusReply:
    key = f"reply[{i}]"
    _typed(file, key, raw, dict, "a table")
    _check_keys(file, key, raw, _REPLY_KEYS)
    missing = sorted(_REPLY_REQUIRED - set(raw))
    if missing:
        raise ConfigError(file, f"{key}.{missing[0]}", "missing required field")
    code = raw["code"]
    if code is not None and code != 0:
        code = _opt_int(file, f"{key}.code", code, minimum=200)
    text = _typed(file, f"{key}.text", raw["text"], str, "a string")
    source = _typed(file, f"{key}.source", raw["source"], str, "a string")
    if not source.startswith(("http://", "https://")):
        raise ConfigError(file, f"{key}.source", "must be the URL of a public page")
    enhanced = raw.get("enhanced")
    if enhanced is not None:
        _typed(file, f"{key}.enhanced", enhanced, str, "a string")
    scope = raw.get("scope")
    return CorpusReply(
        provider=_typed(file, f"{key}.provider", raw.get("provider", provider), str, "a string"),
        code=code or None,
        text=text,
        source=source,
        category=cast(Category, _word(file, f"{key}.category", raw["category"], CATEGORIES)),
        action=cast(Action, _word(file, f"{key}.action", raw["action"], ACTIONS)),
        enhanced=enhanced,
        scope=None if scope is None else cast(Scope, _word(file, f"{key}.scope", scope, SCOPES)),
        file=file,
        index=i,
    )


def load_replies(directory: Path | None = None) -> list[CorpusReply]:
    """Every ``[[reply]]`` of ``directory`` (default ``<fixtures>/replies``), file by file.

    The provider of a reply is its file name (``gmail.toml`` -> "gmail") unless the entry says
    ``provider = ...``. Raises ``ConfigError`` for a malformed file.
    """
    folder = directory if directory is not None else default_fixtures_dir() / "replies"
    if not folder.is_dir():
        raise ConfigError(str(folder), "", "reply corpus directory not found")
    out: list[CorpusReply] = []
    for path in sorted(folder.glob("*.toml")):
        file = str(path)
        raw = _read_toml(path)
        _check_keys(file, "", raw, {"reply"})
        entries = raw.get("reply", [])
        _typed(file, "reply", entries, list, "an array of tables ([[reply]])")
        out.extend(_parse_reply(file, path.stem, i, r) for i, r in enumerate(entries))
    return out
