"""The SQL of the warehouse: the ``events`` view over every source and the metric views.

Every view is plain SQL over ``events`` (DuckDB, built-in parquet/json only), so a notebook,
the CLI and the dashboards see the same definitions. Tests declare tiny inputs and exact
expected outputs for each view (``tests/unit/test_metrics*.py``).

Views (all read-only):

- ``events``           every event row of every source (live, sim, sandbox, import)
- ``messages``         one row per (source, run, message, recipient): enqueue, first attempt,
                       accept and final times, final outcome, deferral count
- ``latency_samples``  one row per latency sample: ``kind`` in first_attempt / accept / final,
                       ``seconds`` from ``enqueued_ts`` to the event. In runs that log no
                       ``attempt`` rows (imported logs) the first result row (attempt = 1)
                       stands in for the first attempt.
- ``deferral_codes``   deferred events with their hint (``hints`` table, keyed by enhanced code
                       and provider, then by category)
- ``reputation_daily`` per day × sending domain × pool: delivered, bounces, complaints, trap hits,
                       rates, and the same rates over the trailing 14 days before that day
- ``warmup_daily``     per day × pool × provider: attempts (results), deferrals, delivered
- ``slo_daily``        per day: enqueue availability and transactional p95 time-to-accept

Owns: SQL text only. Must not touch files (``store``) or Python post-processing (``metrics``).
"""

from __future__ import annotations

from engine.eventio import SCHEMA

FINAL_EVENTS = ("delivered", "bounced", "expired", "dead_lettered", "suppressed")
RESULT_EVENTS = ("delivered", "deferred", "bounced")

# Hints for deferral codes. Texts paraphrase each provider's public postmaster page:
# Gmail: support.google.com/a/answer/3726730 (SMTP error reference);
# Yahoo: senders.yahooinc.com/smtp-error-codes; Outlook.com:
# sendersupport.olc.protection.outlook.com/pm/troubleshooting.
HINTS: tuple[tuple[str | None, str | None, str | None, str], ...] = (
    # (provider or None, enhanced_code or None, category or None, hint)
    ("gmail", "4.7.28", None, "Gmail rate limit on your IP/domain: slow down this pool"),
    ("gmail", "4.7.27", None, "Gmail: SPF did not pass: fix SPF before retrying"),
    ("gmail", "4.7.30", None, "Gmail: DKIM did not pass: fix signing"),
    ("gmail", "4.7.29", None, "Gmail requires TLS for bulk senders: enable TLS"),
    ("gmail", "4.7.32", None, "Gmail: From not aligned with SPF/DKIM domain: fix alignment"),
    ("gmail", "4.7.40", None, "Gmail: no DMARC record or policy: publish DMARC"),
    ("gmail", "4.7.26", None, "Gmail: temporary DNS failure checking your domain"),
    ("gmail", "4.2.1", None, "Gmail: recipient receiving mail too fast: retry later"),
    ("gmail", "4.2.2", None, "Gmail: mailbox full: retry much later"),
    ("yahoo", "4.7.0", None, "Yahoo TSS04-style deferral: unexpected volume or complaints: slow down"),
    ("yahoo", "4.7.1", None, "Yahoo TS03: IP deferred for bulk characteristics: pause the pool"),
    ("microsoft", "4.7.650", None, "Outlook rate limit (reputation): slow down this pool"),
    ("microsoft", "4.7.651", None, "Outlook rate limit (reputation): slow down this pool"),
    (None, "4.7.1", None, "policy/greylisting deferral: retry with normal back-off"),
    (None, "4.2.2", None, "mailbox full: retry much later"),
    (None, "4.4.1", None, "no answer from host: connection trouble, retry"),
    (None, "4.4.2", None, "connection dropped: retry"),
    (None, "4.3.0", None, "receiver-side temporary failure: retry"),
    (None, None, "throttled", "rate limited: slow down the pool for this provider"),
    (None, None, "greylist", "greylisted: retry after a few minutes"),
    (None, None, "reputation_block", "reputation deferral: pause and investigate"),
    (None, None, "connection", "connection trouble: retry"),
)

BY_COLUMNS = (
    "sending_domain", "provider", "pool", "lane", "tenant", "campaign", "source", "run_id",
    "recipient_domain", "day",
)

def utc_day(col: str = "ts") -> str:
    """The UTC calendar day of a TIMESTAMPTZ column by integer arithmetic on its epoch.
    Same answer as ``CAST(col AS DATE)`` in a UTC session, about 9x cheaper on 1 M rows
    (the cast goes through the ICU time-zone calendar row by row)."""
    return f"(DATE '1970-01-01' + CAST(floor(epoch_us({col}) / 86400000000) AS INTEGER))"


_DUCK = {"Datetime": "TIMESTAMPTZ", "Int64": "BIGINT", "String": "VARCHAR"}


def _empty_events_sql() -> str:
    cols = ", ".join(
        f"CAST(NULL AS {_DUCK[type(dt).__name__]}) AS {name}" for name, dt in SCHEMA.items()
    )
    return f"SELECT {cols} WHERE false"


def _lit(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def hints_sql() -> str:
    rows = ", ".join(
        f"({_lit(p)}, {_lit(c)}, {_lit(cat)}, {_lit(h)})" for p, c, cat, h in HINTS
    )
    return f"SELECT * FROM (VALUES {rows}) AS t(provider, enhanced_code, category, hint)"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def reputation_sql(by: tuple[str, ...], where: str = "") -> str:
    """Daily reputation rates per ``by`` group with the trailing 14-day baseline (the 14
    days before each day, that day excluded). ``by`` must be trusted column names."""
    keys = ", ".join(f"coalesce(CAST({c} AS VARCHAR), '') AS {c}" for c in by)
    keys_sel = (keys + ", ") if by else ""
    part = ("PARTITION BY " + ", ".join(by)) if by else ""
    cols = ", ".join(by) + ", " if by else ""
    cond = f" AND ({where})" if where else ""
    return f"""WITH c AS (
  SELECT {utc_day()} AS day, {keys_sel}
    count(*) FILTER (WHERE event = 'delivered') AS delivered,
    count(*) FILTER (WHERE event = 'bounced') AS bounced,
    count(*) FILTER (WHERE event = 'complaint') AS complaints,
    count(*) FILTER (WHERE event = 'trap_hit') AS trap_hits
  FROM events
  WHERE event IN ('delivered', 'bounced', 'complaint', 'trap_hit'){cond}
  GROUP BY ALL
), w AS (
  SELECT *,
    sum(delivered) OVER t AS base_delivered, sum(bounced) OVER t AS base_bounced,
    sum(complaints) OVER t AS base_complaints, sum(trap_hits) OVER t AS base_trap_hits
  FROM c
  WINDOW t AS ({part} ORDER BY day
               RANGE BETWEEN INTERVAL 14 DAY PRECEDING AND INTERVAL 1 DAY PRECEDING)
)
SELECT day, {cols}delivered, bounced, complaints, trap_hits,
  round(bounced / nullif(delivered + bounced, 0), 6) AS bounce_rate,
  round(complaints / nullif(delivered, 0), 6) AS complaint_rate,
  round(trap_hits / nullif(delivered, 0), 6) AS trap_rate,
  round(base_bounced / nullif(base_delivered + base_bounced, 0), 6) AS baseline_bounce_rate,
  round(base_complaints / nullif(base_delivered, 0), 6) AS baseline_complaint_rate,
  round(base_trap_hits / nullif(base_delivered, 0), 6) AS baseline_trap_rate,
  -- thresholds: SES review at 5% bounce / 0.1% complaint, pause at 10% / 0.5%
  -- (docs.aws.amazon.com/ses/latest/dg/reputationdashboardmessages.html); Gmail and Yahoo
  -- want a spam rate under 0.3% (support.google.com/a/answer/81126, senders.yahooinc.com)
  CASE
    WHEN bounced / nullif(delivered + bounced, 0) >= 0.10
      OR complaints / nullif(delivered, 0) >= 0.003 THEN 'critical'
    WHEN bounced / nullif(delivered + bounced, 0) >= 0.05
      OR complaints / nullif(delivered, 0) >= 0.001
      OR (trap_hits > 0 AND coalesce(base_trap_hits, 0) = 0) THEN 'warning'
    WHEN complaints / nullif(delivered, 0)
         > 2 * coalesce(base_complaints / nullif(base_delivered, 0), 1)
      OR bounced / nullif(delivered + bounced, 0)
         > 2 * coalesce(base_bounced / nullif(base_delivered + base_bounced, 0), 1)
      THEN 'above_baseline'
    ELSE 'ok'
  END AS status
FROM w ORDER BY {cols}day"""


def view_statements(events_source: str | None) -> list[str]:
    """The CREATE VIEW statements; ``events_source`` is a FROM-able SQL expression, or None
    when the warehouse holds no events yet (an empty, typed ``events`` view)."""
    events = (
        f"SELECT * FROM {events_source}" if events_source is not None else _empty_events_sql()
    )
    final, results = _in(FINAL_EVENTS), _in(RESULT_EVENTS)
    return [
        f"CREATE OR REPLACE VIEW events AS {events}",
        f"CREATE OR REPLACE VIEW hints AS {hints_sql()}",
        f"""CREATE OR REPLACE VIEW messages AS
SELECT source, run_id, message_id, recipient,
  min(tenant) AS tenant, min(sending_domain) AS sending_domain, min(lane) AS lane,
  min(campaign) AS campaign, min(recipient_domain) AS recipient_domain,
  arg_max(provider, ts) FILTER (WHERE provider IS NOT NULL) AS provider,
  arg_max(pool, ts) FILTER (WHERE pool IS NOT NULL) AS pool,
  coalesce(min(enqueued_ts), min(ts) FILTER (WHERE event = 'enqueued')) AS enqueued_at,
  min(ts) FILTER (WHERE event = 'attempt' OR event IN {results}) AS first_attempt_at,
  min(ts) FILTER (WHERE event = 'delivered') AS accepted_at,
  min(ts) FILTER (WHERE event IN {final}) AS final_at,
  arg_min(event, ts) FILTER (WHERE event IN {final}) AS outcome,
  count(*) FILTER (WHERE event = 'deferred') AS deferrals
FROM events WHERE message_id IS NOT NULL
GROUP BY source, run_id, message_id, recipient""",
        f"""CREATE OR REPLACE VIEW latency_samples AS
SELECT 'first_attempt' AS kind, ts, {utc_day()} AS day, source, run_id, tenant,
  sending_domain, provider, pool, lane, campaign, recipient_domain,
  (epoch_us(ts) - epoch_us(enqueued_ts)) / 1e6 AS seconds
FROM events
WHERE enqueued_ts IS NOT NULL AND attempt = 1
  AND (event = 'attempt' OR (event IN {results} AND (source, run_id) NOT IN (
    SELECT DISTINCT source, run_id FROM events WHERE event = 'attempt')))
UNION ALL
SELECT 'accept', ts, {utc_day()}, source, run_id, tenant, sending_domain, provider, pool,
  lane, campaign, recipient_domain, (epoch_us(ts) - epoch_us(enqueued_ts)) / 1e6
FROM events WHERE enqueued_ts IS NOT NULL AND event = 'delivered'
UNION ALL
SELECT 'final', ts, {utc_day()}, source, run_id, tenant, sending_domain, provider, pool,
  lane, campaign, recipient_domain, (epoch_us(ts) - epoch_us(enqueued_ts)) / 1e6
FROM events WHERE enqueued_ts IS NOT NULL AND event IN {final}""",
        f"""CREATE OR REPLACE VIEW deferral_codes AS
SELECT e.ts, {utc_day("e.ts")} AS day, e.source, e.run_id, e.tenant, e.sending_domain,
  e.provider, e.pool, e.lane, e.campaign, e.recipient_domain, e.smtp_code, e.enhanced_code,
  e.category, e.response,
  coalesce(
    (SELECT h.hint FROM hints h WHERE h.enhanced_code = e.enhanced_code
       AND h.provider = e.provider LIMIT 1),
    (SELECT h.hint FROM hints h WHERE h.enhanced_code = e.enhanced_code
       AND h.provider IS NULL LIMIT 1),
    (SELECT h.hint FROM hints h WHERE h.category = e.category AND h.enhanced_code IS NULL
       LIMIT 1)
  ) AS hint
FROM events e WHERE e.event = 'deferred'""",
        f"CREATE OR REPLACE VIEW reputation_daily AS {reputation_sql(('sending_domain', 'pool'))}",
        f"""CREATE OR REPLACE VIEW warmup_daily AS
SELECT {utc_day()} AS day, coalesce(pool, '') AS pool,
  coalesce(provider, '') AS provider,
  count(*) AS attempts,
  count(*) FILTER (WHERE event = 'deferred') AS deferrals,
  count(*) FILTER (WHERE event = 'delivered') AS delivered
FROM events WHERE event IN {results}
GROUP BY ALL""",
        f"""CREATE OR REPLACE VIEW slo_daily AS
-- Intake refusals are recorded as event 'enqueued' with state 'rejected'.
SELECT day,
  enq_good / nullif(enq_total, 0) AS enqueue_availability,
  txn_p95_accept_s,
  enq_total, txn_accepted
FROM (
  SELECT {utc_day()} AS day,
    count(*) FILTER (WHERE event = 'enqueued' AND coalesce(state, '') <> 'rejected') AS enq_good,
    count(*) FILTER (WHERE event = 'enqueued') AS enq_total,
    quantile_cont((epoch_us(ts) - epoch_us(enqueued_ts)) / 1e6, 0.95)
      FILTER (WHERE event = 'delivered' AND lane = 'transactional') AS txn_p95_accept_s,
    count(*) FILTER (WHERE event = 'delivered' AND lane = 'transactional'
                     AND enqueued_ts IS NOT NULL) AS txn_accepted
  FROM events WHERE event IN ('enqueued', 'delivered')
  GROUP BY ALL
)""",
    ]


VIEW_NAMES = (
    "events", "hints", "messages", "latency_samples", "deferral_codes", "reputation_daily", "warmup_daily", "slo_daily",
)
