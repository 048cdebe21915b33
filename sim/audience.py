"""The simulated recipient list, drawn once per run with numpy from one seeded stream.

Owns ``AudienceTable``: per recipient a provider index, a kind code and a decay time, and
``address(i, now)`` which renders recipient ``i`` as an address whose local part follows the
mailbox convention of ``sim.providers.mailboxes`` (``unknown-``, ``trap-``, ``complain-``,
``engaged-``), so the provider models, not this module, decide every reply. Catch-all
domains sit behind the generic model and accept anything. Must not touch the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.scenario import Audience

DAY = 86400.0
# kind codes
NORMAL, ENGAGED, INVALID, ROLE, ROLE_COMPLAINER, PRISTINE_TRAP, RECYCLED_TRAP, CATCH_ALL = range(8)
KIND_NAMES = ("normal", "engaged", "invalid", "role", "role_complainer", "pristine_trap",
              "recycled_trap", "catch_all")
_PREFIX = ("u", "engaged-u", "unknown-u", "info-u", "complain-info-u", "trap-p", "trap-r", "any-")


@dataclass(slots=True)
class AudienceTable:
    """Recipients as arrays (index = recipient number)."""

    providers: tuple[str, ...]
    domains: tuple[str, ...]  # the recipient domain of each provider
    provider: np.ndarray  # int16 index into providers
    kind: np.ndarray  # int8 kind code
    dies_at: np.ndarray  # float64: the mailbox is abandoned (decays) at this time
    # int16 UTC offset in minutes per recipient, or None when the list's time zones are
    # unknown (send windows then never hold its mail back)
    utc_offset: np.ndarray | None = None
    # recorded addresses, one per recipient, answered verbatim (a replay's audience)
    addresses: tuple[str, ...] | None = None
    # scalar views of kind, provider and dies_at for ``address`` (made on first use)
    _views: tuple[object, object, object, memoryview, memoryview, memoryview] | None = None

    def __len__(self) -> int:
        return int(self.provider.shape[0])

    def address(self, i: int, now: float) -> str:
        """Recipient ``i`` at ``now`` (a decayed mailbox now answers 5.1.1)."""
        if self.addresses is not None:
            return self.addresses[i]
        views = self._views
        if views is None or views[0] is not self.kind or views[1] is not self.provider \
                or views[2] is not self.dies_at:
            # memoryviews index to plain ints / floats (numpy scalars cost ~4x more)
            views = self._views = (self.kind, self.provider, self.dies_at,
                                   memoryview(self.kind.data), memoryview(self.provider.data),
                                   memoryview(self.dies_at.data))
        kind_v, prov_v = views[3], views[4]
        dies_v: Any = views[5]  # float64 items (a memoryview's items are typed int)
        k = kind_v[i]
        dom = self.domains[prov_v[i]]
        if k == CATCH_ALL:
            return f"any-{i}@catchall{i % 7}.example"
        if k in (NORMAL, ENGAGED, ROLE) and dies_v[i] <= now:
            return f"unknown-d{i}@{dom}"
        return f"{_PREFIX[k]}{i}@{dom}"

    def counts(self) -> dict[str, int]:
        """How many recipients of each kind."""
        got = np.bincount(self.kind, minlength=len(KIND_NAMES))
        return {KIND_NAMES[k]: int(got[k]) for k in range(len(KIND_NAMES))}


def build(spec: Audience, domains: dict[str, str], rng: np.random.Generator, start: float
          ) -> AudienceTable:
    """Draw the list. ``domains`` maps provider name -> a recipient domain of it.

    Trap clusters: when ``trap_clusters`` > 0 the traps sit in that many contiguous runs of
    the list (an inherited list's bad segments), else they are scattered uniformly.
    """
    names = tuple(spec.mix)
    for name in names:
        if name not in domains:
            raise KeyError(name)
    weights = np.array([spec.mix[n] for n in names], dtype=float)
    n = spec.size
    prov = rng.choice(len(names), size=n, p=weights / weights.sum()).astype(np.int16)
    shares = np.array([spec.engaged, spec.invalid, spec.role, spec.pristine_traps,
                       spec.recycled_traps, spec.catch_all])
    codes = np.array([ENGAGED, INVALID, ROLE, PRISTINE_TRAP, RECYCLED_TRAP, CATCH_ALL])
    p = np.concatenate([[max(0.0, 1.0 - shares.sum())], shares])
    kind = np.concatenate([[NORMAL], codes])[rng.choice(len(p), size=n, p=p / p.sum())]
    kind = kind.astype(np.int8)
    if spec.trap_clusters > 0:
        traps = np.isin(kind, (PRISTINE_TRAP, RECYCLED_TRAP))
        n_traps = int(traps.sum())
        kind[traps] = NORMAL
        if n_traps:
            starts = rng.choice(max(1, n - n_traps), size=spec.trap_clusters, replace=False)
            per = np.diff(np.linspace(0, n_traps, spec.trap_clusters + 1).astype(int))
            for s, m in zip(np.sort(starts), per, strict=True):
                seg = np.arange(s, min(n, s + m))
                kind[seg] = np.where(rng.random(seg.size) < 0.5, PRISTINE_TRAP, RECYCLED_TRAP)
    roles = kind == ROLE
    kind[roles & (rng.random(n) < spec.role_complaint)] = ROLE_COMPLAINER
    if spec.decay_per_month > 0:
        rate = -np.log1p(-min(spec.decay_per_month, 0.999999)) / (30 * DAY)
        dies = start + rng.exponential(1.0 / rate, size=n)
    else:
        dies = np.full(n, np.inf)
    offsets = None
    if spec.timezones:
        # drawn last, so a list without time zones draws exactly what it drew before
        zones = np.array(sorted(spec.timezones), dtype=np.int16)
        w = np.array([spec.timezones[int(z)] for z in zones], dtype=float)
        offsets = zones[rng.choice(len(zones), size=n, p=w / w.sum())]
    return AudienceTable(providers=names, domains=tuple(domains[x] for x in names),
                         provider=prov, kind=kind, dies_at=dies, utc_offset=offsets)
