"""engine.config: the demo lab loads and resolves; every bad fixture reports its problems."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from engine.config import hash_key, key_path, load_config, load_policy
from engine.config.models import format_duration, parse_duration
from engine.errors import ConfigError, ConfigErrors
from engine.policy.params import PolicyParams
from engine.policy.types import LANES, ProviderProfile, Shaping

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
BAD = FIX / "config-bad"
LAB = FIX / "lab.toml"
PROFILES = {
    "gmail": ProviderProfile(name="gmail", shaping=Shaping(max_connections=5, tls="required")),
    "yahoo": ProviderProfile(name="yahoo", shaping=Shaping(max_messages_per_connection=20)),
    "outlook": ProviderProfile(name="outlook"),
}


def problems(path: Path, **kw: object) -> set[tuple[str, str]]:
    """(file name relative to fixtures/config-bad, key) of every problem."""
    with pytest.raises(ConfigErrors) as info:
        load_config(path, profiles=PROFILES, **kw)  # type: ignore[arg-type]
    out = set()
    for p in info.value.problems:
        assert isinstance(p, ConfigError)
        out.add((Path(p.file).resolve().relative_to(BAD).as_posix(), p.key))
    return out


def reasons(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path, profiles=PROFILES)
    return {p.key: p.reason for p in info.value.problems}


# --- the demo lab --------------------------------------------------------------------------


def test_demo_lab_loads_with_every_part() -> None:
    lab = load_config(LAB, profiles=PROFILES, env={})
    assert sorted(lab.tenants) == ["acme", "globex"]
    assert sorted(lab.domains) == ["globex.example", "mail.acme.example", "news.acme.example"]
    assert lab.pools["tx-a"].source_ips == ["127.0.0.2", "127.0.0.3"]
    assert lab.pools["mkt-b"].source_ips == [f"127.0.0.{i}" for i in range(4, 8)]
    assert lab.pools["shared-c"].dedicated is False
    assert {p.model.version for p in lab.policies.values()} == {
        "default-v1",
        "warmup-conservative-v1",
    }
    assert lab.summary().startswith(f"{LAB}: ok: 2 tenants, 3 domains, 3 pools, 3 lanes")


def test_every_policy_file_loads_with_all_lanes_and_a_ramp() -> None:
    files = sorted((FIX / "policies").glob("*.toml"))
    names = {f.stem for f in files}
    assert {"default-v1", "warmup-conservative-v1", "warmup-aggressive-v1"} <= names
    for f in files:
        policy = load_policy(f, profiles=PROFILES)
        assert policy.version == f.stem
        assert set(policy.lanes) == set(LANES)
        plan = policy.warmup[policy.warmup_default or ""]
        caps = plan.caps["*"]
        assert caps == sorted(caps) and caps[0] < caps[-1]


def test_warmup_ramps_follow_the_published_schedules() -> None:
    aggressive = load_policy(FIX / "policies/warmup-aggressive-v1.toml").warmup["aggressive"]
    # SendGrid hourly caps (reference: simulation-numbers.md §1.1) x 24 hours
    assert aggressive.caps["*"][:3] == [20 * 24, 28 * 24, 39 * 24]
    assert aggressive.caps["*"][12] == 1000 * 24
    conservative = load_policy(FIX / "policies/warmup-conservative-v1.toml").warmup["conservative"]
    caps = conservative.caps["*"]
    assert len(caps) == 45 and caps[-1] == 50_000  # SES: 50,000 a day within 45 days


def test_policy_params_resolve_the_default_and_a_pool_policy() -> None:
    lab = load_config(LAB, profiles=PROFILES, env={})
    default = lab.policy_params(None, PROFILES)
    assert isinstance(default, PolicyParams)
    assert default.version == "default-v1"
    assert set(default.pools) == {"tx-a", "shared-c"}
    assert default.breaker.bounce_review == 0.05 and default.breaker.complaint_pause == 0.005
    tx = default.lanes["transactional"]
    assert tx.ttl_s == 24 * 3600 and tx.max_wait_s == 60 and tx.retry.delays_s[0] == 30
    assert default.lanes["prospecting"].send_window == (8, 18)
    assert set(default.shaping) == {(p, v) for p in ("tx-a", "shared-c") for v in PROFILES}
    assert default.shaping[("tx-a", "gmail")].tls == "required"
    assert default.tenant_buckets["acme"].rate == 200.0
    assert default.domain_buckets["mail.acme.example"].burst == 500
    assert set(default.warmups) == {"conservative", "aggressive"}
    assert default.automation.recovery_step_s == 300 and default.automation.resume_spread_s == 600
    assert default.automation.pause_pool_s == 900

    warm = lab.policy_params("mkt-b", PROFILES)
    assert warm.version == "warmup-conservative-v1"
    assert set(warm.pools) == {"mkt-b", "shared-c"}  # its overflow pool comes along
    spec = warm.pools["mkt-b"]
    assert spec.warmup == "conservative" and spec.overflow_to == "shared-c"
    assert spec.warmup_start == dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()
    assert warm.pools["shared-c"].warmup is None and warm.pools["shared-c"].warmup_start is None
    assert warm.breaker.bounce_review == 0.02
    assert warm.shaping[("mkt-b", "gmail")].max_connections == 2  # the operator override
    routes = {(r.tenant, r.lane): r for r in warm.routes}
    assert routes[("acme", "transactional")].pools == ("tx-a",)
    assert routes[("acme", "transactional")].dedicated_only
    assert routes[("acme", None)].ipv4_only


def test_routes_match_exact_then_wildcards_and_expand_env() -> None:
    lab = load_config(LAB, profiles=PROFILES, env={"INBOXLAB_PORT_GMAIL": "4025"})
    gmail = lab.route_for("GMail.com.")
    assert gmail is not None and (gmail.host, gmail.port) == ("127.0.0.1", 4025)
    yahoo = lab.route_for("yahoo.com")
    assert yahoo is not None and yahoo.port == 2526
    mx = lab.route_for("a.b.lab.example")
    assert mx is not None and mx.mx and mx.host is None
    other = lab.route_for("example.org")
    assert other is not None and other.domain == "*" and other.port == 2529


def test_route_env_without_default_is_a_located_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "lab.toml"
    cfg.write_text(
        f'policy = "{FIX / "policies/default-v1.toml"}"\n'
        '[routes]\n"gmail.com" = "127.0.0.1:${PORT_UNSET}"\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg, profiles=PROFILES, env={})
    [p] = info.value.problems
    assert (p.key, p.reason) == (
        'routes."gmail.com".to',
        "environment variable PORT_UNSET is not set and has no default",
    )
    assert (
        load_config(cfg, profiles=PROFILES, env={"PORT_UNSET": "7"}).routes["gmail.com"].port == 7
    )


def test_unknown_pool_in_policy_params_is_input_error() -> None:
    from engine.errors import InputError

    lab = load_config(LAB, profiles=PROFILES, env={})
    with pytest.raises(InputError, match="unknown pool 'nope'"):
        lab.policy_params("nope", PROFILES)


# --- bad files -----------------------------------------------------------------------------


def test_many_problems_in_one_file_are_reported_together() -> None:
    f = "many-problems.toml"
    assert problems(BAD / f) == {
        (f, "colour"),
        (f, "tenants.acme.api_keys[0]"),
        (f, "tenants.acme.limit.rate"),
        (f, "tenants.acme.route.pools[1]"),
        (f, "tenants.globex.lanes[1]"),
        (f, "tenants.globex.webhook_secret"),
        (f, 'domains."mail.acme.example".dkim[0].key_file'),
        (f, 'domains."news.initech.example".tenant'),
        (f, 'domains."news.initech.example".return_path'),
        (f, 'domains."news.initech.example".dkim[0].key_file'),
        (f, "pools.tx-a.max_rate"),
        (f, "pools.bulk-b.source_ips[1]"),
        (f, "pools.bulk-b.source_ips[2]"),
        (f, "pools.bulk-b.overflow"),
        (f, "pools.bulk-b.warmup"),
        (f, "pools.shared-c.source_ips"),
        (f, "pools.shared-c.dedicated"),
        (f, 'routes."gmail.com".to'),
        (f, 'routes."yahoo.com".pools[0]'),
        (f, 'shaping.override."tx-a.hotmale"'),
        (f, "shaping.default.messages_per_second"),
    }  # the default policy itself is fine: nothing is located there


def test_many_problems_say_what_is_wrong() -> None:
    r = reasons(BAD / "many-problems.toml")
    assert r["colour"].startswith("unknown key")
    assert "store its hash" in r["tenants.acme.api_keys[0]"]
    assert "hunter2" not in r["tenants.acme.api_keys[0]"]  # never echo a secret
    assert "greater than 0" in r["tenants.acme.limit.rate"]
    assert "unknown pool 'nope'" in r["tenants.acme.route.pools[1]"]
    assert "also in pool tx-a" in r["pools.bulk-b.source_ips[1]"]
    assert "127.0.0.300" in r["pools.bulk-b.source_ips[2]"]
    assert "unknown warmup plan 'lightning'" in r["pools.bulk-b.warmup"]
    assert "does not exist" in r['domains."mail.acme.example".dkim[0].key_file']
    assert "not an Ed25519 key" in r['domains."news.initech.example".dkim[0].key_file']
    assert "unknown tenant 'initech'" in r['domains."news.initech.example".tenant']
    assert "unknown provider 'hotmale'" in r['shaping.override."tx-a.hotmale"']
    assert "a valid list" in r["pools.shared-c.source_ips"]


def test_policy_problems_are_located_in_the_policy_file() -> None:
    lanes, syntax, missing = (
        "policies/bad-lanes-v1.toml",
        "policies/bad-syntax-v1.toml",
        "policies/missing-lane-v1.toml",
    )
    found = problems(BAD / "policy-bad.toml")
    assert found == {
        (lanes, "speed"),
        (lanes, "warmup_default"),
        (lanes, "lanes"),
        (lanes, "lanes.transactional.ttl"),
        (lanes, "lanes.lifecycle.weight"),
        (lanes, "lanes.lifecycle.retry.delays[1]"),
        (lanes, "lanes.prospecting.max_wait"),
        (lanes, "breaker.bounce_review"),
        (lanes, 'warmup.slow.caps."*"[1]'),
        (lanes, "warmup.slow.caps.hotmale"),
        (syntax, ""),
        (missing, "lanes"),
    }
    with pytest.raises(ConfigErrors) as info:
        load_config(BAD / "policy-bad.toml", profiles=PROFILES)
    by_key = {(Path(p.file).name, p.key): p.reason for p in info.value.problems}
    assert by_key[("bad-lanes-v1.toml", "lanes.transactional.ttl")] == (
        "TTL 1h is 30m shorter than the retry schedule's cumulative delays (1h30m)"
    )
    assert by_key[("bad-lanes-v1.toml", "lanes")] == "reserved shares sum to 1.2, more than 1"
    assert "line 2, column 21" in by_key[("bad-syntax-v1.toml", "")]
    assert by_key[("missing-lane-v1.toml", "lanes")] == "missing lane(s): prospecting"


def test_missing_policy_files_are_located_at_the_reference() -> None:
    f = "policy-missing.toml"
    assert problems(BAD / f) == {(f, "policy"), (f, "pools.tx-a.policy")}


def test_duplicates_and_cycles() -> None:
    f = "duplicates.toml"
    found = problems(BAD / f)
    assert found == {
        (f, "tenants.Acme"),
        (f, "tenants.Acme.api_keys[0]"),
        (f, 'domains."Mail.Acme.example"'),
        (f, 'domains."Mail.Acme.example".dkim[1].selector'),
        (f, "pools.a.source_ips[1]"),
        (f, "pools.a.overflow"),
    }
    assert "overflow cycle: a -> b -> a" in reasons(BAD / f)["pools.a.overflow"]


def test_syntax_error_is_one_problem_with_line_and_column() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(BAD / "syntax.toml", profiles=PROFILES)
    [p] = info.value.problems
    assert p.key == "" and "line 5, column 26" in p.reason


@pytest.mark.parametrize(
    ("content", "expect"),
    [(None, "no such file"), (b"\xff\xfe\x00garbage", "not UTF-8"), (b"[a\n", "TOML syntax")],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, expect: str) -> None:
    path = tmp_path / "x.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, profiles=PROFILES)
    [p] = info.value.problems
    assert p.file == str(path) and expect in p.reason


def test_plain_key_detected_and_hash_form_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "lab.toml"
    policy = FIX / "policies/default-v1.toml"
    cfg.write_text(
        f'policy = "{policy}"\n[tenants.t]\napi_keys = ["{hash_key("k1")}", "sha256:abc"]\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg, profiles={})
    r = {p.key: p.reason for p in info.value.problems}
    assert list(r) == ["tenants.t.api_keys[1]"] and "64 lowercase hex" in r["tenants.t.api_keys[1]"]


# --- small pieces --------------------------------------------------------------------------


def test_hash_key_is_sha256_of_utf8() -> None:
    assert hash_key("clé") == "sha256:" + hashlib.sha256("clé".encode()).hexdigest()
    with pytest.raises(ValueError):
        hash_key("")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h30m", 5400),
        ("3d", 259200),
        (90, 90),
        (1.5, 1.5),
        ("250ms", 0.25),
        (" 2h ", 7200),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1h30", "h", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for s in (1, 59, 60, 3600, 5400, 86400 + 61, 3 * 86400):
        assert parse_duration(format_duration(s)) == s


def test_key_path_quotes_only_where_needed() -> None:
    assert key_path(("pools", "bulk-b", "source_ips", 2)) == "pools.bulk-b.source_ips[2]"
    assert key_path(("domains", "a.example", "dkim", 0)) == 'domains."a.example".dkim[0]'
    assert key_path(("caps", "*")) == 'caps."*"'
