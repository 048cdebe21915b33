"""Builders of real warehouse homes for the dashboard, report and notebook tests.

``build_home`` imports every fixture log through the real importers, runs a small seeded
simulation through ``inboxlab sim run`` and ingests it, and loads a short live batch and a
promotion audit trail through the warehouse loader: real Parquet files, no mocks.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from engine.eventio import events_frame
from engine.events import Event
from inboxlab.cli import app
from inboxlab.importers import import_file
from inboxlab.warehouse import ingest_run_dir, load_frame

REPO = Path(__file__).resolve().parents[2]
LOGS = (("postfix", "postfix-maillog.log"), ("kumomta", "kumomta.jsonl"),
        ("pmta", "pmta-acct.csv"), ("ses", "ses-events.jsonl"))
LIVE_RECIPIENT = "jane.doe@example.com"


def live_events(t0: float = 1_773_100_000.0) -> list[Event]:
    """A live batch: deliveries, deferrals, a dead letter with the address in its reply, and a
    promotion trail (shadow -> canary -> promoted) for policy v2 on pool mkt-b."""
    out: list[Event] = []
    common = {"source": "live", "run_id": "live-1", "sending_domain": "mail.acme.example",
              "pool": "mkt-b", "lane": "lifecycle", "policy_version": "v2"}
    for i in range(40):
        prov = ("gmail", "yahoo")[i % 2]
        rcpt = f"user{i}@{prov}.example"
        enq = t0 + i * 60
        out.append(Event(ts=enq, event="enqueued", message_id=f"m{i}", recipient=rcpt,
                         provider=prov, enqueued_ts=enq, seq=len(out), **common))
        if i % 5 == 0:
            out.append(Event(ts=enq + 2, event="deferred", message_id=f"m{i}", recipient=rcpt,
                             provider=prov, attempt=1, smtp_code=421, enhanced_code="4.7.28",
                             category="throttled", enqueued_ts=enq, seq=len(out), **common))
        out.append(Event(ts=enq + 30, event="delivered", message_id=f"m{i}", recipient=rcpt,
                         provider=prov, attempt=2 if i % 5 == 0 else 1, smtp_code=250,
                         enqueued_ts=enq, seq=len(out), **common))
    out.append(Event(ts=t0 + 5000, event="dead_lettered", message_id="dl1",
                     recipient=LIVE_RECIPIENT, provider="gmail", smtp_code=550,
                     response=f"550 5.1.1 <{LIVE_RECIPIENT}> does not exist",
                     enqueued_ts=t0, seq=len(out), **common))
    for k, stage in enumerate(("shadow", "canary", "promoted")):
        out.append(Event(ts=t0 + 6000 + k * 3600, event="promotion", state=stage,
                         reason=f"gate {k} passed", seq=len(out), **common))
    return out


def build_home(home: Path, with_sim: bool = True) -> Path:
    """Fill ``home`` with imported fixture logs, one sim run and a live batch; returns it."""
    for fmt, name in LOGS:
        import_file(fmt, REPO / "fixtures" / "logs" / name, home, 2024)
    if with_sim:
        out = home.parent / (home.name + "-sim")
        result = CliRunner().invoke(app, ["sim", "run", "gmail-brownout", "--seed", "1",
                                          "--scale", "0.05", "--out", str(out)])
        assert result.exit_code == 0, result.output
        ingest_run_dir(out, home)
    load_frame(events_frame(live_events()), "run:live:live-1", home)
    return home
