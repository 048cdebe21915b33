"""Postfix maillog importer: ``status=sent|deferred|bounced|expired`` lines to events.

Reads classic syslog lines (``Mar  3 10:15:02 host postfix/smtp[123]: QID: ...``; the year
comes from ``year``) and RFC 3339 ones (``2024-03-03T10:15:02.123+00:00 host ...``, Postfix
``maillog_file`` output). Queue ids link ``from=`` (qmgr) and ``message-id=`` (cleanup) lines to
the delivery lines. Field meanings follow postfix.org's documentation of the smtp(8)/qmgr(8)
log records (``relay=``, ``delay=``, ``delays=a/b/c/d``, ``dsn=``, ``status=``, reply text).

Mapping: sent → delivered, deferred → deferred, bounced → bounced, expired → expired (one
expired row per recipient previously deferred under that queue id). ``enqueued_ts`` is the
line's time minus ``delay``; ``attempt`` counts delivery lines per queue id × recipient.

Owns: parsing only, in bulk with polars string expressions. Must not touch: the warehouse.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from inboxlab.importers.common import (
    domain_of,
    enhanced_of,
    lines_of,
    provider_expr,
    smtp_code_of,
)

_PREFIX = (
    r"^(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))"
    r"|(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)) (?P<host>\S+) "
    r"(?P<prog>[\w/.-]+)(?:\[\d+\])?: (?P<msg>.*)$"
)
_QID = r"^(?P<qid>[0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-z]{12,}): (?P<rest>.*)$"


def parse(data: bytes, run_id: str, year: int | None = None) -> tuple[pl.DataFrame, int, int, int]:
    """Parse a maillog; returns ``(events frame, lines, malformed, skipped)``."""
    lines = lines_of(data)
    year = year or datetime.now(UTC).year
    df = pl.DataFrame({"line": lines}).with_columns(
        pl.col("line").str.extract_groups(_PREFIX).alias("p")
    ).unnest("p")
    malformed = df.filter(pl.col("msg").is_null()).height
    df = df.filter(pl.col("msg").is_not_null() & pl.col("prog").str.starts_with("postfix"))
    bsd = pl.col("bsd").str.replace(r"^(\w{3})  ", "$1 0")
    ts = pl.coalesce(
        pl.col("iso").str.replace(r"([+-]\d\d)(\d\d)$", "$1:$2")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", strict=False)
        .dt.convert_time_zone("UTC"),
        (pl.lit(f"{year} ") + bsd)
        .str.to_datetime("%Y %b %d %H:%M:%S", time_unit="us", strict=False)
        .dt.replace_time_zone("UTC"),
    )
    df = df.with_columns(ts.alias("ts")).with_columns(
        pl.col("msg").str.extract_groups(_QID).alias("q")
    ).unnest("q")
    bad_ts = df.filter(pl.col("ts").is_null()).height
    malformed += bad_ts
    df = df.filter(pl.col("ts").is_not_null())
    relevant = df.height
    rest = pl.col("rest")
    senders = (
        df.filter(rest.str.starts_with("from=<"))
        .select("qid", rest.str.extract(r"^from=<([^>]*)>", 1).alias("sender"))
        .unique("qid", keep="first")
    )
    mids = (
        df.filter(rest.str.starts_with("message-id="))
        .select("qid", rest.str.extract(r"^message-id=<?([^>\s]*)>?", 1).alias("mid"))
        .unique("qid", keep="first")
    )
    deliveries = df.filter(rest.str.starts_with("to=<") & rest.str.contains(r"status=\w+"))
    deliveries = deliveries.with_columns(
        rest.str.extract(r"^to=<([^>]*)>", 1).alias("recipient"),
        rest.str.extract(r"relay=([^,\[\s]+)", 1).alias("relay"),
        rest.str.extract(r"relay=[^,\[\s]+\[([^\]]+)\]", 1).alias("relay_ip"),
        rest.str.extract(r"delay=([\d.]+)", 1).cast(pl.Float64).alias("delay"),
        rest.str.extract(r"delays=([\d./]+)", 1).alias("delays"),
        rest.str.extract(r"dsn=(\d\.\d{1,3}\.\d{1,3})", 1).alias("dsn"),
        rest.str.extract(r"status=(\w+)", 1).alias("status"),
        rest.str.extract(r"status=\w+ \((.*)\)\s*$", 1).alias("reply"),
    ).filter(pl.col("status").is_in(["sent", "deferred", "bounced", "expired"]))
    deliveries = deliveries.sort("ts", maintain_order=True).with_columns(
        pl.int_range(1, pl.len() + 1).over(["qid", "recipient"]).alias("attempt")
    )
    expired_q = df.filter(rest.str.contains(r"status=expired") & ~rest.str.starts_with("to=<"))
    deferred_rcpts = deliveries.filter(pl.col("status") == "deferred").group_by("qid").agg(
        pl.col("recipient").unique(maintain_order=True),
        pl.col("relay").last(), pl.col("relay_ip").last(), pl.col("attempt").max(),
        (pl.col("ts") - pl.duration(microseconds=(pl.col("delay") * 1e6).round().cast(pl.Int64)))
        .min().alias("enq"),
    )
    expired = (
        expired_q.select("ts", "qid", "host", pl.lit("expired").alias("status"))
        .join(deferred_rcpts, on="qid", how="left")
        .explode("recipient")
        .with_columns(
            ((pl.col("ts") - pl.col("enq")).dt.total_microseconds() / 1e6).alias("delay"),
        pl.lit(None, pl.Utf8).alias("dsn"),
            pl.lit("message expired in the queue").alias("reply"),
            pl.lit(None, pl.Utf8).alias("delays"),
        )
    )
    cols = ["ts", "qid", "host", "recipient", "relay", "relay_ip", "delay", "delays", "dsn",
            "status", "reply", "attempt"]
    rows = pl.concat(
        [deliveries.select(cols), expired.select(cols)], how="vertical_relaxed"
    )
    rows = rows.join(senders, on="qid", how="left").join(mids, on="qid", how="left")
    reply = pl.col("reply")
    relay = pl.col("relay").replace("none", None)
    event = pl.col("status").replace_strict(
        {"sent": "delivered", "deferred": "deferred", "bounced": "bounced",
         "expired": "expired"}
    )
    delay_us = (pl.col("delay") * 1_000_000).round().cast(pl.Int64)
    out = rows.select(
        pl.col("ts"),
        event.alias("event"),
        pl.lit("import").alias("source"),
        pl.lit(run_id).alias("run_id"),
        pl.coalesce(pl.col("mid"), pl.col("qid")).alias("message_id"),
        pl.col("recipient"),
        domain_of(pl.col("recipient")).alias("recipient_domain"),
        domain_of(pl.col("sender")).alias("sending_domain"),
        provider_expr(domain_of(pl.col("recipient")), relay).alias("provider"),
        relay.alias("mx_host"),
        pl.col("attempt").cast(pl.Int64),
        smtp_code_of(reply).alias("smtp_code"),
        pl.coalesce(pl.col("dsn"), enhanced_of(reply)).alias("enhanced_code"),
        reply.alias("response"),
        (pl.col("ts") - pl.duration(microseconds=delay_us)).alias("enqueued_ts"),
        pl.concat_str(
            pl.lit('{"queue_id":"'), pl.col("qid"), pl.lit('","host":"'), pl.col("host"),
            pl.lit('","delays":"'), pl.col("delays").fill_null(""), pl.lit('"}'),
        ).alias("detail"),
    ).sort("ts", maintain_order=True)
    skipped = relevant - deliveries.height - expired_q.height
    return out, len(lines), malformed, skipped
