"""The promotion audit trail: one JSON line per step, and the same step as a warehouse event.

Owns ``HOME/promotion/audit.jsonl`` (append-only; who, when, what, why, the evidence) and the
event run folders ``HOME/promotions/<pool>-<n>/events.parquet``: each step is its own run
(run id ``promotion-<pool>-<n>``, stable), written with ``engine.eventio`` and loaded into the
warehouse once through ``ingest_run_dir``. Must not decide anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.events import Event


def audit_path(home: Path) -> Path:
    return home / "promotion" / "audit.jsonl"


def read_audit(home: Path, pool: str | None = None) -> list[dict[str, Any]]:
    """Every audit record (of ``pool``), oldest first."""
    path = audit_path(home)
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if pool is None or r.get("pool") == pool]


def record_step(home: Path, *, pool: str, action: str, state: str, actor: str, now: float,
                reason: str, policy_version: str | None, evidence: dict[str, Any],
                ingest: bool = True) -> dict[str, Any]:
    """Append the audit line, write the promotion event and load it into the warehouse."""
    from engine.eventio import write_events
    from inboxlab.warehouse import ingest_run_dir

    n = len(read_audit(home, pool)) + 1
    run_id = f"promotion-{pool}-{n}"
    entry = {"n": n, "run_id": run_id, "pool": pool, "action": action, "state": state,
             "actor": actor, "at": now, "policy_version": policy_version, "reason": reason,
             "evidence": evidence}
    path = audit_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    event = Event(ts=now, event="promotion", source="live", run_id=run_id, seq=n, pool=pool,
                  state=state, reason=f"{action}: {reason}", policy_version=policy_version,
                  detail=json.loads(json.dumps({"actor": actor, **evidence}, default=str)))
    folder = home / "promotions" / f"{pool}-{n}"
    write_events([event], folder / "events.parquet")
    if ingest:
        ingest_run_dir(folder, home)
    return entry
