"""Lanes by intent: how a batch of tokens is split between transactional, lifecycle and
prospecting mail.

Owns the split only (``LaneSplitter``): reserved shares first, then weighted deficit round
robin with fractional credit carried between calls, so that over time each busy lane gets
at least ``max(reserved_share, weight / sum(weights of busy lanes))`` of the tokens and no
lane with weight > 0 starves, whatever the other lanes' backlog. Under a warmup plan the
split is strict priority in the plan's lane order instead (``strict_order``). It does not
know about messages, buckets or time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from engine.policy.params import LaneSpec
from engine.policy.types import Lane


class LaneSplitter:
    """Weighted deficit round robin over lanes, one instance per provider."""

    __slots__ = ("credit", "lanes", "reserved", "weights")

    def __init__(self, lanes: Mapping[Lane, LaneSpec]) -> None:
        self.lanes: tuple[Lane, ...] = tuple(lanes)
        self.weights = {name: max(0.0, spec.weight) for name, spec in lanes.items()}
        self.reserved = {name: min(1.0, max(0.0, spec.reserved_share)) for name, spec in lanes.items()}
        self.credit = dict.fromkeys(self.lanes, 0.0)

    def split(self, tokens: int, demand: Mapping[Lane, int]) -> dict[Lane, int]:
        """Split ``tokens`` between lanes with ``demand`` (messages ready); sums to <= tokens.

        Every token is given out while some lane still has unmet demand.
        """
        out = dict.fromkeys(self.lanes, 0)
        want = {lane: demand.get(lane, 0) for lane in self.lanes}
        for lane in self.lanes:
            if want[lane] <= 0:
                self.credit[lane] = 0.0  # DRR: an idle lane keeps no credit
        left = tokens
        # 1. reserved capacity, held for a busy lane even when others have a backlog
        for lane in self.lanes:
            if left <= 0:
                break
            if want[lane] > 0 and self.reserved[lane] > 0:
                give = min(want[lane], math.floor(self.reserved[lane] * tokens), left)
                out[lane] += give
                want[lane] -= give
                left -= give
        # 2. weighted shares of the rest with carried fractional credit
        while left > 0:
            busy = [lane for lane in self.lanes if want[lane] > 0 and self.weights[lane] > 0]
            if not busy:
                busy = [lane for lane in self.lanes if want[lane] > 0]
                if not busy:
                    break
                wsum = float(len(busy))
                weights = dict.fromkeys(busy, 1.0)
            else:
                wsum = sum(self.weights[lane] for lane in busy)
                weights = {lane: self.weights[lane] for lane in busy}
            round_left = left
            given = 0
            for lane in busy:
                share = round_left * weights[lane] / wsum + self.credit[lane]
                give = min(want[lane], math.floor(share + 1e-9), left)
                self.credit[lane] = share - give if give < want[lane] else 0.0
                out[lane] += give
                want[lane] -= give
                left -= give
                given += give
            if given == 0:
                # fractions only: hand single tokens to the lanes with most credit
                for lane in sorted(busy, key=lambda name: -self.credit[name]):
                    if left <= 0:
                        break
                    out[lane] += 1
                    want[lane] -= 1
                    left -= 1
                    self.credit[lane] -= 1.0
        return out


def strict_order(tokens: int, demand: Mapping[Lane, int], order: Sequence[Lane]) -> dict[Lane, int]:
    """Strict priority split (warmup): earlier lanes in ``order`` are served first."""
    out: dict[Lane, int] = {}
    left = tokens
    for lane in order:
        give = min(left, max(0, demand.get(lane, 0)))
        out[lane] = give
        left -= give
    for lane, want in demand.items():
        if lane not in out:
            give = min(left, max(0, want))
            out[lane] = give
            left -= give
    return out


def guaranteed_share(lanes: Mapping[Lane, LaneSpec], lane: Lane) -> float:
    """The smallest fraction of tokens ``lane`` gets while busy, whatever the others do."""
    spec = lanes[lane]
    total = sum(max(0.0, s.weight) for s in lanes.values())
    reserved_total = sum(min(1.0, max(0.0, s.reserved_share)) for s in lanes.values())
    weighted = (1.0 - min(1.0, reserved_total)) * (spec.weight / total if total > 0 else 0.0)
    return max(min(1.0, spec.reserved_share), weighted + min(1.0, spec.reserved_share))
