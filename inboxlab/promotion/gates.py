"""Admission gates: may a tuned policy start a canary on a pool?

The rule (``admit``): a candidate is admitted when
  1. its evaluation (``inboxlab tune``'s ``evaluation.json``) has a winner whose version is the
     candidate's, and every constraint of the evaluation passed for it;
  2. the evaluation's base is the policy the pool runs now (the comparison is against what
     the candidate replaces, on common random numbers);
  3. the paired comparison of the objective, candidate - base, is *superior*: its 95 % CI
     lies wholly on the good side of zero (above for a maximised objective, below for a
     minimised one). With ``allow_noninferior`` a *non-inferior* result is enough: the CI's
     bad end is within ``margin`` (a fraction of the base's mean) of zero.
A comparison without an interval (fewer than two pairs) never passes.

Owns only this decision and its evidence; must not write anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GateResult:
    """Admitted or not, why, and the numbers the decision used."""

    admitted: bool
    reasons: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


def admit(evaluation: dict[str, Any], candidate_version: str, current_version: str, *,
          margin: float = 0.01, allow_noninferior: bool = False) -> GateResult:
    """Apply the gates to ``evaluation``; see the module docstring for the rule."""
    reasons: list[str] = []
    winner = evaluation.get("winner")
    if not isinstance(winner, dict):
        return GateResult(False, ("the evaluation has no winner",), {})
    evidence: dict[str, Any] = {"evaluation_base": evaluation.get("base", {}).get("version"),
                                "winner": winner.get("version"),
                                "constraints": winner.get("constraints", {})}
    if winner.get("version") != candidate_version:
        reasons.append(f"the evaluation's winner is {winner.get('version')!r}, "
                       f"not {candidate_version!r}")
    failed = [k for k, c in winner.get("constraints", {}).items() if not c.get("pass")]
    if failed:
        reasons.append(f"constraints failed: {', '.join(failed)}")
    base_version = evaluation.get("base", {}).get("version")
    if base_version != current_version:
        reasons.append(f"the evaluation compared against {base_version!r} but the pool runs "
                       f"{current_version!r}")
    comp = winner.get("comparison", {}).get("objective", {})
    evidence["comparison"] = comp
    ci = comp.get("ci95")
    sign = -1.0 if comp.get("direction") == "minimise" else 1.0
    if not ci:
        reasons.append("the paired comparison has no confidence interval (fewer than 2 pairs)")
    else:
        good_lo = min(sign * ci[0], sign * ci[1])  # the bad end, as a gain
        # the CI is in the comparison's unit (per hour or per run): so is the base level
        level = comp.get("base_per_unit", comp.get("base_mean")) or 0.0
        tolerance = margin * abs(float(level))
        evidence.update(gain_ci_low=good_lo, tolerance=tolerance)
        if good_lo > 0:
            evidence["verdict"] = "superior"
        elif allow_noninferior and good_lo >= -tolerance:
            evidence["verdict"] = "non-inferior"
        else:
            evidence["verdict"] = "not shown better"
            reasons.append(f"{comp.get('metric')}: the 95 % CI {ci} does not show the candidate "
                           f"{'better' if not allow_noninferior else 'non-inferior'}")
    return GateResult(not reasons, tuple(reasons) or ("all gates passed",), evidence)
