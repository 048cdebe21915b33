"""Engine spool outboxes into the warehouse: incremental, exactly once per row, one position per
spool; ``inboxlab ingest --spool`` and the unattended ``inboxlab promote watch``."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.spool import Spool
from inboxlab.promotion import admit, status
from inboxlab.warehouse import ingest_outbox, query, read_ledger
from inboxlab.warehouse.outbox import ingest_spool, spool_stream

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "fixtures/policies/default-v1.toml"
T0 = dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC).timestamp()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _spool(path: Path, run_id: str, events: list[tuple[str, str, int]], start: float = T0
           ) -> None:
    """Append declared events (policy version, event, how many) for pool mkt-b to a real
    engine spool's outbox, each in its own transaction as the engine writes them."""
    clock = iter(range(10**9))
    spool = Spool(path, run_id=run_id, clock=lambda: start + next(clock))
    try:
        for version, event, n in events:
            for i in range(n):
                spool.emit(event=event, pool="mkt-b", policy_version=version, lane="lifecycle",
                           message_id=f"{run_id}-{version}-{event}-{i}")
    finally:
        spool.close()


def _count(home: Path, where: str = "TRUE") -> int:
    return int(query(home, f"SELECT count(*) AS n FROM events WHERE {where}")["n"][0])


def test_each_spool_is_its_own_stream_and_rows_load_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _spool(a, "eng-a", [("v1", "delivered", 30)])
    _spool(b, "eng-b", [("v1", "delivered", 5)])
    assert spool_stream(a) != spool_stream(b)
    first = ingest_spool(a, home)
    assert first.loaded and first.rows == 30
    # the other engine's outbox starts at seq 1 too: its own position, nothing hidden
    assert ingest_spool(b, home).rows == 5
    assert _count(home, "run_id = 'eng-a'") == 30 and _count(home, "run_id = 'eng-b'") == 5
    # again: nothing new
    again = ingest_spool(a, home)
    assert not again.loaded and again.rows == 0
    # the engine goes on writing: only the tail loads, in batches smaller than the tail
    _spool(a, "eng-a", [("v1", "deferred", 12)], start=T0 + 1000)
    tail = ingest_spool(a, home, batch=5)
    assert tail.rows == 12 and tail.loaded
    assert _count(home, "run_id = 'eng-a'") == 42
    assert read_ledger(home)["outbox"][spool_stream(a)] == 42
    # a spool moved (or its engine home given instead of the file) keeps its position
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(a, moved / "spool.db")
    assert ingest_spool(moved, home).rows == 0
    assert _count(home) == 47


def test_unnamed_outbox_stream_keeps_its_old_position(tmp_path: Path) -> None:
    from engine.events import Event

    home = tmp_path / "home"
    rows = [Event(ts=T0 + i, event="delivered", source="live", seq=i + 1, message_id=f"m{i}")
            for i in range(6)]
    assert ingest_outbox(rows[:4], home).rows == 4
    assert ingest_outbox(rows[2:], home).rows == 2
    assert ingest_outbox(rows, home, stream="other").rows == 6
    ledger = read_ledger(home)
    assert ledger["outbox_seq"] == 6 and ledger["outbox"] == {"other": 6}


def test_bad_spool_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such spool"):
        ingest_spool(tmp_path / "nope.db", tmp_path / "home")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all " * 100)
    with pytest.raises(InputError, match="not an engine spool"):
        ingest_spool(junk, tmp_path / "home")
    empty = tmp_path / "empty.db"
    Spool(empty).close()
    res = ingest_spool(empty, tmp_path / "home")
    assert not res.loaded and spool_stream(empty) is None
    out = _cli("ingest", "--home", str(tmp_path / "home"))
    assert out.returncode != 0 and "needs run folders or --spool" in out.stderr
    out = _cli("ingest", "--spool", str(junk), "--home", str(tmp_path / "home"))
    assert out.returncode != 0 and "not an engine spool" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_ingest_spool_is_incremental(tmp_path: Path) -> None:
    home, spool = tmp_path / "home", tmp_path / "spool.db"
    _spool(spool, "eng-c", [("v1", "delivered", 8), ("v1", "bounced", 2)])
    out = _cli("ingest", "--spool", str(spool), "--home", str(home))
    assert out.returncode == 0 and "10 new events" in out.stdout, out.stderr
    out = _cli("ingest", "--spool", str(tmp_path), "--home", str(home))
    assert out.returncode == 0 and "nothing new" in out.stdout, out.stderr
    assert _count(home, "event = 'bounced'") == 2


def _admitted(home: Path, tmp: Path) -> None:
    cand = tmp / "default-v1-tuned-1.toml"
    cand.write_text(DEFAULT.read_text().replace('version = "default-v1"',
                                                'version = "default-v1-tuned-1"'))
    ev = {"base": {"version": "default-v1"}, "winner": {
        "version": "default-v1-tuned-1",
        "constraints": {"complaint_rate<0.0008": {"value": 0.0001, "bound": 0.0008,
                                                  "pass": True}},
        "comparison": {"objective": {"metric": "throughput", "direction": "maximise",
                                     "unit": "per hour", "n": 24, "ci95": [2.0, 9.0],
                                     "mean_diff": 5.5, "base_mean": 2400.0,
                                     "base_per_unit": 100.0}}}}
    admit(home, "mkt-b", cand, ev, current=DEFAULT, actor="test", now=T0 - 10)


def test_watch_rolls_back_a_bad_canary_from_the_engine_spool(tmp_path: Path) -> None:
    home, spool = tmp_path / "home", tmp_path / "spool.db"
    _admitted(home, tmp_path)
    # the candidate bounces a fifth of its mail; the control almost none
    _spool(spool, "eng-w", [("default-v1", "delivered", 400), ("default-v1", "bounced", 2),
                            ("default-v1-tuned-1", "delivered", 80),
                            ("default-v1-tuned-1", "bounced", 20)])
    out = _cli("promote", "watch", "--pool", "mkt-b", "--home", str(home), "--spool",
               str(spool), "--every", "0", "--min-outcomes", "50", "--actor", "watcher")
    assert out.returncode == 0, out.stderr
    assert "rollback" in out.stdout and "bounce" in out.stdout, out.stdout
    st = status(home, "mkt-b")
    assert st["state"] == "rolled_back" and st["audit"][-1]["actor"] == "watcher"
    # the watch loaded the spool itself; a second watch finds nothing to do and says so
    assert _count(home, "run_id = 'eng-w'") == 502
    out = _cli("promote", "watch", "--pool", "mkt-b", "--home", str(home), "--every", "0")
    assert out.returncode == 0 and "nothing to watch" in out.stdout


def test_watch_holds_until_enough_outcomes_then_stops_when_told(tmp_path: Path) -> None:
    home, spool = tmp_path / "home", tmp_path / "spool.db"
    _admitted(home, tmp_path)
    _spool(spool, "eng-h", [("default-v1", "delivered", 30), ("default-v1-tuned-1",
                                                              "delivered", 3)])
    out = _cli("promote", "watch", "--pool", "mkt-b", "--home", str(home), "--spool",
               str(spool), "--every", "0", "--max-checks", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("hold") == 2, out.stdout
    assert json.loads(json.dumps(status(home, "mkt-b")["state"])) == "canary"
