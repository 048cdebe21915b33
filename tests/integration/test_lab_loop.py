"""The lab loop end to end: tune in simulation, promote, watch the live engine run the canary.

Real processes and sockets on loopback: ``inboxlab sandbox`` (Gmail's and the generic
receiver's provider models behind SMTP servers), ``inboxlab serve`` (the engine, pool loop-b
on 127.0.0.4/5, routes to the sandbox ports) and every promotion step through the CLI
(``inboxlab tune``, ``promote admit/advance/check/watch``). Traffic goes in through the HTTP
API; the engine's events are exported from its spool into the warehouse while it runs
(``inboxlab ingest --spool`` and ``promote watch --spool``: incremental, each outbox row
once); every assertion about the outcome reads the warehouse through ``inboxlab query
--format json``.

Part two: the tuned policy is promoted; a deliberately bad candidate (a faster ramp that
never retries, ``fixtures/lab-loop/give-up.toml``) wins its own simulation honestly -- the
warmup-30d scenario's receivers do not greylist, so giving up after one attempt costs nothing
there -- is admitted and staged to 25 %; live, the sandbox's generic receiver greylists first
contact, the candidate drops that mail, and ``promote check`` rolls it back on the drop-rate
budget. New mail after that goes out under the control version only.

The module fixture runs the loop once; the tests assert what it left behind. Traffic uses the
transactional lane, which has no send window, so the run does not depend on the hour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
FIX = ROOT / "fixtures" / "lab-loop"
LAB = FIX / "lab.toml"
BASE = ROOT / "fixtures" / "policies" / "warmup-conservative-v1.toml"
SPACE = ROOT / "fixtures" / "tuning" / "warmup-ramp.toml"
POOL = "loop-b"
KEY = "loop-key-1"  # its hash is in fixtures/lab-loop/lab.toml
N_CANARY = 400      # messages sent while the tuned policy runs its 25 % canary
N_BAD_GMAIL = 40    # sent while the bad candidate runs at 25 % (Gmail rate-limits bursts)
N_BAD_GREY = 80     # ... and to the greylisting generic receiver
SETTLED = ("deferred", "delivered", "bounced", "dead_lettered", "expired")  # a first attempt
N_AFTER = 12        # Gmail messages sent after the rollback
GIVE_UP = FIX / "give-up.toml"
GENERIC = "mail.example.net"  # no sandbox model of its own: the generic receiver
ACTOR = "lab-loop-test"


def _cli(*args: str, ok: tuple[int, ...] = (0,), timeout: float = 120) -> str:
    """Run ``inboxlab ARGS``; its stdout. Fails the test on an unexpected exit code."""
    proc = subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode in ok, (args, proc.returncode, proc.stdout[-2000:],
                                   proc.stderr[-2000:])
    return proc.stdout


def _query(home: Path, sql: str) -> list[dict[str, Any]]:
    out = _cli("query", "--home", str(home), "--format", "json", sql)
    return json.loads(out) if out.strip() else []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def _sandbox_config(tmp: Path) -> Path:
    text = (FIX / "sandbox.toml").read_text().replace(
        'models_dir = "../models"', f"models_dir = {json.dumps(str(ROOT / 'fixtures' / 'models'))}")
    text += ('\n[spf]\n"bounce.news.acme.example" = ["127.0.0.4", "127.0.0.5"]\n')
    out = tmp / "sandbox.toml"
    out.write_text(text)
    return out


def _known(tag: str, n: int, domain: str) -> list[str]:
    """``n`` addresses the sandbox's receiver has a mailbox for. The receiver decides by a
    hash of the address (``sim.providers.mailboxes``): about 0.5 % of arbitrary addresses are
    unknown or full there, and which messages join the canary share is random (their ids are),
    so a bounce or two landing in the canary could spend its bounce budget by chance."""
    from sim.providers import load_params
    from sim.providers.mailboxes import mailbox_kind

    p = load_params("gmail" if domain == "gmail.com" else "generic")
    out: list[str] = []
    i = 0
    while len(out) < n:
        addr = f"user-{tag}-{i}@{domain}"
        if mailbox_kind(addr, p.unknown_fraction, p.full_fraction) == "normal":
            out.append(addr)
        i += 1
    return out


def _post(base_url: str, tag: str, n: int, domain: str = "gmail.com") -> list[str]:
    """POST ``n`` lifecycle messages to known mailboxes; their public message ids."""
    import httpx

    ids = []
    with httpx.Client(base_url=base_url, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"}) as client:
        for i, rcpt in enumerate(_known(tag, n, domain)):
            body = {"from": "news@news.acme.example", "to": [rcpt],
                    "lane": "transactional", "campaign": "loop", "subject": "What's new",
                    "text": f"message {i} of {tag}\n"}
            for _ in range(20):
                resp = client.post("/v1/messages", json=body,
                                   headers={"Idempotency-Key": f"{tag}-{i}"})
                if resp.status_code != 429:
                    break
                time.sleep(float(resp.headers.get("Retry-After", "1")))
            assert resp.status_code == 202, resp.text
            ids.append(str(resp.json().get("id") or resp.json().get("message_id")))
    return ids


def _export(home: Path) -> None:
    """Load the engine's new outbox events into the warehouse (exactly once per seq)."""
    from inboxlab.warehouse.outbox import ingest_spool

    ingest_spool(home / "spool.db", home)


def _drain(home: Path, engine: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Wait until the spool holds nothing active; the number still active at the deadline."""
    from engine.spool import Spool

    spool = Spool(home / "spool.db", recover=False)
    try:
        deadline = time.monotonic() + timeout
        while (left := spool.active()) and time.monotonic() < deadline:
            assert engine.poll() is None, "the engine exited"
            time.sleep(0.3)
        return left
    finally:
        spool.close()


def _wait_finished(home: Path, engine: subprocess.Popen[bytes], tag: str, n: int, *,
                   events: tuple[str, ...], timeout: float = 45) -> int:
    """Export until ``n`` messages to ``user-TAG-*`` have one of ``events`` in the
    warehouse; how many had at the deadline."""
    names = ", ".join(f"'{e}'" for e in events)
    deadline, got = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        assert engine.poll() is None, "the engine exited"
        _export(home)
        rows = _query(home, f"""
            SELECT count(DISTINCT message_id) AS n FROM events
            WHERE source = 'live' AND recipient LIKE 'user-{tag}-%' AND event IN ({names})""")
        got = int(rows[0]["n"]) if rows else 0
        if got >= n:
            return got
        time.sleep(0.5)
    return got


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("lab-loop")
    home = tmp / "home"
    home.mkdir()
    h = ("--home", str(home))
    procs: list[subprocess.Popen[bytes]] = []
    facts: dict[str, Any] = {"home": home, "t0": time.time()}
    try:
        # the sandbox
        sb_log = tmp / "sandbox.log"
        with sb_log.open("ab") as err:
            sandbox = subprocess.Popen(
                [sys.executable, "-m", "inboxlab", "sandbox", "--config", str(_sandbox_config(tmp)),
                 "--home", str(tmp / "sandbox"), "--json"], stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(sandbox)
        assert sandbox.stdout is not None
        addrs = json.loads(sandbox.stdout.readline() or b"{}")
        assert {"gmail", "generic"} <= set(addrs), sb_log.read_text()[-3000:]

        # (1) tune the warmup ramp in simulation on common random numbers, promote the winner
        out = tmp / "tuned"
        said = _cli("tune", "warmup-30d", "--space", str(SPACE), "--base", str(BASE),
                    "--out", str(out), "--objective", "throughput", "--budget", "2",
                    "--scale", "0.01", "--set", "duration=1d", "--seed", "7",
                    "--constraints", "complaint_rate<0.001,automation_suspensions<=baseline",
                    "--actor", ACTOR)
        evaluation = json.loads((out / "evaluation.json").read_text())
        facts["evaluation"], facts["tune_said"] = evaluation, said
        winner = Path(evaluation["winner"]["file"])
        _cli("promote", "admit", str(winner), "--pool", POOL, *h, "--current", str(BASE),
             "--evaluation", str(out / "evaluation.json"), "--actor", ACTOR)
        for _ in range(2):  # 1 % -> 10 % -> 25 %
            _cli("promote", "advance", "--pool", POOL, *h, "--actor", ACTOR,
                 "--reason", "gates passed in simulation")
        facts["record"] = json.loads((home / "promotion" / f"{POOL}.json").read_text())

        # (2) the live engine follows the record; traffic through the HTTP API
        env = dict(os.environ, INBOXLAB_PORT_GMAIL=addrs["gmail"].rsplit(":", 1)[1],
                   INBOXLAB_PORT_GENERIC=addrs["generic"].rsplit(":", 1)[1])
        port = _free_port()
        eng_log = tmp / "engine.log"
        with eng_log.open("ab") as err:
            engine = subprocess.Popen(
                [sys.executable, "-m", "inboxlab", "serve", "--config", str(LAB), *h,
                 "--port", str(port), "--seed", "7"], stdout=err, stderr=err, env=env,
                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(engine)
        _wait_port(port, engine, eng_log)
        url = f"http://127.0.0.1:{port}"
        facts["canary_ids"] = _post(url, "c", N_CANARY)
        facts["canary_left"] = _drain(home, engine)
        _cli("ingest", "--spool", str(home / "spool.db"), *h)
        facts["check_good"] = _cli("promote", "check", "--pool", POOL, *h, "--actor", ACTOR,
                                   "--min-outcomes", "50")
        facts["engine_log"] = eng_log

        # (3) the winner is promoted; the bad candidate wins its own simulation (no
        # greylisting there), passes the gates and is staged to 25 %
        _cli("promote", "advance", "--pool", POOL, *h, "--actor", ACTOR,
             "--reason", "50 % stage held")
        bad_out = tmp / "bad"
        _cli("tune", "warmup-30d", "--space", str(GIVE_UP), "--base", str(winner),
             "--out", str(bad_out), "--objective", "throughput", "--budget", "2",
             "--scale", "0.01", "--set", "duration=1d", "--seed", "7",
             "--constraints", "complaint_rate<0.001,automation_suspensions<=baseline",
             "--actor", ACTOR)
        bad_eval = json.loads((bad_out / "evaluation.json").read_text())
        facts["bad_evaluation"] = bad_eval
        bad = Path(bad_eval["winner"]["file"])
        facts["bad_text"] = bad.read_text()
        _cli("promote", "admit", str(bad), "--pool", POOL, *h,
             "--evaluation", str(bad_out / "evaluation.json"), "--actor", ACTOR)
        for _ in range(2):
            _cli("promote", "advance", "--pool", POOL, *h, "--actor", ACTOR,
                 "--reason", "gates passed in simulation")
        facts["bad_record"] = json.loads((home / "promotion" / f"{POOL}.json").read_text())

        # (4) live traffic to Gmail and to the greylisting receiver; every message's first
        # attempt settles (delivered, deferred or dropped) before the check
        _post(url, "bg", N_BAD_GMAIL)
        _post(url, "bx", N_BAD_GREY, domain=GENERIC)
        facts["bad_seen"] = (_wait_finished(home, engine, "bg", N_BAD_GMAIL, events=SETTLED)
                             + _wait_finished(home, engine, "bx", N_BAD_GREY, events=SETTLED))
        # the unattended watcher loads the engine's spool itself and rolls the pool back
        facts["check_bad"] = _cli("promote", "watch", "--pool", POOL, *h, "--actor", ACTOR,
                                  "--spool", str(home / "spool.db"), "--every", "0",
                                  "--max-checks", "1", "--min-outcomes", "50")
        facts["final_record"] = json.loads((home / "promotion" / f"{POOL}.json").read_text())

        # (5) after the rollback the running engine sends new mail under the control only
        _post(url, "after", N_AFTER)
        facts["after_seen"] = _wait_finished(home, engine, "after", N_AFTER, events=SETTLED)
        _export(home)
        yield facts
    finally:
        for p in reversed(procs):
            _stop(p)


def test_tuned_policy_runs_its_canary_share_live(loop: dict[str, Any]) -> None:
    ev, rec = loop["evaluation"], loop["record"]
    win = ev["winner"]
    assert win["version"] != ev["base"]["version"] == "warmup-conservative-v1"
    assert win["comparison"]["objective"]["ci95"][0] > 0  # better on common random numbers
    assert rec["state"] == "canary" and rec["stage_percent"] == 25.0
    assert rec["candidate_version"] == win["version"]
    assert loop["canary_left"] == 0
    rows = _query(loop["home"], f"""
        SELECT policy_version, count(DISTINCT message_id) AS n,
               count(DISTINCT message_id) FILTER (WHERE event = 'delivered') AS delivered
        FROM events
        WHERE source = 'live' AND pool = '{POOL}' AND recipient LIKE 'user-c-%'
          AND event IN ('delivered', 'bounced', 'expired', 'dead_lettered')
        GROUP BY ALL ORDER BY policy_version""")
    by = {r["policy_version"]: int(r["n"]) for r in rows}
    assert set(by) == {win["version"], "warmup-conservative-v1"}, rows
    assert sum(by.values()) == N_CANARY  # every accepted message reached a final state once
    assert sum(int(r["delivered"]) for r in rows) >= 0.97 * N_CANARY, rows
    share = by[win["version"]] / N_CANARY
    assert 0.17 < share < 0.33, by  # the 25 % stage: binomial sd ~2.2 % at 400 messages
    # healthy canary: the check advanced it to the next stage
    assert "advance" in loop["check_good"], loop["check_good"]


def test_every_promotion_step_is_an_event_in_the_warehouse(loop: dict[str, Any]) -> None:
    rows = _query(loop["home"], f"""
        SELECT state, policy_version, reason FROM events
        WHERE event = 'promotion' AND pool = '{POOL}' ORDER BY seq""")
    win = loop["evaluation"]["winner"]["version"]
    bad = loop["bad_evaluation"]["winner"]["version"]
    steps = [(r["state"], r["policy_version"]) for r in rows]
    assert steps == [("stage-1", win), ("stage-10", win), ("stage-25", win), ("stage-50", win),
                     ("promoted", win), ("stage-1", bad), ("stage-10", bad), ("stage-25", bad),
                     ("rolled_back", bad)], rows
    assert rows[0]["reason"].startswith("admit: gates passed (superior)")
    assert rows[3]["reason"].startswith("advance: check: every error budget intact")
    assert rows[5]["reason"].startswith("admit: gates passed (superior)")
    # the drop budget is spent (a bounce budget may be spent too: a message the candidate
    # gave up on after a 5xx reads as bounced)
    assert rows[-1]["reason"].startswith("rollback: check: error budget spent:")
    assert "drop_rate" in rows[-1]["reason"]


def test_candidate_that_gives_up_is_rolled_back_automatically(loop: dict[str, Any]) -> None:
    home, win = loop["home"], loop["evaluation"]["winner"]["version"]
    ev = loop["bad_evaluation"]
    bad = ev["winner"]["version"]
    # honest admission: its simulation compared it with the promoted winner and it won there
    assert ev["base"]["version"] == win and bad != win
    assert ev["winner"]["comparison"]["objective"]["ci95"][0] > 0
    assert "max_attempts = 1" in loop["bad_text"]
    assert loop["bad_record"]["state"] == "canary"
    assert loop["bad_record"]["stage_percent"] == 25.0
    assert loop["bad_seen"] == N_BAD_GMAIL + N_BAD_GREY
    # the check rolled it back on the drop budget; the record says so
    assert "rollback" in loop["check_bad"] and "drop_rate" in loop["check_bad"], \
        loop["check_bad"]
    rec = loop["final_record"]
    assert rec["state"] == "rolled_back" and rec["stage_percent"] == 0.0
    assert rec["current_version"] == win
    # the candidate really sent live mail and dropped the greylisted part; the control did not
    rows = _query(home, f"""
        SELECT policy_version,
               count(DISTINCT message_id) FILTER (WHERE event = 'delivered') AS delivered,
               count(DISTINCT message_id) FILTER (WHERE event IN ('expired', 'dead_lettered'))
                   AS dropped,
               count(DISTINCT message_id) FILTER (WHERE event = 'deferred') AS deferred
        FROM events
        WHERE source = 'live' AND pool = '{POOL}' AND (recipient LIKE 'user-bg-%'
                                                      OR recipient LIKE 'user-bx-%')
        GROUP BY ALL""")
    by = {r["policy_version"]: r for r in rows}
    assert set(by) == {win, bad}, rows
    assert int(by[bad]["delivered"]) > 0 and int(by[bad]["dropped"]) > 0, rows
    assert int(by[win]["dropped"]) == 0 and int(by[win]["deferred"]) > 0, rows
    # after the rollback: every event of the new messages carries the control version only
    assert loop["after_seen"] == N_AFTER, _query(home, """
        SELECT event, policy_version, smtp_code, response, reason, count(*) AS n FROM events
        WHERE recipient LIKE 'user-after-%' GROUP BY ALL""")
    after = _query(home, """
        SELECT policy_version, count(DISTINCT message_id) AS n,
               count(DISTINCT message_id) FILTER (WHERE event = 'delivered') AS delivered
        FROM events WHERE source = 'live' AND recipient LIKE 'user-after-%'
          AND policy_version IS NOT NULL GROUP BY ALL""")
    assert [(r["policy_version"], int(r["n"])) for r in after] == [(win, N_AFTER)], after
    assert int(after[0]["delivered"]) > 0  # Gmail may rate-limit (421 4.7.28) a few of them
