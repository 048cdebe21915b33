"""PowerMTA accounting CSV importer (a header row names the fields).

Fields used, per the PowerMTA User's Guide accounting chapter (record types and field names):
``type``, ``timeLogged``, ``timeQueued``, ``orig``, ``rcpt``, ``dsnAction``, ``dsnStatus``,
``dsnDiag``, ``dsnMta``, ``bounceCat``, ``dlvSourceIp``, ``dlvDestinationIp``, ``vmta``,
``jobId``, ``envId``, and for ``f`` records ``feedbackType`` / ``format`` where present.

Mapping: d → delivered, b → bounced (``bounceCat`` message-expired → expired), t / tq →
deferred, f → complaint, rb → bounced (remote bounce), r → enqueued; others are skipped.
A row with an unknown type, no recipient or an unreadable time is malformed.
``pool`` is the virtual MTA; ``campaign`` the job id.

Owns: parsing only, in bulk. Must not touch: the warehouse.
"""

from __future__ import annotations

import io

import polars as pl

from inboxlab.importers.common import domain_of, enhanced_of, provider_expr, smtp_code_of

EVENTS = {"d": "delivered", "b": "bounced", "t": "deferred", "tq": "deferred",
          "f": "complaint", "rb": "bounced", "r": "enqueued"}
KNOWN = {*EVENTS, "rs", "j", "m", "p"}


def _time(col: pl.Expr) -> pl.Expr:
    # PowerMTA logs "2024-03-03 10:15:02-0500" (local time with offset)
    return pl.coalesce(
        col.str.to_datetime("%Y-%m-%d %H:%M:%S%z", time_unit="us", strict=False),
        col.str.to_datetime("%Y-%m-%dT%H:%M:%S%z", time_unit="us", strict=False),
    ).dt.convert_time_zone("UTC")


def parse(data: bytes, run_id: str) -> tuple[pl.DataFrame, int, int, int]:
    """Parse an accounting CSV; returns ``(events frame, lines, malformed, skipped)``."""
    text = data.decode("utf-8", errors="replace")
    body_lines = [ln for ln in text.splitlines()[1:] if ln.strip()]
    df = pl.read_csv(
        io.StringIO(text), infer_schema=False, truncate_ragged_lines=True,
        quote_char='"',
    )
    for col in ("type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnAction", "dsnStatus",
                "dsnDiag", "dsnMta", "bounceCat", "dlvSourceIp", "vmta", "jobId",
                "feedbackType", "envId"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(col))
    df = df.with_columns(_time(pl.col("timeLogged")).alias("ts"),
                         _time(pl.col("timeQueued")).alias("enq"))
    good = (
        pl.col("type").is_in(list(KNOWN)) & pl.col("ts").is_not_null()
        & (pl.col("rcpt").is_not_null() | ~pl.col("type").is_in(list(EVENTS)))
    )
    malformed = df.filter(~good).height
    df = df.filter(good)
    kept = df.filter(pl.col("type").is_in(list(EVENTS)))
    skipped = df.height - kept.height
    diag = pl.col("dsnDiag").str.replace(r"^smtp;\s*", "")
    event = (
        pl.when((pl.col("type") == "b") & (pl.col("bounceCat") == "message-expired"))
        .then(pl.lit("expired"))
        .otherwise(pl.col("type").replace_strict(EVENTS))
    )
    mx = pl.col("dsnMta").str.extract(r"^([^\s(]+)", 1)
    out = kept.select(
        pl.col("ts"),
        event.alias("event"),
        pl.lit("import").alias("source"),
        pl.lit(run_id).alias("run_id"),
        pl.coalesce(pl.col("envId"), pl.col("jobId") + pl.lit(":") + pl.col("rcpt"))
        .alias("message_id"),
        pl.col("rcpt").alias("recipient"),
        domain_of(pl.col("rcpt")).alias("recipient_domain"),
        domain_of(pl.col("orig")).alias("sending_domain"),
        provider_expr(domain_of(pl.col("rcpt")), mx).alias("provider"),
        pl.col("vmta").alias("pool"),
        pl.col("dlvSourceIp").alias("source_ip"),
        mx.alias("mx_host"),
        pl.col("jobId").alias("campaign"),
        smtp_code_of(diag).alias("smtp_code"),
        pl.coalesce(pl.col("dsnStatus").str.extract(r"^(\d\.\d{1,3}\.\d{1,3})", 1),
                    enhanced_of(diag)).alias("enhanced_code"),
        diag.alias("response"),
        pl.col("bounceCat").alias("reason"),
        pl.when(pl.col("type") == "f").then(pl.col("feedbackType")).alias("category_raw"),
        pl.col("enq").alias("enqueued_ts"),
        pl.concat_str(pl.lit('{"pmta_type":"'), pl.col("type"), pl.lit('","dsnAction":"'),
                      pl.col("dsnAction").fill_null(""), pl.lit('"}')).alias("detail"),
    ).drop("category_raw")
    return out, len(body_lines), malformed, skipped
