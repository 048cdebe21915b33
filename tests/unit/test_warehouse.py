"""Warehouse storage: event Parquet round trip, exactly-once ingest, outbox sequence, export."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError, QueryError
from engine.eventio import SCHEMA, events_frame, read_events, write_events
from engine.events import Event
from inboxlab.warehouse import export, ingest_outbox, ingest_run_dir, query, read_ledger


def _run_events(run_id: str, n: int, source: str = "sim") -> list[Event]:
    out = []
    for i in range(n):
        out.append(Event(ts=1_700_000_000 + i, event="enqueued", source=source, run_id=run_id,
                         message_id=f"{run_id}-{i}"))
        out.append(Event(ts=1_700_000_030 + i, event="delivered", source=source, run_id=run_id,
                         message_id=f"{run_id}-{i}", provider="gmail", pool="a", attempt=1,
                         enqueued_ts=1_700_000_000 + i, detail={"i": i}))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 4e9, allow_nan=False), st.sampled_from(
    ["delivered", "deferred", "complaint"]), st.one_of(st.none(), st.integers(200, 599)),
    st.one_of(st.none(), st.text(max_size=8))), min_size=1, max_size=20))
def test_eventio_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    events = [Event(ts=round(ts, 6), event=e, source="sim", run_id="r", smtp_code=c, reason=r)
              for ts, e, c, r in rows]
    path = tmp_path_factory.mktemp("io") / "e.parquet"
    assert write_events(events, path) == len(events)
    frame = read_events(path)
    assert frame.schema == pl.Schema(SCHEMA)
    back = [Event.from_row(row) for row in frame.iter_rows(named=True)]
    for a, b in zip(back, events, strict=True):
        assert abs(a.ts - b.ts) < 1e-5
        assert (a.event, a.smtp_code, a.reason) == (b.event, b.smtp_code, b.reason)


def test_events_frame_accepts_epoch_rows() -> None:
    frame = events_frame([{"ts": 1.5, "event": "delivered", "source": "sim"}])
    assert frame["ts"].dt.epoch("us").to_list() == [1_500_000]
    assert frame.columns == list(SCHEMA)


def test_ingest_run_is_exactly_once(tmp_path: Path) -> None:
    run = tmp_path / "run1"
    write_events(_run_events("r1", 50), run / "events.parquet")
    home = tmp_path / "home"
    first = ingest_run_dir(run, home)
    again = ingest_run_dir(run, home)
    assert [r.loaded for r in first] == [True] and [r.loaded for r in again] == [False]
    n = query(home, "SELECT count(*) AS n FROM events")["n"][0]
    assert n == 100
    files = list((home / "events").rglob("*.parquet"))
    assert all("source=sim/run=r1/day=2023-11-14" in str(f) for f in files)
    assert read_ledger(home)["loads"]["run:sim:r1"]["rows"] == 100


def test_ingest_rejects_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no events\.parquet"):
        ingest_run_dir(tmp_path, tmp_path / "home")
    (tmp_path / "events.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable"):
        ingest_run_dir(tmp_path, tmp_path / "home")


def test_outbox_appends_only_new_sequence_numbers(tmp_path: Path) -> None:
    rows = [Event(ts=1_700_000_000 + i, event="delivered", source="live", seq=i + 1,
                  message_id=f"m{i}").to_row() for i in range(10)]
    assert ingest_outbox(rows[:6], tmp_path).rows == 6
    second = ingest_outbox(rows[3:], tmp_path)  # overlap 4..6 is not loaded twice
    assert second.rows == 4
    assert not ingest_outbox(rows, tmp_path).loaded
    seqs = query(tmp_path, "SELECT seq FROM events ORDER BY seq")["seq"].to_list()
    assert seqs == list(range(1, 11))
    with pytest.raises(InputError, match="seq"):
        ingest_outbox([{**rows[0], "seq": None}], tmp_path)


def test_empty_warehouse_has_typed_views(tmp_path: Path) -> None:
    frame = query(tmp_path, "SELECT * FROM events")
    assert frame.height == 0 and frame.columns == list(SCHEMA)
    assert query(tmp_path, "SELECT count(*) AS n FROM latency_samples")["n"][0] == 0


def test_query_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(QueryError) as err:
        query(tmp_path, "SELECT * FROM no_such_view")
    assert "no_such_view" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(QueryError):
        query(tmp_path, "SELEC 1")


def test_export_writes_partitioned_parquet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_events(_run_events("r2", 5, "sandbox"), run / "events.parquet")
    ingest_run_dir(run, tmp_path / "home")
    assert export(tmp_path / "home", tmp_path / "out") == 10
    back = pl.read_parquet(tmp_path / "out" / "events" / "**" / "*.parquet")
    assert back.height == 10
    with pytest.raises(InputError, match="already exists"):
        export(tmp_path / "home", tmp_path / "out")


def test_sorted_and_shuffled_runs_land_in_the_same_day_files(tmp_path: Path) -> None:
    # 4 UTC days of one run: a time-ordered frame takes the slicing path, a shuffled one the
    # hash-partition path; both must give the same files with the same rows.
    events = [Event(ts=1_700_000_000 + i * 7_200, event="delivered", source="sim",
                    run_id="days", message_id=f"m{i}", provider="gmail", pool="a")
              for i in range(36)]
    frame = events_frame(events)
    for name, rows in (("sorted", frame), ("shuffled", frame.sample(fraction=1.0, seed=3,
                                                                     shuffle=True))):
        run = tmp_path / name / "run"
        write_events(rows, run / "events.parquet")
        [result] = ingest_run_dir(run, tmp_path / name / "home")
        assert (result.rows, result.loaded) == (36, True)
    files = {}
    for name in ("sorted", "shuffled"):
        root = tmp_path / name / "home" / "events"
        files[name] = {
            str(p.relative_to(root)): sorted(read_events(p)["message_id"].to_list())
            for p in root.rglob("*.parquet")
        }
    assert files["sorted"] == files["shuffled"]
    assert len(files["sorted"]) == 4 and sum(map(len, files["sorted"].values())) == 36


def test_load_skips_only_columns_null_in_every_row_group(tmp_path: Path) -> None:
    # ``reason`` is null in the first row group only and ``tenant`` in every row group: the
    # loader may skip decoding ``tenant`` but must keep every ``reason`` value.
    events = [Event(ts=1_700_000_000 + i, event="deferred", source="sim", run_id="rg",
                    message_id=f"m{i}", reason=None if i < 50 else f"r{i}", smtp_code=421)
              for i in range(120)]
    run = tmp_path / "run"
    run.mkdir()
    events_frame(events).write_parquet(run / "events.parquet", row_group_size=50)
    [result] = ingest_run_dir(run, tmp_path / "home")
    assert result.rows == 120
    back = query(tmp_path / "home", "SELECT * FROM events ORDER BY ts")
    assert back.columns == list(SCHEMA)
    assert back["reason"].to_list() == [None] * 50 + [f"r{i}" for i in range(50, 120)]
    assert back["tenant"].null_count() == 120 and back["smtp_code"].to_list() == [421] * 120
    assert back.equals(query(tmp_path / "home", "SELECT * FROM events ORDER BY ts"))
    assert back.drop("ts").equals(events_frame(events).drop("ts"))


def test_load_rejects_rows_without_a_known_source(tmp_path: Path) -> None:
    frame = events_frame(_run_events("bad", 3)).with_columns(
        pl.when(pl.col("message_id") == "bad-1").then(None).otherwise(pl.col("source"))
        .alias("source"))
    run = tmp_path / "run"
    write_events(frame, run / "events.parquet")
    with pytest.raises(InputError, match="source outside"):
        ingest_run_dir(run, tmp_path / "home")
    assert read_ledger(tmp_path / "home")["loads"] == {}  # nothing half-loaded
