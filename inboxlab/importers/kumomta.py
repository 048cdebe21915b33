"""KumoMTA JSON log importer (one JSON record per line).

Fields used, as documented in KumoMTA's log record reference (docs.kumomta.com, "Log Record"):
``type``, ``id``, ``sender``, ``recipient``, ``queue`` (``campaign:tenant@domain``), ``site``,
``response{code, enhanced_code{class, subject, detail}, content}``, ``peer_address{name, addr}``,
``timestamp`` / ``created`` (epoch seconds, or RFC 3339 in ``event_time``/``created_time``),
``num_attempts``, ``egress_pool``, ``egress_source``, ``source_address{address}``,
``feedback_report{feedback_type}``, ``bounce_classification``.

Mapping: Reception → enqueued, Delivery → delivered, TransientFailure → deferred,
Bounce / OOB → bounced, AdminBounce → bounced (action ``admin_bounce``), Expiration → expired,
Feedback → complaint (auth-failure and not-spam reports are skipped); other types (Rejection,
AdminRebind, XferIn/Out, Delayed...) are skipped. ``attempt`` is ``num_attempts`` (at least 1).

Owns: parsing only, in bulk. Must not touch: the warehouse.
"""

from __future__ import annotations

import polars as pl

from inboxlab.importers.common import (
    decode_json_lines,
    domain_of,
    epoch_or_iso,
    lines_of,
    provider_expr,
)

_S = pl.Utf8
DTYPE = pl.Struct({
    "type": _S, "id": _S, "sender": _S, "recipient": _S, "queue": _S, "site": _S,
    "size": pl.Int64, "timestamp": _S, "event_time": _S, "created": _S, "created_time": _S,
    "num_attempts": pl.Int64, "egress_pool": _S, "egress_source": _S,
    "bounce_classification": _S,
    "response": pl.Struct({
        "code": pl.Int64, "content": _S, "command": _S,
        "enhanced_code": pl.Struct({"class": pl.Int64, "subject": pl.Int64, "detail": pl.Int64}),
    }),
    "peer_address": pl.Struct({"name": _S, "addr": _S}),
    "source_address": pl.Struct({"address": _S}),
    "feedback_report": pl.Struct({"feedback_type": _S, "source_ip": _S}),
})

EVENTS = {
    "Reception": "enqueued", "Delivery": "delivered", "TransientFailure": "deferred",
    "Bounce": "bounced", "OOB": "bounced", "AdminBounce": "bounced", "Expiration": "expired",
    "Feedback": "complaint",
}


def parse(data: bytes, run_id: str) -> tuple[pl.DataFrame, int, int, int]:
    """Parse KumoMTA JSON lines; returns ``(events frame, lines, malformed, skipped)``."""
    lines = lines_of(data)
    decoded, ok = decode_json_lines(lines, DTYPE)
    df = pl.DataFrame({"r": decoded, "ok": ok})
    bad = df.filter(~pl.col("ok") | pl.col("r").struct.field("type").is_null())
    df = df.filter(pl.col("ok") & pl.col("r").struct.field("type").is_not_null()).unnest("r")
    ts = epoch_or_iso(pl.coalesce(pl.col("timestamp"), pl.col("event_time")))
    df = df.with_columns(ts.alias("ts"))
    malformed = bad.height + df.filter(pl.col("ts").is_null()).height
    df = df.filter(pl.col("ts").is_not_null())
    fb = pl.col("feedback_report").struct.field("feedback_type")
    keep = pl.col("type").is_in(list(EVENTS)) & ~(
        (pl.col("type") == "Feedback") & fb.is_in(["auth-failure", "not-spam"])
    )
    kept = df.filter(keep)
    skipped = df.height - kept.height
    resp = pl.col("response")
    enh = resp.struct.field("enhanced_code")
    enhanced = pl.concat_str(
        enh.struct.field("class").cast(_S), enh.struct.field("subject").cast(_S),
        enh.struct.field("detail").cast(_S), separator=".",
    )
    code = resp.struct.field("code")
    queue = pl.col("queue").str.extract_groups(r"^(?:(?P<campaign>[^:@]+):)?(?:(?P<tenant>[^@]+)@)?")
    peer = pl.col("peer_address").struct.field("name")
    event = pl.col("type").replace_strict(EVENTS)
    outbound = pl.col("type").is_in(["Delivery", "TransientFailure", "Bounce", "Expiration"])
    out = kept.with_columns(queue.alias("q")).unnest("q").select(
        pl.col("ts"),
        event.alias("event"),
        pl.lit("import").alias("source"),
        pl.lit(run_id).alias("run_id"),
        pl.col("tenant"),
        pl.col("id").alias("message_id"),
        pl.col("recipient"),
        domain_of(pl.col("recipient")).alias("recipient_domain"),
        domain_of(pl.col("sender")).alias("sending_domain"),
        provider_expr(domain_of(pl.col("recipient")), peer).alias("provider"),
        pl.col("egress_pool").alias("pool"),
        pl.col("source_address").struct.field("address").str.replace(r":\d+$", "")
        .alias("source_ip"),
        pl.when(outbound).then(peer).alias("mx_host"),
        pl.col("campaign"),
        pl.when(event.is_in(["delivered", "deferred", "bounced"]))
        .then(pl.max_horizontal(pl.col("num_attempts").fill_null(1), pl.lit(1)))
        .alias("attempt"),
        pl.when(outbound & code.is_between(200, 599)).then(code).alias("smtp_code"),
        pl.when(outbound).then(enhanced).alias("enhanced_code"),
        resp.struct.field("content").alias("response"),
        pl.col("bounce_classification").alias("category_raw"),
        pl.when(pl.col("type") == "AdminBounce").then(pl.lit("admin_bounce")).alias("action"),
        pl.when(pl.col("type") == "Feedback").then(fb).alias("reason"),
        epoch_or_iso(pl.coalesce(pl.col("created"), pl.col("created_time"))).alias("enqueued_ts"),
        pl.concat_str(pl.lit('{"kumo_type":"'), pl.col("type"), pl.lit('","site":"'),
                      pl.col("site").fill_null(""), pl.lit('","bounce_classification":"'),
                      pl.col("bounce_classification").fill_null(""), pl.lit('"}'))
        .alias("detail"),
    ).drop("category_raw")
    return out, len(lines), malformed, skipped
