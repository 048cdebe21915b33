"""Recipient time zones in the simulated audience: shares respected, drawn after everything
else (a list without time zones is unchanged), bad tables named by key."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.errors import ConfigError
from sim.audience import build
from sim.scenario import _timezones, load_scenario

DOMAINS = {"gmail": "gmail.com", "yahoo": "yahoo.com", "outlook": "hotmail.com"}


def test_time_zones_follow_their_shares_and_change_nothing_else() -> None:
    spec = load_scenario("cold-outreach", scale=1.0).audience
    spec = replace(spec, size=100_000, mix={"gmail": 0.6, "yahoo": 0.3, "outlook": 0.1},
                   timezones={})
    plain = build(spec, DOMAINS, np.random.default_rng(5), 0.0)
    zoned = build(replace(spec, timezones={-300: 0.5, -480: 0.3, 60: 0.2}), DOMAINS,
                  np.random.default_rng(5), 0.0)
    assert plain.utc_offset is None and zoned.utc_offset is not None
    for name in ("provider", "kind", "dies_at"):
        assert np.array_equal(getattr(plain, name), getattr(zoned, name)), name
    values, counts = np.unique(zoned.utc_offset, return_counts=True)
    shares = dict(zip(values.tolist(), (counts / counts.sum()).tolist(), strict=True))
    assert set(shares) == {-300, -480, 60}
    assert shares[-300] == pytest.approx(0.5, abs=0.01)
    assert shares[60] == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize(("raw", "key", "why"), [
    ({"EST": 1.0}, "audience.timezones.EST", "offset in minutes"),
    ({"-900": 1.0}, "audience.timezones.-900", "outside"),
    ({"-300": -1}, "audience.timezones.-300", "share >= 0"),
    ({"-300": 0.0}, "audience.timezones", "sum to zero"),
    ([1, 2], "audience.timezones", "expected a table"),
])
def test_bad_time_zone_tables_name_the_key(raw: object, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        _timezones(raw, "s.toml")
    assert info.value.key == key and why in info.value.reason
