"""The inboxlab Streamlit dashboard: one app, a page selector, every page over the warehouse.

Run it with ``inboxlab dash [--home DIR]``; the home comes from ``--home`` after ``--`` on the
``streamlit run`` command line, else ``$INBOXLAB_HOME``, else ``./var``. The page is picked in
the sidebar, or with ``?page=<slug>`` in the URL.

Owns: layout, filters and empty states. Must not touch: SQL or DuckDB beyond
``inboxlab.warehouse.connect`` and the frames of ``inboxlab.report.data``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import polars as pl
import streamlit as st
from duckdb import DuckDBPyConnection as Con

from inboxlab.report import charts
from inboxlab.report import data as d
from inboxlab.warehouse import connect, home_dir


def _home() -> str:
    argv = sys.argv[1:]
    if "--home" in argv and argv.index("--home") + 1 < len(argv):
        return argv[argv.index("--home") + 1]
    return str(home_dir(None))


def _empty(what: str, *commands: str) -> None:
    home = _home()
    lines = "\n".join(c.format(home=home) for c in commands)
    st.info(f"No {what} in the warehouse at `{home}` yet. To fill it, run:")
    st.code(lines, language="bash")


def _chart(fig: object, key: str) -> None:
    st.plotly_chart(fig, key=key, width="stretch")


def _table(frame: pl.DataFrame, key: str) -> None:
    st.dataframe(frame.to_pandas(), key=key, hide_index=True)



def page_status(con: Con) -> None:
    st.header("Provider status")
    timeline = d.deferral_timeline(con)
    if timeline.is_empty():
        _empty("delivery results", d.FILL_IMPORT, d.FILL_SIM)
        return
    _chart(charts.deferral_timeline(timeline), "status_timeline")
    classes = d.deferrals_by_class(con)
    if not classes.is_empty():
        _chart(charts.deferral_classes(classes), "status_classes")
    st.subheader("Breakers and automation")
    states = d.control_states(con)
    if states.is_empty():
        _empty("breaker or automation events", d.FILL_SIM)
        return
    _table(states, "status_states")
    log = d.control_log(con)
    _chart(charts.control_steps(log), "status_steps")
    with st.expander("Transition log"):
        _table(log, "status_log")


def page_warmup(con: Con) -> None:
    st.header("Pools and warmup")
    frame = d.warmup(con)
    if frame.is_empty() or "state" not in frame.columns:
        _empty("delivery results per pool", d.FILL_IMPORT, d.FILL_SIM)
        return
    cols = st.columns(3)
    for i, state in enumerate(("ramp", "hold", "back_off")):
        cols[i].metric(state, int((frame["state"] == state).sum()))
    _table(frame, "warmup_table")
    _chart(charts.warmup_projection(frame), "warmup_projection")
    _chart(charts.warmup_rates(frame), "warmup_rates")
    daily = d.warmup_daily(con)
    daily = daily.with_columns((pl.col("pool") + "/" + pl.col("provider")).alias("series"))
    _chart(charts.lines(daily, "day", "attempts", "series", "Daily attempts per pool/provider"),
           "warmup_daily")


def page_latency(con: Con) -> None:
    st.header("Latency percentiles")
    options = d.filter_options(con)
    if not any(options.values()) and d.latency(con).is_empty():
        _empty("latency samples (messages with an enqueue time)", d.FILL_IMPORT, d.FILL_SIM)
        return
    cols = st.columns(4)
    filters = {col: cols[i].multiselect(col.replace("_", " "), options[col], key=f"lat_{col}")
               for i, col in enumerate(d.FILTER_COLUMNS)}
    by = st.selectbox("compare by", ["(none)", "source", *d.FILTER_COLUMNS], key="lat_by")
    frame = d.latency(con, filters, None if by == "(none)" else by)
    if frame.is_empty():
        st.warning("No latency samples match these filters.")
        return
    _table(frame, "lat_table")
    _chart(charts.latency_percentiles(frame, None if by == "(none)" else by), "lat_pct")
    samples = d.latency_samples(con, filters)
    _chart(charts.latency_ecdf(samples), "lat_ecdf")


def page_deferrals(con: Con) -> None:
    st.header("Deferral codes and hints")
    frame = d.deferral_codes(con)
    if frame.is_empty():
        _empty("deferrals", d.FILL_IMPORT, d.FILL_SIM)
        return
    labelled = frame.with_columns(
        pl.coalesce(pl.col("enhanced_code"), pl.col("smtp_code").cast(pl.Utf8),
                    pl.col("category"), pl.lit("?")).alias("code"))
    _chart(charts.bars(labelled, "code", "n", "provider", "Deferrals by code and provider"),
           "def_codes")
    _table(frame, "def_table")


def page_reputation(con: Con) -> None:
    st.header("Reputation against the 14-day baseline")
    frame = d.reputation(con)
    if frame.is_empty():
        _empty("deliveries, bounces or complaints", d.FILL_IMPORT, d.FILL_SIM)
        return
    worst = frame.filter(pl.col("status") != "ok")
    st.metric("days off baseline or over threshold", worst.height)
    rate = st.radio("rate", ["complaint_rate", "bounce_rate", "trap_rate"], horizontal=True,
                    key="rep_rate")
    _chart(charts.reputation_vs_baseline(frame, rate), "rep_chart")
    _table(frame, "rep_table")


def page_dead_letters(con: Con) -> None:
    st.header("Dead letters")
    st.caption("Recipients and addresses in replies are masked; message bodies are never shown.")
    frame = d.dead_letters(con)
    if frame.is_empty():
        _empty("dead-lettered or expired messages", d.FILL_IMPORT, d.FILL_SIM)
        return
    counts = frame.group_by("provider", "event").len("messages").sort("provider", "event")
    counts = counts.with_columns(pl.col("provider").fill_null("?"))
    _chart(charts.bars(counts, "provider", "messages", "event", "Dead letters by provider"),
           "dl_chart")
    _table(frame, "dl_table")


def page_sim(con: Con) -> None:
    st.header("Simulation runs")
    frame = d.sim_runs(con)
    if frame.is_empty():
        _empty("simulation runs", d.FILL_SIM)
        return
    _table(frame, "sim_table")
    _chart(charts.side_by_side(frame, "run_id", ("deferral_rate", "complaint_rate"),
                               "Rates per simulation run"), "sim_chart")


def page_sim_vs_live(con: Con) -> None:
    st.header("Simulation vs live")
    frame = d.by_source(con)
    sources = set(frame["source"]) if "source" in frame.columns else set()
    if frame.is_empty():
        _empty("events", d.FILL_IMPORT, d.FILL_SIM)
        return
    if not ({"sim"} & sources and {"live", "sandbox", "import"} & sources):
        st.warning("Side by side needs simulated and recorded traffic; the warehouse holds only "
                   f"{', '.join(sorted(sources))}.")
        _empty("counterpart source", d.FILL_SIM, d.FILL_IMPORT)
    _table(frame, "svl_table")
    _chart(charts.side_by_side(frame, "source", ("deferral_rate",),
                               "Deferral rate by source"), "svl_rates")
    lat = d.latency(con, by="source")
    if not lat.is_empty():
        _chart(charts.latency_percentiles(lat, "source"), "svl_latency")


def page_policy(con: Con) -> None:
    st.header("Policy comparison and promotion")
    runs = d.policy_runs(con)
    if runs.is_empty():
        _empty("runs with policy versions", d.FILL_SIM)
    else:
        per_policy = runs.group_by("policy_version", maintain_order=True).agg(
            pl.col("delivered", "deferred", "bounced", "complaints").sum())
        per_policy = per_policy.with_columns(
            (pl.col("deferred") / (pl.col("delivered") + pl.col("deferred") + pl.col("bounced")))
            .alias("deferral_rate"),
            (pl.col("complaints") / pl.col("delivered")).alias("complaint_rate"))
        _chart(charts.side_by_side(per_policy, "policy_version",
                                   ("deferral_rate", "complaint_rate"),
                                   "Rates per policy version"), "pol_chart")
        _table(runs, "pol_runs")
    st.subheader("Promotion status and audit trail")
    trail = d.promotions(con)
    if trail.is_empty():
        st.info(d.FILL_PROMOTION)
        return
    _table(d.promotion_status(con), "pol_status")
    _chart(charts.promotion_trail(trail), "pol_trail")
    _table(trail, "pol_audit")


PAGES: dict[str, tuple[str, Callable[[Con], None]]] = {
    "status": ("Provider status", page_status),
    "warmup": ("Pools and warmup", page_warmup),
    "latency": ("Latency", page_latency),
    "deferrals": ("Deferral codes", page_deferrals),
    "reputation": ("Reputation", page_reputation),
    "dead-letters": ("Dead letters", page_dead_letters),
    "sim": ("Simulation runs", page_sim),
    "sim-vs-live": ("Sim vs live", page_sim_vs_live),
    "policy": ("Policy and promotion", page_policy),
}


def main() -> None:
    st.set_page_config(page_title="inboxlab", layout="wide")
    slugs = list(PAGES)
    wanted = st.query_params.get("page", slugs[0])
    slug = st.sidebar.radio("Page", slugs, index=slugs.index(wanted) if wanted in slugs else 0,
                            format_func=lambda s: PAGES[s][0], key="page")
    st.query_params["page"] = slug
    home = _home()
    st.sidebar.caption(f"warehouse: `{home}`")
    con = connect(home)
    try:
        st.sidebar.caption(f"{d.event_count(con):,} events")
        PAGES[slug][1](con)
    finally:
        con.close()


main()
