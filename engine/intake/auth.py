"""Tenant authentication for the HTTP API: a Bearer API key checked against hashed keys.

Owns the one function every router uses to turn an ``Authorization`` header into a tenant;
configs store only ``sha256:`` hashes of keys (``inboxlab config hash-key``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException

from engine.config import LabConfig, hash_key


def bearer_tenant(config: LabConfig) -> Callable[[str | None], str]:
    """A function: ``Authorization`` header -> tenant name; raises 401 for a missing or
    unknown key (compared in constant time)."""
    keys = {h: t for t, m in config.tenants.items() for h in m.api_keys}

    def tenant_of(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing Bearer API key",
                                headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(authorization[7:].strip() or "-")
        for stored, tenant in keys.items():
            if hmac.compare_digest(stored, digest):
                return tenant
        raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})

    return tenant_of
