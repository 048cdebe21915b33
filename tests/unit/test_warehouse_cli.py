"""The warehouse CLI contract, through a real subprocess: import, query (json/csv), ingest,
metrics, export, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.eventio import write_events
from engine.events import Event

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_import_then_query_json_contract(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    r = cli("import", "postfix", str(LOGS / "postfix-maillog.log"), "--home", home,
            "--year", "2024")
    assert r.returncode == 0, r.stderr
    assert "23 lines, 10 events, 2 malformed" in r.stdout
    r = cli("query", "--home", home, "--format", "json",
            "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"event": "bounced", "n": 1}, {"event": "deferred", "n": 5},
                                    {"event": "delivered", "n": 2}, {"event": "expired", "n": 2}]
    out = tmp_path / "o.csv"
    r = cli("query", "SELECT count(*) AS n FROM events", "--format", "csv", "--out", str(out),
            env={"INBOXLAB_HOME": home})
    assert r.returncode == 0 and out.read_text() == "n\n10\n"


def test_errors_are_one_line(tmp_path: Path) -> None:
    home = str(tmp_path)
    for args in (("query", "--home", home, "SELECT * FROM nowhere"),
                 ("query", "--home", home, "SELEKT"),
                 ("query", "--home", home, "--format", "xml", "SELECT 1"),
                 ("import", "exim", str(LOGS / "kumomta.jsonl"), "--home", home),
                 ("import", "ses", str(tmp_path / "missing.json"), "--home", home),
                 ("ingest", str(tmp_path / "nope"), "--home", home),
                 ("metrics", "nope", "--home", home),
                 ("metrics", "time_to_accept", "--by", "color", "--home", home)):
        r = cli(*args)
        assert r.returncode != 0, args
        assert r.stderr.startswith("inboxlab: error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_ingest_metrics_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_events([Event(ts=1e9 + i, event="delivered", source="sandbox", run_id="sb-1",
                        provider="gmail", lane="transactional", enqueued_ts=1e9 + i - 4)
                  for i in range(20)], run / "events.parquet")
    home = str(tmp_path / "h")
    r = cli("ingest", str(run), "--home", home)
    assert r.returncode == 0 and "run:sandbox:sb-1: 20 events" in r.stdout
    r = cli("ingest", str(run), "--home", home)
    assert "already loaded" in r.stdout
    r = cli("metrics", "time_to_accept", "--by", "provider", "--json", "--home", home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["p95_s"] == 4.0
    r = cli("metrics")
    assert r.returncode == 0 and "deferral_codes" in r.stdout and "warmup" in r.stdout
    r = cli("export", "--out", str(tmp_path / "x"), "--home", home)
    assert r.returncode == 0 and "exported 20 events" in r.stdout
