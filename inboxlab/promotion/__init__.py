"""Promotion: admit a tuned policy through the gates, roll it out in stages, roll it back.

Owns the promotion record ``HOME/promotion/<pool>.json`` (read by the engine through
``engine.rollout``; written here atomically) and the operations ``admit``, ``status``,
``advance``, ``rollback`` and ``check``. Each step appends an audit record and a ``promotion``
event (``inboxlab.promotion.audit``). The gates are ``gates``, the stage table ``stages``, the
canary's error budget ``canary``. Must not touch the engine's spool or the simulation.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.errors import InputError, StateError
from engine.rollout import PromotionRecord, read_record, record_path
from inboxlab.promotion import audit, canary, gates, stages

__all__ = ["admit", "advance", "check", "rollback", "status"]


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def policy_version(path: Path) -> str:
    """The ``version`` of a policy file; ``InputError`` when unreadable."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a readable policy file: {exc}") from None
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise InputError(f"{path}: the policy file has no version")
    return version


def _write(home: Path, rec: PromotionRecord, extra: dict[str, Any]) -> None:
    path = record_path(home, rec.pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump({**asdict(rec), **extra}, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def _load(home: Path, pool: str) -> tuple[PromotionRecord, dict[str, Any]]:
    path = record_path(home, pool)
    rec = read_record(path)
    if rec is None:
        raise InputError(f"pool {pool!r} has no promotion record in {path.parent} "
                         "(promote a policy first, or name --current)")
    extra = {k: v for k, v in json.loads(path.read_text()).items()
             if k not in asdict(rec)}
    return rec, extra


def status(home: Path, pool: str) -> dict[str, Any]:
    """The record and the pool's audit trail."""
    rec, extra = _load(home, pool)
    return {**asdict(rec), **extra, "audit": audit.read_audit(home, pool)}


def _move(home: Path, rec: PromotionRecord, extra: dict[str, Any], action: str, *,
          actor: str | None, reason: str, evidence: dict[str, Any], now: float
          ) -> dict[str, Any]:
    state, pct = stages.step(rec.state, rec.stage_percent, action)
    fields = asdict(rec)
    fields.update(state=state, stage_percent=pct, updated_at=now)
    if state == "promoted":
        fields.update(current_version=rec.candidate_version, current_policy=rec.candidate_policy,
                      candidate_version=None, candidate_policy=None)
        extra = {**extra, "previous_version": rec.current_version}
    version = rec.candidate_version if rec.candidate_version else rec.current_version
    new = PromotionRecord(**fields)
    _write(home, new, {**extra, "stage_started_at": now})
    return audit.record_step(home, pool=rec.pool, action=action,
                             state=stages.event_state(state, pct), actor=_actor(actor), now=now,
                             reason=reason, policy_version=version,
                             evidence={"from": stages.event_state(rec.state, rec.stage_percent),
                                       "to_percent": pct, **evidence})


def admit(home: Path, pool: str, policy: Path, evaluation: dict[str, Any], *,
          current: Path | None = None, actor: str | None = None, margin: float = 0.01,
          allow_noninferior: bool = False, now: float | None = None) -> dict[str, Any]:
    """Gate ``policy`` against the pool's current policy; on success start the 1 % stage.

    A refused admission is audited too and raises ``StateError`` with the reasons."""
    now = time.time() if now is None else now
    version = policy_version(policy)
    existing = read_record(record_path(home, pool))
    if existing is not None:
        rec, extra = _load(home, pool)
    else:
        if current is None:
            raise InputError(f"pool {pool!r} has no promotion record yet: name its current "
                             "policy with --current FILE")
        rec = PromotionRecord(pool=pool, current_version=policy_version(current),
                              current_policy=str(current.resolve()), updated_at=now)
        extra = {}
    if rec.state == "canary":
        raise StateError(f"pool {pool!r} already runs a canary of {rec.candidate_version} "
                         f"at {rec.stage_percent:g} %: advance or roll it back first")
    result = gates.admit(evaluation, version, rec.current_version, margin=margin,
                         allow_noninferior=allow_noninferior)
    evidence = {"gates": result.evidence, "candidate": version, "current": rec.current_version}
    if not result.admitted:
        audit.record_step(home, pool=pool, action="refuse", state="refused",
                          actor=_actor(actor), now=now, reason="; ".join(result.reasons),
                          policy_version=version, evidence=evidence)
        raise StateError(f"{version} refused for {pool}: " + "; ".join(result.reasons))
    staged = PromotionRecord(pool=pool, current_version=rec.current_version,
                             current_policy=rec.current_policy, state=rec.state,
                             stage_percent=rec.stage_percent, candidate_version=version,
                             candidate_policy=str(policy.resolve()), updated_at=now)
    return _move(home, staged, extra, "admit", actor=actor,
                 reason=f"gates passed ({result.evidence.get('verdict')})",
                 evidence=evidence, now=now)


def advance(home: Path, pool: str, *, actor: str | None = None, reason: str = "manual",
            evidence: dict[str, Any] | None = None, now: float | None = None
            ) -> dict[str, Any]:
    """Move the canary to its next stage (from 50 %: promoted)."""
    rec, extra = _load(home, pool)
    return _move(home, rec, extra, "advance", actor=actor, reason=reason,
                 evidence=evidence or {}, now=time.time() if now is None else now)


def rollback(home: Path, pool: str, *, actor: str | None = None, reason: str = "manual",
             evidence: dict[str, Any] | None = None, now: float | None = None
             ) -> dict[str, Any]:
    """End the canary: the current policy takes all the pool's traffic again."""
    rec, extra = _load(home, pool)
    return _move(home, rec, extra, "rollback", actor=actor, reason=reason,
                 evidence=evidence or {}, now=time.time() if now is None else now)


def check(home: Path, pool: str, *, actor: str | None = None, since: float | None = None,
          min_outcomes: int = 200, now: float | None = None) -> dict[str, Any]:
    """Judge the canary against the control from warehouse events since the stage began
    (or ``since``), then advance, roll back or hold. Returns the verdict and the step."""
    rec, extra = _load(home, pool)
    if rec.state != "canary" or rec.candidate_version is None:
        raise StateError(f"pool {pool!r} runs no canary (state {rec.state})")
    start = float(since if since is not None else extra.get("stage_started_at", rec.updated_at))
    counts = canary.arm_counts(home, pool, [rec.current_version, rec.candidate_version], start)
    verdict = canary.judge(counts[rec.candidate_version], counts[rec.current_version],
                           min_outcomes=min_outcomes)
    evidence = {"since": start, "stage_percent": rec.stage_percent, **verdict.evidence}
    out: dict[str, Any] = {"verdict": verdict.action, "reason": verdict.reason,
                           "evidence": evidence}
    if verdict.action == "hold":
        return out
    op = advance if verdict.action == "advance" else rollback
    out["step"] = op(home, pool, actor=actor, reason=f"check: {verdict.reason}",
                     evidence=evidence, now=now)
    return out
