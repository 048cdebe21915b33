"""Plotly figures for the dashboard pages and the HTML reports, built from ``data`` frames.

Owns: figure construction only (titles, axes, colours). Must not touch: the warehouse or any
IO; every function takes a polars frame and returns a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl

_LAYOUT: dict[str, Any] = {"template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 50,
                                                                 "b": 40}, "height": 380}


def _fig(title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def lines(frame: pl.DataFrame, x: str, y: str, group: str | None, title: str,
          y_title: str | None = None) -> go.Figure:
    """One line per value of ``group`` (or a single line)."""
    fig = _fig(title)
    parts = frame.partition_by(group, maintain_order=True, as_dict=True) if group else {
        (y,): frame}
    for key, part in parts.items():
        name = str(key[0]) if isinstance(key, tuple) else str(key)
        fig.add_trace(go.Scatter(x=part[x].to_list(), y=part[y].to_list(), name=name,
                                 mode="lines+markers"))
    fig.update_yaxes(title=y_title or y)
    return fig


def bars(frame: pl.DataFrame, x: str, y: str, group: str | None, title: str,
         stacked: bool = False, y_title: str | None = None) -> go.Figure:
    """Grouped (or stacked) bars: one trace per value of ``group``."""
    fig = _fig(title)
    parts = frame.partition_by(group, maintain_order=True, as_dict=True) if group else {
        (y,): frame}
    for key, part in parts.items():
        name = str(key[0]) if isinstance(key, tuple) else str(key)
        fig.add_trace(go.Bar(x=[str(v) for v in part[x]], y=part[y].to_list(), name=name))
    fig.update_layout(barmode="stack" if stacked else "group")
    fig.update_yaxes(title=y_title or y)
    return fig


def deferral_timeline(frame: pl.DataFrame) -> go.Figure:
    labelled = frame.with_columns(
        (pl.col("provider") + " (" + pl.col("source") + ")").alias("series"))
    return lines(labelled, "t", "deferral_rate", "series", "Deferral rate by provider over time",
                 "deferral rate")


def deferral_classes(frame: pl.DataFrame) -> go.Figure:
    return bars(frame.group_by("provider", "code_class", maintain_order=True)
                .agg(pl.col("deferrals").sum()),
                "provider", "deferrals", "code_class", "Deferrals by code class (RFC 3463)",
                stacked=True)


def control_steps(log: pl.DataFrame) -> go.Figure:
    """Breaker/automation states as a step chart: one line per kind:pool:provider."""
    fig = _fig("Breaker and automation states over time")
    states = sorted({str(s) for s in log["state"].drop_nulls()})
    order = {s: i for i, s in enumerate(states)}
    labelled = log.with_columns(
        (pl.col("kind") + ":" + pl.col("pool") + ":" + pl.col("provider")).alias("series"))
    for key, part in labelled.partition_by("series", maintain_order=True,
                                           as_dict=True).items():
        fig.add_trace(go.Scatter(
            x=part["ts"].to_list(), y=[order.get(str(s), -1) for s in part["state"]],
            name=str(key[0]), mode="lines+markers", line={"shape": "hv"},
            text=[str(r) for r in part["reason"]], hovertemplate="%{text}"))
    fig.update_yaxes(tickvals=list(order.values()), ticktext=list(order), title="state")
    return fig


def warmup_projection(frame: pl.DataFrame) -> go.Figure:
    """Projected safe daily volume per pool x provider with its 95 % interval as error bars."""
    fig = _fig("Projected safe daily volume (95% interval)")
    ok = frame.filter(pl.col("projected_safe_daily").is_not_nan()) if frame.height else frame
    labels = [f"{p}/{v}" for p, v in zip(ok["pool"], ok["provider"], strict=True)]
    safe = ok["projected_safe_daily"].to_list()
    fig.add_trace(go.Bar(
        x=labels, y=safe, name="projected safe / day",
        error_y={"type": "data", "symmetric": False,
                 "array": [h - s for h, s in zip(ok["projected_high"], safe, strict=True)],
                 "arrayminus": [s - lo for lo, s in zip(ok["projected_low"], safe,
                                                        strict=True)]}))
    fig.add_trace(go.Scatter(x=labels, y=ok["last_attempts"].to_list(), mode="markers",
                             name="last day's attempts", marker={"size": 10}))
    fig.update_yaxes(title="messages / day")
    return fig


def warmup_rates(frame: pl.DataFrame) -> go.Figure:
    """Last day's deferral rate per pool x provider with its Wilson interval."""
    fig = _fig("Last day's deferral rate with Wilson 95% interval")
    labels = [f"{p}/{v}" for p, v in zip(frame["pool"], frame["provider"], strict=True)]
    rate = frame["last_deferral_rate"].to_list()
    fig.add_trace(go.Scatter(
        x=labels, y=rate, mode="markers", name="deferral rate",
        error_y={"type": "data", "symmetric": False,
                 "array": [h - r for h, r in zip(frame["ci_high"], rate, strict=True)],
                 "arrayminus": [r - lo for lo, r in zip(frame["ci_low"], rate, strict=True)]}))
    fig.update_yaxes(title="deferral rate")
    return fig


def latency_percentiles(frame: pl.DataFrame, group: str | None = None) -> go.Figure:
    """p50/p95/p99 per latency kind (bars), or p95 per kind x ``group``."""
    if group:
        return bars(frame, "kind", "p95_s", group, f"p95 latency by {group} (seconds)",
                    y_title="seconds")
    long = frame.unpivot(index="kind", on=["p50_s", "p95_s", "p99_s"], variable_name="pct",
                         value_name="seconds")
    return bars(long, "kind", "seconds", "pct", "Latency percentiles (seconds)")


def latency_ecdf(samples: pl.DataFrame) -> go.Figure:
    fig = _fig("Latency distribution (ECDF)")
    for key, part in samples.partition_by("kind", maintain_order=True, as_dict=True).items():
        xs = part["seconds"].drop_nulls().sort().to_list()
        n = len(xs)
        fig.add_trace(go.Scatter(x=xs, y=[(i + 1) / n for i in range(n)], name=str(key[0]),
                                 mode="lines", line={"shape": "hv"}))
    fig.update_xaxes(title="seconds", type="log")
    fig.update_yaxes(title="share of messages")
    return fig


def reputation_vs_baseline(frame: pl.DataFrame, rate: str = "complaint_rate") -> go.Figure:
    fig = _fig(f"{rate.replace('_', ' ')} vs trailing 14-day baseline")
    labelled = frame.with_columns(
        (pl.col("sending_domain") + "/" + pl.col("pool")).alias("series"))
    for key, part in labelled.partition_by("series", maintain_order=True,
                                           as_dict=True).items():
        name = str(key[0])
        fig.add_trace(go.Scatter(x=part["day"].to_list(), y=part[rate].to_list(),
                                 name=name, mode="lines+markers"))
        fig.add_trace(go.Scatter(x=part["day"].to_list(), y=part[f"baseline_{rate}"].to_list(),
                                 name=f"{name} baseline", mode="lines",
                                 line={"dash": "dot"}))
    fig.update_yaxes(title=rate.replace("_", " "), tickformat=".2%")
    return fig


def side_by_side(frame: pl.DataFrame, key: str, metrics: tuple[str, ...], title: str
                 ) -> go.Figure:
    """Grouped bars of ``metrics`` (rates) for each value of ``key`` (source, policy, run)."""
    long = frame.select(key, *metrics).unpivot(index=key, on=list(metrics),
                                               variable_name="metric", value_name="value")
    fig = bars(long, "metric", "value", key, title)
    fig.update_yaxes(title="rate", tickformat=".2%")
    return fig


def promotion_trail(frame: pl.DataFrame) -> go.Figure:
    fig = _fig("Promotion stages over time")
    stages = list(dict.fromkeys(str(s) for s in frame["state"]))
    order = {s: i for i, s in enumerate(stages)}
    labelled = frame.with_columns(
        (pl.col("policy_version") + "@" + pl.col("pool")).alias("series"))
    for key, part in labelled.partition_by("series", maintain_order=True,
                                           as_dict=True).items():
        fig.add_trace(go.Scatter(x=part["ts"].to_list(), y=[order[str(s)] for s in part["state"]],
                                 name=str(key[0]), mode="lines+markers", line={"shape": "hv"}))
    fig.update_yaxes(tickvals=list(order.values()), ticktext=stages, title="stage")
    return fig
