"""The engine's side of a staged policy rollout: which policy version sends a given message.

Owns the promotion record's reading (``HOME/promotion/<pool>.json``, written by
``inboxlab.promotion``), ``RecordReader`` (re-reads the file when its mtime or size changes,
so a running engine picks up each stage without a restart) and the pure, deterministic split
``policy_for(message_id, pool, record)``: a message's arm comes from a SHA-256 of
``pool`` and ``message_id``, so the same message always gets the same arm and the canary share
matches the stage percentage. Must not import ``inboxlab`` or ``sim``, and must not write.

Record (JSON object)::

    {"pool": "mkt-b", "state": "canary", "stage_percent": 10.0,
     "current_version": "default-v1", "current_policy": "/path/default-v1.toml",
     "candidate_version": "default-v1-tuned-1", "candidate_policy": "/path/....toml",
     "updated_at": 1767225600.0, ...}

``state`` is ``idle``, ``canary``, ``promoted`` or ``rolled_back``; only ``canary`` sends any
traffic to the candidate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError

STATES = ("idle", "canary", "promoted", "rolled_back")
BUCKETS = 1_000_000  # split resolution: one millionth of the traffic


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotionRecord:
    """Which policy a pool runs and which candidate takes ``stage_percent`` of its traffic."""

    pool: str
    current_version: str
    current_policy: str
    state: str = "idle"
    stage_percent: float = 0.0
    candidate_version: str | None = None
    candidate_policy: str | None = None
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InputError(f"promotion record for {self.pool}: unknown state {self.state!r}")
        if not 0.0 <= self.stage_percent <= 100.0:
            raise InputError(f"promotion record for {self.pool}: stage_percent "
                             f"{self.stage_percent} outside [0, 100]")
        if self.state == "canary" and not self.candidate_version:
            raise InputError(f"promotion record for {self.pool}: a canary needs a candidate")

    @property
    def canary_share(self) -> float:
        """The candidate's share of traffic in [0, 1] (0 unless a canary is running)."""
        return self.stage_percent / 100.0 if self.state == "canary" else 0.0


def record_from_dict(data: Any, where: str = "promotion record") -> PromotionRecord:
    """Build a record from its JSON form (extra keys ignored); raises ``InputError``."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    try:
        return PromotionRecord(
            pool=str(data["pool"]), current_version=str(data["current_version"]),
            current_policy=str(data["current_policy"]), state=str(data.get("state", "idle")),
            stage_percent=float(data.get("stage_percent", 0.0)),
            candidate_version=data.get("candidate_version"),
            candidate_policy=data.get("candidate_policy"),
            updated_at=float(data.get("updated_at", 0.0)),
        )
    except KeyError as exc:
        raise InputError(f"{where}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from None


def record_path(home: str | os.PathLike[str], pool: str) -> Path:
    """Where the promotion record of ``pool`` lives under the home folder."""
    return Path(home) / "promotion" / f"{pool}.json"


def bucket(message_id: str, pool: str) -> int:
    """The message's fixed bucket in ``[0, BUCKETS)`` (SHA-256 of pool and message id)."""
    digest = hashlib.sha256(f"{pool}\x00{message_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def is_canary(message_id: str, pool: str, record: PromotionRecord | None) -> bool:
    """True when ``message_id`` belongs to the candidate's share of ``pool``'s traffic."""
    if record is None or record.state != "canary":
        return False
    return bucket(message_id, pool) < round(record.canary_share * BUCKETS)


def policy_for(message_id: str, pool: str, record: PromotionRecord | None) -> str | None:
    """The policy version that sends ``message_id`` on ``pool`` (None: no record, the
    pool's configured policy applies). Pure and deterministic."""
    if record is None:
        return None
    if is_canary(message_id, pool, record):
        return record.candidate_version
    return record.current_version


def policy_file_for(message_id: str, pool: str, record: PromotionRecord | None) -> str | None:
    """Like ``policy_for`` but the policy file (what the engine loads)."""
    if record is None:
        return None
    if is_canary(message_id, pool, record):
        return record.candidate_policy
    return record.current_policy


def read_record(path: str | os.PathLike[str]) -> PromotionRecord | None:
    """Read one record file; None when it does not exist; ``InputError`` when it is bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not JSON: {exc.msg} at line {exc.lineno}") from None
    return record_from_dict(data, str(p))


class RecordReader:
    """Caches one pool's record and re-reads it when the file's mtime or size changes.

    A bad file keeps the last good record (a half-edited file must not stop sending);
    ``error`` says what went wrong."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._record: PromotionRecord | None = None
        self.error: str | None = None
        self.reloads = 0

    def get(self) -> PromotionRecord | None:
        """The current record (None while there is no file)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._record, self.error = None, None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._record = read_record(self.path)
                self.error = None
            except InputError as exc:
                self.error = str(exc)
            self._stamp = stamp
            self.reloads += 1
        return self._record
