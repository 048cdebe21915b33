"""Shaping layers: the highest layer that sets a field wins, field by field (property tests)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import LabConfig, Layer, LoadedPolicy, layer_shaping
from engine.config.models import PolicyModel, PoolModel, ShapingModel, ShapingPatch
from engine.config.shaping import SHAPING_FIELD_NAMES
from engine.policy.types import ProviderProfile, Shaping

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "max_connections": st.integers(1, 500),
    "max_messages_per_connection": st.integers(1, 5000),
    "messages_per_second": st.floats(0.01, 1e4, allow_nan=False),
    "burst": st.integers(1, 10_000),
    "connect_rate_per_minute": st.floats(0.01, 1e4, allow_nan=False),
    "tls": st.sampled_from(["opportunistic", "required"]),
}


@st.composite
def patches(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(SHAPING_FIELD_NAMES)))
    return {n: draw(FIELD_VALUES[n]) for n in sorted(names)}


def expected(layers: list[tuple[str, dict[str, Any]]], field: str) -> tuple[Any, str]:
    value, source = getattr(Shaping(), field), "builtin"
    for name, patch in layers:
        if field in patch:
            value, source = patch[field], name
    return value, source


@given(st.lists(patches(), max_size=8))
def test_fold_takes_the_last_setter_per_field(raw: list[dict[str, Any]]) -> None:
    layers = [Layer(f"l{i}", p) for i, p in enumerate(raw)]
    resolved = layer_shaping(layers)
    for field in SHAPING_FIELD_NAMES:
        value, source = expected([(f"l{i}", p) for i, p in enumerate(raw)], field)
        assert getattr(resolved.shaping, field) == value
        assert resolved.source[field] == source


POLICY = PolicyModel.model_validate({
    "version": "p-v1",
    "lanes": {
        lane: {"weight": 1.0, "ttl": "1d", "max_wait": "1h", "retry": {"delays": ["5m"]}}
        for lane in ("transactional", "lifecycle", "prospecting")
    },
})
ORDER = ("policy:default", "lab:default", "provider", "policy:domain", "lab:domain",
         "policy:pool.*", "lab:pool.*", "policy:*.prov", "lab:*.prov",
         "policy:pool.prov", "lab:pool.prov")


def _shaping_model(default: dict[str, Any], domain: dict[str, Any], over: dict[str, dict[str, Any]]
                   ) -> ShapingModel:
    return ShapingModel(
        default=ShapingPatch(**default),
        domain={"rcpt.example": ShapingPatch(**domain)},
        override={k: ShapingPatch(**v) for k, v in over.items()},
    )


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({name: patches() for name in ORDER}))
def test_lab_layers_apply_in_documented_order(p: dict[str, dict[str, Any]]) -> None:
    """Random values at every layer of a real LabConfig: the highest setter wins each field."""
    # A provider profile cannot mark a field "unset": fields equal to the built-in default
    # count as unset (documented in engine.config.lab.provider_fields).
    base = Shaping()
    provider_set = {k: v for k, v in p["provider"].items() if v != getattr(base, k)}
    profile = ProviderProfile(name="prov", shaping=dataclasses.replace(base, **provider_set))
    policy = POLICY.model_copy(update={"shaping": _shaping_model(
        p["policy:default"], p["policy:domain"],
        {"pool.*": p["policy:pool.*"], "*.prov": p["policy:*.prov"],
         "pool.prov": p["policy:pool.prov"]})})
    lab_shaping = _shaping_model(
        p["lab:default"], p["lab:domain"],
        {"pool.*": p["lab:pool.*"], "*.prov": p["lab:*.prov"], "pool.prov": p["lab:pool.prov"]})
    lab = LabConfig(
        file="mem.toml", name="mem", tenants={}, domains={},
        pools={"pool": PoolModel(source_ips=["127.0.0.2"]),
               "other": PoolModel(source_ips=["127.0.0.3"])},
        routes={}, shaping=lab_shaping, policies={"p": LoadedPolicy("p", policy)},
        pool_policy={"pool": "p", "other": "p"}, default_policy="p",
        profiles={"prov": profile},
    )
    layered = [(n, provider_set if n == "provider" else p[n]) for n in ORDER]
    resolved = lab.shaping_layers("pool", "prov", "rcpt.example")
    for field in SHAPING_FIELD_NAMES:
        value, source = expected(layered, field)
        assert getattr(resolved.shaping, field) == value, field
        # layer names carry their origin: map ours onto the config's names
        assert _short(resolved.source[field]) == source, (field, resolved.source[field])
    assert lab.resolved_shaping("pool", "prov", "rcpt.example") == resolved.shaping

    # without the recipient domain the domain layers drop out; another pool loses pool.*
    no_domain = [(n, v) for n, v in layered if "domain" not in n]
    other = [(n, v) for n, v in no_domain if "pool." not in n]
    for field in SHAPING_FIELD_NAMES:
        assert getattr(lab.resolved_shaping("pool", "prov"), field) == expected(no_domain, field)[0]
        assert getattr(lab.resolved_shaping("other", "prov"), field) == expected(other, field)[0]
    assert lab.policy_params("other").shaping[("other", "prov")] == lab.resolved_shaping(
        "other", "prov")


def _short(name: str) -> str:
    if name.startswith("provider:"):
        return "provider"
    origin, _, rest = name.partition(":")
    if rest.startswith("domain:"):
        return f"{origin}:domain"
    return f"{origin}:{rest.removeprefix('override:')}" if rest.startswith("override:") else name
