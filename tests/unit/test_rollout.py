"""engine.rollout: the deterministic split and the re-reading record reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.rollout import (
    PromotionRecord,
    RecordReader,
    is_canary,
    policy_file_for,
    policy_for,
    read_record,
    record_path,
)


def _rec(pct: float, state: str = "canary") -> PromotionRecord:
    return PromotionRecord(pool="mkt-b", current_version="v1", current_policy="/p/v1.toml",
                           state=state, stage_percent=pct, candidate_version="v2",
                           candidate_policy="/p/v2.toml", updated_at=1.0)


@settings(max_examples=40, deadline=None)
@given(pct=st.sampled_from([1.0, 10.0, 25.0, 50.0]), salt=st.integers(0, 10**6))
def test_canary_share_matches_stage(pct: float, salt: int) -> None:
    rec = _rec(pct)
    n = 20_000
    hits = sum(is_canary(f"<{salt}.{i}@acme.example>", "mkt-b", rec) for i in range(n))
    share = hits / n
    p = pct / 100
    tol = 4 * (p * (1 - p) / n) ** 0.5 + 1e-9  # 4 sigma of a binomial share
    assert abs(share - p) <= tol


@given(mid=st.text(min_size=1, max_size=40), pct=st.floats(0, 100))
def test_same_message_same_arm_and_monotone_stages(mid: str, pct: float) -> None:
    rec = _rec(pct)
    first = policy_for(mid, "mkt-b", rec)
    assert first == policy_for(mid, "mkt-b", rec)
    assert first in ("v1", "v2")
    # a message on the canary at a stage stays on it at every later stage
    if first == "v2":
        assert all(policy_for(mid, "mkt-b", _rec(q)) == "v2" for q in (50.0, 100.0) if q >= pct)
    assert policy_file_for(mid, "mkt-b", rec) == ("/p/v2.toml" if first == "v2" else "/p/v1.toml")


def test_only_a_canary_sends_candidate_traffic() -> None:
    for state in ("idle", "promoted", "rolled_back"):
        rec = PromotionRecord(pool="p", current_version="v1", current_policy="x", state=state,
                              stage_percent=100.0, candidate_version="v2")
        assert {policy_for(str(i), "p", rec) for i in range(200)} == {"v1"}
    assert policy_for("m", "p", None) is None
    assert {policy_for(str(i), "p", _rec(100.0)) for i in range(200)} == {"v2"}


def test_reader_picks_up_each_stage_without_restart(tmp_path: Path) -> None:
    path = record_path(tmp_path, "mkt-b")
    reader = RecordReader(path)
    assert reader.get() is None
    path.parent.mkdir(parents=True)
    for i, pct in enumerate((1.0, 10.0, 25.0)):
        data = {"pool": "mkt-b", "current_version": "v1", "current_policy": "a",
                "candidate_version": "v2", "candidate_policy": "b", "state": "canary",
                "stage_percent": pct, "updated_at": float(i)}
        path.write_text(json.dumps(data))
        os.utime(path, ns=(10**9 * (i + 1), 10**9 * (i + 1)))
        rec = reader.get()
        assert rec is not None and rec.stage_percent == pct
    assert reader.reloads == 3
    reader.get()
    assert reader.reloads == 3  # unchanged file: no re-read
    path.write_text("{not json")
    os.utime(path, ns=(10**10, 10**10))
    rec = reader.get()
    assert rec is not None and rec.stage_percent == 25.0  # last good record kept
    assert reader.error and "not JSON" in reader.error


def test_bad_records_raise_input_error(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"pool": "x"}))
    with pytest.raises(InputError, match="missing key 'current_version'"):
        read_record(p)
    p.write_text(json.dumps({"pool": "x", "current_version": "a", "current_policy": "b",
                             "state": "canary", "stage_percent": 5}))
    with pytest.raises(InputError, match="needs a candidate"):
        read_record(p)
    assert read_record(tmp_path / "missing.json") is None
