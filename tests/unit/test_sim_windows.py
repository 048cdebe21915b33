"""Send windows in the simulation: recipients' time zones reach the engine's Scheduler, so a
lane with a window (default-v1: prospecting 8-18 local) sends only inside it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from sim.scenario import load_scenario
from sim.world import World

SENT = ["delivered", "deferred", "bounced"]


def _local_hours(scenario_tz: bool) -> tuple[np.ndarray, int]:
    sc = load_scenario("cold-outreach", scale=0.2)
    if not scenario_tz:
        sc = replace(sc, audience=replace(sc.audience, timezones={}))
    world = World(sc, 3)
    frame = world.run()
    sent = frame.filter(pl.col("event").is_in(SENT))
    ids = sent["message_id"].cast(pl.Int64).to_numpy()
    rcpt = np.asarray(world.m_rcpt)[ids]
    secs = sent["ts"].dt.epoch("us").to_numpy() / 1e6
    if world.audience.utc_offset is None:  # hours in the list's main zone, for contrast
        offsets = np.full(len(ids), -240.0)
    else:
        offsets = world.audience.utc_offset[rcpt].astype(float)
    return ((secs + offsets * 60.0) % 86400.0) / 3600.0, frame.height


def test_prospecting_goes_out_only_in_the_recipients_business_hours() -> None:
    hours, _ = _local_hours(True)
    assert len(hours) > 1000
    assert hours.min() >= 8.0 and hours.max() < 18.0
    # without known time zones the window cannot hold anything back: mail goes out at night
    unknown, _ = _local_hours(False)
    assert ((unknown < 8.0) | (unknown >= 18.0)).mean() > 0.2
