"""Config as code: the lab config and versioned policy files, validated and resolved.

Owns the TOML formats, their checks and their resolution into the frozen dataclasses
of ``engine.policy.params`` (which the pure core reads). It must not decide anything a
policy makes: it only validates and resolves.

Files
    lab config (``fixtures/lab.toml``): ``name``, ``policy`` (the default policy file,
    relative to the lab file), ``[tenants.<name>]``, ``[domains."<domain>"]``,
    ``[pools.<name>]`` (each may name its own ``policy``), ``[routes."<domain>"]``
    (``"*.suffix"`` and ``"*"`` allowed; ``to = "host:port"`` with ``${ENV:-default}``
    expansion, or ``mx = true`` for DNS), ``[shaping]`` and ``[serve]`` (the listeners of
    ``inboxlab serve``: ``[serve.inbound]``, ``[serve.submission]``, ``[serve.webhooks]``).
    policy file (``fixtures/policies/*.toml``): ``version``, ``[lanes.<lane>]``,
    ``[breaker]``, ``warmup_default`` + ``[warmup.<plan>]`` and ``[shaping]``.
    Durations are seconds or strings like ``"15m"``, ``"4h"``, ``"1h30m"``, ``"3d"``.

Shaping layers (lowest first; the highest layer that sets a field wins)
    1. ``builtin``            the ``Shaping`` dataclass defaults
    2. ``policy:default``     ``[shaping.default]`` of the pool's policy file
    3. ``lab:default``        ``[shaping.default]`` of the lab config
    4. ``provider:<name>``    the provider profile (``engine.profiles``), fields that
                              differ from the built-in defaults
    5. ``policy:domain:<d>``, ``lab:domain:<d>``   ``[shaping.domain."<recipient domain>"]``
    6. operator overrides ``[shaping.override."<pool>.<provider>"]``, from the least
       specific to the most: ``pool.*`` < ``*.provider`` < ``pool.provider``; at each
       step the policy file's entry, then the lab's.
    ``LabConfig.shaping_layers(pool, provider, domain)`` returns the layers and which
    one set each field (``inboxlab config show``).

Entry points: ``load_config(path) -> LabConfig`` (raises ``ConfigErrors`` with every
problem), ``LabConfig.policy_params(pool_or_none, profiles) -> PolicyParams``,
``LabConfig.resolved_shaping(pool, provider, domain=None) -> Shaping``, ``hash_key``.
"""

from __future__ import annotations

import hashlib

from engine.config.lab import LabConfig, LoadedPolicy, Route
from engine.config.loader import key_path, load_config, load_policy
from engine.config.shaping import Layer, ResolvedShaping, layer_shaping

__all__ = [
    "LabConfig",
    "Layer",
    "LoadedPolicy",
    "ResolvedShaping",
    "Route",
    "hash_key",
    "key_path",
    "layer_shaping",
    "load_config",
    "load_policy",
]


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    if not key:
        raise ValueError("an API key cannot be empty")
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
