"""Dead letters and replay, through the spool's named methods (SQLite ``Spool`` or
PostgreSQL ``PgSpool`` alike).

Owns reading failed recipients (``dead_lettered``, ``expired``, ``bounced``) with their
reasons and full attempt history -- redacted in listings (no body, recipient masked) -- and
replay: matching recipients move ``-> replayed -> queued`` in ONE transaction with their
events, optionally with a new ``not_before`` (kept as the recipient's ``next_at``, which the
runner hands to the core) and a requested pool (kept in ``replays``). A replay is keyed by
tenant + filter + constraints: each recipient is replayed at most once per key, so a second
identical request does nothing. The SQL lives in the spools (``failed_recipients``,
``recipient_events``, ``replay_failed``, ...); this module must not change the spool's own
tables or states (``engine.spool.store`` / ``pg`` / ``states`` own those).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import InputError

FAILED = ("dead_lettered", "expired", "bounced")
_TERMINAL_EVENTS = ("dead_lettered", "expired", "bounced", "ambiguous")


def mask(address: str) -> str:
    """``ann@example.net`` -> ``a**@example.net`` (the domain stays: it is what operators
    filter on)."""
    local, at, domain = address.partition("@")
    if not at:
        return "*" * len(address)
    return (local[:1] + "*" * max(2, len(local) - 1)) + "@" + domain


@dataclass(frozen=True, slots=True)
class Filter:
    """Which failed recipients an operation covers (None: any)."""

    tenant: str | None = None
    campaign: str | None = None
    provider: str | None = None
    reason: str | None = None  # a case-insensitive substring of the reason
    state: str | None = None  # one of FAILED
    message_id: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in FAILED:
            raise InputError(f"state must be one of {', '.join(FAILED)}, got {self.state!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One failed recipient, redacted for listing (``recipient`` is masked)."""

    id: int
    message_id: str
    tenant: str
    campaign: str | None
    lane: str
    recipient: str
    state: str
    ambiguous: bool
    attempts: int
    provider: str | None
    pool: str | None
    reason: str | None
    updated: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: recipient ids moved back to queued, and ids matched but already
    replayed under the same key."""

    key: str
    replayed: tuple[int, ...]
    already: tuple[int, ...]


class DeadLetters:
    """Dead-letter queries and replay on one open spool (``Spool`` or ``PgSpool``)."""

    def __init__(self, spool: Any) -> None:
        self.spool = spool
        spool.prepare_side_tables()

    def _rows(self, f: Filter, limit: int, rid: int | None = None) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for row in self.spool.failed_recipients(tenant=f.tenant, campaign=f.campaign,
                                                state=f.state, message_id=f.message_id,
                                                rid=rid):
            rid_, pid, tenant, campaign, lane, rcpt, state, amb, n, upd = row
            evs = self.spool.recipient_events(pid, rcpt)
            term = next((e for e in evs if e[0] in _TERMINAL_EVENTS), None)
            reason = (term[1] or term[4]) if term else None
            provider = next((e[2] for e in evs if e[2]), None)
            pool = next((e[3] for e in evs if e[3]), None)
            if pool is None:
                pool = self.spool.last_pool(rid_)
            if f.provider is not None and provider != f.provider:
                continue
            if f.reason is not None and f.reason.lower() not in (reason or "").lower():
                continue
            out.append(DeadLetter(rid_, pid, tenant, campaign, lane, rcpt, state,
                                  bool(amb), n, provider, pool, reason, upd))
            if len(out) >= limit:
                break
        return out

    def list(self, f: Filter = Filter(), *, limit: int = 1000) -> list[DeadLetter]:
        """Failed recipients matching ``f``, oldest first, recipients masked."""
        from dataclasses import replace

        return [replace(d, recipient=mask(d.recipient)) for d in self._rows(f, limit)]

    def show(self, rid: int, *, tenant: str | None = None) -> dict[str, Any]:
        """One failed recipient with its full attempt history (the body is never shown:
        only its size and hash). Raises ``InputError`` if it is not a dead letter."""
        rows = self._rows(Filter(tenant=tenant), 1, rid=rid)
        if not rows:
            raise InputError(f"no dead letter with id {rid}"
                             + (f" for tenant {tenant}" if tenant else ""))
        atts = self.spool.attempt_history(rid)
        size, bhash = self.spool.body_digest(rid) or (0, "")
        reps = self.spool.replays_of(rid)
        out = rows[0].as_dict()
        out["body"] = {"bytes": size, "sha256": bhash, "redacted": True}
        out["attempt_history"] = [
            dict(zip(("n", "started", "finished", "pool", "source_ip", "mx_host",
                      "data_started", "code", "response"), a, strict=True)) for a in atts]
        out["replays"] = [dict(zip(("key", "ts", "pool", "not_before"), r, strict=True))
                          for r in reps]
        return out

    def replay(self, f: Filter, *, pool: str | None = None, not_before: float | None = None,
               limit: int = 100_000) -> ReplayResult:
        """Requeue every matching failed recipient once per (filter, constraints) key."""
        key = hashlib.sha256(json.dumps(
            {"filter": asdict(f), "pool": pool, "not_before": not_before},
            sort_keys=True).encode()).hexdigest()[:32]
        matched = self._rows(f, limit)
        done, already = self.spool.replay_failed(
            key, [(d.id, d.state) for d in matched], pool=pool, not_before=not_before,
            reason=f"replay {key}" + (f" pool={pool}" if pool else ""))
        return ReplayResult(key, tuple(done), tuple(already))

    def requested_pool(self, rid: int) -> str | None:
        """The pool the latest replay of ``rid`` asked for (None: no constraint)."""
        result: str | None = self.spool.requested_pool(rid)
        return result
