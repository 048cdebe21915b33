"""Amazon SES event importer: one JSON object per line, plain or SNS-wrapped.

Fields as documented in the SES Developer Guide ("Contents of event data that Amazon SES
publishes to Amazon SNS"): ``eventType`` (event publishing) or ``notificationType``
(notifications); ``mail{timestamp, messageId, source, destination[], tags}``;
``bounce{bounceType, bounceSubType, bouncedRecipients[{emailAddress, status, diagnosticCode}],
timestamp}``; ``complaint{complainedRecipients[{emailAddress}], complaintFeedbackType,
timestamp}``; ``delivery{timestamp, recipients[], smtpResponse, reportingMTA}``;
``deliveryDelay{timestamp, delayType, delayedRecipients[{emailAddress, status,
diagnosticCode}]}``; ``open``/``click{timestamp}``; ``reject{reason}``. An SNS envelope
(``{"Type": "Notification", "Message": "<json>"}``) is unwrapped first.

Mapping: Send → attempt (attempt 1), Delivery → delivered, Bounce Permanent → bounced,
Bounce Transient/Undetermined → bounced (``reason`` keeps the type/subtype), DeliveryDelay →
deferred, Complaint → complaint, Reject → suppressed, Open/Click → engagement, Subscription →
unsubscribe; one row per affected recipient. ``enqueued_ts`` is ``mail.timestamp``.

Owns: parsing only, in bulk. Must not touch: the warehouse.
"""

from __future__ import annotations

import polars as pl

from inboxlab.importers.common import (
    decode_json_lines,
    domain_of,
    enhanced_of,
    epoch_or_iso,
    lines_of,
    provider_expr,
    smtp_code_of,
)

_S = pl.Utf8
_RCPT = pl.List(pl.Struct({"emailAddress": _S, "status": _S, "diagnosticCode": _S}))
DTYPE = pl.Struct({
    "eventType": _S, "notificationType": _S,
    "mail": pl.Struct({"timestamp": _S, "messageId": _S, "source": _S,
                       "destination": pl.List(_S), "sendingAccountId": _S}),
    "bounce": pl.Struct({"bounceType": _S, "bounceSubType": _S, "bouncedRecipients": _RCPT,
                         "timestamp": _S, "reportingMTA": _S}),
    "complaint": pl.Struct({"complainedRecipients": _RCPT, "complaintFeedbackType": _S,
                            "timestamp": _S}),
    "delivery": pl.Struct({"timestamp": _S, "recipients": pl.List(_S), "smtpResponse": _S,
                           "reportingMTA": _S, "remoteMtaIp": _S}),
    "deliveryDelay": pl.Struct({"timestamp": _S, "delayType": _S, "delayedRecipients": _RCPT,
                                "reportingMTA": _S}),
    "send": pl.Struct({"x": _S}), "reject": pl.Struct({"reason": _S}),
    "open": pl.Struct({"timestamp": _S}), "click": pl.Struct({"timestamp": _S, "link": _S}),
    "subscription": pl.Struct({"timestamp": _S}),
})
_ENVELOPE = pl.Struct({"Type": _S, "Message": _S})

EVENTS = {"Send": "attempt", "Delivery": "delivered", "Bounce": "bounced",
          "DeliveryDelay": "deferred", "Complaint": "complaint", "Reject": "suppressed",
          "Open": "engagement", "Click": "engagement", "Subscription": "unsubscribe"}


def parse(data: bytes, run_id: str) -> tuple[pl.DataFrame, int, int, int]:
    """Parse SES event lines; returns ``(events frame, lines, malformed, skipped)``."""
    lines = lines_of(data)
    env, env_ok = decode_json_lines(lines, _ENVELOPE)
    inner = pl.select(
        pl.when(env_ok & (env.struct.field("Type") == "Notification"))
        .then(env.struct.field("Message")).otherwise(lines).alias("x")
    ).to_series()
    decoded, ok = decode_json_lines(inner, DTYPE)
    df = pl.DataFrame({"r": decoded, "ok": ok & env_ok}).unnest("r")
    etype = pl.coalesce(pl.col("eventType"), pl.col("notificationType"))
    df = df.with_columns(etype.alias("etype"))
    good = pl.col("ok") & pl.col("etype").is_not_null() & pl.col("mail").is_not_null()
    malformed = df.filter(~good).height
    df = df.filter(good)
    kept = df.filter(pl.col("etype").is_in(list(EVENTS)))
    skipped = df.height - kept.height

    def f(struct: str, field: str) -> pl.Expr:
        return pl.col(struct).struct.field(field)

    et = pl.col("etype")
    rcpt_structs = (
        pl.when(et == "Bounce").then(f("bounce", "bouncedRecipients"))
        .when(et == "Complaint").then(f("complaint", "complainedRecipients"))
        .when(et == "DeliveryDelay").then(f("deliveryDelay", "delayedRecipients"))
    )
    plain = pl.when(et == "Delivery").then(f("delivery", "recipients")).otherwise(
        f("mail", "destination"))
    as_structs = plain.list.eval(
        pl.struct(pl.element().alias("emailAddress"), pl.lit(None, _S).alias("status"),
                  pl.lit(None, _S).alias("diagnosticCode")))
    rows = kept.with_columns(
        pl.coalesce(rcpt_structs, as_structs).alias("rcpt")
    ).explode("rcpt").unnest("rcpt")
    when_ts = pl.coalesce(
        f("delivery", "timestamp"), f("bounce", "timestamp"), f("complaint", "timestamp"),
        f("deliveryDelay", "timestamp"), f("open", "timestamp"), f("click", "timestamp"),
        f("subscription", "timestamp"), f("mail", "timestamp"),
    )
    reply = pl.coalesce(pl.col("diagnosticCode"), f("delivery", "smtpResponse"))
    reply = reply.str.replace(r"^smtp;\s*", "")
    out = rows.select(
        epoch_or_iso(when_ts).alias("ts"),
        et.replace_strict(EVENTS).alias("event"),
        pl.lit("import").alias("source"),
        pl.lit(run_id).alias("run_id"),
        f("mail", "messageId").alias("message_id"),
        pl.col("emailAddress").alias("recipient"),
        domain_of(pl.col("emailAddress")).alias("recipient_domain"),
        domain_of(f("mail", "source")).alias("sending_domain"),
        # reportingMTA is SES's own sending host, not the receiver's MX: no mx_host.
        provider_expr(domain_of(pl.col("emailAddress"))).alias("provider"),
        pl.when(et == "Send").then(pl.lit(1, pl.Int64)).alias("attempt"),
        smtp_code_of(reply).alias("smtp_code"),
        pl.coalesce(pl.col("status"), enhanced_of(reply)).alias("enhanced_code"),
        reply.alias("response"),
        pl.when(et == "Bounce")
        .then(pl.concat_str(f("bounce", "bounceType"), f("bounce", "bounceSubType"),
                            separator="/"))
        .when(et == "Complaint").then(f("complaint", "complaintFeedbackType"))
        .when(et == "DeliveryDelay").then(f("deliveryDelay", "delayType"))
        .when(et == "Reject").then(f("reject", "reason"))
        .when(et.is_in(["Open", "Click"])).then(et.str.to_lowercase())
        .alias("reason"),
        epoch_or_iso(f("mail", "timestamp")).alias("enqueued_ts"),
    )
    malformed += out.filter(pl.col("ts").is_null()).height
    return out.filter(pl.col("ts").is_not_null()), len(lines), malformed, skipped
