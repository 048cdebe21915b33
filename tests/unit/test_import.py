"""Importers: each sample log round-trips with checked counts and mappings, exactly once."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.errors import InputError
from inboxlab.importers import import_file, parse_file
from inboxlab.warehouse import query

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


@pytest.mark.parametrize(("fmt", "name", "lines", "events", "malformed", "counts"), [
    ("postfix", "postfix-maillog.log", 23, 10, 2,
     {"delivered": 2, "deferred": 5, "bounced": 1, "expired": 2}),
    ("kumomta", "kumomta.jsonl", 12, 9, 2,
     {"enqueued": 2, "delivered": 2, "deferred": 2, "expired": 1, "bounced": 1, "complaint": 1}),
    ("pmta", "pmta-acct.csv", 8, 6, 2,
     {"delivered": 2, "deferred": 1, "bounced": 1, "expired": 1, "complaint": 1}),
    ("ses", "ses-events.jsonl", 10, 9, 1,
     {"attempt": 2, "delivered": 1, "deferred": 1, "bounced": 1, "complaint": 1,
      "engagement": 2, "suppressed": 1}),
    ("ses", "ses-sns.jsonl", 3, 2, 1, {"bounced": 1, "delivered": 1}),
])
def test_sample_files_round_trip(tmp_path: Path, fmt: str, name: str, lines: int, events: int,
                                 malformed: int, counts: dict[str, int]) -> None:
    report = import_file(fmt, LOGS / name, tmp_path, year=2024)
    assert (report.lines, report.events, report.malformed) == (lines, events, malformed)
    assert report.loaded and report.run_id.startswith(f"{fmt}:")
    got = query(tmp_path, "SELECT event, count(*) AS n FROM events GROUP BY event")
    assert dict(got.iter_rows()) == counts
    again = import_file(fmt, LOGS / name, tmp_path, year=2024)
    assert not again.loaded
    assert query(tmp_path, "SELECT count(*) AS n FROM events")["n"][0] == events
    src = query(tmp_path, "SELECT DISTINCT source, run_id FROM events")
    assert src.rows() == [("import", report.run_id)]


def test_postfix_mapping_details() -> None:
    frame, _ = parse_file("postfix", LOGS / "postfix-maillog.log", year=2024)
    gmail = frame.filter(pl.col("recipient") == "dave@gmail.com").sort("ts")
    assert gmail["event"].to_list() == ["deferred", "delivered"]
    assert gmail["attempt"].to_list() == [1, 2]
    assert gmail["smtp_code"].to_list() == [421, 250]
    assert gmail["enhanced_code"].to_list() == ["4.7.28", "2.0.0"]
    assert gmail["provider"].to_list() == ["gmail", "gmail"]
    assert gmail["message_id"][0] == "pw-reset-88123@app.example.com"
    assert gmail["sending_domain"][0] == "app.example.com"
    # delay=330 on the delivery line: enqueued 330 s before it
    delivered = gmail.row(1, named=True)
    assert (delivered["ts"] - delivered["enqueued_ts"]).total_seconds() == 330
    expired = frame.filter(pl.col("event") == "expired").sort("ts")
    assert expired["recipient"].to_list() == ["bob@yahoo.com", "erin@nonexistent-domain-xyz.example"]
    assert expired["enqueued_ts"].null_count() == 0


def test_kumomta_mapping_details() -> None:
    frame, _ = parse_file("kumomta", LOGS / "kumomta.jsonl")
    d = frame.filter(pl.col("event") == "delivered").sort("ts").row(0, named=True)
    assert (d["tenant"], d["campaign"], d["pool"], d["source_ip"], d["provider"]) == (
        "acme", "spring-sale", "pool-a", "192.0.2.10", "gmail")
    c = frame.filter(pl.col("event") == "complaint").row(0, named=True)
    assert c["reason"] == "abuse" and c["smtp_code"] is None


def test_pmta_and_ses_details() -> None:
    pm, _ = parse_file("pmta", LOGS / "pmta-acct.csv")
    first = pm.sort("ts").row(0, named=True)
    assert first["ts"].isoformat() == "2024-03-03T15:15:02+00:00"  # -0500 converted to UTC
    assert (first["pool"], first["campaign"], first["smtp_code"]) == ("vmta-a", "spring-sale", 250)
    ses, _ = parse_file("ses", LOGS / "ses-events.jsonl")
    b = ses.filter(pl.col("event") == "bounced").row(0, named=True)
    assert (b["enhanced_code"], b["smtp_code"], b["reason"]) == ("5.1.1", 550, "Permanent/General")


def test_unknown_format_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        import_file("exim", LOGS / "kumomta.jsonl", tmp_path)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("nothing\n{]\n")
    report = import_file("kumomta", junk, tmp_path / "h")
    assert (report.lines, report.events, report.malformed) == (2, 0, 2)


def test_providers_come_from_the_real_profiles() -> None:
    from engine.policy.providers import ProviderMatcher
    from engine.profiles import load_profiles

    matcher = ProviderMatcher(load_profiles())
    frame, _ = parse_file("postfix", LOGS / "postfix-maillog.log", year=2024)
    for domain, mx, provider in frame.select("recipient_domain", "mx_host", "provider").rows():
        expected = matcher.by_mx(mx) if mx and matcher.by_mx(mx) != "generic" else None
        assert provider == (expected or matcher.resolve(domain))
    assert set(frame["provider"]) <= matcher.names
    # an MX suffix wins over the domain: a company domain hosted by Office 365
    from inboxlab.importers.common import provider_expr

    rows = pl.DataFrame({"d": ["corp.example", "hotmail.com", "unknown.example", None],
                         "mx": ["corp-example.mail.protection.outlook.com", None, None, None]})
    got = rows.select(provider_expr(pl.col("d"), pl.col("mx")).alias("p"))["p"].to_list()
    assert got == ["office365", "outlook", "generic", None]


def test_postfix_records_of_other_shapes_take_the_regex_path() -> None:
    from inboxlab.importers.postfix import parse

    log = (
        b"Mar  3 10:15:01 mx1 postfix/qmgr[1]: ABCDEF1234: from=<a@news.example.com>, size=1\n"
        b"Mar  3 10:15:02 mx1 postfix/smtp[2]: ABCDEF1234: to=<x@gmail.com>, "
        b"orig_to=<alias@example.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, "
        b"conn_use=3, delay=1.5, delays=0.1/0/0.6/0.8, dsn=2.0.0, status=sent (250 2.0.0 OK)\n"
        b"Mar  3 10:15:03 mx1 postfix/smtp[2]: ABCDEF1234: to=<y@yahoo.com>, "
        b"relay=mta5.am0.yahoodns.net[98.136.96.74]:25, delay=2, delays=1/0/0.5/0.5, "
        b"dsn=4.7.0, status=deferred (host said: 421 4.7.0 [TSS04] try later)\n"
    )
    frame, lines, malformed, _ = parse(log, "postfix:t", 2024)
    assert (lines, malformed, frame.height) == (3, 0, 2)
    rows = {r["recipient"]: r for r in frame.iter_rows(named=True)}
    assert rows["x@gmail.com"]["mx_host"] == "gmail-smtp-in.l.google.com"
    assert rows["x@gmail.com"]["response"] == "250 2.0.0 OK"
    assert rows["x@gmail.com"]["enhanced_code"] == "2.0.0"
    assert (rows["x@gmail.com"]["ts"] - rows["x@gmail.com"]["enqueued_ts"]).total_seconds() == 1.5
    assert rows["y@yahoo.com"]["event"] == "deferred" and rows["y@yahoo.com"]["smtp_code"] == 421
    assert rows["y@yahoo.com"]["provider"] == "yahoo"
