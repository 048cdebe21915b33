"""The canary's error budget: the candidate's share of a pool against the control share.

Owns ``arm_counts`` (per policy version of a pool since a moment: outcomes, deferrals,
bounces, complaints and dropped mail -- ``expired`` + ``dead_lettered``, what a policy that
gives up early produces instead of deferrals -- read from the warehouse ``events`` view) and
``judge``: for each rate (deferral = deferred / outcomes, bounce = bounced / (delivered +
bounced), complaint = complaints / delivered, drop = dropped / (delivered + bounced +
dropped), the share of finished messages that were never delivered nor bounced) the budget is spent when the canary's rate exceeds the control's by
more than the metric's budget AND the excess is significant (a one-sided two-proportion
z-test at 95 %: noise alone never rolls back). With every budget intact and at least
``min_outcomes`` canary outcomes the verdict is ``advance``; with too few, ``hold``.
Must not write anything.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

BUDGETS: dict[str, float] = {"deferral_rate": 0.02, "bounce_rate": 0.01,
                             "complaint_rate": 0.0005, "drop_rate": 0.005}
"""Allowed excess of the canary's rate over the control's (absolute). 0.05 % complaints sits
under Gmail's 0.1 % "stay below" line (providers-and-standards.md). Dropped mail is lost mail:
half a percent more of it than the control is already a spent budget."""
COUNTS: tuple[str, ...] = ("delivered", "deferred", "bounced", "complaints", "dropped")
Z95 = 1.6449  # one-sided 95 %


@dataclass(frozen=True, slots=True)
class Verdict:
    """``advance``, ``hold`` or ``rollback``, with the numbers."""

    action: str
    reason: str
    evidence: dict[str, Any]


def arm_counts(home: str | os.PathLike[str] | None, pool: str, versions: list[str],
               since: float) -> dict[str, dict[str, int]]:
    """Counts per policy version on ``pool`` from events at or after ``since`` (epoch s)."""
    from inboxlab.warehouse.query import connect, run

    con = connect(home)
    placeholders = ", ".join("?" for _ in versions)
    sql = f"""
        SELECT policy_version,
               count(*) FILTER (WHERE event = 'delivered') AS delivered,
               count(*) FILTER (WHERE event = 'deferred') AS deferred,
               count(*) FILTER (WHERE event = 'bounced') AS bounced,
               count(*) FILTER (WHERE event = 'complaint') AS complaints,
               count(*) FILTER (WHERE event IN ('expired', 'dead_lettered')) AS dropped
        FROM events
        WHERE pool = ? AND policy_version IN ({placeholders})
          AND ts >= to_timestamp(?) AND event IN ('delivered', 'deferred', 'bounced',
                                                  'complaint', 'expired', 'dead_lettered')
        GROUP BY policy_version"""
    frame = run(con, sql, [pool, *versions, float(since)])
    out = {v: dict.fromkeys(COUNTS, 0) for v in versions}
    for row in frame.iter_rows(named=True):
        out[row["policy_version"]] = {k: int(row[k]) for k in COUNTS}
    return out


def rates(c: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each rate as (numerator, denominator). A missing ``dropped`` count is 0."""
    outcomes = c["delivered"] + c["deferred"] + c["bounced"]
    dropped = c.get("dropped", 0)
    return {"deferral_rate": (c["deferred"], outcomes),
            "bounce_rate": (c["bounced"], c["delivered"] + c["bounced"]),
            "complaint_rate": (c["complaints"], c["delivered"]),
            "drop_rate": (dropped, c["delivered"] + c["bounced"] + dropped)}


def excess_z(x1: int, n1: int, x0: int, n0: int) -> float:
    """Two-proportion z statistic of rate 1 above rate 0 (pooled variance)."""
    if n1 == 0 or n0 == 0:
        return 0.0
    p = (x1 + x0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    return (x1 / n1 - x0 / n0) / se if se > 0 else 0.0


def judge(canary: dict[str, int], control: dict[str, int], *, min_outcomes: int = 200,
          budgets: dict[str, float] | None = None) -> Verdict:
    """Compare the arms; see the module docstring for the rule."""
    budgets = budgets or BUDGETS
    rc, r0 = rates(canary), rates(control)
    evidence: dict[str, Any] = {"canary": canary, "control": control, "rates": {}}
    spent = []
    for name, budget in budgets.items():
        (x1, n1), (x0, n0) = rc[name], r0[name]
        v1 = x1 / n1 if n1 else 0.0
        v0 = x0 / n0 if n0 else 0.0
        z = excess_z(x1, n1, x0, n0)
        is_spent = (v1 - v0) > budget and z > Z95
        evidence["rates"][name] = {"canary": round(v1, 6), "control": round(v0, 6),
                                   "excess": round(v1 - v0, 6), "budget": budget,
                                   "z": round(z, 3), "spent": is_spent}
        if is_spent:
            spent.append(f"{name} {v1:.4%} vs control {v0:.4%} (budget +{budget:.4%}, "
                         f"z={z:.2f})")
    outcomes = rc["deferral_rate"][1]
    evidence["canary_outcomes"] = outcomes
    if spent:
        return Verdict("rollback", "error budget spent: " + "; ".join(spent), evidence)
    if outcomes < min_outcomes or r0["deferral_rate"][1] < min_outcomes:
        return Verdict("hold", f"not enough traffic yet ({outcomes} canary, "
                               f"{r0['deferral_rate'][1]} control outcomes; need "
                               f"{min_outcomes} each)", evidence)
    return Verdict("advance", "every error budget intact", evidence)
