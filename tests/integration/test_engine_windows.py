"""Send windows in the live engine: the recipients' IANA time zone (given to the API as
``timezone``) reaches the policy core, so a lane with a window (default-v1: lifecycle 7-22
local) holds mail whose recipients are outside it and sends it when their morning comes.

Real sockets: an aiosmtpd receiver on 127.0.0.1; the engine's clock is set by the test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.runner import Runner, utc_offset_min
from engine.spool import Spool

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
# 14:00 UTC on a Monday after the US switch to daylight time: 10:00 in New York, 23:00 in Tokyo
NOON = dt.datetime(2026, 3, 9, 14, tzinfo=dt.UTC).timestamp()


def test_offsets_follow_daylight_time() -> None:
    assert utc_offset_min("America/New_York", NOON) == -240
    assert utc_offset_min("America/New_York", NOON - 40 * 86400) == -300
    assert utc_offset_min("Asia/Kolkata", NOON) == 330
    assert utc_offset_min(None, NOON) is None and utc_offset_min("Mars/Base", NOON) is None


def test_lifecycle_mail_waits_for_the_recipients_morning(sink: Any, tmp_path: Path) -> None:
    env = dict(os.environ, INBOXLAB_PORT_OTHER=str(sink.port))
    config = load_config(LAB, env=env)
    spool = Spool(tmp_path / "spool.db")
    body = b"Subject: news\r\nFrom: news@news.acme.example\r\n\r\nhello\r\n"
    for name, zone in (("ny", "America/New_York"), ("tokyo", "Asia/Tokyo"), ("nozone", None)):
        spool.accept(tenant="acme", idem_key=name, request=name.encode(), lane="lifecycle",
                     campaign="c", sending_domain="news.acme.example",
                     mail_from="news@news.acme.example", recipients=[f"{name}@example.net"],
                     body=body, timezone=zone)
    clock = [NOON]

    async def run_until(pred: Any, seconds: float) -> None:
        runner.wake.set()
        for _ in range(int(seconds / 0.02)):
            await asyncio.sleep(0.02)
            if pred():
                return

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.02))
        await run_until(lambda: len(sink.peers) >= 2, 15)
        await asyncio.sleep(0.5)  # room for a wrong third send
        seen["noon"] = sorted(sink.peers)
        clock[0] = NOON + 8 * 3600  # 22:00 UTC: 07:00 in Tokyo, the window opens
        await run_until(lambda: len(sink.peers) >= 3, 15)
        seen["evening"] = sorted(sink.peers)
        stop.set()
        await task

    seen: dict[str, list[str]] = {}
    runner = Runner(config, spool, secret=b"w" * 32, seed=3, timeout=10,
                    clock=lambda: clock[0])
    asyncio.run(go())
    spool.close()
    assert seen["noon"] == ["nozone@example.net", "ny@example.net"]
    assert seen["evening"] == ["nozone@example.net", "ny@example.net", "tokyo@example.net"]
