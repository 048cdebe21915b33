"""Staged rollout in the running engine: a promotion record splits a pool's messages between
two policy versions by message id, and a changed record takes effect without a restart.

Real sockets: an aiosmtpd receiver on 127.0.0.1 takes the mail; the runner's events (the
outbox) say which policy version decided each outcome, as ``inboxlab promote check`` reads
them once exported.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.rollout import is_canary, read_record, record_path
from engine.runner import Runner
from engine.spool import Spool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
CURRENT = ROOT / "fixtures" / "policies" / "default-v1.toml"
TX_IPS = {"127.0.0.2", "127.0.0.3"}  # pool tx-a in fixtures/lab.toml


def _write_record(home: Path, **fields: Any) -> None:
    """Write the record as ``inboxlab promote`` does: a whole new file, renamed in place."""
    path = record_path(home, "tx-a")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pool": "tx-a", "updated_at": 1.0, **fields}))
    os.replace(tmp, path)


def _accept(spool: Spool, tag: str, n: int) -> list[str]:
    body = b"Subject: hi\r\nFrom: news@mail.acme.example\r\n\r\nhello\r\n"
    return [spool.accept(tenant="acme", idem_key=f"{tag}{i}", request=f"{tag}{i}".encode(),
                         lane="transactional", campaign=None,
                         sending_domain="mail.acme.example",
                         mail_from="news@mail.acme.example",
                         recipients=[f"{tag}{i}@example.net"], body=body).public_id
            for i in range(n)]


async def _until_sent(spool: Spool, runner: Runner, seconds: float = 20.0) -> None:
    runner.wake.set()
    for _ in range(int(seconds / 0.02)):
        await asyncio.sleep(0.02)
        if spool.active() == 0:
            return
    raise AssertionError(f"{spool.active()} recipients still live")


def _versions(spool: Spool, ids: list[str]) -> dict[str, set[str | None]]:
    """policy_version of every delivered event, by message id."""
    out: dict[str, set[str | None]] = {i: set() for i in ids}
    for ev in spool.events_after(0, limit=100_000):
        if ev.event == "delivered" and ev.message_id in out:
            out[ev.message_id].add(ev.policy_version)
    return out


def test_canary_split_follows_the_record_without_restart(sink: Any, tmp_path: Path) -> None:
    candidate = tmp_path / "default-v1-cand.toml"
    candidate.write_text(CURRENT.read_text().replace('version = "default-v1"',
                                                     'version = "default-v1-cand"', 1))
    home = tmp_path / "home"
    canary = {"current_version": "default-v1", "current_policy": str(CURRENT.resolve()),
              "candidate_version": "default-v1-cand", "candidate_policy": str(candidate),
              "state": "canary", "stage_percent": 50.0}
    _write_record(home, **canary)
    record = read_record(record_path(home, "tx-a"))
    env = dict(os.environ, INBOXLAB_PORT_OTHER=str(sink.port))
    config = load_config(LAB, env=env)
    spool = Spool(tmp_path / "spool.db")
    first = _accept(spool, "a", 160)
    seen: dict[str, Any] = {}

    async def go() -> None:
        runner = Runner(config, spool, secret=b"k" * 32, seed=1, timeout=10, home=home)
        # the pool now runs two arms, each its own scheduler on tx-a alone
        arms = {g.scheduler.params.version for g in runner.groups_for_pool("tx-a")}
        seen["arms"] = arms
        # ... each using its traffic share of the pool's capacity (together: one pool's)
        seen["shares"] = {g.scheduler.params.version: g.scheduler.share
                          for g in runner.groups.values() if "tx-a" in g.owned}
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.02))
        await _until_sent(spool, runner)
        # roll the canary back while the engine runs: new mail is on the current version
        _write_record(home, **{**canary, "state": "rolled_back", "stage_percent": 0.0})
        seen["second"] = _accept(spool, "b", 60)
        await _until_sent(spool, runner)
        # promote: the candidate becomes current and takes every new message
        _write_record(home, **{**canary, "state": "promoted", "stage_percent": 100.0,
                               "current_version": "default-v1-cand",
                               "current_policy": str(candidate),
                               "candidate_version": None, "candidate_policy": None})
        seen["third"] = _accept(spool, "c", 60)
        await _until_sent(spool, runner)
        seen["after"] = {g.scheduler.params.version for g in runner.groups_for_pool("tx-a")}
        seen["after_shares"] = [g.scheduler.share for g in runner.groups.values()
                                if "tx-a" in g.owned]
        stop.set()
        await task

    asyncio.run(go())
    assert seen["arms"] == {"default-v1", "default-v1-cand"}
    assert seen["shares"] == {"default-v1": 0.5, "default-v1-cand": 0.5}
    assert seen["after_shares"] == [1.0]
    got = _versions(spool, first)
    # each message decided by exactly one version: the one its id hashes to
    assert all(len(v) == 1 for v in got.values()), got
    expect = {m: "default-v1-cand" if is_canary(m, "tx-a", record) else "default-v1"
              for m in first}
    assert {m: next(iter(v)) for m, v in got.items()} == expect
    share = Counter(expect.values())["default-v1-cand"] / len(first)
    assert 0.35 < share < 0.65, share  # 50 % stage, 160 messages
    assert all(v == {"default-v1"} for v in _versions(spool, seen["second"]).values())
    assert all(v == {"default-v1-cand"} for v in _versions(spool, seen["third"]).values())
    assert seen["after"] == {"default-v1-cand"}
    # all of it left through the pool under promotion, once each
    assert len(sink.peers) == 280 and set(sink.peers.values()) <= TX_IPS
    spool.close()


def test_bad_candidate_keeps_the_configured_policy(sink: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write_record(home, current_version="default-v1", current_policy=str(CURRENT.resolve()),
                  candidate_version="nope", candidate_policy=str(tmp_path / "missing.toml"),
                  state="canary", stage_percent=50.0)
    config = load_config(LAB, env=dict(os.environ, INBOXLAB_PORT_OTHER=str(sink.port)))
    spool = Spool(tmp_path / "spool.db")
    runner = Runner(config, spool, secret=b"k" * 32, home=home)
    assert "missing.toml" in runner.rollout_errors["tx-a"]
    assert set(runner.groups) == set(config.pool_policy.values())  # no arms: as configured
    ids = _accept(spool, "a", 20)
    runner.intake()
    assert {runner.holder[i].name for i in range(1, 21)} == {config.pool_policy["tx-a"]}
    assert len(ids) == 20
    spool.close()


def test_serve_runs_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``inboxlab serve`` runs on uvloop (installed on Linux) and stops cleanly on SIGTERM;
    ``INBOXLAB_LOOP=asyncio`` turns it off."""
    import select
    import signal
    import subprocess
    import sys

    from engine.intake.serve import event_loop_factory

    assert event_loop_factory() is not None
    monkeypatch.setenv("INBOXLAB_LOOP", "asyncio")
    assert event_loop_factory() is None
    monkeypatch.delenv("INBOXLAB_LOOP")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http = int(s.getsockname()[1])
    exe = Path(sys.executable).parent / "inboxlab"
    proc = subprocess.Popen(
        [str(exe), "serve", "--config", str(LAB), "--home", str(tmp_path / "home"),
         "--port", str(http), "--inbound-port", "0", "--submission-port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b"{}"
        where = json.loads(line or b"{}")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert where.get("loop") == "uvloop", (line, err)
    assert proc.returncode == 0, err
