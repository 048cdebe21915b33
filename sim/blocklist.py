"""A shared DNSBL: spam-trap hits of every provider count against one /24 listing.

Owns ``Blocklist``. Public blocklists run their own trap networks across many mailbox
domains, so a trap hit at Gmail and one at Yahoo both count towards listing the sending
/24 -- unlike each provider model's private trap counter. Rule (the generic model's
``[dnsbl]`` figures, simulation-numbers.md section 1.5): listed when ``threshold`` trap
messages from one /24 arrive within ``window_s``; listed for ``listing_s``. A listing is
pushed into every provider model through ``ProviderModel.list_netblock`` (public API).
Must not touch the policy core or model internals.
"""

from __future__ import annotations

from collections import deque

from sim.providers import ProviderModel


class Blocklist:
    """Counts trap hits per /24 over a sliding window and lists the /24 everywhere."""

    def __init__(self, threshold: int, window_s: float, listing_s: float) -> None:
        self.threshold = max(1, threshold)
        self.window_s = window_s
        self.listing_s = listing_s
        self.hits: dict[str, deque[float]] = {}
        self.listed_until: dict[str, float] = {}

    def hit(self, netblock: str, at: float, models: dict[str, ProviderModel]) -> float | None:
        """Count a trap hit at ``at``; returns the listing's end when this hit lists the /24."""
        q = self.hits.setdefault(netblock, deque())
        q.append(at)
        while q and q[0] <= at - self.window_s:
            q.popleft()
        if len(q) < self.threshold or self.listed_until.get(netblock, float("-inf")) > at:
            return None
        until = at + self.listing_s
        self.listed_until[netblock] = until
        q.clear()
        for m in models.values():
            if m.listed_until.get(netblock, float("-inf")) < until:
                m.list_netblock(netblock, until)
        return until
