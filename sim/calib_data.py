"""Recorded traffic as calibration input: one provider's send schedule and observed outcomes.

Owns ``Recording`` (per message: enqueue time, recipient, lane, sending domain; per attempt:
time, source IP, the recorded reply and what kind of reply it was; per message: the delay of
its complaint after acceptance) and ``recording_from_events``, which builds one from an event
frame in the shared schema (``engine.events``), from any source: a sim run, the sandbox,
live exports or imports. Attempts are the result rows (delivered / deferred / bounced /
dead-lettered rows carrying an SMTP code); a reply is classified by matching it against
the provider model's own reply templates, so "rate", "greylist" and "other" mean what the
model means. Also ``split`` (hold-out by day or source IP) and ``to_epoch``.

Must not touch the warehouse (the caller hands in a frame) or model state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.eventio import conform
from sim.providers import ModelParams, Reply

DAY = 86400.0
RESULT_EVENTS = ("delivered", "deferred", "bounced", "dead_lettered")
# outcome codes of an attempt
ACCEPTED, RATE, GREYLIST, OTHER_TEMP, PERMANENT = range(5)
OUTCOME_NAMES = ("accepted", "rate", "greylist", "other_temp", "permanent")


def to_epoch(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` conformed to the event schema with ``ts`` / ``enqueued_ts`` as float seconds."""
    try:
        f = conform(frame)
    except (ValueError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"recorded events do not fit the event schema: {exc}") from None
    return f.with_columns(
        (pl.col("ts").dt.epoch("us") / 1e6).alias("ts"),
        (pl.col("enqueued_ts").dt.epoch("us") / 1e6).alias("enqueued_ts"),
    )


def outcome_of_kind(kind: str, code: int) -> int:
    """The outcome code of a model reply kind (or of a bare SMTP code)."""
    if 200 <= code < 400:
        return ACCEPTED
    if code >= 500:
        return PERMANENT
    if kind.startswith("rate_") or kind == "daily_cap":
        return RATE
    if kind == "greylisted":
        return GREYLIST
    return OTHER_TEMP


class ReplyMatcher:
    """Recognises a recorded reply line as one of a model's reply kinds (by template)."""

    def __init__(self, replies: Mapping[str, Reply]) -> None:
        self.rules: list[tuple[re.Pattern[str], str]] = []
        for kind, r in replies.items():
            head = f"{r.code} {r.enhanced} " if r.enhanced else f"{r.code} "
            text = " ".join(r.text.split())
            parts = re.split(r"\{[a-z_]+\}", text)
            body = ".*?".join(re.escape(p) for p in parts)
            self.rules.append((re.compile("^" + re.escape(head) + body + "$", re.S), kind))

    def kind(self, line: str) -> str:
        """The reply kind, or "" when no template matches."""
        line = " ".join(line.split())
        for pat, kind in self.rules:
            if pat.match(line):
                return kind
        return ""


def classify(code: int | None, response: str | None, matcher: ReplyMatcher) -> int:
    c = int(code or 0)
    if c and c < 400:
        return ACCEPTED
    kind = matcher.kind(response or "") if response else ""
    if not kind and response and "greylist" in response.lower():
        kind = "greylisted"
    return outcome_of_kind(kind, c or 450)


@dataclass(frozen=True, slots=True)
class Recording:
    """One provider's recorded traffic, arrays indexed by message / attempt number."""

    provider: str
    enq: np.ndarray  # float64 per message
    rcpt: tuple[str, ...]
    lane: tuple[str, ...]
    domain: tuple[str, ...]  # sending domain per message
    att_ts: np.ndarray  # float64 per attempt, sorted
    att_msg: np.ndarray  # int64 message index per attempt
    att_ip: tuple[str, ...]
    att_out: np.ndarray  # int8 outcome code per attempt
    complaint_delay: np.ndarray  # float64 per message (NaN: no complaint seen)
    horizon: float  # last recorded time

    @property
    def n_messages(self) -> int:
        return int(self.enq.shape[0])

    @property
    def n_attempts(self) -> int:
        return int(self.att_ts.shape[0])

    def accept_ts(self) -> np.ndarray:
        """Per message the time of its first accepted attempt (NaN if none)."""
        out = np.full(self.n_messages, np.nan)
        ok = self.att_out == ACCEPTED
        msgs, ts = self.att_msg[ok], self.att_ts[ok]
        order = np.argsort(ts, kind="stable")[::-1]  # the earliest written last
        out[msgs[order]] = ts[order]
        return out

    def subset(self, keep: np.ndarray) -> Recording:
        """The messages where ``keep`` (bool per message) holds, renumbered."""
        idx = np.flatnonzero(keep)
        new = np.full(self.n_messages, -1, dtype=np.int64)
        new[idx] = np.arange(idx.size)
        a = np.flatnonzero(keep[self.att_msg])
        return Recording(
            provider=self.provider, enq=self.enq[idx],
            rcpt=tuple(self.rcpt[i] for i in idx), lane=tuple(self.lane[i] for i in idx),
            domain=tuple(self.domain[i] for i in idx), att_ts=self.att_ts[a],
            att_msg=new[self.att_msg[a]], att_ip=tuple(self.att_ip[i] for i in a),
            att_out=self.att_out[a], complaint_delay=self.complaint_delay[idx],
            horizon=self.horizon)


def recording_from_events(frame: pl.DataFrame, provider: str, params: ModelParams
                          ) -> Recording:
    """``provider``'s messages and attempts in an event frame; ``InputError`` if it has none.

    Messages are keyed by (source, run_id, message_id). A message's enqueue time is its
    ``enqueued`` row, else ``enqueued_ts`` of any row, else its first attempt (imports)."""
    f = to_epoch(frame)
    if f.is_empty():
        raise InputError("no recorded events to calibrate from")
    horizon = float(f["ts"].max())  # type: ignore[arg-type]
    key = ["source", "run_id", "message_id"]
    f = f.filter(pl.col("message_id").is_not_null()).with_columns(
        pl.col("source").fill_null(""), pl.col("run_id").fill_null(""))
    mine = f.filter(pl.col("provider") == provider).select(key).unique()
    f = f.join(mine, on=key, how="semi")
    att = f.filter(pl.col("event").is_in(RESULT_EVENTS) & pl.col("smtp_code").is_not_null()
                   & pl.col("source_ip").is_not_null())
    if att.is_empty():
        raise InputError(f"no recorded delivery attempts to provider {provider!r}")
    msgs = (
        f.sort("ts", maintain_order=True)
        .group_by(key, maintain_order=True)
        .agg(
            pl.col("ts").filter(pl.col("event") == "enqueued").first().alias("enq_row"),
            pl.col("enqueued_ts").drop_nulls().first().alias("enq_col"),
            pl.col("ts").filter(pl.col("event").is_in(RESULT_EVENTS)
                                & pl.col("smtp_code").is_not_null()).first().alias("first"),
            pl.col("recipient").drop_nulls().first().alias("rcpt"),
            pl.col("lane").drop_nulls().first().alias("lane"),
            pl.col("sending_domain").drop_nulls().first().alias("domain"),
            pl.col("ts").filter(pl.col("event") == "complaint").first().alias("complaint"),
        )
        .filter(pl.col("first").is_not_null())
        .with_columns(pl.coalesce("enq_row", "enq_col", "first").alias("enq"))
        .sort(["enq", *key])
        .with_row_index("m")
    )
    att = att.join(msgs.select([*key, "m"]), on=key, how="inner").sort(["ts", "m"])
    matcher = ReplyMatcher(params.replies)
    out = np.array([classify(c, r, matcher) for c, r in
                    zip(att["smtp_code"].to_list(), att["response"].to_list(), strict=True)],
                   dtype=np.int8)
    rec = Recording(
        provider=provider, enq=msgs["enq"].to_numpy().astype(float),
        rcpt=tuple(r or f"u{i}@{provider}.example" for i, r in enumerate(msgs["rcpt"])),
        lane=tuple(x or "lifecycle" for x in msgs["lane"]),
        domain=tuple(x or "sender.example" for x in msgs["domain"]),
        att_ts=att["ts"].to_numpy().astype(float),
        att_msg=att["m"].to_numpy().astype(np.int64), att_ip=tuple(att["source_ip"]),
        att_out=out, complaint_delay=np.full(msgs.height, np.nan), horizon=horizon)
    acc = rec.accept_ts()
    comp = msgs["complaint"].to_numpy().astype(float)
    delay = comp - acc
    delay[~np.isfinite(delay) | (delay < 0)] = np.nan
    return replace(rec, complaint_delay=delay)


def split(rec: Recording, by: str) -> tuple[Recording, Recording]:
    """(fit part, held-out part): by "day" the last day holds out (the days alternate when
    there are more than two), by "ip" every other source IP (of a message's first attempt)."""
    if by == "day":
        day = np.floor(rec.enq / DAY).astype(np.int64)
        days = np.unique(day)
        if days.size < 2:
            raise InputError("--holdout day needs traffic on at least two days")
        held = days[1::2] if days.size > 2 else days[-1:]
        hold = np.isin(day, held)
    elif by == "ip":
        first_ip = [""] * rec.n_messages
        for i in range(rec.n_attempts - 1, -1, -1):
            first_ip[int(rec.att_msg[i])] = rec.att_ip[i]
        ips = sorted(set(first_ip))
        if len(ips) < 2:
            raise InputError("--holdout ip needs traffic from at least two source IPs")
        held_ips = set(ips[1::2])
        hold = np.array([ip in held_ips for ip in first_ip])
    else:
        raise InputError(f"--holdout must be day or ip, got {by!r}")
    return rec.subset(~hold), rec.subset(hold)
