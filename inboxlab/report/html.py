"""Self-contained HTML reports: ``warmup``, ``weekly``, ``sim-vs-live`` and ``policy``.

A report is ``reports/templates/report.html`` filled with sections of tables and plotly charts.
plotly.js is embedded inline once (``include_plotlyjs=True`` on the first chart), so a report
opens offline and references no external URL. Chart ids are deterministic and no wall-clock
time is written, so the same warehouse gives the same bytes.

Owns: report kinds, sections and HTML assembly. Must not touch: SQL (``data`` does that) or
the warehouse files.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from string import Template

import duckdb
import polars as pl
from plotly.graph_objects import Figure

from engine.errors import InputError
from inboxlab.report import charts
from inboxlab.report import data as d

TEMPLATE = Path(__file__).resolve().parents[2] / "reports" / "templates" / "report.html"
KINDS = ("warmup", "weekly", "sim-vs-live", "policy")


class _Doc:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="empty">{text}</p>')

    def empty(self, what: str, *commands: str) -> None:
        cmds = " or ".join(f"<code>{html.escape(c.format(home='HOME'))}</code>" for c in commands)
        self.note(f"No {html.escape(what)} in the warehouse yet. Run {cmds}.")

    def chart(self, fig: Figure) -> None:
        self.figures += 1
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=self.figures == 1,
                                      div_id=f"chart-{self.figures}",
                                      config={"displaylogo": False}))

    def table(self, frame: pl.DataFrame, limit: int = 200) -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
        rows = []
        for row in frame.head(limit).iter_rows():
            cells = "".join(_cell(v) for v in row)
            rows.append(f"<tr>{cells}</tr>")
        more = (f'<p class="meta">{frame.height - limit} more rows not shown</p>'
                if frame.height > limit else "")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    if isinstance(value, float):
        return f"<td>{value:.6g}</td>"
    if isinstance(value, int):
        return f"<td>{value}</td>"
    if isinstance(value, (datetime, date)):
        return f'<td class="s">{value.isoformat()}</td>'
    return f'<td class="s">{html.escape(str(value))}</td>'


def _warmup(doc: _Doc, con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> None:
    frame = d.warmup(con)
    doc.h2("Warmup state per pool and provider")
    if frame.is_empty() or "state" not in frame.columns:
        doc.empty("delivery results per pool", d.FILL_IMPORT, d.FILL_SIM)
        return
    doc.table(frame)
    doc.chart(charts.warmup_projection(frame))
    doc.chart(charts.warmup_rates(frame))
    daily = d.warmup_daily(con).with_columns(
        (pl.col("pool") + "/" + pl.col("provider")).alias("series"))
    doc.h2("Daily volume and deferral rate")
    doc.chart(charts.lines(daily, "day", "attempts", "series", "Daily attempts"))
    doc.chart(charts.lines(daily, "day", "deferral_rate", "series", "Daily deferral rate"))


def _weekly(doc: _Doc, con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> None:
    doc.h2("Traffic by source")
    overview = d.overview(con)
    if overview.is_empty():
        doc.empty("events", d.FILL_IMPORT, d.FILL_SIM)
        return
    doc.table(overview)
    doc.table(d.by_source(con))
    doc.h2("Deferrals")
    timeline = d.deferral_timeline(con, "day")
    doc.chart(charts.deferral_timeline(timeline))
    codes = d.deferral_codes(con)
    if codes.is_empty():
        doc.note("No deferrals recorded.")
    else:
        doc.chart(charts.deferral_classes(d.deferrals_by_class(con)))
        doc.table(codes)
    doc.h2("Latency")
    lat = d.latency(con)
    if lat.is_empty():
        doc.note("No latency samples (no events carry an enqueue time).")
    else:
        doc.chart(charts.latency_percentiles(lat))
        doc.table(lat)
    doc.h2("Reputation against the 14-day baseline")
    rep = d.reputation(con)
    if rep.is_empty():
        doc.note("No deliveries, bounces or complaints.")
    else:
        doc.chart(charts.reputation_vs_baseline(rep))
        doc.table(rep.filter(pl.col("status") != "ok"))
    doc.h2("Breakers and automation")
    states = d.control_states(con)
    if states.is_empty():
        doc.note("No breaker or automation transitions.")
    else:
        doc.table(states)
        doc.chart(charts.control_steps(d.control_log(con)))
    doc.h2("Dead letters (recipients masked)")
    doc.table(d.dead_letters(con, limit=50))


def _sim_vs_live(doc: _Doc, con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> None:
    frame = d.by_source(con)
    doc.h2("Outcomes side by side by source")
    if frame.is_empty():
        doc.empty("events", d.FILL_IMPORT, d.FILL_SIM)
        return
    sources = set(frame["source"])
    if not ({"sim"} & sources and {"live", "sandbox", "import"} & sources):
        doc.note("Only " + ", ".join(sorted(sources)) + " traffic is present: side by side needs "
                 "both simulated and recorded traffic.")
    doc.table(frame)
    doc.chart(charts.side_by_side(frame, "source", ("deferral_rate",), "Deferral rate by source"))
    lat = d.latency(con, by="source")
    if not lat.is_empty():
        doc.h2("Latency by source")
        doc.chart(charts.latency_percentiles(lat, "source"))
        doc.table(lat)
    if runs:
        doc.h2("Selected runs")
        doc.table(d.policy_runs(con, runs))


def _policy(doc: _Doc, con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> None:
    frame = d.policy_runs(con, runs)
    doc.h2("Policy versions compared" + (f" over runs {', '.join(runs)}" if runs else ""))
    if frame.is_empty():
        doc.empty("runs for these policy versions" if runs else "runs", d.FILL_SIM)
    else:
        doc.chart(charts.side_by_side(frame.with_columns(
            (pl.col("policy_version") + " " + pl.col("run_id")).alias("run")), "run",
            ("deferral_rate", "bounce_rate", "complaint_rate"), "Rates per policy and run"))
        doc.table(frame)
    doc.h2("Promotion status and audit trail")
    trail = d.promotions(con)
    if trail.is_empty():
        doc.note(html.escape(d.FILL_PROMOTION))
        return
    doc.table(d.promotion_status(con))
    doc.chart(charts.promotion_trail(trail))
    doc.table(trail)


BUILDERS: dict[str, Callable[[_Doc, duckdb.DuckDBPyConnection, Sequence[str]], None]] = {
    "warmup": _warmup, "weekly": _weekly, "sim-vs-live": _sim_vs_live, "policy": _policy,
}
TITLES = {"warmup": "Warmup report", "weekly": "Weekly deliverability report",
          "sim-vs-live": "Simulation vs live", "policy": "Policy comparison and promotion"}


def render(kind: str, con: duckdb.DuckDBPyConnection, runs: Sequence[str] = (),
           home_label: str = "") -> str:
    """The full HTML text of report ``kind`` over the warehouse behind ``con``.

    Raises ``InputError`` for an unknown kind or a run id not in the warehouse."""
    if kind not in BUILDERS:
        raise InputError(f"unknown report {kind!r}; choose from {', '.join(KINDS)}")
    known = set(d.run_ids(con))
    missing = [r for r in runs if r not in known]
    if missing:
        raise InputError(f"run {missing[0]!r} is not in the warehouse; known runs: "
                         f"{', '.join(sorted(known)) or 'none'}")
    doc = _Doc()
    BUILDERS[kind](doc, con, runs)
    span = d.overview(con)
    meta = "no events" if span.is_empty() else (
        f"{int(span['events'].sum()):,} events from {span['first_ts'].min()} to "
        f"{span['last_ts'].max()}; sources {', '.join(span['source'])}")
    if home_label:
        meta += f"; warehouse {home_label}"
    if doc.figures == 0:
        doc.parts.append('<script type="text/javascript">/* no charts */</script>')
    return Template(TEMPLATE.read_text()).substitute(
        title=html.escape(TITLES[kind]), meta=html.escape(meta), body="\n".join(doc.parts))


def write(kind: str, con: duckdb.DuckDBPyConnection, out: str | os.PathLike[str],
          runs: Sequence[str] = (), home_label: str = "") -> Path:
    """Render report ``kind`` and write it to ``out`` (parents created); returns the path."""
    text = render(kind, con, runs, home_label)
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {out}: {exc.strerror or exc}") from exc
    return path
