"""Feedback the sender sees after delivery, turned into scheduler ``Signal``s.

Owns ``FeedbackRouter``: it takes the consequences a provider model fires (complaints,
async DSN bounces, engagement, trap hits) and decides what reaches the policy core and
when. Providers with a feedback loop report each complaint (ARF, delayed by the model's
lognormal delay); Gmail has no per-message loop, only aggregate rates, so its complaints
are counted and reported once a day per pool (Postmaster Tools style). Trap hits never
reach the sender. Must not touch the models' state or the event table.
"""

from __future__ import annotations

from engine.policy import Signal

DAY = 86400.0


class FeedbackRouter:
    """Per pool x provider aggregates for providers without a feedback loop."""

    def __init__(self, fbl: dict[str, bool], start: float, report_after_s: float = DAY) -> None:
        self.fbl = fbl
        self.pending: dict[tuple[str, str], int] = {}
        self.report_after_s = report_after_s
        self.next_report = start + report_after_s

    def complaint(self, pool: str, provider: str) -> Signal | None:
        """A complaint happened: the signal to send now, or None when it is aggregated."""
        if self.fbl.get(provider, False):
            return Signal(kind="complaint", pool=pool, provider=provider, reason="ARF report")
        key = (pool, provider)
        self.pending[key] = self.pending.get(key, 0) + 1
        return None

    def bounce(self, pool: str, provider: str, status: str) -> Signal:
        """An asynchronous DSN bounce always reaches the sender."""
        return Signal(kind="bounce", pool=pool, provider=provider, reason=f"DSN {status}")

    def due(self, now: float) -> list[Signal]:
        """Aggregate reports whose time has come (one per pool x provider, sorted)."""
        if now < self.next_report:
            return []
        self.next_report += self.report_after_s * max(1, int((now - self.next_report)
                                                            // self.report_after_s) + 1)
        out = [Signal(kind="complaint", pool=p, provider=prov, count=n,
                      reason="aggregate complaint rate (no per-message feedback loop)")
               for (p, prov), n in sorted(self.pending.items()) if n > 0]
        self.pending.clear()
        return out
