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

_QID = r"^(?:[0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-z]{12,})$"
_ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)$"
_BSD = r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d$"
# One pass over a delivery record, in the field order smtp(8)/lmtp(8)/local(8) log it;
# ``orig_to=`` and ``conn_use=`` are optional. Records this does not match fall back to
# per-field extraction (older or patched Postfix versions), so nothing is lost.
_DELIVERY = (
    r"^to=<(?P<recipient>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,\[\s]+)"
    r"(?:\[(?P<relay_ip>[^\]]+)\](?::\d+)?)?,(?: conn_use=\d+,)? delay=(?P<delay>[\d.]+),"
    r"(?: delays=(?P<delays>[\d./]+),)? dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), "
    r"status=(?P<status>\w+)(?: \((?P<reply>.*)\))?\s*$"
)
_FALLBACK = {
    "recipient": r"^to=<([^>]*)>",
    "relay": r"relay=([^,\[\s]+)",
    "relay_ip": r"relay=[^,\[\s]+\[([^\]]+)\]",
    "delay": r"delay=([\d.]+)",
    "delays": r"delays=([\d./]+)",
    "dsn": r"dsn=(\d\.\d{1,3}\.\d{1,3})",
    "status": r"status=(\w+)",
    "reply": r"status=\w+ \((.*)\)\s*$",
}


def _stamps(stamps: pl.Series, year: int) -> pl.Series:
    """Parse each distinct time stamp once (logs repeat each second many times)."""
    uniq = stamps.drop_nulls().unique()
    iso = uniq.filter(uniq.str.contains(_ISO))
    bsd = uniq.filter(uniq.str.contains(_BSD))
    iso_ts = (
        iso.str.replace(r"([+-]\d\d)(\d\d)$", "$1:$2")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", strict=False)
        .dt.convert_time_zone("UTC")
    )
    bsd_ts = (
        (f"{year} " + bsd.str.replace(r"^(\w{3})  ", "$1 0"))
        .str.to_datetime("%Y %b %d %H:%M:%S", time_unit="us", strict=False)
        .dt.replace_time_zone("UTC")
    )
    old = pl.concat([iso, bsd])
    new = pl.concat([iso_ts, bsd_ts])
    return stamps.replace_strict(old, new, default=None, return_dtype=pl.Datetime("us", "UTC"))


def _split_lines(lines: pl.Series) -> pl.DataFrame:
    """Time stamp, host, program and message of each syslog line, with plain string slicing:
    a BSD stamp is 15 characters wide, an RFC 3339 one ends at the first space."""
    line = pl.col("line")
    bsd = line.str.slice(0, 1).str.contains(r"^[A-Z]")
    width = pl.when(bsd).then(pl.lit(15, pl.UInt32)).otherwise(line.str.find(" ").cast(pl.UInt32))
    df = pl.DataFrame({"line": lines}).select(
        line.str.slice(0, width).alias("stamp"),
        line.str.slice(width + 1).str.splitn(" ", 3).alias("f"),
    ).unnest("f")
    df.columns = ["stamp", "host", "tag", "msg"]
    tag = pl.col("tag")
    ok = tag.str.ends_with(":") & pl.col("msg").is_not_null() & pl.col("host").is_not_null()
    return df.with_columns(
        pl.when(ok).then(tag.str.strip_suffix(":").str.replace(r"\[\d+\]$", ""))
        .alias("prog"),
        pl.when(ok).then(pl.col("msg")).alias("msg"),
    )


_KEYS = ("to=<", "relay=", "delay=", "delays=", "dsn=", "status=")


def _split_fields(df: pl.DataFrame) -> pl.DataFrame:
    """The common record shape (``to, relay, delay, delays, dsn, status (reply)``) by plain
    splitting on ``", "``; ``ok`` marks the rows whose six fields carry the expected keys."""
    names = [f"_f{i}" for i in range(6)]
    df = df.with_columns(pl.col("rest").str.splitn(", ", 6).struct.rename_fields(names)
                         .alias("_parts")).unnest("_parts")
    f = [pl.col(name) for name in names]
    ok = pl.all_horizontal(
        *(part.str.starts_with(key).fill_null(False) for part, key in zip(f, _KEYS, strict=True))
    ) & f[0].str.ends_with(">")
    df = df.with_columns(
        f[1].str.slice(6).str.splitn("[", 2).struct.rename_fields(["_relay", "_ip"]).alias("_r"),
        f[5].str.slice(7).str.strip_chars_end().str.splitn(" ", 2)
        .struct.rename_fields(["_status", "_reply"]).alias("_s"),
    ).unnest("_r", "_s")
    reply = pl.col("_reply")
    return df.with_columns(
        ok.alias("ok"),
        f[0].str.slice(4).str.strip_suffix(">").alias("recipient"),
        pl.col("_relay").alias("relay"),
        pl.col("_ip").str.splitn("]", 2).struct.field("field_0").alias("relay_ip"),
        f[2].str.slice(6).alias("delay"),
        f[3].str.slice(7).alias("delays"),
        f[4].str.slice(4).alias("dsn"),
        pl.col("_status").alias("status"),
        pl.when(reply.str.starts_with("(") & reply.str.ends_with(")"))
        .then(reply.str.slice(1, reply.str.len_chars() - 2)).alias("reply"),
    ).drop(*names, "_relay", "_ip", "_status", "_reply")


def _deliveries(df: pl.DataFrame) -> pl.DataFrame:
    """Fields of each delivery record: fast split first; records of another shape (with
    ``orig_to=``, ``conn_use=``...) through one combined regex, then per-field regexes."""
    fast = _split_fields(df)
    good = fast.filter(pl.col("ok")).drop("ok")
    other = fast.filter(~pl.col("ok")).drop("ok", *_FALLBACK)
    if other.height:
        rest = pl.col("rest")
        other = other.with_columns(rest.str.extract_groups(_DELIVERY).alias("d")).unnest("d")
        missed = pl.col("status").is_null()
        other = other.with_columns(
            pl.when(missed).then(rest.str.extract(rx, 1)).otherwise(pl.col(name)).alias(name)
            for name, rx in _FALLBACK.items()
        )
        good = pl.concat([good, other.select(good.columns)])
    return good.with_columns(pl.col("delay").cast(pl.Float64, strict=False))


def parse(data: bytes, run_id: str, year: int | None = None) -> tuple[pl.DataFrame, int, int, int]:
    """Parse a maillog; returns ``(events frame, lines, malformed, skipped)``."""
    lines = lines_of(data)
    year = year or datetime.now(UTC).year
    df = _split_lines(lines)
    malformed = df.filter(pl.col("msg").is_null()).height
    df = df.filter(pl.col("msg").is_not_null() & pl.col("prog").str.starts_with("postfix"))
    df = df.with_columns(_stamps(df["stamp"], year).alias("ts"))
    qr = pl.col("msg").str.splitn(": ", 2)
    df = df.with_columns(qr.struct.field("field_0").alias("qid"),
                         qr.struct.field("field_1").alias("rest"))
    has_qid = pl.col("qid").str.contains(_QID) & pl.col("rest").is_not_null()
    df = df.with_columns(pl.when(has_qid).then(pl.col("qid")).alias("qid"),
                         pl.when(has_qid).then(pl.col("rest")).alias("rest"))
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
    deliveries = _deliveries(
        df.filter(rest.str.starts_with("to=<") & rest.str.contains("status=", literal=True))
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
