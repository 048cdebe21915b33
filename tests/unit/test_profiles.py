"""Provider profiles: the TOML loader, its errors, and provider matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.policy.providers import ProviderMatcher
from engine.policy.types import ProviderProfile
from engine.profiles import default_fixtures_dir, load_profile_file, load_profiles

REQUIRED = {
    "gmail",
    "yahoo",
    "outlook",
    "office365",
    "icloud",
    "comcast",
    "gmx",
    "orange",
    "mimecast",
    "proofpoint",
    "generic",
}
PROVIDERS_DIR = default_fixtures_dir() / "providers"


@pytest.fixture(scope="module")
def profiles() -> dict[str, ProviderProfile]:
    return load_profiles()


def test_all_required_profiles_load(profiles: dict[str, ProviderProfile]) -> None:
    assert set(profiles) >= REQUIRED
    for name, p in profiles.items():
        assert p.name == name
        assert p.title
        for rule in p.rules:
            assert rule.provider == name
            assert rule.id.startswith(name + ".")


def test_values_carry_source_comments() -> None:
    """Every shaping value and every rule number cites a source or says there is none."""
    keys = (
        "max_connections",
        "max_messages_per_connection",
        "messages_per_second",
        "burst",
        "connect_rate_per_minute",
        "tls",
        "retry_after_s",
        "duration_s",
        "threshold_per_hour",
        "throttle_factor",
    )
    for path in PROVIDERS_DIR.glob("*.toml"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if any(stripped.startswith(k + " ") for k in keys):
                assert "#" in stripped, f"{path.name}:{n} has no source comment: {stripped}"


def test_rule_ids_unique_across_profiles(profiles: dict[str, ProviderProfile]) -> None:
    ids = [r.id for p in profiles.values() for r in p.rules]
    assert len(ids) == len(set(ids))


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXLAB_FIXTURES", str(tmp_path))
    assert default_fixtures_dir() == tmp_path
    with pytest.raises(ConfigError, match="not found"):
        load_profiles()


GOOD = """
name = "acme"
title = "Acme"
mx_suffixes = [".acme.test"]
domains = ["acme.test"]
[shaping]
max_connections = 3
[[rules]]
id = "acme.rate"
code = 421
pattern = "slow down"
category = "throttled"
action = "retry_slow_down"
scope = "ip"
"""


def _write(tmp_path: Path, body: str, name: str = "acme") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def test_good_file_parses(tmp_path: Path) -> None:
    p = load_profile_file(_write(tmp_path, GOOD))
    assert p.shaping.max_connections == 3
    assert p.shaping.max_messages_per_connection == 100  # default kept
    assert p.rules[0].code == 421 and p.rules[0].pattern == "slow down"


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ('title = "Acme"', 'title = "Acme"\ncolour = "red"', "colour", "unknown key"),
        ('category = "throttled"', 'category = "slow"', "rules[0].category", "not one of"),
        ('action = "retry_slow_down"', 'action = "wait"', "rules[0].action", "not one of"),
        ('scope = "ip"', 'scope = "planet"', "rules[0].scope", "not one of"),
        ('pattern = "slow down"', 'pattern = "slow (down"', "rules[0].pattern", "bad regex"),
        ('scope = "ip"\n', "", "rules[0].scope", "missing required field"),
        ('id = "acme.rate"', 'id = "other.rate"', "rules[0].id", "must start with"),
        ("code = 421", "code = 42", "rules[0].code", ">= 200"),
        ("max_connections = 3", "max_connections = 0", "shaping.max_connections", ">= 1"),
        ("max_connections = 3", 'tls = "sometimes"', "shaping.tls", "not one of"),
        ("max_connections = 3", "speed = 3", "shaping.speed", "unknown key"),
        ('domains = ["acme.test"]', 'domains = "acme.test"', "domains", "list"),
    ],
)
def test_malformed_files_raise_config_error(
    tmp_path: Path, old: str, new: str, key: str, reason: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert info.value.file == str(path)
    assert info.value.key == key
    assert re.search(reason, info.value.reason)


def test_invalid_toml_and_name_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_profile_file(_write(tmp_path, "name = ", "broken"))
    with pytest.raises(ConfigError, match="file name"):
        load_profile_file(_write(tmp_path, GOOD, "other"))


def test_duplicate_rule_id(tmp_path: Path) -> None:
    body = GOOD + GOOD[GOOD.index("[[rules]]") :]
    with pytest.raises(ConfigError, match="duplicate rule id"):
        load_profile_file(_write(tmp_path, body))


def test_generic_profile_required(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="generic"):
        load_profiles(tmp_path)


# ---- matching ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gmail", "gmail"),
        ("gmail.com", "gmail"),
        ("Someone@GMAIL.com", "gmail"),
        ("gmail-smtp-in.l.google.com", "gmail"),
        ("aspmx.l.google.com.", "gmail"),
        ("aol.com", "yahoo"),
        ("mta7.am0.yahoodns.net", "yahoo"),
        ("hotmail.com", "outlook"),
        ("hotmail-com.olc.protection.outlook.com", "outlook"),
        ("example-com.mail.protection.outlook.com", "office365"),
        ("example-com.mx.microsoft", "office365"),
        ("mx01.mail.icloud.com", "icloud"),
        ("me.com", "icloud"),
        ("web.de", "gmx"),
        ("mx-ha03.web.de", "gmx"),
        ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
        ("mx0a-001234.pphosted.com", "proofpoint"),
        ("smtp-in.orange.fr", "orange"),
        ("example.org", "generic"),
        ("notgoogle.com", "generic"),
        ("", "generic"),
    ],
)
def test_resolve(profiles: dict[str, ProviderProfile], value: str, expected: str) -> None:
    assert ProviderMatcher(profiles).resolve(value) == expected


def test_by_domain_and_by_mx_are_separate(profiles: dict[str, ProviderProfile]) -> None:
    m = ProviderMatcher(profiles)
    assert m.by_domain("gmail.com") == "gmail"
    assert m.by_domain("gmail-smtp-in.l.google.com") == "generic"
    assert m.by_mx("gmail.com") == "generic"
    assert m.by_mx("alt1.gmail-smtp-in.l.google.com") == "gmail"
