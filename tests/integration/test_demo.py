"""``inboxlab demo`` end to end as a user runs it: a subprocess, real sockets, real children.

One run of ``python -m inboxlab demo --home TMP --messages 200`` (sandbox, warmup sim, live
engine over HTTP, warehouse, report). Then, from the outside: the summary was printed, the
report is one self-contained HTML file, the warehouse holds live + sandbox + sim events
(through ``inboxlab query --format json``), every accepted live recipient reached a final
state or is still queued, the sandbox saw what the engine says it delivered, the warmup
policy tuned in simulation went through the promotion gates to the warming pool (its
``promotion`` events are in the warehouse and match the record and the printed summary), and
no child process or listening port of the run is left behind. The promotion step alone is then
re-run into the same home (it replaces its own canary) and against someone else's canary (it
leaves that alone).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
N = 200


def _inboxlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _query(home: Path, sql: str) -> list[dict[str, Any]]:
    res = _inboxlab("query", "--home", str(home), "--format", "json", sql)
    assert res.returncode == 0, res.stderr
    text = res.stdout.strip()
    return json.loads(text) if text.startswith("[") else [json.loads(x) for x in
                                                          text.splitlines() if x.strip()]


def _descendants_of_run(marker: str) -> list[str]:
    """Command lines of live processes that mention this run's home folder."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _external_loads(html: str) -> list[str]:
    from html.parser import HTMLParser

    found: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if (tag in ("script", "img", "link", "iframe") and name in ("src", "href")
                        and value and not value.startswith("data:")):
                    found.append(f"<{tag} {name}={value}>")

    Tags().feed(html)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("demo-home")
    res = subprocess.run([sys.executable, "-m", "inboxlab", "demo", "--home", str(home),
                          "--messages", str(N), "--wait", "20"],
                         capture_output=True, text=True, timeout=150, check=False)
    return {"home": home, "res": res}


def test_exit_zero_and_summary(demo: dict[str, Any]) -> None:
    res = demo["res"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert f"{N} messages accepted live" in out
    for col in ("source", "provider", "delivered", "deferred", "bounced", "complaints"):
        assert col in out
    for source in ("live", "sandbox", "sim"):
        assert re.search(rf"│ {source} +│ gmail", out), f"no {source} x gmail row"
    assert f"inboxlab dash --home {demo['home']}" in out
    assert "Traceback" not in res.stderr


def test_report_is_self_contained(demo: dict[str, Any]) -> None:
    m = re.search(r"report:\s+(\S+\.html)", demo["res"].stdout)
    assert m, demo["res"].stdout
    report = Path(m.group(1))
    assert report.is_file() and report.is_relative_to(demo["home"])
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert len(html) > 2000
    # nothing fetched from elsewhere: no tag loads a script, style or image by URL
    assert _external_loads(html) == []
    assert "<script" in html.lower()  # the charts' code is inlined, not linked


def test_warehouse_has_all_three_sources(demo: dict[str, Any]) -> None:
    rows = _query(demo["home"], "SELECT source, count(*) AS n FROM events GROUP BY source")
    by = {r["source"]: r["n"] for r in rows}
    assert set(by) >= {"live", "sandbox", "sim"}, by
    assert all(by[s] > 0 for s in ("live", "sandbox", "sim"))


def test_every_live_recipient_accounted_for(demo: dict[str, Any]) -> None:
    home = demo["home"]
    enq = _query(home, "SELECT count(DISTINCT message_id || recipient) AS n FROM events "
                       "WHERE source = 'live' AND event = 'enqueued'")[0]["n"]
    assert enq == N
    outcomes = _query(home, "SELECT coalesce(outcome, 'queued') AS state, count(*) AS n "
                            "FROM messages WHERE source = 'live' GROUP BY ALL")
    by = {r["state"]: r["n"] for r in outcomes}
    assert sum(by.values()) == N, by
    assert set(by) <= {"delivered", "bounced", "queued", "expired", "dead_lettered",
                       "suppressed"}, by
    assert by.get("delivered", 0) >= N * 0.8, by
    # every planned unknown-* recipient that reached a final state bounced (the models also
    # make a small hashed share of other addresses unknown, so other bounces may occur)
    unknown = _query(home, "SELECT DISTINCT outcome FROM messages WHERE source = 'live' "
                           "AND recipient LIKE 'unknown-%' AND outcome IS NOT NULL")
    assert [r["outcome"] for r in unknown] == ["bounced"], unknown
    codes = _query(home, "SELECT DISTINCT smtp_code FROM events WHERE source = 'live' "
                         "AND event = 'bounced'")
    assert codes and all(500 <= r["smtp_code"] <= 599 for r in codes), codes
    # the printed accounting is the warehouse's
    line = re.search(r"live recipients by final state: (.*)", demo["res"].stdout)
    assert line and f"delivered {by['delivered']}" in line.group(1)


def test_sandbox_received_what_the_engine_delivered(demo: dict[str, Any]) -> None:
    home = demo["home"]
    live = _query(home, "SELECT count(*) AS n FROM events WHERE source = 'live' "
                        "AND event = 'delivered'")[0]["n"]
    box = _query(home, "SELECT count(*) AS n FROM events WHERE source = 'sandbox' "
                       "AND event = 'delivered'")[0]["n"]
    assert live == box > 0
    ips = {r["source_ip"] for r in _query(
        home, "SELECT DISTINCT source_ip FROM events WHERE source = 'sandbox' "
              "AND event = 'delivered'")}
    assert ips and all(ip.startswith("127.0.0.") and ip != "127.0.0.1" for ip in ips), ips


def test_no_child_left_running(demo: dict[str, Any]) -> None:
    assert demo["res"].returncode == 0
    assert _descendants_of_run(str(demo["home"])) == []
    logs = next((demo["home"] / "demo").iterdir()) / "logs" / "engine.log"
    assert logs.is_file()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", logs.read_text())
    assert m, "the engine never said where it served"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(m.group(1)))) != 0, "engine port still open"


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    res = _inboxlab("demo", "--home", str(tmp_path), "--messages", "0")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == ["inboxlab: error: --messages must be at least 1"]


def _promotion_events(home: Path) -> list[dict[str, Any]]:
    return _query(home, "SELECT run_id, seq, state, pool, policy_version, reason, "
                        "CAST(detail AS VARCHAR) AS detail FROM events "
                        "WHERE event = 'promotion' ORDER BY seq")


def test_promotion_step_ran(demo: dict[str, Any]) -> None:
    home, out = demo["home"], demo["res"].stdout
    assert demo["res"].returncode == 0, demo["res"].stderr[-3000:]
    rows = _promotion_events(home)
    assert rows, "no promotion event in the warehouse"
    assert {r["pool"] for r in rows} == {"mkt-b"}  # the demo config's warming pool
    assert all("inboxlab-demo" in r["detail"] for r in rows)
    line = re.search(r"^promotion: mkt-b (\S+)", out, re.M)
    assert line, out
    run_dir = next((home / "demo").iterdir())
    ev = json.loads((run_dir / "promotion" / "evaluation.json").read_text())
    assert ev["base"]["version"] == "warmup-conservative-v1"  # what the pool runs now
    assert ev["kind"] == "inboxlab.tuning.evaluation" and ev["seeds"] == [7]
    if line.group(1) == "refused:":  # a legitimate outcome: audited, printed, demo went on
        assert [r["state"] for r in rows] == ["refused"]
        assert rows[0]["reason"].split(": ", 1)[1] in out
        return
    m = re.search(r"^promotion: mkt-b canary 10 %: (\S+) \(candidate\) vs "
                  r"warmup-conservative-v1 \(current\)", out, re.M)
    assert m, out
    candidate = m.group(1)
    assert [r["state"] for r in rows] == ["stage-1", "stage-10"]
    assert {r["policy_version"] for r in rows} == {candidate} == {ev["winner"]["version"]}
    assert rows[0]["reason"].startswith("admit: gates passed")
    record = json.loads((home / "promotion" / "mkt-b.json").read_text())
    assert (record["state"], record["stage_percent"]) == ("canary", 10.0)
    assert record["candidate_version"] == candidate
    policy = Path(record["candidate_policy"])
    assert policy.is_relative_to(run_dir) and f'version = "{candidate}"' in policy.read_text()
    # the gates' interval is the evaluation's, and it lies above zero (throughput, maximised)
    lo, hi = ev["winner"]["comparison"]["objective"]["ci95"]
    assert 0 < lo <= hi
    assert f"95 % CI {lo:+.2f} .. {hi:+.2f}" in out and "gates: superior" in out
    assert re.search(r"^timings:.* promote \d+\.\ds", out, re.M), out


def test_promotion_rerun_replaces_its_own_canary(demo: dict[str, Any]) -> None:
    from inboxlab.demo.lab import DEMO
    from inboxlab.demo.promotion import promote_warmup

    home = demo["home"]
    before = _promotion_events(home)
    was_canary = before and before[-1]["state"].startswith("stage-")
    run_dir = home / "rerun"
    res = promote_warmup(home, run_dir, DEMO / "lab.toml", seed=7, run="rerun")
    after = _promotion_events(home)
    new = after[len(before):]
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))  # one audit trail
    if was_canary:
        assert new[0]["state"] == "rolled_back" and "demo run rerun" in new[0]["reason"]
        new = new[1:]
    assert res.outcome in ("canary", "refused"), res.message
    assert [r["state"] for r in new] == (["stage-1", "stage-10"] if res.outcome == "canary"
                                         else ["refused"])
    record = json.loads((home / "promotion" / "mkt-b.json").read_text())
    if res.outcome == "canary":
        assert record["candidate_policy"].startswith(str(run_dir))
        assert record["stage_percent"] == 10.0 and record["current_version"] == res.current


def test_promotion_leaves_someone_elses_canary_alone(tmp_path: Path) -> None:
    from inboxlab.demo.lab import DEMO
    from inboxlab.demo.promotion import promote_warmup

    policy = DEMO.parent / "policies" / "warmup-conservative-v1.toml"
    record = {"pool": "mkt-b", "state": "canary", "stage_percent": 25.0,
              "current_version": "warmup-conservative-v1", "current_policy": str(policy),
              "candidate_version": "hand-tuned-3", "candidate_policy": str(policy),
              "updated_at": 1.0}
    (tmp_path / "promotion").mkdir()
    path = tmp_path / "promotion" / "mkt-b.json"
    path.write_text(json.dumps(record))
    (tmp_path / "promotion" / "audit.jsonl").write_text(json.dumps(
        {"n": 1, "pool": "mkt-b", "action": "admit", "state": "stage-1", "actor": "alice",
         "at": 1.0, "policy_version": "hand-tuned-3", "reason": "r", "evidence": {}}) + "\n")
    res = promote_warmup(tmp_path, tmp_path / "run", DEMO / "lab.toml", seed=7, run="x")
    assert res.outcome == "skipped" and "alice" in res.message
    assert json.loads(path.read_text()) == record
    assert not (tmp_path / "run" / "promotion").exists()  # nothing tuned, nothing admitted


def test_promotion_refused_by_the_gates_is_reported(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-run objective on one seed gives one pair, so no interval: the gates must refuse,
    the step must say why, audit it, put it in the warehouse, and write no record."""
    import inboxlab.demo.promotion as step
    from inboxlab.demo.lab import DEMO

    monkeypatch.setattr(step, "TUNE_ARGS", ("--objective", "deferral_rate", "--budget", "2",
                                            "--scale", "0.01", "--set", "duration=1d"))
    res = step.promote_warmup(tmp_path, tmp_path / "run", DEMO / "lab.toml", seed=7, run="x")
    assert res.outcome == "refused", res.message
    assert "fewer than 2 pairs" in res.message
    assert [s["action"] for s in res.steps] == ["refuse"]
    assert not (tmp_path / "promotion" / "mkt-b.json").exists()
    rows = _promotion_events(tmp_path)
    assert [(r["state"], r["policy_version"]) for r in rows] == [("refused", res.candidate)]
    lines = step.describe(res, tmp_path)
    assert lines[0] == f"promotion: mkt-b refused: {res.message}"
    assert not any("promote status" in ln for ln in lines)  # no record to show yet


def test_authentication_was_checked_through_the_dns_server(demo: dict[str, Any]) -> None:
    run_dir = next((demo["home"] / "demo").iterdir())
    zone = (run_dir / "lab.zone").read_text()
    assert "._domainkey." in zone and "v=spf1" in zone and "v=DMARC1" in zone
    said = (run_dir / "logs" / "dns.log").read_text()
    m = re.search(r"dns: stopped after (\d+) udp and (\d+) tcp queries", said)
    assert m, said[-2000:]
    assert int(m.group(1)) + int(m.group(2)) > 0, "the sandbox never asked the DNS server"
    # the engine's mail authenticated: no provider refused it as unauthenticated
    refused = _query(demo["home"], "SELECT count(*) AS n FROM events WHERE source = 'sandbox' "
                                   "AND lower(response) LIKE '%unauthenticated%'")[0]["n"]
    assert refused == 0


def test_gmail_mail_went_over_verified_starttls(demo: dict[str, Any]) -> None:
    # Gmail's model refuses clear-text sessions (4.7.29); the engine verified the sandbox's
    # certificate (tls_ca_file) and its mail was accepted
    rows = _query(demo["home"], "SELECT count(*) FILTER (WHERE event = 'delivered') AS ok, "
                                "count(*) FILTER (WHERE response LIKE '%4.7.29%') AS clear "
                                "FROM events WHERE source = 'sandbox' AND provider = 'gmail'")
    assert rows[0]["ok"] > 0 and rows[0]["clear"] == 0, rows
    assert (next((demo["home"] / "demo").iterdir()) / "sandbox" / "tls-cert.pem").is_file()
