"""The engine parts that keep state in the spool -- dead letters, inbound reports, webhook
cursors, the warehouse's outbox reader -- on both backends, and their multi-node rules on
PostgreSQL (a private cluster on loopback: ``tests.integration.pg_server``).

The same scenario runs on a SQLite ``Spool`` and a ``PgSpool`` and must give the same
answers; the PostgreSQL-only tests open two nodes on one schema and race them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.delivery.message import verp_address
from engine.inbound import FeedbackProcessor
from engine.spool import open_spool
from engine.spool.dlq import DeadLetters, Filter
from engine.webhooks import Endpoint, WebhookDispatcher
from tests.integration.pg_server import pg_server, pg_url  # noqa: F401

pytestmark = pytest.mark.integration
BODY = b"Subject: secret body text\r\n\r\nDo not show me\r\n"
SECRET = b"p" * 32


@pytest.fixture(params=["sqlite", "pg"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a spool is: a SQLite file, or a fresh schema on the private cluster."""
    if request.param == "pg":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "spool.db")


@pytest.fixture
def opened() -> Iterator[Callable[..., Any]]:
    spools: list[Any] = []

    def open_(where: str, **kw: Any) -> Any:
        sp = open_spool(where, **kw)
        spools.append(sp)
        return sp

    yield open_
    for sp in reversed(spools):
        sp.close()


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released together; their results."""
    results: list[Any] = []
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> None:
        barrier.wait()
        results.append(call())

    threads = [threading.Thread(target=go, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == len(calls)
    return results


def _fail(spool: Any, tenant: str, campaign: str, rcpts: list[str], how: str,
          provider: str, key: str) -> list[int]:
    spool.accept(tenant=tenant, idem_key=key, request=key.encode(), lane="lifecycle",
                 campaign=campaign, sending_domain="mail.acme.example",
                 mail_from="n@mail.acme.example", recipients=rcpts, body=BODY)
    ids = [p.id for p in spool.take_pending()]
    for rid in ids:
        spool.start_attempts([rid], pool="tx-a", source_ip="127.0.0.2")
        spool.finish(rid, "deferred", event="deferred", code=451, response="4.7.0 try later",
                     pool="tx-a", provider=provider)
        spool.start_attempts([rid], pool="tx-a", source_ip="127.0.0.3")
        spool.data_started([rid], "mx.example")
        if how == "expired":
            spool.finish(rid, "expired", event="expired", reason="ttl 72h elapsed",
                         pool="tx-a", provider=provider)
        else:
            spool.finish(rid, "dead_lettered", event="dead_lettered", code=554,
                         response="5.7.1 blocked", reason="policy: permanent block",
                         pool="tx-a", provider=provider)
    return ids


def _world(spool: Any) -> None:
    _fail(spool, "acme", "wk1", ["ann@gmail.com", "bob@gmail.com"], "dead", "gmail", "k1")
    _fail(spool, "acme", "wk2", ["cat@yahoo.com"], "expired", "yahoo", "k2")
    _fail(spool, "globex", "g1", ["dan@gmail.com"], "dead", "gmail", "k3")


def test_dead_letters_answer_alike_on_both_backends(target: str, opened: Any) -> None:
    spool = opened(target)
    _world(spool)
    dlq = DeadLetters(spool)
    rows = dlq.list()
    assert [(r.tenant, r.campaign, r.state, r.provider, r.pool) for r in rows] == [
        ("acme", "wk1", "dead_lettered", "gmail", "tx-a"),
        ("acme", "wk1", "dead_lettered", "gmail", "tx-a"),
        ("acme", "wk2", "expired", "yahoo", "tx-a"),
        ("globex", "g1", "dead_lettered", "gmail", "tx-a")]
    assert [r.recipient for r in rows] == ["a**@gmail.com", "b**@gmail.com", "c**@yahoo.com",
                                           "d**@gmail.com"]
    assert len(dlq.list(Filter(reason="PERMANENT"))) == 3
    assert dlq.list(Filter(reason="ttl"))[0].reason == "ttl 72h elapsed"
    assert [r.tenant for r in dlq.list(Filter(tenant="globex"))] == ["globex"]

    shown = dlq.show(rows[0].id)
    assert shown["recipient"] == "ann@gmail.com"
    hist = shown["attempt_history"]
    assert [(a["n"], a["code"], a["source_ip"], a["data_started"]) for a in hist] == [
        (1, 451, "127.0.0.2", 0), (2, 554, "127.0.0.3", 1)]
    assert shown["body"] == {"bytes": len(BODY), "sha256": shown["body"]["sha256"],
                             "redacted": True}
    assert "Do not show" not in json.dumps(shown)

    f = Filter(tenant="acme", campaign="wk1")
    first = dlq.replay(f, pool="shared-c", not_before=2e9)
    assert len(first.replayed) == 2 and first.already == ()
    assert all(spool.state(r) == ("queued", False) for r in first.replayed)
    assert dlq.requested_pool(first.replayed[0]) == "shared-c"
    assert dlq.show(rows[2].id)["replays"] == []
    pend = {p.id: p for p in spool.take_pending()}
    assert {pend[r].next_at for r in first.replayed} == {2e9}
    for rid in first.replayed:  # they fail again: the same replay still does nothing
        spool.start_attempts([rid], pool="shared-c", source_ip="127.0.0.8")
        spool.finish(rid, "dead_lettered", event="dead_lettered", reason="again")
    second = dlq.replay(f, pool="shared-c", not_before=2e9)
    assert second.replayed == () and set(second.already) == set(first.replayed)
    assert [r["pool"] for r in dlq.show(first.replayed[0])["replays"]] == ["shared-c"]
    evs = [e.event for e in spool.events_after(0, limit=10_000)]
    assert evs.count("replayed") == 2


def test_two_nodes_replaying_at_once_replay_each_recipient_once(
        pg_url: str, opened: Any) -> None:  # noqa: F811
    a = opened(pg_url, node="node-a")
    b = opened(pg_url, node="node-b")
    _world(a)
    acme = {r.id for r in DeadLetters(a).list(Filter(tenant="acme"))}
    assert len(acme) == 3
    for rnd in range(4):  # a new replay key each round, both nodes racing on it
        dlqs = [DeadLetters(sp) for sp in (a, b)]
        results = _race([lambda d=d, rnd=rnd: d.replay(Filter(tenant="acme"),  # type: ignore[misc]
                                                       not_before=float(rnd)) for d in dlqs])
        replayed = [r for res in results for r in res.replayed]
        assert sorted(replayed) == sorted(acme), results  # each once, by one node or both
        for p in a.take_pending():  # they fail again, ready for the next round
            a.start_attempts([p.id], pool="tx-a", source_ip="127.0.0.2")
            a.finish(p.id, "dead_lettered", event="dead_lettered", reason="again")
    evs = [e for e in b.events_after(0, limit=10_000) if e.event == "replayed"]
    assert len(evs) == 3 * 4


def _arf(verp: str, rcpt: str) -> bytes:
    return (
        "From: <fbl@isp.example>\r\nTo: <fbl@bounce.mail.acme.example>\r\n"
        "Subject: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: TestFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{verp}>\r\nFrom: news@mail.acme.example\r\nTo: {rcpt}\r\n"
        "Subject: hi\r\n\r\nhello\r\n--b1--\r\n").encode()


def _delivered(spool: Any, rcpt: str, key: str) -> tuple[str, int]:
    acc = spool.accept(tenant="acme", idem_key=key, request=key.encode(), lane="lifecycle",
                       campaign=None, sending_domain="mail.acme.example",
                       mail_from="n@mail.acme.example", recipients=[rcpt], body=BODY)
    rid = next(p.id for p in spool.take_pending())
    spool.start_attempts([rid], pool="tx-a", source_ip="127.0.0.2")
    spool.finish(rid, "delivered", event="delivered", code=250, pool="tx-a",
                 provider="gmail")
    return acc.public_id, rid


def test_inbound_reports_apply_once_on_both_backends(target: str, opened: Any) -> None:
    spool = opened(target)
    pid, rid = _delivered(spool, "eve@gmail.com", "k1")
    proc = FeedbackProcessor(spool, SECRET)
    verp = verp_address(SECRET, pid, "eve@gmail.com", "bounce.mail.acme.example")
    assert proc.route_of(rid) == ("tx-a", "gmail")
    assert proc.locate([verp], None) == (rid, False)
    assert proc.locate([], f"<{pid}.{rid}@mail.acme.example>") == (rid, False)
    assert proc.locate([], f"<{pid}.{rid + 999}@mail.acme.example>") == (None, False)
    out = proc.process(_arf(verp, "eve@gmail.com"), [verp])
    assert out.status == "complaint" and out.signal is not None
    assert (out.signal.pool, out.signal.provider) == ("tx-a", "gmail")
    assert proc.process(_arf(verp, "eve@gmail.com"), [verp]).status == "duplicate"
    assert spool.is_suppressed("acme", "EVE@gmail.com")
    evs = [e.event for e in spool.events_after(0, limit=1000) if e.recipient == "eve@gmail.com"]
    assert evs.count("complaint") == 1 and evs.count("suppressed") == 1


def test_a_report_to_two_nodes_at_once_counts_once(pg_url: str, opened: Any) -> None:  # noqa: F811
    a = opened(pg_url, node="node-a")
    b = opened(pg_url, node="node-b")
    pid, _ = _delivered(a, "fay@gmail.com", "k1")
    verp = verp_address(SECRET, pid, "fay@gmail.com", "bounce.mail.acme.example")
    procs = [FeedbackProcessor(sp, SECRET) for sp in (a, b)]
    raw = _arf(verp, "fay@gmail.com")
    outs = [o.status for o in _race([lambda p=p: p.process(raw, [verp])  # type: ignore[misc]
                                     for p in procs])]
    assert sorted(outs) == ["complaint", "duplicate"]
    assert b.is_suppressed("acme", "fay@gmail.com") and a.is_suppressed("acme", "fay@gmail.com")
    evs = [e.event for e in b.events_after(0, limit=1000) if e.recipient == "fay@gmail.com"]
    assert evs.count("complaint") == 1 and evs.count("suppressed") == 1


class _Hooks:
    """A webhook endpoint on loopback keeping every posted batch."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        hooks = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hooks.got.append(json.loads(self.rfile.read(
                    int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_one_node_at_a_time_delivers_an_endpoint_in_order(
        pg_url: str, opened: Any) -> None:  # noqa: F811
    hooks = _Hooks()
    try:
        a = opened(pg_url, node="node-a")
        b = opened(pg_url, node="node-b")
        ep = Endpoint("acme", hooks.url, b"s" * 32)
        da = WebhookDispatcher(a, [ep], batch=3)
        db = WebhookDispatcher(b, [ep], batch=3)

        async def rounds() -> None:
            async with httpx.AsyncClient() as client:
                for i in range(8):
                    for sp in (a, b):
                        sp.emit(tenant="acme", event="automation", pool="tx-a",
                                provider="gmail", state="ok", rule=f"r{i}")
                    await asyncio.gather(da.step(client), db.step(client))
                da.release()  # node-a stops cleanly: node-b takes the endpoint at once
                a.emit(tenant="acme", event="automation", pool="tx-a", provider="gmail",
                       state="ok", rule="last")
                await db.step(client)

        asyncio.run(rounds())
        rows = [r for batch in hooks.got for r in batch["events"]]
        assert [r["stream_seq"] for r in rows] == list(range(1, 18))  # in order, no repeat
        assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
        assert rows[-1]["rule"] == "last"
        assert da.sent_batches > 0 and db.sent_batches > 0  # a, then b after the release
        assert a.webhook_cursor(ep.key)[:2] == (rows[-1]["seq"], 17)
    finally:
        hooks.close()


def test_warehouse_ingests_a_pg_outbox_once(pg_url: str, tmp_path: Path,  # noqa: F811
                                            opened: Any) -> None:
    from inboxlab.warehouse.outbox import ingest_spool, spool_stream
    from inboxlab.warehouse.store import read_ledger

    home = tmp_path / "wh"
    assert spool_stream(pg_url) is None
    assert not ingest_spool(pg_url, home).loaded
    a = opened(pg_url, node="node-a")
    b = opened(pg_url, node="node-b")
    _world(a)
    _delivered(b, "gus@gmail.com", "k9")
    total = len(a.events_after(0, limit=100_000))
    first = ingest_spool(pg_url, home, batch=7)
    assert first.loaded and first.rows == total
    again = ingest_spool(pg_url, home)
    assert not again.loaded and again.rows == 0
    _delivered(a, "hal@gmail.com", "k10")
    tail = ingest_spool(pg_url, home)
    assert tail.rows == len(a.events_after(total, limit=1000)) > 0
    # the same spool named by another address of the server is the same stream
    other = pg_url.replace("127.0.0.1", "localhost")
    assert spool_stream(other) == spool_stream(pg_url) == opened(
        pg_url, recover=False, node="x").stream_name()
    assert not ingest_spool(other, home).loaded
    stream = spool_stream(pg_url)
    assert read_ledger(home)["outbox"][stream] == len(a.events_after(0, limit=100_000))
    from inboxlab.warehouse import query

    n = query(home, "SELECT count(*) AS n FROM events WHERE source = 'live'")
    assert int(n["n"][0]) == read_ledger(home)["outbox"][stream]


# -- [serve] spool / nodes in the lab config, and the one-line errors of a bad spool ----------

def _lab(tmp: Path, serve: str, name: str = "lab") -> Path:
    fx = Path(__file__).parents[2] / "fixtures"
    path = tmp / f"{name}.toml"
    path.write_text(f"""
policy = "{fx / 'policies' / 'default-v1.toml'}"
[tenants.acme]
[domains."mail.acme.example"]
tenant = "acme"
[pools.tx-a]
source_ips = ["127.0.0.2"]
[routes]
"*" = "127.0.0.1:9"
[serve]
{serve}
""")
    return path


def _problems(path: Path, env: dict[str, str]) -> dict[str, str]:
    from engine.config import load_config
    from engine.errors import ConfigErrors

    with pytest.raises(ConfigErrors) as info:
        load_config(path, env=env)
    return {p.key: f"{p.file}|{p.reason}" for p in info.value.problems}


def test_serve_spool_and_nodes_in_the_config(tmp_path: Path) -> None:
    from engine.config import load_config
    from engine.intake.serve import spool_target

    url = "postgresql://eng:${PG_PW}@db.internal:5433/mail?schema=spool_a"
    cfg = load_config(_lab(tmp_path, f'spool = "{url}"\nnodes = 3'), env={"PG_PW": "pw1"})
    assert cfg.serve.spool == "postgresql://eng:pw1@db.internal:5433/mail?schema=spool_a"
    assert cfg.serve.nodes == 3
    assert load_config(_lab(tmp_path, ""), env={}).serve.nodes == 1
    assert spool_target(load_config(_lab(tmp_path, ""), env={}), tmp_path / "h") == \
        tmp_path / "h" / "spool.db"
    rel = load_config(_lab(tmp_path, 'spool = "q/spool.db"'), env={})
    assert spool_target(rel, tmp_path / "h") == tmp_path / "q" / "spool.db"  # lab-relative
    assert spool_target(rel, tmp_path / "h", "postgresql://x/y") == "postgresql://x/y"


@pytest.mark.parametrize(("value", "env", "says"), [
    ('"postgresql://u:${PG_PW}@h/db?schema=bad-name"', {"PG_PW": "pw1"},
     "'bad-name' is not a plain SQL identifier"),
    ('"postgresql://u:${PG_PW}@h:port/db"', {"PG_PW": "pw1"}, "postgresql://u:***@h:port/db"),
    ('"postgresql://u:${PG_NOPE}@h/db"', {}, "environment variable PG_NOPE is not set"),
    ('"mysql://u:pw1@h/db"', {}, "mysql:// is not a spool"),
    ('"postgresql://"', {}, "names no host and no database"),
    ("5", {}, "string"),
])
def test_a_malformed_serve_spool_is_located_and_hides_the_password(
        tmp_path: Path, value: str, env: dict[str, str], says: str) -> None:
    path = _lab(tmp_path, f"spool = {value}")
    got = _problems(path, env)
    assert list(got) == ["serve.spool"], got
    file, reason = got["serve.spool"].split("|", 1)
    assert file == str(path) and says in reason, reason
    assert "pw1" not in reason


def test_nodes_must_be_positive(tmp_path: Path) -> None:
    assert "serve.nodes" in _problems(_lab(tmp_path, "nodes = 0"), {})


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, **(env or {})))


def test_an_unreachable_spool_is_one_line_and_hides_the_password(tmp_path: Path) -> None:
    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    dead = f"postgresql://u:pw1@127.0.0.1:{free()}/db?schema=x"  # nothing listens there
    lab = _lab(tmp_path, 'spool = "${PG_DEAD}"')
    home = tmp_path / "home"
    for args, env, where in [
            (("serve", "--config", str(lab), "--home", str(home), "--port", str(free())),
             {"PG_DEAD": dead}, f"{lab}: serve.spool: cannot connect"),
            (("serve", "--config", str(_lab(tmp_path, "", "plain")), "--home", str(home),
              "--port", str(free()), "--spool", dead), {},
             "--spool postgresql://u:***@127.0.0.1"),
            (("dlq", "list", "--spool", dead), {}, "--spool postgresql://u:***@127.0.0.1"),
            (("ingest", "--spool", dead, "--home", str(tmp_path / "wh")), {},
             "postgresql://u:***@127.0.0.1")]:
        got = _run(*args, env=env)
        assert got.returncode != 0
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("inboxlab: error:"), got.stderr
        assert where in lines[0] and "pw1" not in got.stderr + got.stdout, lines[0]
        assert "Traceback" not in got.stderr
